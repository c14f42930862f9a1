"""How fast a run starts (issue 20, "Faster start"): the demo's run, timed from the command's start.

    python scripts/bench_start.py [--repeat N] [--phases] [--tree DIR ...]

One LocalStack seeded with the demo's samples (`make demo`: configs/local.toml, s3://rekbatch-demo/photos/,
50 calls/s). Each repetition runs `python -m batch run` twice into a fresh output folder: a first run, then
the same run again (everything committed and unchanged: nothing to analyse). It prints, per repetition,
the seconds from the first run's command start to the endpoint's first call (the call log's timestamp),
the first run's wall time and the second run's; then the median of each. `--tree DIR` (repeatable) runs
the job from each source tree in turn (DIR first on the job's PYTHONPATH) in every repetition, so a
before and an after are measured under the same load; by default the `batch` on PYTHONPATH runs.
`--phases` also prints when each run's driver, and the earliest of its worker processes, entered and left
the start-up steps (config, region check, readability check, attempt, committed state, listing,
LocalCluster, quota, first submit; in the workers: the first task, its clients, its first call), for
whichever steps the tree has. See docs/design/start-up.md for the method and the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from local_stack.stack import LocalStack, seed_samples

BUCKET, PREFIX, TPS = "rekbatch-demo", "photos/", 50.0
ROOT = Path(__file__).resolve().parent.parent

#: With --phases, a `sitecustomize` module put first on the job's PYTHONPATH, so it runs in the driver and
#: in every worker process: it wraps each (module, attribute) below once its module is loaded, and writes
#: {step: [first entry, first exit]} (time.time()) to $BENCH_PHASES/<pid>.json at exit ("python" is the
#: interpreter's start). Steps the `batch` on PYTHONPATH lacks are left out.
PHASE_HOOK = r"""
import atexit, functools, importlib.abc, importlib.util, json, os, sys, time
STEPS = {
    "batch.config.loader": ["load_config"],
    "batch.aws.session": ["checked_region"],
    "batch.aws.s3": ["check_readable", "list_pages"],
    "batch.storage.readers": ["committed_state"],
    "batch.run.commit": ["start_attempt", "commit"],
    "batch.aws.executor": ["_local_cluster"],
    "batch.aws.ratelimit": ["install_quota", "ClusterRateLimiter.acquire"],
    "distributed.client": ["Client.submit"],
    "batch.report.page": ["write_report"],
    "batch.run.batch_task": ["process_batch"],
    "batch.run.runtime": ["process_resources"],
    "batch.aws.rekognition": ["RekognitionCaller.call"],
}
seen = {"python": [time.time(), None]}
def mark(name, index):
    times = seen.setdefault(name, [None, None])
    if times[index] is None:
        times[index] = time.time()
