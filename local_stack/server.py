"""The Rekognition-compatible HTTP endpoint: AWS JSON 1.1 over HTTP/1.1 keep-alive, stdlib only.

Wire protocol, as stock botocore speaks it: ``POST /`` with ``X-Amz-Target: RekognitionService.<Operation>``
and a JSON body (blobs base64). Success: 200, JSON, ``x-amzn-RequestId``. Error: 400 (client errors and
throttling) or 500 (InternalServerError) with ``{"__type": code, "Message": ...}`` and ``x-amzn-ErrorType``,
which botocore turns into the modelled exception class. Signatures are not checked, but the region a
request was signed for (its ``Authorization`` header's credential scope) picks that region's quota and
is in the call log: one endpoint serves several regions. ``GET /_health`` -> 200.

`RekognitionApp` is the socket-free part (quota/faults, validation, dispatch); `serve()` binds it to HTTP.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import botocore.session

from local_stack.custom_labels import OPERATIONS as MODEL_OPERATIONS
from local_stack.errors import ServiceError
from local_stack.faults import FaultInjector, Verdict
from local_stack.operations import OPERATIONS, Call
from local_stack.service_quotas import TARGET_PREFIX as QUOTAS_PREFIX
from local_stack.service_quotas import ServiceQuotasApp
from local_stack.users import USER_OPERATIONS
from local_stack.validation import validate_request

log = logging.getLogger(__name__)

TARGET_PREFIX = "RekognitionService."
JSON_CONTENT_TYPE = "application/x-amz-json-1.1"
#: Every operation's handler: `local_stack.operations`, the face users of `local_stack.users` and
#: `local_stack.custom_labels`' ones.
HANDLERS = {**OPERATIONS, **USER_OPERATIONS, **MODEL_OPERATIONS}


#: (source, bucket, name, version) of a request's first image, for the call log.
ImageRef = tuple[str | None, str | None, str | None, str | None]


@dataclass(frozen=True)
class Answer:
    """One call's result before it is written: status, body, error code, and what the fault injector wants."""

    operation: str
    status: int
    body: bytes
    error: str | None = None
    service: str = "rekognition"
    drop: bool = False
    delay: float = 0.0
    call: Call | None = None
    ref: ImageRef = (None, None, None, None)
    #: The region the request was signed for (None: unsigned).
    region: str | None = None


def _error_body(code: str, message: str) -> bytes:
    return json.dumps({"__type": code, "Message": message}).encode()


