"""Errors the local endpoint answers with, in Rekognition's wire shape.

    ServiceError(code, message)   -> HTTP 400 (client errors and throttling) or 500 (server faults)

The status per code follows the Rekognition Developer Guide "Error handling" page: only InternalServerError
is a 500 here; ThrottlingException and ProvisionedThroughputExceededException are 400.
"""

from __future__ import annotations

SERVER_FAULTS = frozenset({"InternalServerError"})


class ServiceError(Exception):
    """An error answer: `code` becomes `__type` and `x-amzn-ErrorType`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    @property
    def status(self) -> int:
        return 500 if self.code in SERVER_FAULTS else 400


def invalid_parameter(message: str) -> ServiceError:
    return ServiceError("InvalidParameterException", f"Request has invalid parameters: {message}")
