"""The run's text for people: the summary printed at the end (the progress while it runs:
`batch.run.progress`)."""

from __future__ import annotations

from batch.analyses.registry import REGISTRY
from batch.core.calls import IN_FLIGHT, PAID_OUTCOMES
from batch.run.summary import RunSummary

__all__ = ["format_summary"]


def format_summary(summary: RunSummary, *, dry_run: bool = False) -> str:
    """A short summary for people."""
    images = summary.images
    lines = []
    if dry_run:
        return "\n".join(_dry_run_lines(summary))
    lines.append(
        f"run {summary.run_id}: {summary.status} in {summary.seconds:.1f} s"
        + (f" ({summary.reason})" if summary.reason else "")
    )
    if summary.status == "already-committed":
        lines.append(f"  nothing to do: committed earlier ({summary.manifest})")
        return "\n".join(lines)
    resumed = ""
    if summary.resumed:
        kept = f"{summary.kept_images} images kept (batches kept whole: {summary.kept_batches})"
        resumed = f", resumed with {kept}"
    region = f"; Rekognition in {summary.region}" if summary.region else ""
    segments = ""
    if summary.segments > (1 if summary.committed else 0):  # readers see a segment before the end
        segments = f" ({summary.segments} segments)"
    committed = f"{'yes' if summary.committed else 'no'}{segments}"
    lines.append(f"  attempt {summary.attempt}{resumed}; committed: {committed}{region}")
    lines.append(
        f"  images: {images['listed']} listed: {images['analysed']} analysed, {images['rejected']} rejected, "
        f"{images['failed']} failed, {images['skipped']} skipped, {images['changed']} changed mid-run, "
        f"{images['unchanged']} unchanged"
    )
    by_operation: dict[str, list[str]] = {}
    for (operation, outcome), n in sorted(summary.calls.items()):
        by_operation.setdefault(operation, []).append(f"{n} {outcome}")
    for operation, parts in by_operation.items():
        lines.append(f"  {operation}: {', '.join(parts)}")
    lines.append(
        f"  retries: {summary.retries}, throttled: {summary.throttled}; "
        f"estimated cost of the image calls ${summary.estimated_cost_usd:.4f}"
    )
    repeated = summary.repeated_calls
    if repeated:
        paid = sum(n for (_, outcome), n in repeated.items() if outcome in PAID_OUTCOMES)
        in_flight = sum(n for (_, outcome), n in repeated.items() if outcome == IN_FLIGHT)
        lines.append(
            f"  of which paid twice: {paid} calls, ${summary.repeated_cost_usd:.4f} (work a crash or a "
            f"failed task threw away; {in_flight} of them in flight when their process died)"
        )
    lines += [*_quota_lines(summary), *summary.driver_lines]
    tables = ", ".join(f"{t} {n}" for t, n in sorted(summary.rows.items())) or "none new"
    lines.append(f"  output: {summary.output} ({summary.files} files; rows: {tables})")
    if summary.report or summary.report_error:
        lines.append(f"  report: {summary.report or f'not written: {summary.report_error}'}")
    return "\n".join(lines)


def _dry_run_lines(summary: RunSummary) -> list[str]:
    """A dry run's counts: upper bounds unless it probed the headers (then the images sent are exact);
    calls per face (face search, comparison) are counted once per image or reference: at least."""
    images, probed = summary.images, summary.dry_run == "probed"
    at_most = "" if probed else "at most "
    refused = ", ".join(f"{code} {n}" for code, n in sorted(summary.refused.items()))
    if probed:
        head = (
            f"dry run over {summary.input} (headers probed): {images['listed']} images listed, "
            f"{images['to_analyse']} to send, {images['unchanged']} unchanged since a committed run, "
            f"{sum(summary.refused.values())} not sent ({refused or 'none'})"
        )
    else:
        head = (
            f"dry run over {summary.input}: {images['listed']} images listed, at most {images['to_analyse']} "
            f"to analyse (headers not read: --probe reads them for the exact count), {images['unchanged']} "
            f"unchanged since a committed run, {images['skipped']} zero-byte to skip"
        )
    lines = [head]
    per_face = {REGISTRY[n].operation for n in summary.analyses if REGISTRY[n].calls_at_least}
    for (operation, _), n in sorted(summary.calls.items()):
        if operation not in summary.storage_operations:
            bound = "at least " if operation in per_face else at_most
            lines.append(f"  would call {operation} {bound}{n} times")
    lines += [*_quota_lines(summary, would=True), *summary.driver_lines]
    called = summary.dry_run_called or "nothing"
    cost = f"${summary.estimated_cost_usd:.4f}"
    if per_face:
        cost = f"{cost} (at least, for the calls per face{'; at most, for the images' * (not probed)})"
    else:
        cost = f"{at_most}{cost}"
    lines.append(f"  estimated cost of the image calls at list price: {cost} (called {called})")
    if probed:
        lines.append(
            "  Rekognition may still refuse an image damaged past its header, and a conversion a file it "
            "cannot decode"
        )
    return lines + summary.forecast_lines


def _quota_lines(summary: RunSummary, *, would: bool = False) -> list[str]:
    """The quota each operation was (or a run would be) held to, and where it came from."""
    if not summary.quotas:
        return []
    listed = summary.quota_list()
    if len({(q["tps"], q["source"]) for q in listed}) == 1:  # one line that fits a terminal
        quotas = f"{listed[0]['tps']:g} for each operation ({listed[0]['source']})"
    else:
        quotas = ", ".join(f"{q['operation']} {q['tps']:g} ({q['source']})" for q in listed)
    lines = [f"  quotas{' a run would use' if would else ''}, calls/s: {quotas}"]
    if summary.region_quotas:  # each region's part of those sums
        parts = []
        for region, by_operation in summary.region_quotas.items():
            low, high = min(by_operation.values(), default=0), max(by_operation.values(), default=0)
            parts.append(f"{region} {low:g}" if low == high else f"{region} {low:g}-{high:g}")
        lines.append(f"  regions (stateless analyses spread by quota), calls/s: {', '.join(parts)}")
    return lines
