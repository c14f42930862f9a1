"""Shared fixtures: the local stack (moto S3 + our Rekognition endpoint) and the generated sample set."""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from batch.analyses import all_tables
from batch.storage.commits import RunStore
from local_stack import samples as sample_set
from local_stack.samples import GroundTruth
from local_stack.stack import LocalStack
from batch.core.manifest import Manifest, data_file_name
from batch.storage.sink import write_tables


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated sample files (and ground_truth.json), once per session."""
    path = tmp_path_factory.mktemp("samples")
    sample_set.generate(path)
    return path


@pytest.fixture(scope="session")
def samples(sample_dir: Path) -> GroundTruth:
    """Ground truth of the generated sample set (keys = file names, not yet placed in a bucket)."""
    return sample_set.load(sample_dir)


@pytest.fixture(scope="module")
def local_stack() -> Iterator[LocalStack]:
    """moto S3 + the Rekognition endpoint on loopback, once per test module, no quota."""
    with LocalStack() as stack:
        yield stack


def make_image(
    size: tuple[int, int] = (320, 240),
    rects: tuple[tuple[str, tuple[int, int, int, int]], ...] = (),
    fmt: str = "JPEG",
) -> bytes:
    """A small test image: grey background plus (kind, (left, top, width, height)) palette rectangles."""
    img = Image.new("RGB", size, (140, 135, 130))
    draw = ImageDraw.Draw(img)
    for kind, (left, top, w, h) in rects:
        draw.rectangle([left, top, left + w - 1, top + h - 1], fill=sample_set.COLOURS[kind])
    buf = io.BytesIO()
    img.save(buf, fmt, **(sample_set.JPEG_OPTIONS if fmt == "JPEG" else {}))
    return buf.getvalue()


#: When `commit_rows` commits a run unless told otherwise.
COMMITTED_AT = datetime(2026, 11, 25, 2, tzinfo=UTC)


def commit_rows(
    store: RunStore,
    run_id: str,
    rows_by_table: Mapping[str, list[dict[str, Any]]],
    *,
    dt: str = "2026-11-25",
    analyses: Mapping[str, str] | None = None,
    committed_at: datetime = COMMITTED_AT,
) -> Manifest:
    """Write one batch of rows as the job would and commit it as run `run_id` (attempt 1, batch 0);
    give later runs a later `committed_at` when a test reads which run is the latest."""
    files = write_tables(
        store.destination,
        rows_by_table,
        all_tables(),
        dt=dt,
        name=data_file_name(run_id, 1, 0),
        compression="none",
        s3_client=store.s3_client,
    )
    at = committed_at
    manifest = Manifest(
        run_id, 1, (1,), at, at, dt, "s3://in/p/", "digest", analyses or {}, tuple(files), {"listed": 0}
    )
    assert store.commit(manifest)
    return manifest