class CallLog:
    """Appends one JSON line per call; thread-safe; a no-op without a path."""

    def __init__(self, path: Path | None) -> None:
        self._lock = threading.Lock()
        self._fh = path.open("a", encoding="utf-8") if path else None

    def write(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            return
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self._lock:
            self._fh.write(line)
            self._fh.flush()

    def close(self) -> None:
        if self._fh:
            self._fh.close()


class RekognitionApp:
    """Everything but the sockets: `handle(target, body) -> Answer`."""

    def __init__(
        self,
        make_call: Any,
        faults: FaultInjector,
        denied: frozenset[str] = frozenset(),
        service_quotas: ServiceQuotasApp | None = None,
    ) -> None:
        self._make_call = make_call  # () -> Call, so each request gets fresh per-call state
        self._faults = faults
        self._denied = denied  # operations the caller's (pretend) IAM policy does not allow
        self._model = botocore.session.get_session().get_service_model("rekognition")
        # Service Quotas' answers (`local_stack.service_quotas`): the quotas this endpoint enforces.
        self._quotas = service_quotas or ServiceQuotasApp(faults.quota)

    def handle(self, target: str, body: bytes, region: str = "") -> Answer:
        """One call; `region` is the one the request was signed for ("" unsigned): each region has its
        own quota and Service Quotas' answers (`FaultInjector`)."""
        if target.startswith(QUOTAS_PREFIX):
            answer = self._service_quotas(target.removeprefix(QUOTAS_PREFIX), body, region)
        else:
            answer = self._rekognition(target, body, region)
        return dataclasses.replace(answer, region=region or None)

    def _rekognition(self, target: str, body: bytes, region: str) -> Answer:
        operation = target.removeprefix(TARGET_PREFIX)
        handler = HANDLERS.get(operation) if target.startswith(TARGET_PREFIX) else None
        try:
            params = json.loads(body or b"{}")
        except ValueError:
            params = None
        ref = _image_ref(params)
        if handler is None or operation in self._denied:
            return _error_answer(operation or "-", self._refusal(target, operation), ref=ref)
        verdict = self._faults.decide(operation, region)
        injected = _injected_answer(operation, verdict, ref)
        if injected is not None:
            return injected
        if params is None:
            err = ServiceError("SerializationException", "Body is not JSON.")
            return _error_answer(operation, err, delay=verdict.delay)
        call: Call = self._make_call()
        if isinstance(params, dict):
            call.model = params.get("ProjectVersionArn") or params.get("ProjectVersion")
        try:
            request = validate_request(self._model.operation_model(operation).input_shape, params)
            result = handler(call, request)
        except ServiceError as err:
            return _error_answer(operation, err, delay=verdict.delay, call=call, ref=ref)
        except Exception:  # a bug here must look like what it is to the client: a 500
            log.exception("operation %s failed", operation)
            fault = ServiceError("InternalServerError", "Unexpected failure.")
            return _error_answer(operation, fault, delay=verdict.delay, call=call, ref=ref)
        body_out = json.dumps(result, separators=(",", ":")).encode()
        return Answer(operation, 200, body_out, delay=verdict.delay, call=call, ref=ref)

    def _service_quotas(self, operation: str, body: bytes, region: str) -> Answer:
        """A Service Quotas call: no quota, faults or latency of the Rekognition operations apply."""
        try:
            result = self._quotas.handle(operation, json.loads(body or b"{}"), region)
        except ValueError:
            err = ServiceError("SerializationException", "Body is not JSON.")
            return _error_answer(operation, err, service="service-quotas")
        except ServiceError as err:
            return _error_answer(operation, err, service="service-quotas")
        body_out = json.dumps(result, separators=(",", ":")).encode()
        return Answer(operation, 200, body_out, service="service-quotas")

    def _refusal(self, target: str, operation: str) -> ServiceError:
        """Why a call is refused before anything else: the caller may not call it (`--deny`), or no such
        operation."""
        if operation in self._denied:
            return ServiceError(
                "AccessDeniedException", f"User is not authorized to perform: rekognition:{operation}"
            )
        return ServiceError("UnknownOperationException", f"Unknown operation: {target}")


def _error_answer(operation: str, err: ServiceError, **extra: Any) -> Answer:
    return Answer(operation, err.status, _error_body(err.code, err.message), err.code, **extra)


def _injected_answer(operation: str, verdict: Verdict, ref: ImageRef) -> Answer | None:
    """The answer the quota or an injected fault imposes, or None to run the operation."""
    if verdict.error == "ProvisionedThroughputExceededException":
        return _error_answer(operation, ServiceError(verdict.error, "Provisioned Rate exceeded."), ref=ref)
    if verdict.drop:
        return Answer(operation, 0, b"", "dropped", drop=True, delay=verdict.delay, ref=ref)
    if verdict.error:
        return _error_answer(
            operation, ServiceError(verdict.error, "Injected fault."), delay=verdict.delay, ref=ref
        )
    return None


def _image_ref(params: Any) -> ImageRef:
    """(source, bucket, name, version) of the request's first image, read from the raw params for the
    call log."""
    if not isinstance(params, dict):
        return None, None, None, None
    image = params.get("Image") or params.get("SourceImage")
    if not isinstance(image, dict):
        return None, None, None, None
    obj = image.get("S3Object")
    if isinstance(obj, dict):
        return "s3", obj.get("Bucket"), obj.get("Name"), obj.get("Version")
    return ("bytes", None, None, None) if "Bytes" in image else (None, None, None, None)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: botocore pools connections
    # TCP_NODELAY. An answer goes out in two writes (headers, then body); with Nagle on, the body waits for
    # the client to ACK the headers, and its delayed ACK stalls every call. botocore (urllib3) already sets
    # TCP_NODELAY on its side. See docs/design/rate-limiter.md, "The bench's local stack".
    disable_nagle_algorithm = True
    server: RekognitionHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)

    def do_GET(self) -> None:
        if self.path.split("?")[0] == "/_health":
            self._send(200, b'{"status":"ok"}', "application/json")
        else:
            self._send(404, b'{"message":"not found"}', "application/json")

    def do_POST(self) -> None:
        started, ts = time.monotonic(), time.time()
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        region = signed_region(self.headers.get("Authorization", ""))
        answer = self.server.app.handle(self.headers.get("X-Amz-Target", ""), body, region)
        if answer.delay:
            time.sleep(answer.delay)
        # Log before answering: once a client has its answer, its call is in the log (tests rely on it).
        self.server.call_log.write(_log_record(answer, ts, started))
        if answer.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
        else:
            headers = {"x-amzn-ErrorType": answer.error} if answer.error else {}
            try:
                self._send(answer.status, answer.body, JSON_CONTENT_TYPE, headers)
            except (BrokenPipeError, ConnectionResetError):
                # The client gave up first (its read timeout, on a slow answer): as with Rekognition, the
                # call happened and is logged; there is no one left to answer.
                self.close_connection = True

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


#: SigV4's credential scope: Credential=KEY/DATE/REGION/SERVICE/aws4_request.
_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/([a-z0-9-]+)/")


def signed_region(authorization: str) -> str:
    """The region a SigV4 `Authorization` header was signed for; "" if none."""
    match = _SCOPE.search(authorization)
    return match.group(1) if match else ""


def _log_record(answer: Answer, ts: float, started: float) -> dict[str, Any]:
    source, bucket, name, version = answer.ref
    return {
        "ts": ts,
        "service": answer.service,
        "region": answer.region,
        "operation": answer.operation,
        "source": source,
        "bucket": bucket,
        "name": name,
        "version": version,
        "digest": answer.call.digest if answer.call else None,
        "model": answer.call.model if answer.call else None,
        "outcome": answer.error or "ok",
        "status": answer.status,
        "latency_ms": round((time.monotonic() - started) * 1000, 3),
    }


class RekognitionHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # bursts of concurrent clients must queue, not be refused

    def __init__(self, address: tuple[str, int], app: RekognitionApp, call_log: CallLog) -> None:
        super().__init__(address, _Handler)
        self.app = app
        self.call_log = call_log


def serve(host: str, port: int, app: RekognitionApp, call_log: CallLog) -> RekognitionHTTPServer:
    """Bind (port 0 = any free port); the caller runs `serve_forever()` and later `shutdown()`."""
    server = RekognitionHTTPServer((host, port), app, call_log)
    log.info("Rekognition endpoint on http://%s:%s", *server.server_address[:2])
    return server
