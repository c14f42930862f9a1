"""Command line: `rekbatch run|report|sql|views|athena-ddl|gc|collection ...` (also `python -m batch ...`).

Exit codes of `run`: `RUN_EXIT_CODES` below (shown by `rekbatch run --help`; README.md has the table).
Each non-zero code comes with a one-line reason on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import shlex
import sys
import traceback
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from batch import __version__
from batch.aws.logs import pin_aws_loggers
from batch.cli import collection as collection_commands
from batch.config.loader import load_config, load_report_config
from batch.config.model import parse_s3_url
from batch.core.errors import ConfigError, OutputUnreadable, OutputUnwritable, RekbatchError
from batch.core.redaction import one_line, redact

RUN_EXIT_CODES = """exit codes:
  0    committed (rejected and failed images are rows), or committed earlier: nothing done
  2    a bad config, flag or environment variable, no AWS region or credentials, or a --summary-json
       folder that cannot be written
  3    the input or output is unreachable (missing bucket, access denied, endpoint down), or the
       output refused a write (disk full, read-only): nothing committed (--resume RUN_ID finishes it)
  4    aborted, nothing committed, e.g. a file to commit went missing (--resume RUN_ID finishes it)
  5    another attempt committed this run id first
  6    committed, but the error rate is above --max-error-rate
  7    no images under the input prefix
  130  stopped by SIGINT (Ctrl-C), nothing committed (--resume RUN_ID finishes it)
  143  stopped by SIGTERM, nothing committed (--resume RUN_ID finishes it)
  "nothing committed" means the run's own commit: segments of --commit-every committed before the
  stop stay visible (the one-line error says how many) and --resume keeps them"""


class _Script(argparse.Action):
    """`-c QUERY` and `-f FILE`, kept in the order given on the command line."""

    def __call__(self, parser: Any, namespace: Any, value: Any, option: str | None = None) -> None:
        scripts = getattr(namespace, self.dest, None) or []
        setattr(namespace, self.dest, [*scripts, (option, value)])


def _add_run_arguments(run: argparse.ArgumentParser) -> None:
    """`rekbatch run`'s flags."""
    run.add_argument("--input", help="s3://BUCKET/PREFIX to analyse")
    run.add_argument("--output", help="a local folder or s3://BUCKET/PREFIX for the tables")
    run.add_argument(
        "--inventory",
        metavar="S3_URL",
        help="read the input's objects from this S3 Inventory report (s3://BUCKET/.../manifest.json) "
        "instead of listing the prefix",
    )
    run.add_argument(
        "--analyses",
        help="comma-separated: labels,faces,text,moderation,celebrities,index_faces,face_search,"
        "compare_faces,ppe,custom_labels",
    )
    run.add_argument("--config", help="a TOML file (see configs/default.toml); flags override it")
    run.add_argument(
        "--scheduler",
        help="address of a Dask scheduler (default: DASK_SCHEDULER_ADDRESS, else a local cluster)",
    )
    run.add_argument(
        "--run-id", help="id of this run (letters, digits, '.', '_', '-'); default: time + random"
    )
    run.add_argument("--limit", type=int, help="analyse at most N images")
    run.add_argument(
        "--tps",
        type=float,
        help="calls per second for every operation, across the whole "
        "cluster (overrides [quotas] and rekognition.tps)",
    )
    run.add_argument(
        "--regions",
        metavar="REGION,REGION",
        help="fan the stateless analyses out over these regions, the run's own among them "
        "(images leave their region; [rekognition] regions; default: the run's region alone)",
    )
    run.add_argument(
        "--image-source", choices=("s3", "bytes"), help="send S3 references (default) or the image bytes"
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        default=None,
        help="list and count what would be analysed, with its cost; call nothing that is billed "
        "or changes anything (with index_faces: DescribeCollection and ListFaces only)",
    )
    run.add_argument(
        "--probe",
        action="store_true",
        default=None,
        help="with --dry-run: read each image's header (64 KiB, as the run does; no Rekognition call) "
        "for the exact count of images sent and their cost; without it the counts are upper bounds",
    )
    run.add_argument(
        "--full",
        action="store_true",
        default=None,
        help="analyse every image, even those committed runs analysed with the same ETag and settings",
    )
    run.add_argument(
        "--resume",
        metavar="RUN_ID",
        help="finish a crashed run: keep every image it had done, analyse the rest, commit once",
    )
    run.add_argument(
        "--commit-every",
        metavar="EVERY",
        help="commit what is done so far as a segment readers see, every DURATION (30m, 6h, 1d) or "
        "N images (100000images); the last commit writes the runs row (default: commit once, at the end)",
    )
    run.add_argument(
        "--max-error-rate",
        type=float,
        metavar="R",
        help="after committing, exit 6 if (rejected + failed) / images sent is above R (0..1)",
    )
    run.add_argument(
        "--collection",
        metavar="NAME",
        help="the face collection of index_faces (created when missing), face_search and user_search "
        "([analyses.index_faces], [analyses.face_search] and [analyses.user_search] collection)",
    )
    run.add_argument(
        "--prune",
        action="store_true",
        default=None,
        help="index_faces: delete the collection's faces of keys no longer under the prefix",
    )
    run.add_argument(
        "--reference",
        action="append",
        metavar="S3_URL",
        help="compare_faces: a reference photo s3://BUCKET/KEY, or s3://BUCKET/PREFIX/ for every image "
        "under it; repeat the flag or separate URLs with commas ([analyses.compare_faces] references)",
    )
    run.add_argument(
        "--start-models",
        action="store_true",
        default=None,
        help="custom_labels: start the models that are not running, and stop them at the end (billed "
        "per inference hour while they run); without it a model not running stops the run (exit 2)",
    )
    run.add_argument(
        "--users",
        metavar="S3_URL",
        help="user_search: s3://BUCKET/PREFIX/ with one folder of reference photos per person, kept as "
        "the collection's users ([analyses.user_search] users)",
    )
    run.add_argument("--summary-json", help="also write the run's summary as JSON to this path")
    run.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO")
    run.add_argument(
        "--debug",
        action="store_true",
        help="log the job's own steps at DEBUG (the AWS SDK's loggers stay at WARNING: "
        "no credentials or image bytes)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rekbatch", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"rekognition-batch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="analyse the images under an S3 prefix into Parquet tables",
        epilog=RUN_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_run_arguments(run)

    sql = commands.add_parser(
        "sql",
        help="query the committed runs with DuckDB: run -c QUERY and -f FILE in order, else a prompt",
        description="A view per table over the committed runs' files (as `rekbatch views`); "
        "prints each query's rows. Queries: docs/queries/.",
    )
    sql.add_argument("--output", required=True, help="the runs' output: a local folder or s3://BUCKET/PREFIX")
    sql.add_argument(
        "-c", dest="scripts", action=_Script, metavar="QUERY", help="run these statements (repeatable)"
    )
    sql.add_argument(
        "-f", dest="scripts", action=_Script, metavar="FILE", help="run this file's statements (repeatable)"
    )
    sql.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set the DuckDB variable NAME (read by getvariable('NAME')) to the string VALUE; repeatable",
    )
    views = commands.add_parser(
        "views", help="print DuckDB SQL: a view per table over the committed files of an output"
    )
    views.add_argument(
        "--output", required=True, help="the run's output: a local folder or s3://BUCKET/PREFIX"
    )
    files = commands.add_parser(
        "files",
        help="print the committed files of a table, one location a line (or --json): for pyarrow, polars, "
        "pandas and Spark, which must read only these",
    )
    files.add_argument("table", metavar="TABLE", help="a table name (images, labels, faces, ...)")
    files.add_argument(
        "--output", required=True, help="the runs' output: a local folder or s3://BUCKET/PREFIX"
    )
    files.add_argument(
        "--json", action="store_true", help="a JSON list: location, run_id, dt, rows, size, sha256"
    )
    ddl = commands.add_parser(
        "athena-ddl", help="print Athena DDL: tables, the commits table and views of committed rows only"
    )
    ddl.add_argument("--location", required=True, help="the run's output, s3://BUCKET/PREFIX")
    ddl.add_argument("--database", default="rekbatch", help="the Glue database (default: rekbatch)")
    gc = commands.add_parser(
        "gc",
        help="delete files no committed run lists (crashed or losing attempts)",
        description="Delete the files no committed run lists, once older than --older-than. A running "
        "attempt's files are never deleted: every file of a run whose heartbeat or records changed in "
        "the last few minutes stays, whatever --older-than says.",
    )
    gc.add_argument("--output", required=True, help="a local folder or s3://BUCKET/PREFIX")
    gc.add_argument(
        "--older-than",
        type=float,
        default=None,
        metavar="HOURS",
        help="only files older than this (default 48; under 1 needs --force), so resumable runs keep theirs",
    )
    gc.add_argument("--force", action="store_true", help="accept an --older-than under 1 hour")
    gc.add_argument("--dry-run", action="store_true", help="list what would be deleted; delete nothing")
    report = commands.add_parser("report", help="write the HTML report of a finished run")
    report.add_argument("run_id", metavar="RUN_ID", help="the run's id (the runs table's run_id)")
    report.add_argument(
        "--output", required=True, help="the run's output: a local folder or s3://BUCKET/PREFIX"
    )
    report.add_argument("--to", help="write the report to this file (default: OUTPUT/_reports/RUN_ID.html)")
    report.add_argument("--config", help="a TOML file; only its [report] section is read")
    report.add_argument("-v", "--verbose", action="store_true", help="log at INFO")
    collection_commands.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(_log_level(args))
    commands = {
        "run": _run,
        "report": _report,
        "sql": _sql,
        "views": _views,
        "files": _files,
        "athena-ddl": _athena_ddl,
        "gc": _gc,
        "collection": lambda args, _argv: collection_commands.main(args),
    }
    try:
        return commands[args.command](args, argv)
    except RekbatchError as exc:
        print(f"rekbatch: error: {redact(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("rekbatch: interrupted", file=sys.stderr)
        return 130
    except Exception:  # a bug: its traceback, as Python prints it, without an endpoint's password
        print(redact(traceback.format_exc()), end="", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    flags = {
        "run.input": ("--input", args.input),
        "run.output": ("--output", args.output),
        "run.inventory": ("--inventory", args.inventory),
        "run.analyses": ("--analyses", args.analyses),
        "run.run_id": ("--run-id", args.run_id),
        "run.limit": ("--limit", args.limit),
        "run.dry_run": ("--dry-run", args.dry_run),
        "run.probe": ("--probe", args.probe),
        "run.summary_json": ("--summary-json", args.summary_json),
        "run.full": ("--full", args.full),
        "run.resume": ("--resume", args.resume),
        "run.commit_every": ("--commit-every", args.commit_every),
        "run.max_error_rate": ("--max-error-rate", args.max_error_rate),
        "dask.scheduler": ("--scheduler", args.scheduler),
        "rekognition.tps": ("--tps", args.tps),
        "quotas": ("--tps", {} if args.tps is not None else None),  # --tps sets every operation's quota
        "rekognition.image_source": ("--image-source", args.image_source),
        "rekognition.regions": ("--regions", args.regions),
        "run.prune": ("--prune", args.prune),
        "analyses.index_faces.collection": ("--collection", args.collection),
        "analyses.face_search.collection": ("--collection", args.collection),
        "analyses.user_search.collection": ("--collection", args.collection),
        "analyses.user_search.users": ("--users", args.users),
        "analyses.compare_faces.references": ("--reference", reference_urls(args.reference)),
        "analyses.custom_labels.start_models": ("--start-models", args.start_models),
    }
    config = load_config(
        args.config,
        overrides={key: value for key, (_, value) in flags.items()},
        flags={key: flag for key, (flag, _) in flags.items()},
    )
    from batch.aws.session import checked_region  # boto3 only for the commands that call AWS

    checked_region(config.rekognition.region)  # before anything is listed: a first run's likeliest mistake
    from batch.run.job import run  # Dask is imported only when a run starts

    # After the import: importing distributed applies Dask's `logging` config, which can name any logger.
    _quiet_dask(args.verbose or args.debug)
    pin_aws_loggers()
    command_line = shlex.join(["rekbatch", *(sys.argv[1:] if argv is None else argv)])
    problem = run(config, command_line=command_line).problem()
    if problem is not None:
        raise problem
    return 0


def reference_urls(flags: Sequence[str] | None) -> list[str] | None:
    """The URLs of the `--reference` flags, each of which may hold several separated by commas (a
    comma starts a new URL only before `s3://`, so keys with commas survive); None: no flag."""
    if flags is None:
        return None
    return [url.lstrip() for flag in flags for url in re.split(r",(?=\s*s3://)", flag) if url.strip()]


def _sql(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    from batch.aws.s3 import s3_client
    from batch.query import shell as sql_shell
    from batch.query import views  # duckdb only for this command

    variables = sql_shell.parse_assignments(args.set)
    scripts = [_script_text(option, value) for option, value in args.scripts or ()]
    _destination(args.output)
    with _output_errors(args.output):
        connection = views.connect(args.output, s3_client())
    with connection:
        if not connection.execute("SELECT count(*) FROM commits").fetchall()[0][0]:
            raise OutputUnreadable(f"no committed run under {args.output}: nothing to query (check --output)")
        if not scripts:
            sql_shell.repl(connection, variables)
        for script in scripts:
            sql_shell.run_script(connection, script, variables, sql_shell.print_relation)
    return 0


def _script_text(option: str, value: str) -> str:
    """The statements of `-c QUERY`, or of the file `-f FILE` (ConfigError when it cannot be read)."""
    if option == "-c":
        return value
    try:
        return Path(value).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"-f {value}: {exc.strerror}") from None


def _files(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    from batch.analyses.registry import all_tables
    from batch.aws.s3 import s3_client
    from batch.query.views import committed_file_list
    from batch.storage.commits import RunStore

    if args.table not in all_tables():
        raise ConfigError(f"files: unknown table {args.table!r} (known: {', '.join(all_tables())})")
    destination = _destination(args.output)
    with _output_errors(args.output):
        manifests = RunStore(destination, s3_client()).manifests()
    if not manifests:
        raise OutputUnreadable(f"no committed run under {args.output}: no files to read (check --output)")
    found = committed_file_list(destination, manifests, args.table)
    print(json.dumps(found, indent=2) if args.json else "\n".join(f["location"] for f in found))
    return 0


def _views(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    from batch.aws.s3 import s3_client
    from batch.query.views import duckdb_views_sql
    from batch.storage.commits import RunStore
    from batch.storage.readers import check_committed

    store = RunStore(_destination(args.output), s3_client())
    with _output_errors(args.output):
        manifests = store.manifests()
        check_committed(store, manifests)  # views over a missing file fail in whoever runs them
    print(duckdb_views_sql(store.destination, manifests), end="")
    return 0


def _athena_ddl(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    from batch.query.views import athena_ddl

    parse_s3_url(args.location, "--location")
    print(athena_ddl(args.location, args.database), end="")
    return 0


def _gc(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    from batch.aws.s3 import s3_client
    from batch.core.manifest import LIVE_SECONDS
    from batch.storage.gc import DEFAULT_GRACE_HOURS, MIN_GRACE_HOURS, collect_garbage

    hours = DEFAULT_GRACE_HOURS if args.older_than is None else args.older_than
    if hours < 0:
        raise ConfigError(f"--older-than: must be >= 0, got {hours:g}")
    if hours < MIN_GRACE_HOURS and not args.force:
        raise ConfigError(
            f"--older-than {hours:g}: under {MIN_GRACE_HOURS:g} hour, a crashed run's files go before it "
            "can be resumed; add --force to delete them anyway (running attempts keep theirs)"
        )
    destination = _destination(args.output)
    with _output_errors(args.output):
        collected = collect_garbage(
            destination,
            s3_client(),
            grace=timedelta(hours=hours),
            now=datetime.now(UTC),
            dry_run=args.dry_run,
        )
    verb = "would delete" if args.dry_run else "deleted"
    doomed = collected.doomed
    for stored in doomed:
        print(f"{verb} {destination.location(stored.path)}")
    print(f"gc: {verb} {len(doomed)} files ({sum(f.size_bytes for f in doomed)} bytes) under {args.output}")
    if collected.live_runs:
        active = f"active in the last {LIVE_SECONDS / 60:g} minutes"
        print(f"gc: kept every file of the runs {active}: {', '.join(collected.live_runs)}")
    return 0


@contextlib.contextmanager
def _output_errors(output: str) -> Iterator[None]:
    """S3 errors reading or deleting under the output, as a one-line OutputUnwritable (exit 3)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        raise OutputUnwritable(f"cannot use {output}: {exc.response.get('Error', {}).get('Code')}") from None
    except BotoCoreError as exc:
        raise OutputUnwritable(f"cannot use {output}: {one_line(str(exc))}") from None


def _destination(output: str) -> Any:
    """The output location of a `views` or `gc` command, checked like `run --output`."""
    from batch.storage.sink import Destination

    if output.startswith("s3://"):
        parse_s3_url(output, "--output")
    return Destination(output)


def _report(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    from batch.aws.s3 import s3_client
    from batch.report.page import write_report  # matplotlib and Jinja2 only for this command

    settings = load_report_config(args.config)
    print(write_report(args.output, args.run_id, settings, s3_client(), to=args.to))
    return 0


def _log_level(args: argparse.Namespace) -> int:
    if getattr(args, "debug", False):
        return logging.DEBUG
    return logging.INFO if getattr(args, "verbose", False) else logging.WARNING


#: Libraries whose DEBUG lines are about themselves (matplotlib scans hundreds of fonts for the report,
#: Pillow logs each PNG chunk): at INFO even with --debug, so the job's own lines can be found.
CHATTY_LOGGERS = ("matplotlib", "PIL")


def _configure_logging(level: int) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.INFO))
    pin_aws_loggers()  # whatever the root level: see batch.aws.logs


def _quiet_dask(verbose: bool) -> None:
    level = logging.WARNING if verbose else logging.ERROR
    for name in (
        "distributed",
        "distributed.scheduler",
        "distributed.nanny",
        "distributed.core",
        "distributed.worker",
        "distributed.http.proxy",
    ):
        logging.getLogger(name).setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
