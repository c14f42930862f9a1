"""Shared fixtures: the local stack (moto S3 + our Rekognition endpoint) and the generated sample set."""

from __future__ import annotations

import io
import multiprocessing.process
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from PIL import Image, ImageDraw

from batch.analyses.registry import all_tables
from batch.core.manifest import Manifest, data_file_name
from batch.storage.commits import RunStore
from batch.storage.sink import write_tables
from local_stack import samples as sample_set
from local_stack.samples import GroundTruth
from local_stack.stack import LocalStack


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


def wait_for(condition: Callable[[], Any], timeout: float = 120.0) -> Any:
    """`condition()`'s first truthy value, polled every 20 ms; fails the test after `timeout` seconds
    (a bound for a hang, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return value


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
    schemas: Mapping[str, Any] | None = None,
    segment: int = 1,
    final: bool = True,
) -> Manifest:
    """Write one batch of rows as the job would and commit it as run `run_id` (attempt 1, batch 0);
    give later runs a later `committed_at` when a test reads which run is the latest. `schemas`
    replaces some tables' schemas (e.g. as an older version of the job wrote them). `segment` and
    `final`: one of a long run's segments (`batch.core.segments`), its batch numbered `segment - 1`."""
    files = write_tables(
        store.destination,
        rows_by_table,
        {**all_tables(), **(schemas or {})},
        dt=dt,
        name=data_file_name(run_id, 1, segment - 1),
        compression="none",
        s3_client=store.s3_client,
    )
    at = committed_at
    manifest = Manifest(
        run_id,
        1,
        (1,),
        at,
        at,
        dt,
        "s3://in/p/",
        "digest",
        analyses or {},
        tuple(files),
        {"listed": 0},
        segment=segment,
        final=final,
        batches=((1, segment - 1),),
    )
    assert store.commit(manifest)
    return manifest


# --- make test-fast ---------------------------------------------------------------------------------
# `make test-fast` runs `pytest -m "not integration" --hypothesis-profile=fast --forbid-servers`: the
# tests that start no server, property tests with 10 examples instead of 100 and those that ask for more
# with `examples(n)` a tenth of n. `make test` (plain `pytest`) runs everything with Hypothesis' default
# profile and no guard: neither option changes it.

settings.register_profile("fast", max_examples=10)


def examples(full: int) -> int:
    """`max_examples` for a property test that wants more than the profile's: `full` under the default
    profile, scaled down as the loaded profile is (`--hypothesis-profile=fast`: a tenth)."""
    return max(1, full * settings().max_examples // settings.get_profile("default").max_examples)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--forbid-servers",
        action="store_true",
        help="fail a test not marked integration that listens on a socket or starts a subprocess, "
        "a process or a Dask cluster (make test-fast); `offline_subprocess` tests may run a subprocess",
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Under --forbid-servers, from the setup of each test not marked integration (module fixtures
    such as `local_stack` included) to its teardown, starting a server fails the test."""
    if not item.config.getoption("--forbid-servers") or item.get_closest_marker("integration"):
        yield
        return

    def refuse(what: str) -> Callable[..., Any]:
        def refused(*_args: Any, **_kwargs: Any) -> Any:
            pytest.fail(f"{item.nodeid} {what}: mark it @pytest.mark.integration (--forbid-servers)")

        return refused

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "listen", refuse("listens on a socket (a server)"))
        patch.setattr(multiprocessing.process.BaseProcess, "start", refuse("starts a process"))
        if not item.get_closest_marker("offline_subprocess"):
            patch.setattr(subprocess.Popen, "__init__", refuse("starts a subprocess"))
        if "distributed" in sys.modules:  # an in-process LocalCluster listens on no socket
            spec = sys.modules["distributed"].deploy.spec
            patch.setattr(spec.SpecCluster, "__init__", refuse("starts a Dask cluster"))
        yield
