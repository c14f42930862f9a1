"""Command line of the local stack: `python -m local_stack {rekognition,s3,stack,inventory} ...`.

See docs/local-stack.md.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import boto3
from botocore.config import Config

from local_stack.collections import CollectionStore
from local_stack.custom_labels import ModelStore
from local_stack.decoding import LOWEST_MIN_SIDE_PX, decode_upright, treat_bomb_warnings_as_errors
from local_stack.faults import FaultConfig, FaultInjector, region_quotas
from local_stack.images import S3ObjectCache
from local_stack.operations import Call
from local_stack.server import CallLog, RekognitionApp, serve
from local_stack.service_quotas import MODES as SERVICE_QUOTAS_MODES
from local_stack.service_quotas import ServiceQuotasApp
from local_stack.vision import AnalysisCache, analyse_pixels

FAULT_FLAGS = {
    "tps": "tps",
    "burst": "burst",
    "latency_ms": "latency_ms",
    "latency_jitter_ms": "latency_jitter_ms",
    "fault_rate_500": "fault_rate_500",
    "fault_rate_throttle": "fault_rate_throttle",
    "fault_rate_drop": "fault_rate_drop",
    "fault_rate_slow": "fault_rate_slow",
    "slow_seconds": "slow_seconds",
}


def _raise_interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def add_endpoint_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group(
        "quota, latency and faults (every operation; TOML [operations.X] overrides)"
    )
    g.add_argument("--tps", type=float, help="token-bucket quota per operation, calls/s (default: none)")
    g.add_argument("--burst", type=float, help="bucket capacity (default: max(1, tps))")
    g.add_argument(
        "--quota-per-region",
        action="append",
        default=[],
        metavar="REGION=TPS",
        help="every operation's quota in REGION (the region a request is signed for), calls/s; "
        "repeatable; other regions have --tps",
    )
    g.add_argument("--latency-ms", type=float, help="base latency added to every answer")
    g.add_argument("--latency-jitter-ms", type=float, help="plus uniform random 0..J ms")
    g.add_argument("--fault-rate-500", type=float, help="fraction answered InternalServerError (500)")
    g.add_argument("--fault-rate-throttle", type=float, help="fraction answered ThrottlingException (400)")
    g.add_argument(
        "--fault-rate-drop", type=float, help="fraction whose connection is closed without an answer"
    )
    g.add_argument("--fault-rate-slow", type=float, help="fraction answered after --slow-seconds")
    g.add_argument("--slow-seconds", type=float, help="delay of a slow answer (default 30)")
    g.add_argument("--seed", type=int, help="seed of the fault and jitter draws")
    g.add_argument("--config", type=Path, help="TOML file: top-level keys, [operations.<Name>] overrides")


def _s3_client(endpoint: str | None):
    if not endpoint:
        return None
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - moto accepts anything
        # One connection per concurrent request the server may be handling (its listen backlog is 256).
        config=Config(max_pool_connections=256, retries={"total_max_attempts": 2}),
    )


def run_rekognition(args: argparse.Namespace) -> int:
    treat_bomb_warnings_as_errors()
    flags = {name: getattr(args, attr) for name, attr in FAULT_FLAGS.items()}
    try:
        per_region = region_quotas(args.quota_per_region)
    except ValueError as exc:
        print(f"local_stack rekognition: {exc}", file=sys.stderr)
        return 2
    faults = FaultInjector(FaultConfig.load(args.config, flags, args.seed), region_tps=per_region)
    s3 = (
        S3ObjectCache(_s3_client(args.s3_endpoint), revalidate_after=args.s3_revalidate_after)
        if args.s3_endpoint
        else None
    )
    # Decoded down to the smallest side any operation reads; `Call.analyse` holds the others to 80 px.
    analyses = AnalysisCache(lambda data: analyse_pixels(decode_upright(data, LOWEST_MIN_SIDE_PX)))
    collections = CollectionStore(args.collections_file)
    call_log = CallLog(args.call_log)
    quotas = ServiceQuotasApp(faults.quota, args.service_quotas)
    models = ModelStore(args.custom_labels_model, args.moderation_adapter, args.model_start_seconds)
    denied = frozenset(args.deny)
    app = RekognitionApp(lambda: Call(analyses, s3, collections, models), faults, denied, quotas)
    server = serve(args.host, args.port, app, call_log)
    host, port = server.server_address[:2]
    print(f"Rekognition endpoint listening on http://{host!s}:{port}", flush=True)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        call_log.close()
    return 0


def run_s3(args: argparse.Namespace) -> int:
    from local_stack.s3server import MotoS3Server

    signal.signal(signal.SIGTERM, _raise_interrupt)
    with MotoS3Server(port=args.port) as s3:
        print(f"moto S3 server on {s3.url}", flush=True)
        try:
            return s3.run_until_exit()
        except KeyboardInterrupt:
            return 0


def run_stack(args: argparse.Namespace, extra: Sequence[str]) -> int:
    import tempfile

    from local_stack.stack import LocalStack, seed_samples

    signal.signal(signal.SIGTERM, _raise_interrupt)
    with LocalStack(tps=args.tps, burst=args.burst, extra_args=extra, call_log=args.call_log) as stack:
        if args.seed_bucket:
            s3 = stack.s3_client()
            with tempfile.TemporaryDirectory() as tmp:
                truth = seed_samples(s3, args.seed_bucket, args.seed_prefix, Path(tmp))
            print(
                f"# seeded s3://{args.seed_bucket}/{args.seed_prefix} with {len(truth.in_prefix())} samples",
                flush=True,
            )
        for name, value in stack.env.items():
            print(f"export {name}={value}")
        print(f"# call log: {stack.call_log}  (Ctrl-C to stop)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
        # Stopping: a second Ctrl-C or SIGTERM (make and the terminal both send one) must not
        # interrupt stopping the servers.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return 0


def run_inventory(args: argparse.Namespace) -> int:
    from local_stack.inventory import write_inventory

    s3 = _s3_client(args.s3_endpoint) or boto3.session.Session().client("s3")
    print(
        write_inventory(
            s3, args.bucket, args.destination, args.format, config_id=args.id, all_versions=args.all_versions
        )
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m local_stack", description=__doc__, allow_abbrev=False)
    parser.add_argument("--log-level", default="WARNING")
    sub = parser.add_subparsers(dest="command", required=True)
    rek = sub.add_parser("rekognition", allow_abbrev=False, help="the Rekognition-compatible endpoint")
    rek.add_argument("--port", type=int, default=0, help="0 = any free port (printed)")
    rek.add_argument("--host", default="127.0.0.1")
    rek.add_argument("--s3-endpoint", help="S3 endpoint URL used for Image.S3Object")
    rek.add_argument(
        "--s3-revalidate-after",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="trust a cached S3 object this long without a conditional GET (default 0 = exact)",
    )
    rek.add_argument("--call-log", type=Path, help="append one JSON line per call here")
    rek.add_argument(
        "--deny",
        action="append",
        default=[],
        metavar="OPERATION",
        help="answer every call of this operation AccessDeniedException, as IAM would (repeatable)",
    )
    rek.add_argument(
        "--service-quotas",
        choices=SERVICE_QUOTAS_MODES,
        default="answer",
        help="Service Quotas (ListServiceQuotas, GetServiceQuota): 'answer' lists the quotas this endpoint "
        "enforces; 'deny' answers AccessDeniedException",
    )
    rek.add_argument("--collections-file", type=Path, help="persist face collections to this JSON file")
    rek.add_argument(
        "--custom-labels-model",
        action="append",
        default=[],
        metavar="VERSION_ARN",
        help="a Custom Labels model version the endpoint hosts, STOPPED at start (repeatable)",
    )
    rek.add_argument(
        "--moderation-adapter",
        action="append",
        default=[],
        metavar="VERSION_ARN",
        help="a custom moderation adapter DetectModerationLabels accepts as ProjectVersion (repeatable)",
    )
    rek.add_argument(
        "--model-start-seconds",
        type=float,
        default=1.0,
        help="seconds a started model stays STARTING before it is RUNNING (default 1)",
    )
    add_endpoint_flags(rek)
    s3 = sub.add_parser("s3", allow_abbrev=False, help="moto's S3 server on 127.0.0.1")
    s3.add_argument("--port", type=int, default=0)
    stack = sub.add_parser(
        "stack",
        allow_abbrev=False,
        help="both servers, seeded; prints the export lines; unknown flags go to "
        "the endpoint (e.g. --fault-rate-500 0.1)",
    )
    stack.add_argument("--tps", type=float)
    stack.add_argument("--burst", type=float)
    stack.add_argument("--seed-bucket", default="images")
    stack.add_argument("--seed-prefix", default="incoming/")
    stack.add_argument("--call-log", type=Path)
    inv = sub.add_parser(
        "inventory",
        allow_abbrev=False,
        help="write a bucket's S3 Inventory report as AWS does (prints the manifest's URL)",
    )
    inv.add_argument("--bucket", required=True, help="the source bucket")
    inv.add_argument("--destination", required=True, help="s3://BUCKET/PREFIX/ to write the report under")
    inv.add_argument("--format", choices=("CSV", "ORC", "Parquet"), default="CSV")
    inv.add_argument("--id", default="rekbatch", help="the inventory configuration's id")
    inv.add_argument("--all-versions", action="store_true", help="every version and delete marker")
    inv.add_argument("--s3-endpoint", help="the S3 endpoint (default: boto3's, e.g. AWS_ENDPOINT_URL_S3)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    if args.command in ("s3", "stack") and importlib.util.find_spec("moto") is None:
        # A production install (`pip install .`) has no moto: say so, not a server that died unseen.
        print(
            f"local_stack {args.command}: needs moto: pip install 'rekognition-batch[local]'", file=sys.stderr
        )
        return 2
    if args.command == "stack":
        return run_stack(args, extra)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "rekognition":
        return run_rekognition(args)
    if args.command == "inventory":
        return run_inventory(args)
    return run_s3(args)


if __name__ == "__main__":
    sys.exit(main())
