"""The CPU cost of the progress events (docs/design/progress.md).

    python scripts/bench_progress.py [EVENTS_PER_SECOND] [SECONDS]

A LocalCluster of 2 worker processes (the job's `dask_client`); each worker sends EVENTS_PER_SECOND
events of the run's shape (5 operations, 3 running batches) for SECONDS through `ProgressFeed` and
`Worker.log_event`, to a driver `Progress` subscribed to the topic; idle spans of the same length between.
Prints the CPU seconds of the driver and of the workers in each span, and the cost of counting an attempt.
"""

from __future__ import annotations

import sys
import time
import timeit
from datetime import UTC, datetime
from typing import Any

from distributed import get_worker

from batch.aws.executor import dask_client
from batch.config.model import DaskConfig
from batch.run.progress import Progress, ProgressFeed, progress_topic
from batch.run.summary import RunSummary, cpu_seconds

OPERATIONS = ("DetectLabels", "DetectFaces", "DetectText", "DetectModerationLabels", "RecognizeCelebrities")
TOPIC = progress_topic("bench/1")


def send_events(rate: float, seconds: float) -> int:
    feed = ProgressFeed(get_worker().log_event)
    end, sent = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        for operation in OPERATIONS:
            for _ in range(10):
                feed.call(TOPIC, operation, "ok")
        for batch in range(3):
            feed.image(TOPIC, batch, "analysed")
        feed.flush()
        sent += 1
        time.sleep(1 / rate)
    return sent


def idle(seconds: float) -> int:
    time.sleep(seconds)
    return 0


class Unlisted:
    total = None


def main() -> None:
    rate = float(sys.argv[1]) if len(sys.argv) > 1 else 100.0
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
    feed = ProgressFeed(lambda topic, message: None)
    per_call = timeit.timeit(lambda: feed.call(TOPIC, "DetectLabels", "ok"), number=100_000) / 100_000
    print(f"counting an attempt: {per_call * 1e6:.2f} us")
    with dask_client(DaskConfig(n_workers=2, threads_per_worker=2)) as client:
        summary = RunSummary("bench", "s3://b/p/", "out", ("labels",), "d", "", datetime.now(UTC))
        progress = Progress(client, "bench/1", dict.fromkeys(OPERATIONS, 50.0), Unlisted(), summary)
        client.subscribe_topic(TOPIC, progress.on_event)
        workers = list(client.scheduler_info(n_workers=-1)["workers"])
        for span in ("idle", "events", "idle", "events"):
            driver, on_workers = cpu_seconds(), sum(client.run(cpu_seconds).values())
            args: tuple[Any, ...] = (seconds,) if span == "idle" else (rate, seconds)
            task = idle if span == "idle" else send_events
            futures = [client.submit(task, *args, pure=False, workers=[w]) for w in workers]
            events = sum(f.result() for f in futures)
            driver, on_workers = cpu_seconds() - driver, sum(client.run(cpu_seconds).values()) - on_workers
            print(f"{span:6}: {events:5} events, CPU s driver {driver:.3f}, workers {on_workers:.3f}")


if __name__ == "__main__":
    main()
