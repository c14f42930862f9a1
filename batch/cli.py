"""Command line: `rekbatch run ...` (also `python -m batch run ...`); `rekbatch report RUN_ID ...`.

Exit codes: 0 the run completed (images that Rekognition rejected are rows, not failures);
2 a bad config, flag or environment variable; 3 the input or output location is unreachable;
4 the run was aborted part-way (e.g. AccessDeniedException from Rekognition); 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Sequence

from batch import __version__
from batch.config import load_config, load_report_config
from batch.errors import RekbatchError, RunAborted

#: Loggers that would print credentials or image bytes at DEBUG (botocore logs request bodies and
#: the Authorization header): pinned to WARNING whatever the job's own level is.
QUIET_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rekbatch", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"rekognition-batch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="analyse the images under an S3 prefix into Parquet tables")
    run.add_argument("--input", help="s3://BUCKET/PREFIX to analyse")
    run.add_argument("--output", help="a local folder or s3://BUCKET/PREFIX for the tables")
    run.add_argument("--analyses", help="comma-separated: labels,faces,text,moderation,celebrities")
    run.add_argument("--config", help="a TOML file (see configs/default.toml); flags override it")
    run.add_argument(
        "--scheduler",
        help="address of a Dask scheduler (default: DASK_SCHEDULER_ADDRESS, else a local cluster)",
    )
    run.add_argument(
        "--run-id", help="id of this run (letters, digits, '.', '_', '-'); default: time + random"
    )
    run.add_argument("--limit", type=int, help="analyse at most N images")
    run.add_argument(
        "--tps",
        type=float,
        help="calls per second for every operation, across the whole "
        "cluster (overrides [quotas] and rekognition.tps)",
    )
    run.add_argument(
        "--image-source", choices=("s3", "bytes"), help="send S3 references (default) or the image bytes"
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        default=None,
        help="list and count what would be analysed, with its cost; call nothing",
    )
    run.add_argument("--summary-json", help="also write the run's summary as JSON to this path")
    run.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO")
    report = commands.add_parser("report", help="write the HTML report of a finished run")
    report.add_argument("run_id", metavar="RUN_ID", help="the run's id (the runs table's run_id)")
    report.add_argument("--output", required=True, help="the run's output: a local folder or s3://BUCKET/PREFIX")
    report.add_argument("--to", help="write the report to this file (default: OUTPUT/_reports/RUN_ID.html)")
    report.add_argument("--config", help="a TOML file; only its [report] section is read")
    report.add_argument("-v", "--verbose", action="store_true", help="log at INFO")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    try:
        if args.command == "report":
            return _report(args)
        config = load_config(
            args.config,
            overrides={
                "run.input": args.input,
                "run.output": args.output,
                "run.analyses": args.analyses,
                "run.run_id": args.run_id,
                "run.limit": args.limit,
                "run.dry_run": args.dry_run,
                "run.summary_json": args.summary_json,
                "dask.scheduler": args.scheduler,
                "rekognition.tps": args.tps,
                "quotas": {} if args.tps is not None else None,  # --tps sets every operation's quota
                "rekognition.image_source": args.image_source,
            },
        )
        from batch.job import run  # Dask is imported only when a run starts

        _quiet_dask(args.verbose)  # after the import: importing distributed sets its loggers' levels
        command_line = shlex.join(["rekbatch", *(sys.argv[1:] if argv is None else argv)])
        summary = run(config, command_line=command_line)
        if summary.status == "aborted":
            raise RunAborted(f"run {summary.run_id} aborted: {summary.reason}")
    except RekbatchError as exc:
        print(f"rekbatch: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("rekbatch: interrupted", file=sys.stderr)
        return 130
    return 0


def _report(args: argparse.Namespace) -> int:
    from batch.report import write_report  # matplotlib and Jinja2 only for this command
    from batch.s3 import s3_client

    settings = load_report_config(args.config)
    print(write_report(args.output, args.run_id, settings, s3_client(), to=args.to))
    return 0


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def _quiet_dask(verbose: bool) -> None:
    level = logging.WARNING if verbose else logging.ERROR
    for name in (
        "distributed",
        "distributed.scheduler",
        "distributed.nanny",
        "distributed.core",
        "distributed.worker",
        "distributed.http.proxy",
    ):
        logging.getLogger(name).setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