def wrap(name, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        mark(name, 0)
        try:
            return fn(*args, **kwargs)
        finally:
            mark(name, 1)
    return wrapper
def wrap_module(module, attrs):
    for attr in attrs:
        owner, _, leaf = attr.rpartition(".")
        target = getattr(module, owner, None) if owner else module
        fn = getattr(target, leaf, None)
        if fn is not None:
            setattr(target, leaf, wrap(leaf, fn))
class Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname not in STEPS:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is not None and spec.loader is not None:
            original = spec.loader.exec_module
            def exec_module(module):
                original(module)
                wrap_module(module, STEPS[fullname])
            spec.loader.exec_module = exec_module
        return spec
if os.environ.get("BENCH_PHASES"):
    sys.meta_path.insert(0, Finder())
    def dump():
        seen["worker"] = "load_config" not in seen and "distributed.worker" in sys.modules
        with open(os.path.join(os.environ["BENCH_PHASES"], f"{os.getpid()}.json"), "w") as fh:
            json.dump(seen, fh)
    atexit.register(dump)
"""
#: The steps printed for the worker processes (the earliest of them all), after the driver's.
WORKER_STEPS = ("python", "process_batch", "process_resources", "acquire", "call")


def job_command(output: Path) -> list[str]:
    """The demo's run (`scripts/demo.py`: its config, input and quota), into `output`."""
    return [sys.executable, "-m", "batch", "run", "--config", str(ROOT / "configs" / "local.toml"),
            "--input", f"s3://{BUCKET}/{PREFIX}", "--output", str(output), "--tps", str(TPS)]  # fmt: skip


def timed_run(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(the command's start as time.time(), the seconds it took); the run must exit 0. It runs in `cwd`,
    a folder without a `batch` package: `python -m` puts the current folder first on sys.path."""
    started, clock = time.time(), time.monotonic()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - clock
    if done.returncode != 0:
        sys.exit(f"the job exited with {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
    return started, seconds


def job_env(stack: LocalStack, tree: str, phases: Path | None) -> dict[str, str]:
    """The job's environment: the local stack, `tree` first on PYTHONPATH, and with `phases` the hook
    that records the job's steps into that folder."""
    hook = [str(phases.parent / "hook")] if phases else []
    path = os.pathsep.join(filter(None, [*hook, tree, os.environ.get("PYTHONPATH", "")]))
    env = {**os.environ, **stack.env, "PYTHONPATH": path}
    if phases:
        phases.mkdir()
        env["BENCH_PHASES"] = str(phases)
    return env


def print_phases(folder: Path, started: float, title: str) -> None:
    """The driver's steps (the process that ran `load_config`), then the worker processes' earliest."""
    records = [json.loads(path.read_text()) for path in folder.glob("*.json")]
    workers = [r for r in records if r.pop("worker")]
    driver = next((r for r in records if "load_config" in r), {})
    print(f"  {title} (seconds from the command's start: entered -> left)")
    for name, (entered, left) in sorted(driver.items(), key=lambda item: item[1][0]):
        print(f"    {name:24} {entered - started:6.2f} -> {(left or entered) - started:6.2f}")
    for name in WORKER_STEPS:
        times = [r[name] for r in workers if name in r]
        if times:
            entered, left = min(t[0] for t in times), min(t[1] or t[0] for t in times)
            print(f"    {'worker ' + name:24} {entered - started:6.2f} -> {left - started:6.2f}")


def repetition(stack: LocalStack, work: Path, name: str, tree: str, phases: bool) -> dict[str, float]:
    """One first run and one run with nothing to do, into a fresh output folder."""
    output = work / f"out-{name}"
    first_phases, noop_phases = (work / f"first-{name}", work / f"noop-{name}") if phases else (None, None)
    before = len(stack.calls())
    started, first_seconds = timed_run(job_command(output), job_env(stack, tree, first_phases), work)
    calls = stack.calls()[before:]
    noop_started, noop_seconds = timed_run(job_command(output), job_env(stack, tree, noop_phases), work)
    if len(stack.calls()) != before + len(calls):
        sys.exit("the second run called Rekognition: it was not a run with nothing to do")
    if first_phases and noop_phases:
        print_phases(first_phases, started, f"first run {name}")
        print_phases(noop_phases, noop_started, f"nothing to do {name}")
    shutil.rmtree(output, ignore_errors=True)
    return {
        "first_call": min(c["ts"] for c in calls) - started if calls else float("nan"),
        "first_run": first_seconds,
        "noop_run": noop_seconds,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="repetitions (default 5)")
    parser.add_argument("--phases", action="store_true", help="also print when each start-up step ran")
    parser.add_argument("--tree", action="append", help="a source tree to run the job from (repeatable)")
    args = parser.parse_args()
    trees = args.tree or [""]
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {args.repeat} repetitions of "
          f"{', '.join(trees) if args.tree else 'the batch on PYTHONPATH'}")  # fmt: skip
    rows: dict[str, list[dict[str, float]]] = {tree: [] for tree in trees}
    with tempfile.TemporaryDirectory() as tmp, LocalStack(tps=TPS) as stack:
        work = Path(tmp)
        (work / "hook").mkdir()
        (work / "hook" / "sitecustomize.py").write_text(PHASE_HOOK)
        (work / "samples").mkdir()
        seed_samples(stack.s3_client(), BUCKET, PREFIX, work / "samples")
        for index in range(args.repeat):
            for number, tree in enumerate(trees):
                row = repetition(stack, work, f"{index + 1}-{number + 1}", tree, args.phases)
                rows[tree].append(row)
                print(f"{tree or 'run'} {index + 1}: first call {row['first_call']:.2f} s, "
                      f"first run {row['first_run']:.2f} s, nothing to do {row['noop_run']:.2f} s, "
                      f"load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    for tree, runs in rows.items():
        medians = {name: statistics.median(row[name] for row in runs) for name in runs[0]}
        print(f"median{' ' * bool(tree)}{tree}: first call {medians['first_call']:.2f} s, first run "
              f"{medians['first_run']:.2f} s, nothing to do {medians['noop_run']:.2f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
