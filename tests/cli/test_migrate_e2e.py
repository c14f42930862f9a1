"""`rekbatch collection migrate SOURCE TARGET` end to end on the local stack, as subprocesses.

What a user checks: TARGET ends with one face set per image of SOURCE under the same ExternalImageIds,
each image indexed once even when the migration was killed (-9) midway and run again (the endpoint's
call log); the dry run calls nothing and prices; a later run with `--collection TARGET` indexes nothing
again; `--delete-source` deletes SOURCE only once every image is in TARGET; an image changed since it
was indexed is reported and the exit code says the migration is incomplete. And the `collection`
commands use the quota read from Service Quotas, and say so.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from conftest import make_image
from processes import wait_for

from batch.core.external_ids import external_image_id
from batch.query import views
from local_stack.stack import LocalStack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "migrate"
QUOTA = 20  # the endpoint's quota per operation, which its Service Quotas lists
CONFIG = """
[dask]
n_workers = 1
threads_per_worker = 2
batch_size = 3

[rekognition]
calls_in_flight = 2
read_timeout = 10.0
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    # SOURCE was created years ago, with face model 6.0: the endpoint creates new collections at 7.0.
    collections = tmp_path_factory.mktemp("collections") / "collections.json"
    collections.write_text(json.dumps({"src": {"created": 1.6e9, "faces": {}, "model": "6.0"}}))
    extra = ["--latency-ms", "50", "--collections-file", str(collections)]
    with LocalStack(tps=QUOTA, extra_args=extra) as local:
        local.s3_client().create_bucket(Bucket=BUCKET)
        yield local


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "migrate.toml"
    path.write_text(CONFIG)  # no tps: the quotas are read from Service Quotas
    return path


def put_images(stack: LocalStack, prefix: str, n: int) -> list[str]:
    keys = []
    for i in range(n):
        rects = tuple(("face", (20 + 90 * f, 30, 60, 80)) for f in range(1 + i % 2))
        key = f"{prefix}img-{i:02d}.jpg"
        stack.s3_client().put_object(Bucket=BUCKET, Key=key, Body=make_image(size=(240, 160), rects=rects))
        keys.append(key)
    return keys


def command(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "batch", *args, "--config", str(config)]


def rekbatch(stack: LocalStack, config: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, **stack.env}
    return subprocess.run(
        command(config, *args), env=environment, cwd=tmp, capture_output=True, text=True, timeout=300
    )


def index_run(stack: LocalStack, config: Path, tmp: Path, prefix: str, collection: str) -> None:
    done = rekbatch(stack, config, tmp, "run", "--input", f"s3://{BUCKET}/{prefix}", "--output",
                    str(tmp / "out"), "--analyses", "index_faces", "--collection", collection)  # fmt: skip
    assert done.returncode == 0, done.stderr


