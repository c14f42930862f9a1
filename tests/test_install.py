"""A production install: `pip install .` brings what the job needs and nothing of the local stack or
the test tools, and the job never imports them, in the driver or in a Dask worker process."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

import pytest
from test_layout import PACKAGES, ROOT, import_graph, module_name

from local_stack.stack import LocalStack, seed_samples

#: What only `make setup` ('.[dev]') and `'.[local]'` install: never a dependency of the job, never
#: imported by it. `local_stack` ships in the wheel (`python -m batch.local`) but needs moto.
NOT_FOR_PRODUCTION = frozenset({"moto", "local_stack", "pytest", "_pytest", "hypothesis", "playwright"})
DEV_TOOLS = frozenset(
    {"moto", "pytest", "pytest-timeout", "hypothesis", "playwright", "sqlglot", "ruff", "mypy"}
)

#: The job's entry points: `rekbatch` and `python -m batch` (Dask tasks are functions of modules they
#: reach). `python -m batch.local` is the documented alias of `python -m local_stack`, not the job.
ENTRY_POINTS = ("batch.__main__", "batch.cli.main")

#: Distributions the job imports that a declared dependency requires as part of its own API.
COMES_WITH = {"botocore": "boto3", "markupsafe": "jinja2"}


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement string (PEP 503)."""
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group()).lower()


def _project() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]  # type: ignore[no-any-return]


def dependencies() -> set[str]:
    return {_name(r) for r in _project()["dependencies"]}  # type: ignore[attr-defined]


def with_their_requirements(names: Iterable[str]) -> set[str]:
    """The distributions `names` install, as the installed metadata says (extras left out; one not
    installed here, e.g. behind a marker for an older Python, counts without its requirements)."""
    found: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo.extend(_name(r) for r in requires if "extra ==" not in r.split(";", 1)[-1])
    return found


