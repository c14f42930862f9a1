"""The demo: the batch job end to end on the local stack (`make demo`).

Starts moto's S3 server and our Rekognition endpoint on loopback, seeds a bucket with the sample
images, runs `python -m batch run` against it with a LocalCluster of worker processes, runs it again
(an incremental run: nothing changed, so no calls), prints the summaries and a DuckDB query over the
committed output (the views `rekbatch views` prints), stops the servers, and ends with the path of the
first run's HTML report (written by the job into the output's `_reports/` folder).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from batch.query import views
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="demo-output", help="folder for the tables (replaced)")
    parser.add_argument("--tps", type=float, default=50.0, help="the local endpoint's quota per operation")
    args = parser.parse_args()
    output = Path(args.output).resolve()
    shutil.rmtree(output, ignore_errors=True)

    with tempfile.TemporaryDirectory() as work, LocalStack(tps=args.tps) as stack:
        truth = seed_samples(stack.s3_client(), BUCKET, PREFIX, Path(work))
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
        reports = []
        for what in ("the first run", "the same run again: nothing changed, nothing to call"):
            print(f"\n# {what}\n$ python", " ".join(command[1:]), flush=True)
            before = len(stack.calls())
            code = subprocess.run(command, env={**os.environ, **stack.env}, check=False).returncode
            if code != 0:
                print(f"the job exited with {code}", file=sys.stderr)
                return code
            print(f"the local endpoint logged {len(stack.calls()) - before} calls")
            reports.append(json.loads((Path(work) / "summary.json").read_text())["report"])

    print(f"\nDuckDB over the committed files of {output} (`python -m batch views --output {output}`):")
    print(QUERY.strip())
    views.connect(str(output)).sql(QUERY).show(max_rows=100, max_width=200)
    if reports[0] is None:
        print("\nthe run report was not written (see the summary above)", file=sys.stderr)
        return 1
    print(f"\nthe first run's report (one HTML file, works offline): {reports[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
