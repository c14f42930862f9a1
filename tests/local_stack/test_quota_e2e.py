"""Quota, latency and injected faults of the local endpoint, configured per operation from one TOML file."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError
from conftest import make_image

from local_stack.faults import Behaviour, FaultConfig, FaultInjector
from local_stack.stack import LocalStack

QUOTA = 20.0
BURST = 5.0
CONFIG = f"""
seed = 7
tps = {QUOTA}
burst = {BURST}

[operations.DetectFaces]
fault_rate_500 = 1.0

[operations.DetectText]
fault_rate_throttle = 1.0

[operations.DetectModerationLabels]
fault_rate_drop = 1.0

[operations.RecognizeCelebrities]
fault_rate_slow = 1.0
slow_seconds = 2

[operations.DetectProtectiveEquipment]
latency_ms = 150
latency_jitter_ms = 50
"""
IMAGE = {"Bytes": make_image(rects=(("face", (20, 20, 60, 80)), ("box", (150, 100, 80, 60))))}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    config = tmp_path_factory.mktemp("quota") / "endpoint.toml"
    config.write_text(CONFIG)
    with LocalStack(extra_args=["--config", str(config)]) as local:
        yield local


def client(stack: LocalStack, **config: Any) -> Any:
    with pytest.MonkeyPatch.context() as mp:
        for name, value in stack.env.items():
            mp.setenv(name, value)
        return boto3.client(
            "rekognition", config=Config(retries={"total_max_attempts": 1}, max_pool_connections=32, **config)
        )


def _outcomes(stack: LocalStack, operation: str) -> list[dict[str, Any]]:
    return [c for c in stack.calls() if c["operation"] == operation]


@pytest.mark.integration
def test_quota_holds_under_load(stack: LocalStack) -> None:
    rek = client(stack)
    stop = time.monotonic() + 3.0
    codes: list[str] = []
    lock = threading.Lock()

    def hammer() -> None:
        while time.monotonic() < stop:
            try:
                rek.detect_labels(Image=IMAGE)
                code = "ok"
            except ClientError as err:
                code = err.response["Error"]["Code"]
            with lock:
                codes.append(code)

    with ThreadPoolExecutor(12) as pool:
        for _ in range(12):
            pool.submit(hammer)

    records = _outcomes(stack, "DetectLabels")
    ok_times = sorted(r["ts"] for r in records if r["outcome"] == "ok")
    rejected = [r for r in records if r["outcome"] != "ok"]
    for i, start in enumerate(ok_times):
        in_window = sum(1 for t in ok_times[i:] if t < start + 1.0)
        assert in_window <= QUOTA + BURST, f"{in_window} successful calls in 1 s from {start}"
    assert {r["outcome"] for r in rejected} == {"ProvisionedThroughputExceededException"}
    assert all(r["status"] == 400 for r in rejected)
    assert len(rejected) > len(ok_times)  # the load was well over the quota
    assert len(ok_times) >= QUOTA * 2  # and the quota was actually used
    assert codes.count("ok") == len(ok_times)
    assert set(codes) == {"ok", "ProvisionedThroughputExceededException"}


@pytest.mark.integration
def test_internal_error_is_a_500(stack: LocalStack) -> None:
    rek = client(stack)
    with pytest.raises(rek.exceptions.InternalServerError) as info:
        rek.detect_faces(Image=IMAGE)
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500


@pytest.mark.integration
def test_throttling_exception_is_a_400(stack: LocalStack) -> None:
    rek = client(stack)
    with pytest.raises(rek.exceptions.ThrottlingException) as info:
        rek.detect_text(Image=IMAGE)
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


@pytest.mark.integration
def test_dropped_connection(stack: LocalStack) -> None:
    rek = client(stack)
    with pytest.raises(ConnectionClosedError):
        rek.detect_moderation_labels(Image=IMAGE)
    assert _outcomes(stack, "DetectModerationLabels")[-1]["outcome"] == "dropped"


@pytest.mark.integration
def test_slow_answer_times_out(stack: LocalStack) -> None:
    rek = client(stack, read_timeout=0.5, connect_timeout=2)
    started = time.monotonic()
    with pytest.raises(ReadTimeoutError):
        rek.recognize_celebrities(Image=IMAGE)
    assert time.monotonic() - started < 1.9


@pytest.mark.integration
def test_latency_is_base_plus_jitter(stack: LocalStack) -> None:
    rek = client(stack)
    for _ in range(4):
        rek.detect_protective_equipment(Image=IMAGE)
    latencies = [r["latency_ms"] for r in _outcomes(stack, "DetectProtectiveEquipment")]
    assert len(latencies) == 4
    assert all(150 <= ms <= 260 for ms in latencies), latencies


# ---- the fault policy without a server --------------------------------------------------------------------


def test_config_precedence(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("tps = 5\nlatency_ms = 10\n[operations.DetectLabels]\ntps = 50\n")
    config = FaultConfig.load(path, {"tps": 7.0, "latency_ms": None})
    assert config.for_operation("DetectFaces") == Behaviour(tps=7.0, latency_ms=10)
    assert config.for_operation("DetectLabels") == Behaviour(tps=50, latency_ms=10)


def test_config_rejects_unknown_keys_and_bad_rates(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[operations.DetectLabels]\ntsp = 5\n")
    with pytest.raises(ValueError, match="tsp"):
        FaultConfig.load(path)
    with pytest.raises(ValueError, match="fault rates"):
        Behaviour(fault_rate_500=0.7, fault_rate_drop=0.7)


def test_fault_draws_are_seeded_and_follow_the_rates() -> None:
    config = FaultConfig(Behaviour(fault_rate_500=0.25, fault_rate_drop=0.25), {}, seed=3)
    a, b = FaultInjector(config), FaultInjector(config)
    draws_a = [a.decide("DetectLabels") for _ in range(2000)]
    draws_b = [b.decide("DetectLabels") for _ in range(2000)]
    assert draws_a == draws_b
    errors = sum(d.error == "InternalServerError" for d in draws_a)
    drops = sum(d.drop for d in draws_a)
    assert 400 < errors < 600
    assert 400 < drops < 600


def test_quota_rejects_before_faults_with_a_fake_clock() -> None:
    now = [0.0]
    injector = FaultInjector(
        FaultConfig(Behaviour(tps=2, burst=2, fault_rate_500=1.0), {}, seed=1), clock=lambda: now[0]
    )
    verdicts = [injector.decide("DetectLabels").error for _ in range(3)]
    assert verdicts == [
        "InternalServerError",
        "InternalServerError",
        "ProvisionedThroughputExceededException",
    ]
    now[0] = 0.5
    assert injector.decide("DetectLabels").error == "InternalServerError"
