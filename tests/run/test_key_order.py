"""batch.run.key_order: an inventory's objects come out in S3's listing order (UTF-8 binary), whole."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batch.core.inventory import InventoryInvalid
from batch.core.inventory_batches import objects_batch
from batch.core.selection import ListedObject
from batch.run import key_order

T0 = datetime(2026, 11, 25, tzinfo=UTC)
keys = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=12)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(keys, st.integers(0, 10**12), st.booleans()), max_size=40), st.integers(1, 7))
def test_objects_come_out_in_utf8_byte_order_and_unchanged(rows: list, chunk: int) -> None:
    objects = [
        ListedObject(key, f'"{i}"', size, T0 + timedelta(seconds=i), "v1" if versioned else None)
        for i, (key, size, versioned) in enumerate(rows)
    ]
    defaults = (key_order.CHUNK_ROWS, key_order.RUN_BYTES, key_order.READ_ROWS, key_order.FAN_IN)
    # Several runs of a batch or two each, read back a few rows at a time, merged 2 at a time first.
    key_order.CHUNK_ROWS, key_order.RUN_BYTES, key_order.READ_ROWS, key_order.FAN_IN = chunk, 1, 2, 2
    try:
        out = list(key_order.sorted_by_key(objects))
    finally:
        key_order.CHUNK_ROWS, key_order.RUN_BYTES, key_order.READ_ROWS, key_order.FAN_IN = defaults
    assert [o.key.encode() for o in out] == sorted(o.key.encode() for o in objects)
    assert sorted(out, key=lambda o: (o.key, o.etag)) == sorted(objects, key=lambda o: (o.key, o.etag))


def test_an_error_of_the_input_comes_out_as_itself() -> None:
    def failing() -> Iterator[pa.RecordBatch]:
        yield objects_batch([ListedObject("a.jpg", "e", 1, T0)])
        raise InventoryInvalid("run.inventory: s3://d/f: MD5 x is not the manifest's y")

    with pytest.raises(InventoryInvalid, match=r"^run.inventory: s3://d/f: MD5 x is not"):
        list(key_order.sorted_batches(failing()))


@pytest.mark.integration
def test_a_temp_folder_that_cannot_hold_the_sort_ends_it_with_one_line(tmp_path: Path) -> None:
    """The sorted file cannot be written (here a file size limit: EFBIG, as ENOSPC on a full /tmp)."""
    code = """
import resource, signal, sys
from datetime import UTC, datetime
from batch.core.errors import InputUnreachable
from batch.core.selection import ListedObject
from batch.run.key_order import sorted_by_key
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, resource.RLIM_INFINITY))
objects = (ListedObject(f"p/{i * 7919 % 200000:08d}.jpg", f"{i:032x}", i, datetime(2026, 1, 1, tzinfo=UTC))
           for i in range(200000))
try:
    next(iter(sorted_by_key(objects)))
except InputUnreachable as exc:
    print(exc)
    sys.exit(3)
"""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    command = [sys.executable, "-c", code]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 3, result.stderr[-2000:]
    assert result.stdout.startswith(f"run.inventory: cannot sort the inventory in {tmp_path}/rekbatch-sort-")


def test_a_signal_during_the_sort_comes_out_as_keyboardinterrupt() -> None:
    """`Shutdown` raises KeyboardInterrupt where the driver is, here in the generator DuckDB reads (a
    dry run's sort): the run must end `interrupted` (130, 143), not with DuckDB's error (exit 1)."""

    def interrupted() -> Iterator[pa.RecordBatch]:
        yield objects_batch([ListedObject("a.jpg", "e", 1, T0)])
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        list(key_order.sorted_batches(interrupted()))
