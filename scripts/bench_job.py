"""The batch job at the quota, side by side with plain boto3 baselines (issue 5, "make bench").

    python scripts/bench_job.py [--images M] [--quota Q] [--burst B] [--high-load F] [--quick]

One LocalStack whose Rekognition endpoint allows Q calls/s per operation (token bucket of capacity B) and
answers after 100 ms + uniform(0, 200) ms, seeded with M distinct small JPEGs; all five analyses per image.
Workloads, one after the other: the job on a LocalCluster of 1 worker process; the job on a real cluster
(`dask scheduler` + `dask worker --nworkers 4`); boto3 with `adaptive` retries in ThreadPoolExecutor(16),
and in a pool sized for the quota by Little's law; the SDK floor (the job's own requests and nothing
around them) in 1 process and in as many as the cluster has workers; then the job on 1 worker against a
second LocalStack at `--high-load` times the quota (default 2: 500 calls/s). The endpoint's caches are
warmed first, so its own CPU does not set the pace. Every figure comes from the endpoint's call log over
the workload's span or from the job's `--summary-json`: the rate limiter is measured, never assumed.
See docs/design/rate-limiter.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from batch.aws.executor import slower_timers_environment
from batch.aws.rekognition import RateLimiter, rekognition_client
from batch.aws.s3 import list_pages, read_header, s3_client, unchanged
from batch.config.model import RekognitionConfig
from batch.core.concurrency import ConcurrencyPlan
from local_stack import samples
from local_stack.stack import LocalStack

BUCKET, PREFIX = "bench", "images/"
ANALYSES = "labels,faces,text,moderation,celebrities"
#: operation -> (boto3 method, extra parameters), as the job calls them with its default config.
OPERATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "DetectLabels": ("detect_labels", {"MinConfidence": 55.0}),
    "DetectFaces": ("detect_faces", {"Attributes": ["ALL"]}),
    "DetectText": ("detect_text", {}),
    "DetectModerationLabels": ("detect_moderation_labels", {"MinConfidence": 50.0}),
    "RecognizeCelebrities": ("recognize_celebrities", {}),
}
SHORT = {
    "DetectLabels": "labels",
    "DetectFaces": "faces",
    "DetectText": "text",
    "DetectModerationLabels": "moderation",
    "RecognizeCelebrities": "celebrities",
}
LATENCY_ARGS = [
    "--latency-ms",
    "100",
    "--latency-jitter-ms",
    "200",
    "--seed",
    "1",
    "--s3-revalidate-after",
    "600",
]
BASELINE_THREADS = 16
JOB_TIMEOUT = 300.0  # seconds; at the targets a workload takes ~10 s
NOTES = """
utilisation: successful calls/s of the operation over the workload's active span (first to last call in
  the call log) / quota. wall: process start to exit (job: includes interpreter, Dask and cluster start-up).
latency (log): the endpoint's latency_ms of successful calls; (client): per API call as the caller sees it,
  botocore's retries and rate waits included (baseline only: the job's summary has no latency).