def reached(graph: dict[str, set[str]], start: Iterable[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(start)
    while todo:
        if (module := todo.pop()) not in seen:
            seen.add(module)
            todo.extend(graph.get(module, ()))
    return seen


def third_party_imports(modules: set[str]) -> dict[str, set[str]]:
    """Top-level name imported (anywhere in a module's source) -> the modules of ours importing it."""
    found: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if (name := module_name(path, ROOT)) not in modules:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    imported = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                    imported = [node.module]
                else:
                    continue
                for top in {m.split(".")[0] for m in imported} - set(sys.stdlib_module_names) - set(PACKAGES):
                    found.setdefault(top, set()).add(name)
    return found


def test_the_dependencies_hold_no_local_stack_or_test_tool() -> None:
    project = _project()
    installed = with_their_requirements(dependencies())
    assert installed & DEV_TOOLS == set()
    extras = project["optional-dependencies"]  # type: ignore[index]
    assert {_name(r) for r in extras["local"]} == {"moto"}
    assert DEV_TOOLS - {"moto"} <= {_name(r) for r in extras["dev"]}


def test_the_job_reaches_no_local_stack_module_and_imports_only_its_dependencies() -> None:
    graph = import_graph(ROOT, PACKAGES)
    job = reached(graph, ENTRY_POINTS)
    assert {m for m in graph if m.startswith("batch")} - job == {"batch.local", "batch.local.__main__"}
    assert {m for m in job if m.split(".")[0] in NOT_FOR_PRODUCTION} == set()
    imports = third_party_imports(job)
    assert {top: modules for top, modules in imports.items() if top in NOT_FOR_PRODUCTION} == {}
    providers = metadata.packages_distributions()
    declared = dependencies()
    assert {d for d, parent in COMES_WITH.items() if d not in with_their_requirements([parent])} == set()
    undeclared = {
        top: sorted(modules)
        for top, modules in imports.items()
        if not {_name(d) for d in providers.get(top, [top])} & (declared | set(COMES_WITH))
    }
    assert undeclared == {}  # a new third-party import needs its distribution in `dependencies`


# --- the job with the test tools and the local stack made unimportable, in every process -------------

BLOCKER = '''\
"""Test-only: the modules a production install lacks are not found, in every process that inherits
PYTHONPATH (the Dask workers too), as if not installed; each attempt to import one is noted."""
import os
import sys

BLOCKED = frozenset(os.environ["TEST_BLOCKED_MODULES"].split(","))


class _Hiding:
    """A finder of sys.meta_path that finds nothing blocked (importlib.metadata reads through it)."""

    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            with open(os.environ["TEST_BLOCKED_LOG"], "a") as log:
                log.write(f"{os.getpid()} {name}\\n")
            return None
        return self.finder.find_spec(name, path, target)

    def __getattr__(self, name):
        return getattr(self.finder, name)


sys.meta_path[:] = [_Hiding(finder) for finder in sys.meta_path]
'''


@pytest.fixture
def production(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment whose Python cannot import what `pip install .` leaves out, and the log of the
    imports it refused."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    log = tmp_path / "blocked.log"
    log.touch()
    path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", str(ROOT))])
    blocked = ",".join(sorted(NOT_FOR_PRODUCTION))
    return {"PYTHONPATH": path, "TEST_BLOCKED_MODULES": blocked, "TEST_BLOCKED_LOG": str(log)}, log


def python(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def rekbatch(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return python(env, "-m", "batch", *args, timeout=timeout)


@pytest.mark.offline_subprocess
def test_the_blocker_refuses_a_module_a_production_install_lacks(
    production: tuple[dict[str, str], Path],
) -> None:
    env, log = production
    result = python(env, "-c", "import local_stack.stack")
    assert result.returncode == 1
    assert "ModuleNotFoundError: No module named 'local_stack'" in result.stderr
    assert log.read_text().split()[1] == "local_stack"


@pytest.mark.offline_subprocess
def test_the_local_stack_without_moto_says_which_extra_to_install(
    production: tuple[dict[str, str], Path],
) -> None:
    env, _log = production
    result = python({**env, "TEST_BLOCKED_MODULES": "moto"}, "-m", "local_stack", "stack")
    assert (result.returncode, result.stderr) == (
        2,
        "local_stack stack: needs moto: pip install 'rekognition-batch[local]'\n",
    )


@pytest.mark.offline_subprocess
def test_help_and_a_dry_run_import_nothing_a_production_install_lacks(
    production: tuple[dict[str, str], Path], tmp_path: Path
) -> None:
    env, log = production
    assert rekbatch(env, "--help").returncode == 0
    assert rekbatch(env, "run", "--help").returncode == 0
    aws = {  # a closed port: the dry run gets as far as the listing, which fails (exit 3)
        "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9",
        "AWS_ENDPOINT_URL_REKOGNITION": "http://127.0.0.1:9",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    out = str(tmp_path / "out")
    dry = rekbatch({**env, **aws}, "run", "--input", "s3://in-bucket/p/", "--output", out, "--dry-run")
    assert dry.returncode == 3, dry.stderr
    assert "cannot list s3://in-bucket/p/" in dry.stderr
    assert log.read_text() == ""


@pytest.mark.integration
def test_a_run_sql_and_report_import_nothing_a_production_install_lacks(
    production: tuple[dict[str, str], Path], tmp_path: Path
) -> None:
    env, log = production
    out = str(tmp_path / "out")
    with LocalStack() as stack:
        seed_samples(stack.s3_client(), "prod-input", "photos/", tmp_path / "samples")
        env = {**env, **stack.env}
        run = rekbatch(
            env, "run", "--input", "s3://prod-input/photos/", "--output", out, "--run-id", "r1", timeout=300
        )
        assert run.returncode == 0, run.stderr
        assert "committed: yes" in run.stdout
        sql = rekbatch(env, "sql", "--output", out, "-c", "SELECT count(*) AS n FROM images")
        assert sql.returncode == 0, sql.stderr
        assert "33" in sql.stdout
        report = rekbatch(env, "report", "r1", "--output", out, "--to", str(tmp_path / "r1.html"))
        assert report.returncode == 0, report.stderr
    assert log.read_text() == ""  # the driver and every Dask worker process