def rekognition(stack: LocalStack) -> Any:
    return boto3.session.Session().client(
        "rekognition", endpoint_url=stack.env["AWS_ENDPOINT_URL_REKOGNITION"], region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip


def external_ids(stack: LocalStack, collection: str) -> Counter[str]:
    faces = rekognition(stack).list_faces(CollectionId=collection, MaxResults=4096)["Faces"]
    return Counter(face["ExternalImageId"] for face in faces)


def model_versions(stack: LocalStack, collection: str) -> set[str]:
    faces = rekognition(stack).list_faces(CollectionId=collection, MaxResults=4096)["Faces"]
    return {face["IndexFacesModelVersion"] for face in faces}


def index_calls(stack: LocalStack, since: int) -> Counter[str]:
    """IndexFaces calls the endpoint answered after the first `since` calls of its log, per key."""
    calls = stack.calls()[since:]
    return Counter(c["name"] for c in calls if c["operation"] == "IndexFaces" and c["outcome"] == "ok")


def test_migrate_killed_midway_then_again_indexes_each_image_once(
    stack: LocalStack, config: Path, tmp_path: Path
) -> None:
    keys = put_images(stack, "people/", 9)
    index_run(stack, config, tmp_path, "people/", "src")
    source_ids = external_ids(stack, "src")
    migrate = ["collection", "migrate", "src", "dst", "--output", str(tmp_path / "out")]

    before = len(stack.calls(None))
    dry = rekbatch(stack, config, tmp_path, *migrate, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert len(stack.calls(None)) == before, "a dry run called an endpoint"
    assert "images to index again: 9 (0 already in dst)" in dry.stdout
    assert "IndexFaces: at most 9 calls, at most $0.0090 at list price (0 zero-byte not sent;" in dry.stdout
    assert f"about {sum(source_ids.values())} (" in dry.stdout

    since = len(stack.calls())
    environment = {**os.environ, **stack.env}
    slow = subprocess.Popen(
        command(config, *migrate, "--tps", "2"), env=environment, cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_for(lambda: sum(index_calls(stack, since).values()) >= 4 or slow.poll() is not None)
    slow.send_signal(signal.SIGKILL)
    slow.wait()
    assert slow.returncode == -signal.SIGKILL, "the migration ended before it was killed"
    killed = sum(index_calls(stack, since).values())
    assert 0 < killed < len(keys)
    times = [c["ts"] for c in stack.calls()[since:] if c["operation"] == "IndexFaces"]
    assert times[-1] - times[0] >= (len(times) - 1) / 2 * 0.8, "IndexFaces went faster than --tps 2"

    done = rekbatch(stack, config, tmp_path, *migrate)
    assert done.returncode == 0, done.stderr
    assert "migrate src (face model 6.0) -> dst (face model 7.0, existing)" in done.stdout
    assert f"rekbatch: quotas, calls/s: {QUOTA} for each operation (service-quotas)" in done.stderr
    assert index_calls(stack, since) == Counter(keys), "an image was indexed twice, or not at all"
    # What the killed invocation indexed is kept (its complete batches) or taken from ListFaces.
    found = re.search(r"; (\d+) kept from an earlier invocation, (\d+) taken from ListFaces", done.stdout)
    assert found is not None, done.stdout
    assert int(found[1]) + int(found[2]) == killed
    assert external_ids(stack, "dst") == source_ids
    assert model_versions(stack, "src") == {"6.0"}
    assert model_versions(stack, "dst") == {"7.0"}
    with views.connect(str(tmp_path / "out")) as sql:
        quotas = sql.sql("SELECT quotas FROM runs WHERE run_id LIKE 'migrate-%'").fetchall()
    assert {"operation": "IndexFaces", "tps": QUOTA, "source": "service-quotas"} in quotas[0][0]

    # Nightly runs go on against TARGET: nothing indexed again.
    since = len(stack.calls())
    index_run(stack, config, tmp_path, "people/", "dst")
    assert index_calls(stack, since) == Counter()
    assert external_ids(stack, "dst") == source_ids

    # Nothing left to index: --delete-source deletes SOURCE (its name repeated to confirm).
    wrong = rekbatch(stack, config, tmp_path, *migrate, "--delete-source", "dst")
    assert wrong.returncode == 2
    assert wrong.stderr.strip().splitlines()[-1].startswith("rekbatch: error: --delete-source: must repeat")
    deleted = rekbatch(stack, config, tmp_path, *migrate, "--delete-source", "src")
    assert deleted.returncode == 0, deleted.stderr
    assert "  images: 0 to index again (9 already in dst)" in deleted.stdout
    assert "deleted collection src" in deleted.stdout
    assert "src" not in rekognition(stack).list_collections()["CollectionIds"]


def test_an_image_changed_since_indexed_leaves_the_migration_incomplete(
    stack: LocalStack, config: Path, tmp_path: Path
) -> None:
    keys = put_images(stack, "changed/", 3)
    index_run(stack, config, tmp_path, "changed/", "src-changed")
    stack.s3_client().put_object(Bucket=BUCKET, Key=keys[1], Body=make_image(size=(200, 120)))
    migrate = ["collection", "migrate", "src-changed", "dst-changed", "--output", str(tmp_path / "out")]
    done = rekbatch(stack, config, tmp_path, *migrate, "--delete-source", "src-changed")
    assert done.returncode == 6
    assert done.stderr.strip().splitlines()[-1] == (
        "rekbatch: error: collection migrate: 1 images changed or deleted since they were indexed and 0 "
        "failed: not in dst-changed; --delete-source not done"
    )
    assert "src-changed" in rekognition(stack).list_collections()["CollectionIds"]

    # Mistakes end before any call, with one line: no committed run indexed into that collection, or
    # a config whose index_faces settings are not those the runs used (their digest differs).
    before = len(stack.calls(None))
    unknown = rekbatch(stack, config, tmp_path, "collection", "migrate", "nosuch", "x", "--output",
                       str(tmp_path / "out"))  # fmt: skip
    assert (unknown.returncode, unknown.stderr.strip()) == (
        7,
        f"rekbatch: error: no committed run under {tmp_path / 'out'} indexed into nosuch",
    )
    other = tmp_path / "other.toml"
    other.write_text(CONFIG + "\n[analyses.index_faces]\nmax_faces = 5\n")
    refused = rekbatch(stack, other, tmp_path, *migrate)
    assert refused.returncode == 2
    assert refused.stderr.strip().startswith("rekbatch: error: collection migrate: 3 keys of src-changed's")
    assert len(stack.calls(None)) == before
    source = external_ids(stack, "src-changed")
    assert external_ids(stack, "dst-changed") == +Counter(
        {external: n for external, n in source.items() if external != external_image_id(keys[1])}
    )


def test_collection_commands_use_the_quota_service_quotas_gives(
    stack: LocalStack, config: Path, tmp_path: Path
) -> None:
    done = rekbatch(stack, config, tmp_path, "collection", "list")
    assert done.returncode == 0, done.stderr
    read = f"rekbatch: quotas, calls/s: {QUOTA} for each operation (service-quotas)"
    assert done.stderr.splitlines() == [read]
    assert stack.calls("service-quotas"), "Service Quotas was not asked"
    flagged = rekbatch(stack, config, tmp_path, "collection", "list", "--tps", "3")
    assert flagged.stderr.splitlines() == ["rekbatch: quotas, calls/s: 3 for each operation (flag)"]


def killed_migration(stack: LocalStack, config: Path, tmp: Path, migrate: list[str], calls: int) -> None:
    """Start the migration at 1 IndexFaces/s and kill -9 it once `calls` IndexFaces were answered (its
    batch of 10 images not written yet)."""
    since = len(stack.calls())
    environment = {**os.environ, **stack.env}
    slow = subprocess.Popen(
        command(config, *migrate, "--tps", "1"), env=environment, cwd=tmp,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_for(lambda: sum(index_calls(stack, since).values()) >= calls or slow.poll() is not None)
    slow.send_signal(signal.SIGKILL)
    slow.wait()
    assert slow.returncode == -signal.SIGKILL, "the migration ended before it was killed"


def face_ids(stack: LocalStack, collection: str, key: str) -> set[str]:
    faces = rekognition(stack).list_faces(CollectionId=collection, MaxResults=4096)["Faces"]
    return {face["FaceId"] for face in faces if face["ExternalImageId"] == external_image_id(key)}


def test_a_rerun_after_a_kill_indexes_an_image_changed_since_again_and_bills_every_call(
    stack: LocalStack, config: Path, tmp_path: Path
) -> None:
    """Findings-rekextras #1 and #7: the killed attempt indexed img-00 (1 face) into TARGET; the photo then
    changed (3 faces) and a nightly run indexed the new version into SOURCE. The rerun must not commit
    the old version's face as the new one's: it deletes it and indexes the new version. And the bill
    counts every IndexFaces the endpoint answered, the killed attempt's included."""
    keys = put_images(stack, "killed/", 4)
    index_run(stack, config, tmp_path, "killed/", "src-k")
    whole = tmp_path / "whole.toml"  # one batch: nothing is written before the kill
    whole.write_text(CONFIG.replace("batch_size = 3", "batch_size = 10"))
    migrate = ["collection", "migrate", "src-k", "dst-k", "--output", str(tmp_path / "out")]
    start = len(stack.calls())
    killed_migration(stack, whole, tmp_path, migrate, calls=2)
    stale = face_ids(stack, "dst-k", keys[0])
    assert len(stale) == 1, "img-00 was not indexed before the kill"

    three = tuple(("face", (10 + 95 * f, 30, 60, 80)) for f in range(3))
    stack.s3_client().put_object(Bucket=BUCKET, Key=keys[0], Body=make_image(size=(300, 160), rects=three))
    nightly = len(stack.calls())
    index_run(stack, config, tmp_path, "killed/", "src-k")  # the new version goes into SOURCE
    killed = index_calls(stack, start)
    killed.subtract(index_calls(stack, nightly))
    killed = +killed  # the killed attempt's IndexFaces by key
    rerun = len(stack.calls())
    done = rekbatch(stack, whole, tmp_path, *migrate)
    assert done.returncode == 0, done.stderr

    again = index_calls(stack, rerun)
    assert again[keys[0]] == 1, "the new version of img-00 was not indexed into TARGET"
    assert all(again[key] == 0 for key in killed if key != keys[0]), "an unchanged image indexed twice"
    assert again + killed == Counter(keys) + Counter({keys[0]: 1})
    assert not face_ids(stack, "dst-k", keys[0]) & stale, "the old version's face is still in TARGET"
    assert len(face_ids(stack, "dst-k", keys[0])) == 3
    deleted = [c for c in stack.calls()[rerun:] if c["operation"] == "DeleteFaces"]
    assert [c["outcome"] for c in deleted] == ["ok"]
    assert f", {killed.total() - 1} taken from ListFaces, 1 stale faces deleted (stored by" in done.stdout
    new_etag = stack.s3_client().head_object(Bucket=BUCKET, Key=keys[0])["ETag"].strip('"')
    with views.connect(str(tmp_path / "out")) as sql:
        rows = sql.sql(
            "SELECT etag, count(*) FROM indexed_faces WHERE run_id LIKE 'migrate-%' AND key = ? GROUP BY 1",
            params=[keys[0]],
        ).fetchall()
        ((cost, calls),) = sql.sql(
            "SELECT estimated_cost_usd, calls FROM runs WHERE run_id LIKE 'migrate-%' AND input LIKE ?",
            params=["%/killed/"],
        ).fetchall()
    assert rows == [(new_etag, 3)]

    # #7: every IndexFaces the endpoint answered for the migration (killed attempt and rerun) is billed;
    # one more only if the kill fell between an image's record and its call leaving.
    answered = killed.total() + again.total()
    paid = ("ok", "in-flight")
    billed = sum(c["count"] for c in calls if c["operation"] == "IndexFaces" and c["outcome"] in paid)
    assert answered <= billed <= answered + 1
    assert cost == pytest.approx(billed * 0.001)
    before = re.search(r"\(of them (\d+) calls by an earlier invocation whose batch was not", done.stdout)
    assert before is not None, done.stdout
    assert int(before[1]) == billed - again.total()


@pytest.fixture(scope="module")
def shared(
    stack: LocalStack, config: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[str]]:
    """An output whose run indexed 4 images into `src-s`: the SOURCE of the tests that change nothing."""
    tmp = tmp_path_factory.mktemp("shared")
    keys = put_images(stack, "shared/", 4)
    stack.s3_client().put_object(Bucket=BUCKET, Key="shared/empty.jpg", Body=b"")  # skipped, never sent
    index_run(stack, config, tmp, "shared/", "src-s")
    return tmp, keys


def test_the_dry_run_counts_no_call_for_an_empty_image_and_says_its_count_is_an_upper_bound(
    stack: LocalStack, config: Path, shared: tuple[Path, list[str]]
) -> None:
    """Findings-rekextras #9: the dry run priced images the run never sends as if they were sent."""
    tmp_path, _ = shared
    dry = rekbatch(stack, config, tmp_path, "collection", "migrate", "src-s", "dst-d", "--output",
                   str(tmp_path / "out"), "--dry-run")  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert "  images to index again: 5 (0 already in dst-d)" in dry.stdout
    assert "  IndexFaces: at most 4 calls, at most $0.0040 at list price (1 zero-byte not sent;" in dry.stdout


def test_faces_of_target_no_attempt_of_the_migration_stored_are_not_taken(
    stack: LocalStack, config: Path, shared: tuple[Path, list[str]]
) -> None:
    """Findings-rekextras #1: TARGET already holds faces under the images' ExternalImageIds (another
    output's runs, here an IndexFaces of another photo): the migration indexes every image itself, and
    commits no row of the foreign faces."""
    tmp_path, keys = shared
    client = rekognition(stack)
    client.create_collection(CollectionId="dst-f")
    other = make_image(size=(200, 140), rects=(("face", (30, 30, 60, 80)),))
    foreign = {
        client.index_faces(
            CollectionId="dst-f", Image={"Bytes": other}, ExternalImageId=external_image_id(key)
        )["FaceRecords"][0]["Face"]["FaceId"]
        for key in keys
    }
    since = len(stack.calls())
    done = rekbatch(stack, config, tmp_path, "collection", "migrate", "src-s", "dst-f", "--output",
                    str(tmp_path / "out"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert index_calls(stack, since) == Counter(keys)
    assert ", 0 taken from ListFaces" in done.stdout
    with views.connect(str(tmp_path / "out")) as sql:
        committed = {
            row[0]
            for row in sql.sql(
                "SELECT face_id FROM indexed_faces WHERE collection_id = 'dst-f' AND run_id LIKE 'migrate-%'"
            ).fetchall()
        }
    assert committed, "no face committed"
    assert not committed & foreign
    assert foreign <= {f["FaceId"] for f in client.list_faces(CollectionId="dst-f")["Faces"]}, "deleted"


def test_sigterm_stops_the_migration_with_one_line_and_143_and_a_rerun_finishes_it(
    stack: LocalStack, config: Path, shared: tuple[Path, list[str]]
) -> None:
    """Findings-rekextras #6: cron, Kubernetes and Airflow stop with SIGTERM."""
    tmp_path, keys = shared
    migrate = ["collection", "migrate", "src-s", "dst-t", "--output", str(tmp_path / "out")]
    since = len(stack.calls())
    environment = {**os.environ, **stack.env}
    slow = subprocess.Popen(
        command(config, *migrate, "--tps", "1"), env=environment, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_for(lambda: sum(index_calls(stack, since).values()) >= 1 or slow.poll() is not None)
    slow.send_signal(signal.SIGTERM)
    _, stderr = slow.communicate(timeout=120)
    assert slow.returncode == 143, stderr
    assert stderr.strip().splitlines()[-1] == (
        "rekbatch: error: collection migrate: stopped by SIGTERM, nothing committed; run the same command "
        "again to continue"
    )
    assert "Traceback" not in stderr
    done = rekbatch(stack, config, tmp_path, *migrate)
    assert done.returncode == 0, done.stderr
    assert index_calls(stack, since) == Counter(keys)
    helped = subprocess.run(command(config, "collection", "--help")[:-2], capture_output=True, text=True)
    assert re.search(r"^  143  migrate: stopped by SIGTERM", helped.stdout, re.MULTILINE)