cpu: job = driver + workers from its summary (4-worker cluster: minus the workers' CPU before the job, plus
  the scheduler's during it);
  baseline and sdk floor = this process's CPU during it (the floor in N processes: theirs). RSS: the
  job's driver; baseline and sdk floor: this process (incl. seeding; N processes: the largest).
  mid-run: every process of the workload (driver, scheduler, nannies, workers; baseline: this one) over
  the middle half of its active span, sampled every 0.5 s: the cost per call of a long run, without
  each process's first calls and the tail.
stack: the endpoint's and moto's CPU during the workload; near 2 cores busy, the machine sets the pace."""


@dataclass
class Workload:
    """What one workload did: its time span (epoch seconds, as the call log's `ts`) and its own figures."""

    name: str
    started: float
    ended: float
    cpu_seconds: float
    peak_rss_mb: float | None
    #: CPU from the first batch to the last (the job's summary: start-up excluded); the baseline has none.
    processing_cpu_seconds: float | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    client_latency_ms: list[float] | None = None  # only the baseline can time its calls itself
    summary: dict[str, Any] | None = None
    #: CPU seconds the local stack (endpoint + moto) spent during the workload: is the stack the bottleneck?
    stack_cpu_seconds: float = 0.0
    #: (epoch seconds, CPU seconds so far) of the workload's processes, every half second (`CpuSampler`).
    cpu_samples: list[tuple[float, float]] = field(default_factory=list)
    #: Processes making the calls (the job: its worker processes), to pair each job with its SDK floor.
    processes: int = 1


# ---- images ---------------------------------------------------------------------------------------------


def make_images(count: int) -> list[bytes]:
    """`count` distinct 480x360 JPEGs (a face, a box, a text line): the seed changes the background noise,
    so every image has its own bytes and the endpoint's per-digest cache cannot hide the work."""
    return [samples.encode(_render(1000 + i), "JPEG", None) for i in range(count)]


def _render(seed: int) -> Any:
    rects = (("face", *samples.FACE_SHAPES["3:4"], "3:4"), samples.BOX, samples.LINE)
    for attempt in range(10):  # random placement can paint itself into a corner; another seed fixes it
        with contextlib.suppress(RuntimeError):
            spec = samples.Spec("bench.jpg", size=(480, 360), rects=rects, seed=seed + 1_000_000 * attempt)
            return samples.render_upright(spec)[0]
    raise RuntimeError(f"no layout for seed {seed}")


def upload(s3: Any, images: Sequence[bytes]) -> None:
    s3.create_bucket(Bucket=BUCKET)
    with ThreadPoolExecutor(16) as pool:  # one PUT is a few ms on moto: parallel keeps seeding ~1 s
        list(
            pool.map(
                lambda i: s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}{i:05d}.jpg", Body=images[i]),
                range(len(images)),
            )
        )


def warm_up(count: int, quota: float) -> float:
    """Have the endpoint fetch and analyse every image once, before anything is measured; returns seconds.

    Cold, the endpoint spends more CPU per call (an S3 GET and a decode per new image) on the cores the
    job uses: the first workload would pay it and the others not. DetectProtectiveEquipment warms the
    same caches without touching the measured operations' quotas; a per-process limiter paces it.
    """
    client = boto3.client("rekognition", config=Config(retries={"mode": "adaptive"}, max_pool_connections=16))
    limiter = RateLimiter(quota)
    started = time.monotonic()

    def one(i: int) -> None:
        limiter.acquire("DetectProtectiveEquipment")
        client.detect_protective_equipment(
            Image={"S3Object": {"Bucket": BUCKET, "Name": f"{PREFIX}{i:05d}.jpg"}}
        )

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(count)))
    return time.monotonic() - started


# ---- the job --------------------------------------------------------------------------------------------


def write_config(path: Path, n_workers: int, args: argparse.Namespace, quota: float | None = None) -> Path:
    """A config with only what the bench must pin; every other key keeps the job's default, so the job's
    own concurrency sizing is what gets measured (unless --calls-in-flight overrides it)."""
    lines = [
        "[dask]",
        f"n_workers = {n_workers}",
        "threads_per_worker = 2",
        f"batch_size = {args.batch_size}",
        "",
        "[rekognition]",
        f"tps = {float(quota or args.quota)}",
        "read_timeout = 10.0",
    ]
    if args.calls_in_flight:
        lines.append(f"calls_in_flight = {args.calls_in_flight}")
    path.write_text("\n".join(lines) + "\n")
    return path


class CpuSampler:
    """CPU seconds of some process trees, sampled every `interval` s in a thread while a workload runs.

    For the CPU per call in the middle of a run (`mid_run_cpu`): the summary's figure covers the first
    batch to the last, so it includes each worker process's first-call costs (clients, imports) and the
    tail, which weigh more in a 20 s bench than in a nightly run of hours.
    """

    def __init__(
        self, roots: Callable[[], Sequence[int]], interval: float = 0.5, *, descendants: bool = True
    ) -> None:
        self._roots, self._interval, self._descendants = roots, interval, descendants
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            roots = self._roots()
            self.samples.append(
                (time.time(), processes_cpu(descendants(roots) if self._descendants else roots))
            )


