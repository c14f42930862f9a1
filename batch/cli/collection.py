"""`rekbatch collection list|describe|delete|export|migrate`: the housekeeping of face collections.

They read the same configuration as a run (`--config`, `REKBATCH_*`, `--tps`) for the region, the
quotas, the retries and the prices; the endpoint comes from botocore's lookup, as for a run. Each
operation's quota is resolved as a run's is (`batch.run.quotas.operation_quotas`: set by the user, else
read from Service Quotas, else the default), and one line on stderr says which and where from. The calls
are in `batch.faces.admin`, the rows and text in `batch.faces.rows`, `migrate` in `batch.cli.migrate`.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any, TextIO

from batch.config.loader import load_account_config
from batch.config.model import RunConfig, parse_s3_url
from batch.core.errors import ConfigError, OutputUnreadable, OutputUnwritable

EXIT_CODES = """exit codes:
  0    done
  2    a bad flag, config or collection name, delete without --yes, or migrate --delete-source not
       naming SOURCE, or committed rows of SOURCE indexed with other settings than the config's
  3    no such collection, access denied, Rekognition kept failing, or --output / --to unusable
  4    migrate: aborted, nothing committed (run it again to continue)
  5    migrate: another invocation committed the migration first
  6    migrate: committed, but some images changed, were deleted or failed: not in TARGET (SOURCE kept)
  7    migrate: no committed run under --output indexed into SOURCE
  130  interrupted (Ctrl-C): migrate continues where it stopped when run again
  143  migrate: stopped by SIGTERM (cron, Kubernetes, Airflow), nothing committed: it continues
       where it stopped when run again"""


def add_parser(commands: Any) -> None:
    """Add `collection` and its subcommands to the `rekbatch` parser's subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="a TOML file: region, quotas, retries, prices (as for a run)")
    common.add_argument(
        "--tps",
        type=float,
        help="calls per second for each operation (default: [quotas] index_faces, else Service Quotas)",
    )
    common.add_argument("-v", "--verbose", action="store_true", help="log at INFO")
    parser = commands.add_parser(
        "collection",
        help="list, describe, delete, export or migrate face collections",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="collection_command", required=True)
    listing = actions.add_parser(
        "list", parents=[common], help="every collection of the account and region, with its faces"
    )
    listing.add_argument("--json", action="store_true", help="print JSON (one object per collection)")
    describe = actions.add_parser("describe", parents=[common], help="one collection: faces, model, ARN")
    describe.add_argument("name", metavar="NAME")
    describe.add_argument(
        "--output", help="also compare with the committed indexed_faces rows of this run output"
    )
    describe.add_argument("--json", action="store_true", help="print JSON")
    delete = actions.add_parser("delete", parents=[common], help="delete a collection and all its faces")
    delete.add_argument("name", metavar="NAME")
    delete.add_argument("--yes", action="store_true", help="confirm: the faces cannot be recovered")
    export = actions.add_parser(
        "export", parents=[common], help="every face of a collection as one Parquet file (ListFaces)"
    )
    export.add_argument("name", metavar="NAME")
    export.add_argument("--to", required=True, metavar="PATH", help="a local file or s3://BUCKET/KEY")
    migrate = actions.add_parser(
        "migrate",
        parents=[common],
        help="index SOURCE's images again into TARGET with the current face model, resumable",
    )
    migrate.add_argument("source", metavar="SOURCE")
    migrate.add_argument("target", metavar="TARGET")
    migrate.add_argument(
        "--output",
        required=True,
        help="the run output whose committed indexed_faces rows list SOURCE's images",
    )
    migrate.add_argument(
        "--dry-run", action="store_true", help="count the images and price them; call nothing, write nothing"
    )
    migrate.add_argument(
        "--delete-source",
        metavar="SOURCE",
        help="delete SOURCE once every image is in TARGET (repeat its name to confirm)",
    )


