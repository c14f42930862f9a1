"""Log levels that keep credentials and image bytes out of every log, in the driver and on the workers.

botocore at DEBUG logs each request's body (with `--image-source bytes`, the base64 image) and its
headers (the `Authorization` header names the access key id; with temporary credentials the
`X-Amz-Security-Token` header holds the session token); urllib3 and s3transfer log request lines.
So these loggers are pinned to WARNING in code, whatever level the job's own loggers run at.

Every log record is redacted as it is made (`batch.core.redaction`): an endpoint URL's userinfo
(`http://user:password@host`) never reaches a handler, whoever configured it (ours, Dask's).

Pillow's warning about corrupt Exif data is silenced too: the job records what it found in each image's
row (orientation 1 when the tag cannot be read), and a nightly log should not carry a Python warning per
odd photo.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

from batch.core.redaction import redact

#: Loggers that would print credentials or image bytes at DEBUG: pinned to WARNING.
QUIET_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer")


def pin_aws_loggers() -> None:
    """Set the AWS SDK's loggers to WARNING and silence Pillow's corrupt-Exif warning. Call it in every
    process that makes AWS calls (the driver after configuring logging, each Dask worker process before
    its first client): a worker's levels and warning filters are its own process's, not the driver's."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", "Corrupt EXIF data", UserWarning, r"PIL\.TiffImagePlugin")
    redact_log_records()


def redact_log_records() -> None:
    """Make every log record of this process carry its message and traceback redacted, whatever
    handler formats it (the record factory is the one place all records pass). Idempotent."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "redacts", False):
        return

    def redacted_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # arguments that do not fit the format: the handler reports it, as always
            return record
        if "@" in message:
            record.msg, record.args = redact(message), None
        if record.exc_info and record.exc_info[1] is not None:
            # Formatters print `exc_text` when it is set rather than formatting the traceback again.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return record

    redacted_record.redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(redacted_record)