def descendants(roots: Sequence[int]) -> list[int]:
    """The processes and all their descendants (Linux /proc)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            parents.setdefault(int(stat.read_text().rsplit(")", 1)[1].split()[1]), []).append(
                int(stat.parent.name)
            )
    found, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += parents.get(pid, [])
    return found


def run_job(
    name: str,
    workdir: Path,
    config: Path,
    env: dict[str, str],
    quota: float,
    *,
    scheduler: str | None = None,
    cluster_pids: Sequence[int] = (),
    processes: int = 1,
) -> Workload:
    """Run the job as a subprocess; its CPU and memory come from its JSON summary. `cluster_pids`: the
    processes of a remote cluster, sampled with the job's for the mid-run CPU."""
    out, summary_path = workdir / f"out-{name}", workdir / f"summary-{name}.json"
    cmd = [
        sys.executable,
        "-m",
        "batch",
        "run",
        "--input",
        f"s3://{BUCKET}/{PREFIX}",
        "--output",
        str(out),
        "--analyses",
        ANALYSES,
        "--tps",
        str(quota),
        "--summary-json",
        str(summary_path),
        "--config",
        str(config),
    ] + (["--scheduler", scheduler] if scheduler else [])
    started = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with CpuSampler(lambda: [proc.pid, *cluster_pids]) as sampler:
        stdout, stderr = proc.communicate()
    ended = time.time()
    if proc.returncode != 0 or not summary_path.exists():
        sys.exit(f"{name}: the job exited with {proc.returncode}\n{stdout}\n{stderr}")
    summary = json.loads(summary_path.read_text())
    cpu = summary["cpu_seconds"]
    return Workload(
        name,
        started,
        ended,
        cpu["driver"] + cpu["workers"],
        summary["driver_peak_rss_mb"],
        processing_cpu_seconds=cpu["processing"],
        summary=summary,
        cpu_samples=sampler.samples,
        processes=processes,
    )


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group we created (dask worker spawns nannies and workers), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)