def main(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run `rekbatch collection ...`, printing to `out` (default: stdout); errors are raised as
    `RekbatchError` (one line, an exit code)."""
    from batch.analyses.index_faces import check_collection_id

    name = getattr(args, "name", None)
    for label, value in (
        ("NAME", name),
        ("SOURCE", getattr(args, "source", None)),
        ("TARGET", getattr(args, "target", None)),
    ):
        if value is not None and not check_collection_id(label, value):
            raise ConfigError(f"{label}: a collection id is 1-255 letters, digits, '_', '.' or '-', got ''")
    if args.collection_command == "delete" and not args.yes:
        raise ConfigError(f"collection delete {name}: deletes the collection and every face in it; add --yes")
    overrides = {"rekognition.tps": args.tps, "quotas": {} if args.tps is not None else None}
    config = load_account_config(
        args.config, overrides=overrides, flags={"rekognition.tps": "--tps", "quotas": "--tps"}
    )
    handlers = {
        "list": _list,
        "describe": _describe,
        "delete": _delete,
        "export": _export,
        "migrate": _migrate,
    }
    return handlers[args.collection_command](args, config, out or sys.stdout)


#: The operations each command calls: their quotas are resolved before the first call.
OPERATIONS = {
    "list": ("ListCollections", "DescribeCollection"),
    "describe": ("DescribeCollection", "ListFaces"),
    "delete": ("DescribeCollection", "DeleteCollection"),
    "export": ("DescribeCollection", "ListFaces"),
}


def command_caller(config: RunConfig, operations: Sequence[str], *, threads: int = 4) -> tuple[Any, Any, Any]:
    """A caller limited at each operation's quota, resolved as a run's (the user's `--tps` or
    `[quotas] index_faces`, else Service Quotas, else the default); one line on stderr says them.
    Returns (caller, its call counts, the quotas)."""
    from batch.aws.rekognition import RateLimiter, RekognitionCaller, rekognition_client
    from batch.aws.session import resolved_region
    from batch.core.calls import CallCounts
    from batch.run.quotas import operation_quotas

    region = resolved_region(config.rekognition.region)
    quotas = operation_quotas(config, dict.fromkeys(operations, "index_faces"), region)
    print(f"rekbatch: {quota_line(quotas)}", file=sys.stderr, flush=True)
    limiter = RateLimiter(config.rekognition.tps, rates={op: quota.tps for op, quota in quotas.items()})
    counts = CallCounts()
    client = rekognition_client(config.rekognition, threads)
    return RekognitionCaller(client, config.rekognition.retry_policy, limiter, counts), counts, quotas


def quota_line(quotas: Mapping[str, Any]) -> str:
    """The quotas and where they came from, as a run's summary says them."""
    listed = sorted(quotas.items())
    if len({(quota.tps, quota.source) for _, quota in listed}) == 1:
        return f"quotas, calls/s: {listed[0][1].tps:g} for each operation ({listed[0][1].source})"
    return "quotas, calls/s: " + ", ".join(f"{op} {quota.tps:g} ({quota.source})" for op, quota in listed)


def _admin(config: RunConfig, command: str) -> Any:
    from batch.faces.admin import CollectionAdmin

    return CollectionAdmin(command_caller(config, OPERATIONS[command])[0])


def _list(args: argparse.Namespace, config: RunConfig, out: TextIO) -> int:
    from batch.faces.rows import collections_table

    admin = _admin(config, "list")
    infos = [admin.describe(collection) for collection in admin.collection_ids()]
    if args.json:
        print(json.dumps([info.as_json() for info in infos], indent=2), file=out)
    else:
        print(collections_table(infos), file=out)
    return 0


def _describe(args: argparse.Namespace, config: RunConfig, out: TextIO) -> int:
    from batch.faces.rows import TablesAgreement, describe_lines

    known = _known_faces(args.output, args.name) if args.output else None  # a bad --output: no call
    admin = _admin(config, "describe")
    info = admin.describe(args.name)
    agreement = None
    if known is not None:
        stored = (face["FaceId"] for page in admin.face_pages(args.name) for face in page)
        agreement = TablesAgreement.compare(stored, known)
    if args.json:
        document = info.as_json()
        if agreement is not None:
            document["tables"] = {**asdict(agreement), "output": args.output, "agree": agreement.agree}
        print(json.dumps(document, indent=2), file=out)
    else:
        lines = describe_lines(info, config.prices["face_storage_month"], agreement, args.output or "")
        print("\n".join(lines), file=out)
    return 0


def _known_faces(output: str, collection: str) -> set[str]:
    """The face ids the committed `indexed_faces` rows of `output` list in `collection`."""
    from botocore.exceptions import BotoCoreError, ClientError

    from batch.aws.s3 import s3_client
    from batch.faces.sync import known_faces
    from batch.storage.commits import RunStore
    from batch.storage.sink import Destination

    if output.startswith("s3://"):
        parse_s3_url(output, "--output")
    store = RunStore(Destination(output), s3_client())
    try:
        manifests = store.manifests()
        if not manifests:  # a mistyped --output would otherwise read as "the tables know no face"
            raise OutputUnreadable(f"no committed run under {output}")
        return known_faces(store, manifests, (), collection).ids
    except ClientError as exc:
        raise OutputUnreadable(f"cannot read {output}: {exc.response.get('Error', {}).get('Code')}") from None
    except BotoCoreError as exc:
        raise OutputUnreadable(f"cannot read {output}: {exc}") from None


def _delete(args: argparse.Namespace, config: RunConfig, out: TextIO) -> int:
    admin = _admin(config, "delete")
    faces = admin.describe(args.name).faces
    admin.delete(args.name)
    print(f"deleted collection {args.name} and its {faces} faces", file=out)
    return 0


def _export(args: argparse.Namespace, config: RunConfig, out: TextIO) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from batch.aws.s3 import encryption_arguments, s3_client
    from batch.faces.rows import EXPORT_SCHEMA, export_table
    from batch.storage.sink import write_parquet_file

    to = _export_target(args.to)
    admin = _admin(config, "export")
    admin.describe(args.name)  # a missing collection ends here, before anything is written
    pages = (export_table(args.name, faces) for faces in admin.face_pages(args.name))
    options = config.output_options
    try:
        rows = write_parquet_file(
            to,
            EXPORT_SCHEMA,
            pages,
            compression=options.compression,
            s3_client=s3_client() if to.startswith("s3://") else None,
            encryption=encryption_arguments(options.sse, options.kms_key_id),
        )
    except ClientError as exc:
        raise OutputUnwritable(f"cannot write {to}: {exc.response.get('Error', {}).get('Code')}") from None
    except (BotoCoreError, OSError) as exc:
        raise OutputUnwritable(f"cannot write {to}: {exc}") from None
    print(f"exported {rows} faces of collection {args.name} to {to}", file=out)
    return 0


def _export_target(to: str) -> str:
    """`--to`, checked: `s3://BUCKET/KEY` naming an object, or a local file path (not a folder)."""
    if to.startswith("s3://"):
        key = parse_s3_url(to, "--to")[1]
        if not key or key.endswith("/"):
            raise ConfigError(f"--to: expected s3://BUCKET/KEY naming one file, got {to!r}")
    elif not to or to.endswith("/"):
        raise ConfigError(f"--to: expected a file path, got {to!r}")
    return to


def _migrate(args: argparse.Namespace, config: RunConfig, out: TextIO) -> int:
    from batch.cli.migrate import Migration, migrate

    if args.source == args.target:
        raise ConfigError(f"collection migrate: SOURCE and TARGET are both {args.source}")
    if args.delete_source is not None and args.delete_source != args.source:
        raise ConfigError(
            f"--delete-source: must repeat SOURCE ({args.source}) to confirm, got {args.delete_source!r}"
        )
    migration = Migration(
        args.source,
        args.target,
        args.output,
        dry_run=args.dry_run,
        delete_source=args.delete_source is not None,
        command_line=" ".join(["rekbatch", "collection", "migrate", args.source, args.target]),
    )
    return migrate(config, migration, functools.partial(command_caller, config), out)
