"""The demo: the batch job end to end on the local stack (`make demo`).

Starts moto's S3 server and our Rekognition endpoint on loopback, seeds a bucket with the sample
images, runs `python -m batch run` against it with a LocalCluster of worker processes, runs it again
(an incremental run: nothing changed, so no calls), prints the summaries and a DuckDB query over the
committed output (the views `rekbatch views` prints), stops the servers, and ends with the path of the
first run's HTML report (written by the job into the output's `_reports/` folder).

`--more-analyses` (`make demo MORE=1`) adds the analyses of `MORE_ANALYSES` (ppe, custom_labels with
`--start-models` against the endpoint's model, a moderation adapter, user_search with the face users
of `people/`) and prints a query over their
tables too. Adding one: an `Extra` in `MORE_ANALYSES`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from batch.query import views
from local_stack.samples import seed_people
from local_stack.stack import LocalStack, seed_samples

BUCKET = "rekbatch-demo"
PREFIX = "photos/"
ROOT = Path(__file__).resolve().parent.parent

QUERY = """
SELECT i.key, i.format, i.exif_orientation AS exif, i.stored_width || 'x' || i.stored_height AS stored,
       i.width || 'x' || i.height AS upright, i.status,
       count(DISTINCT f.face_index) AS faces,
       count(DISTINCT t.text_id) FILTER (WHERE t.type = 'LINE') AS lines,
       string_agg(DISTINCT l.name, ', ' ORDER BY l.name) AS labels
FROM images AS i
LEFT JOIN faces AS f USING (run_id, key)
LEFT JOIN text AS t USING (run_id, key)
LEFT JOIN labels AS l USING (run_id, key)
GROUP BY ALL ORDER BY i.key
"""

DEFAULT_ANALYSES = ("labels", "faces", "text", "moderation", "celebrities")
MODEL = "arn:aws:rekognition:us-east-1:123456789012:project/boxes/version/boxes.2026-01-01/1767261600000"
ADAPTER = "arn:aws:rekognition:us-east-1:123456789012:project/moderation/version/strict.1/1767261600001"


@dataclass(frozen=True)
class Extra:
    """One part of `--more-analyses`: its analyses, the endpoint's flags (a hosted model...), what it
    seeds in the bucket, the job's environment and flags, and a query over its tables printed after the
    default one."""

    analyses: tuple[str, ...]
    endpoint_args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    run_args: tuple[str, ...] = ()
    query: str = ""
    seed: Callable[[object, str], object] | None = None


MORE_ANALYSES: list[Extra] = [
    Extra(
        analyses=("ppe",),
        query="""
SELECT key, count(*) AS persons, sum(equipment_count) AS equipment
FROM ppe_persons GROUP BY key ORDER BY key
""",
    ),
    Extra(
        analyses=("custom_labels",),
        endpoint_args=("--custom-labels-model", MODEL, "--model-start-seconds", "2"),
        env={
            "REKBATCH_ANALYSES__CUSTOM_LABELS__MODELS": json.dumps([MODEL]),
            "REKBATCH_ANALYSES__CUSTOM_LABELS__POLL_SECONDS": "0.5",
        },
        run_args=("--start-models",),  # the model is STOPPED: the run starts it and stops it at the end
        query="""
SELECT key, name, round(confidence, 1) AS confidence, box_left_px AS left_px, box_top_px AS top_px,
       box_width_px AS width_px, box_height_px AS height_px
FROM custom_labels ORDER BY key, name
""",
    ),
    Extra(
        analyses=(),  # moderation runs already: with an adapter, and its ContentTypes kept
        endpoint_args=("--moderation-adapter", ADAPTER),
        env={"REKBATCH_ANALYSES__MODERATION__PROJECT_VERSION": json.dumps(ADAPTER)},
        query="""
SELECT key, name, parent_name, adapter IS NOT NULL AS by_adapter,
       list_transform(content_types, lambda t: t.name) AS content_types
FROM moderation ORDER BY key, name
""",
    ),
    Extra(
        analyses=("user_search",),  # every face searched among the users of s3://BUCKET/people/
        seed=seed_people,
        run_args=("--collection", "demo-people", "--users", f"s3://{BUCKET}/people/"),
        query=(ROOT / "docs" / "queries" / "images_of_each_person.sql").read_text(),  # the ready query
    ),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="demo-output", help="folder for the tables (replaced)")
    parser.add_argument("--tps", type=float, default=50.0, help="the local endpoint's quota per operation")
    parser.add_argument(
        "--more-analyses",
        action="store_true",
        help="also ppe, custom_labels (with --start-models), a moderation adapter and user_search, "
        "and their queries",
    )
    args = parser.parse_args()
    output = Path(args.output).resolve()
    shutil.rmtree(output, ignore_errors=True)
    extras = MORE_ANALYSES if args.more_analyses else []
    endpoint_args = [flag for extra in extras for flag in extra.endpoint_args]
    env = {name: value for extra in extras for name, value in extra.env.items()}

    with tempfile.TemporaryDirectory() as work, LocalStack(tps=args.tps, extra_args=endpoint_args) as stack:
        truth = seed_samples(stack.s3_client(), BUCKET, PREFIX, Path(work))
        for extra in extras:
            if extra.seed is not None:
                extra.seed(stack.s3_client(), BUCKET)
        print(
            f"local stack: S3 {stack.s3_url}, Rekognition {stack.rekognition_url}; "
            f"s3://{BUCKET}/ holds {len(truth.in_prefix())} sample objects under {PREFIX} "
            f"and {len(truth.outside_prefix())} outside it"
        )
        command = [
            sys.executable,
            "-m",
            "batch",
            "run",
            "--config",
            str(ROOT / "configs" / "local.toml"),
            "--input",
            f"s3://{BUCKET}/{PREFIX}",
            "--output",
            str(output),
            "--tps",
            str(args.tps),
            "--summary-json",
            str(Path(work) / "summary.json"),
        ]
        if extras:
            analyses = DEFAULT_ANALYSES + tuple(a for extra in extras for a in extra.analyses)
            command += ["--analyses", ",".join(analyses), *(f for extra in extras for f in extra.run_args)]
        reports = []
        again = "the same run again: nothing changed, nothing to call"
        if extras:  # custom_labels reads its model's status (free calls), and starts nothing
            again = "the same run again: nothing changed, no image to analyse, no model started"
        for what in ("the first run", again):
            print(f"\n# {what}\n$ python", " ".join(command[1:]), flush=True)
            before = len(stack.calls())
            code = subprocess.run(command, env={**os.environ, **stack.env, **env}, check=False).returncode
            if code != 0:
                print(f"the job exited with {code}", file=sys.stderr)
                return code
            print(f"the local endpoint logged {len(stack.calls()) - before} calls")
            reports.append(json.loads((Path(work) / "summary.json").read_text())["report"])

    print(f"\nDuckDB over the committed files of {output} (`python -m batch views --output {output}`):")
    print(QUERY.strip())
    views.connect(str(output)).sql(QUERY).show(max_rows=100, max_width=200)
    for extra in extras:
        if extra.query:
            print(extra.query.strip())
            views.connect(str(output)).sql(extra.query).show(max_rows=100, max_width=200)
    if reports[0] is None:
        print("\nthe run report was not written (see the summary above)", file=sys.stderr)
        return 1
    print(f"\nthe first run's report (one HTML file, works offline): {reports[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