@contextlib.contextmanager
def dask_cluster(
    env: dict[str, str], workdir: Path, nworkers: int, nthreads: int
) -> Iterator[tuple[str, list[int]]]:
    """A `dask scheduler` and `dask worker --nworkers N` on loopback; yields the scheduler's address and
    the pids of the two commands (the scheduler's first; the workers and nannies are the second's
    descendants); always stopped."""
    dask = str(Path(sys.executable).with_name("dask"))
    sched_file = workdir / "scheduler.json"
    procs: list[subprocess.Popen[bytes]] = []
    common = ["--scheduler-file", str(sched_file), "--no-dashboard"]
    # As docs/operations.md advises for a dedicated cluster (the job slows its workers' timers itself).
    env = {**env, **slower_timers_environment()}
    try:
        procs.append(_start_quietly([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", *common], env))
        address = _wait_for_scheduler(sched_file, procs[0])
        workers = [dask, "worker", "--nworkers", str(nworkers), "--nthreads", str(nthreads), *common]
        procs.append(_start_quietly(workers, env))
        _wait_for_workers(address, nworkers)
        yield address, [proc.pid for proc in procs]
    finally:
        for proc in reversed(procs):  # workers first, so they do not try to reconnect to a dead scheduler
            _kill_group(proc)


def _start_quietly(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A process in its own session (so its group can be killed), output discarded."""
    return subprocess.Popen(
        command, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _wait_for_scheduler(path: Path, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dask scheduler exited with {proc.returncode}")
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError, KeyError):
            return str(json.loads(path.read_text())["address"])
        time.sleep(0.1)
    raise RuntimeError("dask scheduler did not write its scheduler file")


def _wait_for_workers(address: str, count: int) -> None:
    from distributed import Client  # only this workload needs distributed in the bench's own process

    with Client(address, timeout="20s") as client:
        client.wait_for_workers(count, timeout=60)


def cluster_worker_cpu(address: str) -> float:
    """CPU seconds the cluster's workers have used so far (their startup included)."""
    from distributed import Client

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    with Client(address, timeout="20s") as client:
        return float(sum(client.run(cpu).values()))


# ---- the baseline ---------------------------------------------------------------------------------------


def run_baseline(count: int, threads: int = BASELINE_THREADS) -> Workload:
    """What a user would write: one boto3 client, botocore's adaptive retries, a thread pool, 5 calls per
    image. Client-side latency is per API call as the user sees it (botocore's retries and rate waits
    included)."""
    client = boto3.client(
        "rekognition", config=Config(retries={"mode": "adaptive"}, max_pool_connections=threads)
    )
    latencies: list[float] = []
    lock = threading.Lock()

    def analyse(i: int) -> None:
        image = {"S3Object": {"Bucket": BUCKET, "Name": f"{PREFIX}{i:05d}.jpg"}}
        for method, params in OPERATIONS.values():
            t = time.perf_counter()
            try:
                getattr(client, method)(Image=image, **params)
            except client.exceptions.ClientError:
                continue  # retries exhausted (3 attempts in adaptive mode): counted as a missing call

            with lock:
                latencies.append((time.perf_counter() - t) * 1000)

    cpu0, started = _own_cpu(), time.time()
    with (
        ThreadPoolExecutor(threads) as pool,
        CpuSampler(lambda: [os.getpid()], descendants=False) as sampler,
    ):  # the stack is our child
        list(pool.map(analyse, range(count)))
    ended = time.time()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # includes seeding: an upper bound
    name = "baseline" if threads == BASELINE_THREADS else f"baseline {threads} thr"
    workload = Workload(name, started, ended, _own_cpu() - cpu0, rss, client_latency_ms=latencies)
    workload.cpu_samples = sampler.samples
    return workload


def sized_threads(quota: float) -> int:
    """The pool a user who knows Little's law would size for the quota: calls/s x mean latency (0.2 s)."""
    return math.ceil(quota * len(OPERATIONS) * 0.2)


def run_sdk_floor(count: int, quota: float, part: int = 0, parts: int = 1) -> Workload:
    """The job's own requests with nothing around them: its clients, a header probe per image, the five
    calls, the HeadObject confirming the image's ETag, each operation paced at the quota by reservation
    (one sleep per call: `RateLimiter`'s polling would raise the floor), in as many threads as the job's
    plan starts with; no Dask, leases, retries, rows or Parquet. What a call costs in boto3 on this
    machine now; its speed swings between runs, so compare the job with the floor of the same run.
    `part` of `parts`: every `parts`-th image from the `part`-th, at the quota's share."""
    quota /= parts
    threads = floor_threads(quota)
    rekognition, s3 = rekognition_client(RekognitionConfig(), threads), s3_client(threads)
    objects = [obj for page in list_pages(s3, BUCKET, PREFIX) for obj in page][:count][part::parts]
    slots: dict[str, float] = {}
    lock = threading.Lock()

    def paced(operation: str) -> None:
        with lock:
            now = time.monotonic()
            slot = slots[operation] = max(now, slots.get(operation, 0.0) + 1 / quota)
        if slot > now:
            time.sleep(slot - now)

    def analyse(i: int) -> None:
        read_header(s3, BUCKET, objects[i])
        image = {"S3Object": {"Bucket": BUCKET, "Name": objects[i].key}}
        for operation, (method, params) in OPERATIONS.items():
            paced(operation)
            with contextlib.suppress(rekognition.exceptions.ClientError):  # no retries: a missing call
                getattr(rekognition, method)(Image=image, **params)
        unchanged(s3, BUCKET, objects[i])  # the job's HeadObject confirming the ETag (bucket unversioned)

    cpu0, started = _own_cpu(), time.time()
    with (
        ThreadPoolExecutor(threads) as pool,
        CpuSampler(lambda: [os.getpid()], descendants=False) as sampler,
    ):
        list(pool.map(analyse, range(len(objects))))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # as the baseline's: an upper bound
    workload = Workload(f"sdk floor 1 proc, {threads} thr", started, time.time(), _own_cpu() - cpu0, rss)
    workload.cpu_samples = sampler.samples
    return workload


def floor_threads(quota: float) -> int:
    """The floor's threads at `quota` per operation: the job plan's first figure for 2 task slots."""
    return 2 * ConcurrencyPlan(quota * len(OPERATIONS), task_slots=2).per_task(
        RekognitionConfig().expected_latency
    )


def run_sdk_floor_processes(count: int, quota: float, processes: int) -> Workload:
    """The SDK floor spread over as many processes as the cluster has workers, each with its share of
    the images and of the quota, started together: what boto3 itself costs per call when the same load
    comes from `processes` processes sharing this machine's cores (each process's calls come further
    apart, and the processes take turns on the cores). The job on that many workers pays this too."""
    spawn = multiprocessing.get_context("spawn")  # fresh interpreters, as the cluster's workers are
    start, figures = spawn.Barrier(processes), spawn.Queue()
    children = [
        spawn.Process(
            target=_floor_part,
            args=(start, figures),
            kwargs={"count": count, "quota": quota, "part": part, "parts": processes},
        )
        for part in range(processes)
    ]
    for child in children:
        child.start()
    with CpuSampler(lambda: [child.pid for child in children if child.pid], descendants=False) as sampler:
        parts = [figures.get(timeout=JOB_TIMEOUT) for _ in children]
    for child in children:
        child.join()
    threads = processes * floor_threads(quota / processes)
    workload = Workload(
        f"sdk floor {processes} proc, {threads} thr",
        min(p[0] for p in parts),
        max(p[1] for p in parts),
        sum(p[2] for p in parts),
        max(p[3] for p in parts),
        processes=processes,
    )
    workload.cpu_samples = sampler.samples
    return workload


def _floor_part(start: Any, figures: Any, *, count: int, quota: float, part: int, parts: int) -> None:
    """One process of `run_sdk_floor_processes`: its figures go back as a plain tuple (this module runs
    as `__mp_main__` here, and its classes would not unpickle in the parent)."""
    start.wait()
    w = run_sdk_floor(count, quota, part, parts)
    figures.put((w.started, w.ended, w.cpu_seconds, w.peak_rss_mb))


def stack_pids() -> list[int]:
    """The local stack's server processes: this process's children right after the stack started."""
    me, pids = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == me:  # field 4 of /proc/<pid>/stat: the parent pid
                pids.append(int(stat.parent.name))
    return pids


def processes_cpu(pids: Sequence[int]) -> float:
    """User + system CPU seconds of the processes (Linux /proc; 0 for a process that has gone)."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ---- metrics --------------------------------------------------------------------------------------------


def max_in_window(times: Sequence[float], width: float = 1.0) -> int:
    """The largest number of timestamps in any half-open window [t, t + width) (two pointers, sorted)."""
    ordered, best, lo = sorted(times), 0, 0
    for hi, t in enumerate(ordered):
        while ordered[lo] <= t - width:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def mid_run_cpu(w: Workload, ok: Sequence[dict[str, Any]]) -> float:
    """CPU ms per successful call over the middle half of the active span: every process of the workload
    (driver, scheduler, nannies, workers), from the samples either side of the window."""
    if not ok or len(w.cpu_samples) < 2:
        return float("nan")
    first, last = min(r["ts"] for r in ok), max(r["ts"] for r in ok)
    lo, hi = first + (last - first) / 4, last - (last - first) / 4
    inside = [(t, c) for t, c in w.cpu_samples if lo <= t <= hi]
    if len(inside) < 2:
        return float("nan")
    (t0, c0), (t1, c1) = inside[0], inside[-1]
    calls = sum(t0 <= r["ts"] < t1 for r in ok)
    return 1000 * (c1 - c0) / max(calls, 1)


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


def metrics(w: Workload, quota: float, burst: float, images: int) -> dict[str, Any]:
    """The figures of one workload, from its slice of the call log (and the job's summary)."""
    recs = w.records
    ok = [r for r in recs if r["outcome"] == "ok"]
    # Active span: first call to last call. Wall time adds process and cluster start-up, shown apart.
    span = max(max(r["ts"] for r in recs) - min(r["ts"] for r in recs), 1 / quota) if recs else float("nan")
    util = {op: sum(r["operation"] == op for r in ok) / span / quota for op in OPERATIONS}
    throttled = sum(r["outcome"] == "ProvisionedThroughputExceededException" for r in recs)
    ideal = images * len(OPERATIONS) / (quota * len(OPERATIONS))
    latencies = [r["latency_ms"] for r in ok]
    return {
        "processes": w.processes,
        "calls ok / all": f"{len(ok)} / {len(recs)}",
        # Calls that never succeeded, retries exhausted (the same count for the job and the baseline).
        "calls missing": images * len(OPERATIONS) - len(ok),
        "wall s (ideal)": f"{w.ended - w.started:.1f} ({ideal:.1f})",
        "wall / ideal": (w.ended - w.started) / ideal,
        "active span s": span,
        **{f"util {SHORT[op]}": u for op, u in util.items()},
        "util min": min(util.values()),
        "throttled share": throttled / max(len(recs), 1),
        # The endpoint's bucket caps successful calls at Q + burst per second by construction; the calls
        # sent per second show how hard the client pushed on it.
        "max ok in 1 s (op)": _max_window(ok),
        "max sent in 1 s (op)": _max_window(recs),
        "limit Q+burst": f"{quota + burst:g}",
        "p50/p99 ms (log)": _p50_p99(latencies),
        "p50/p99 ms (client)": _p50_p99(w.client_latency_ms) if w.client_latency_ms is not None else "n/a",
        "cpu s": w.cpu_seconds,
        "cpu ms / ok call": 1000 * w.cpu_seconds / max(len(ok), 1),
        # The job's start-up (interpreter, imports, cluster) is a fixed cost; this is the per-call one.
        "cpu ms / call, processing": 1000
        * (w.processing_cpu_seconds if w.processing_cpu_seconds is not None else w.cpu_seconds)
        / max(len(ok), 1),
        "cpu ms / call, mid-run": mid_run_cpu(w, ok),
        "driver peak RSS MB": w.peak_rss_mb,
        # The endpoint and moto share the machine with the job: above ~1.5 of 2 cores they, not the job,
        # set the pace, and utilisation measures the machine.
        "stack cpu ms / ok call": 1000 * w.stack_cpu_seconds / max(len(ok), 1),
        "stack cores busy": w.stack_cpu_seconds / span if recs else float("nan"),
    }


def _max_window(records: Sequence[dict[str, Any]]) -> int:
    """The busiest 1-second window of any one operation."""
    return max(
        max_in_window([r["ts"] for r in records if r["operation"] == op] or [0.0]) for op in OPERATIONS
    )


def _p50_p99(values: Sequence[float]) -> str:
    return f"{percentile(values, 50):.0f} / {percentile(values, 99):.0f}"


def print_table(columns: dict[str, dict[str, Any]]) -> None:
    names = list(columns)
    rows = list(next(iter(columns.values())))
    label_w = max(map(len, rows))
    col_w = max(14, *map(len, names))
    print(f"{'':{label_w}}  " + "  ".join(f"{n:>{col_w}}" for n in names))
    for row in rows:
        cells = [_fmt(columns[n][row]) for n in names]
        print(f"{row:{label_w}}  " + "  ".join(f"{c:>{col_w}}" for c in cells))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


#: Issue 5's targets that two sets of verdicts check (`verdicts`, `high_load_verdicts`).
UTILISATION_TARGET = 0.95
CPU_TARGET_MS = 2.0


def floor_ratios(cols: dict[str, dict[str, Any]]) -> str:
    """Each job's CPU per call over the SDK floor's in as many processes, measured in the same run
    (`run_sdk_floor`, `run_sdk_floor_processes`)."""
    floors = {c["processes"]: (n, c) for n, c in cols.items() if n.startswith("sdk floor")}
    ratios = []
    for name, job in cols.items():
        if name.startswith("job") and job["processes"] in floors:
            floor_name, floor = floors[job["processes"]]
            for fig in ("cpu ms / call, processing", "cpu ms / call, mid-run"):
                ratios.append(f"{name} {fig.split(', ')[1]} x{job[fig] / floor[fig]:.2f} ({floor_name})")
    return "CPU per call over the SDK floor's in as many processes, same run:\n  " + "\n  ".join(ratios)


def verdicts(cols: dict[str, dict[str, Any]], quota: float, burst: float) -> list[tuple[str, bool, str]]:
    """(target, met, evidence) for each target of issue 5 that this bench measures."""
    jobs = [n for n in cols if n.startswith("job")]
    base = cols["baseline"]
    # The 16-thread baseline is too slow to reach the quota, so it is rarely throttled; the baseline
    # sized for the quota shows what adaptive retries do at the quota.
    sized = next((cols[n] for n in cols if n.startswith("baseline ")), base)

    def each(pred: Callable[[dict[str, Any]], bool], fig: str) -> tuple[bool, str]:
        return all(pred(cols[n]) for n in jobs), ", ".join(f"{n} {_fmt(cols[n][fig])}" for n in jobs)

    checks = [
        (
            f"utilisation >= {UTILISATION_TARGET:g} (min over operations)",
            "util min",
            lambda c: c["util min"] >= UTILISATION_TARGET,
        ),
        ("throttled <= 1 % of calls", "throttled share", lambda c: c["throttled share"] <= 0.01),
        (
            f"no 1-s window above Q+burst = {quota + burst:g}",
            "max ok in 1 s (op)",
            lambda c: c["max ok in 1 s (op)"] <= quota + burst,
        ),
        (
            f"CPU per call <= {CPU_TARGET_MS:g} ms at {quota * len(OPERATIONS):g} calls/s (processing phase)",
            "cpu ms / call, processing",
            lambda c: c["cpu ms / call, processing"] <= CPU_TARGET_MS,
        ),
        (
            f"utilisation better than baseline ({_fmt(base['util min'])})",
            "util min",
            lambda c: c["util min"] > base["util min"],
        ),
        (
            f"throttled share not above the 16-thread baseline's ({_fmt(base['throttled share'])}) and "
            f"below the quota-sized baseline's ({_fmt(sized['throttled share'])})",
            "throttled share",
            lambda c: (
                c["throttled share"] <= base["throttled share"]
                and c["throttled share"] < sized["throttled share"]
            ),
        ),
    ]
    return [(target, *each(pred, fig)) for target, fig, pred in checks]


# ---- main -----------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--images",
        type=int,
        default=1000,
        help="distinct images (default 1000: 5000 calls, 20 s at the quota, long against the ~1 s tail)",
    )
    p.add_argument("--quota", type=float, default=50.0, help="the endpoint's calls/s per operation")
    p.add_argument("--burst", type=float, default=10.0, help="the endpoint's token-bucket capacity")
    p.add_argument("--batch-size", type=int, default=10, help="the job's dask.batch_size")
    p.add_argument(
        "--calls-in-flight", type=int, default=0, help="the job's calls_in_flight (0: its default)"
    )
    p.add_argument("--workers", type=int, default=4, help="worker processes of the real cluster")
    p.add_argument(
        "--high-load",
        type=float,
        default=2.0,
        help="then one worker against a second endpoint at this multiple of the quota (default 2: 500 "
        "calls/s, the load the CPU target speaks of), over as many times the images; 0 skips it",
    )
    p.add_argument("--quick", action="store_true", help="a smoke run: 60 images")
    args = p.parse_args()
    if args.quick:
        args.images = 60
    return args


def run_all(args: argparse.Namespace, stack: LocalStack, workdir: Path) -> list[Workload]:
    env = {**os.environ, **stack.env}
    pids = stack_pids()

    def measured(run: Callable[[], Workload]) -> Workload:
        before = processes_cpu(pids)
        workload = run()
        workload.stack_cpu_seconds = processes_cpu(pids) - before
        return workload

    results = [
        measured(
            lambda: run_job(
                "job 1 worker", workdir, write_config(workdir / "one.toml", 1, args), env, args.quota
            )
        )
    ]
    with dask_cluster(env, workdir, args.workers, 2) as (address, cluster_pids):
        scheduler_pid = cluster_pids[0]
        before = cluster_worker_cpu(address)
        scheduler_before = processes_cpu([scheduler_pid])
        job = measured(
            lambda: run_job(
                f"job {args.workers} workers",
                workdir,
                write_config(workdir / "many.toml", 0, args),
                env,
                args.quota,
                scheduler=address,
                cluster_pids=cluster_pids,
                processes=args.workers,
            )
        )
        job.cpu_seconds -= before  # the cluster existed before the job: its start-up is not the job's CPU
        # The scheduler holds the rate limit: its CPU is the job's too (a LocalCluster's runs in the driver).
        scheduler_cpu = processes_cpu([scheduler_pid]) - scheduler_before
        job.cpu_seconds += scheduler_cpu
        job.processing_cpu_seconds = (job.processing_cpu_seconds or 0.0) + scheduler_cpu
        results.append(job)
    results.append(measured(lambda: run_baseline(args.images)))
    results.append(measured(lambda: run_baseline(args.images, sized_threads(args.quota))))
    results.append(measured(lambda: run_sdk_floor(args.images, args.quota)))
    results.append(measured(lambda: run_sdk_floor_processes(args.images, args.quota, args.workers)))
    calls = stack.calls()
    for w in results:
        w.records = [r for r in calls if w.started <= r["ts"] <= w.ended]
    return results


@contextlib.contextmanager
def seeded_stack(quota: float, burst: float, images: int) -> Iterator[LocalStack]:
    """A LocalStack at `quota` per operation with `images` images, its caches warm, and this process's
    environment pointing at it (the warm-up and the baselines find it as any boto3 code would)."""
    with LocalStack(tps=quota, burst=burst, extra_args=LATENCY_ARGS) as stack:
        t = time.monotonic()
        upload(stack.s3_client(), make_images(images))
        print(f"seeded {images} images in {time.monotonic() - t:.1f} s")
        os.environ.update(stack.env)
        print(f"warmed the endpoint's caches in {warm_up(images, quota):.1f} s (not measured)")
        yield stack


def run_high_load(args: argparse.Namespace, workdir: Path) -> tuple[Workload, float, float, int]:
    """One worker process against an endpoint at `--high-load` times the quota: does one core drive it?
    Returns the workload with its quota, burst and image count."""
    quota, burst = args.quota * args.high_load, args.burst * args.high_load
    images = round(args.images * args.high_load)  # as long a run as the others
    print(f"\nhigh load: quota {quota:g} calls/s per operation, burst {burst:g}, {images} images")
    with seeded_stack(quota, burst, images) as stack:
        pids = stack_pids()
        before = processes_cpu(pids)
        config = write_config(workdir / "high.toml", 1, args, quota)
        # Its own output folder: the first workload's, holding the same images, would make this run skip them.
        name = f"job 1 worker at {args.high_load:g}x"
        workload = run_job(name, workdir, config, {**os.environ, **stack.env}, quota)
        workload.stack_cpu_seconds = processes_cpu(pids) - before
        workload.records = [r for r in stack.calls() if workload.started <= r["ts"] <= workload.ended]
    return workload, quota, burst, images


def high_load_verdicts(figures: dict[str, Any], quota: float) -> list[tuple[str, bool, str]]:
    """The CPU target where it names its load: one core driving 500 calls/s."""
    rate = quota * len(OPERATIONS)
    return [
        (
            f"one worker process keeps {rate:g} calls/s: utilisation >= {UTILISATION_TARGET:g}",
            figures["util min"] >= UTILISATION_TARGET,
            _fmt(figures["util min"]),
        ),
        (
            f"CPU per call <= {CPU_TARGET_MS:g} ms at {rate:g} calls/s (processing phase)",
            figures["cpu ms / call, processing"] <= CPU_TARGET_MS,
            f"{_fmt(figures['cpu ms / call, processing'])}; "
            f"mid-run {_fmt(figures['cpu ms / call, mid-run'])}",
        ),
    ]


def main() -> None:
    args = parse_args()
    burst = args.burst
    print(
        f"quota {args.quota:g} calls/s per operation, burst {burst:g}, latency 100 + U(0, 200) ms, "
        f"{args.images} images x {len(OPERATIONS)} operations = {args.images * len(OPERATIONS)} calls each"
    )
    with tempfile.TemporaryDirectory(prefix="bench-job-") as tmp:
        with seeded_stack(args.quota, burst, args.images) as stack:
            results = run_all(args, stack, Path(tmp))
        high = run_high_load(args, Path(tmp)) if args.high_load > 0 else None
    cols = {w.name: metrics(w, args.quota, burst, args.images) for w in results}
    print()
    print_table(cols)
    print(NOTES)
    print(floor_ratios(cols))
    checks = verdicts(cols, args.quota, burst)
    if high is not None:
        workload, quota, high_burst, images = high
        figures = metrics(workload, quota, high_burst, images)
        print(f"\nhigh load: {quota:g} calls/s per operation, {quota * len(OPERATIONS):g} calls/s in all")
        print_table({workload.name: figures})
        checks += high_load_verdicts(figures, quota)
    print()
    for target, met, evidence in checks:
        print(f"{'PASS' if met else 'FAIL'}  {target}: {evidence}")


if __name__ == "__main__":
    main()
