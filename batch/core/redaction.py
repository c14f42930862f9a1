"""Secrets out of what the job writes and prints: the userinfo of URLs (`http://user:password@host`).

The endpoints come from botocore's variables (`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL_REKOGNITION`,
`AWS_ENDPOINT_URL`), which accept userinfo, and botocore quotes the endpoint URL in its errors
(EndpointConnectionError, ReadTimeoutError, ConnectionClosedError...). Every message the job makes from
an exception goes through `redact` (or `one_line`) before it is cut short, stored in a row, put in the
summary or printed; `batch.aws.logs` applies it to every log record. Pure.
"""

from __future__ import annotations

import re

#: What replaces a URL's userinfo.
REDACTED = "***"

# A scheme, then the authority up to its last "@" (a password may hold a raw "@": URL parsers take the
# host from after the last one), never past the end of the authority, nor past characters no URL holds
# (`"`, `<`, `>`, `\`: the end of a quoted URL). A `'` may be in a password: a URL quoted with `'` and
# followed by an "@" before the next space loses a little more than its userinfo, never less.
_USERINFO = re.compile(r"\b(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s\"<>\\]*@")


def redact(text: str) -> str:
    """`text` with the userinfo of every URL in it replaced by `***` (`http://***@host:port/`)."""
    if "@" not in text:
        return text
    return _USERINFO.sub(rf"\g<scheme>{REDACTED}@", text)


def one_line(text: str, limit: int = 500) -> str:
    """`text` redacted, on one line, at most `limit` characters: for an `errors` row or a reason.
    Redacted before it is cut, so a cut never leaves part of a password behind."""
    return " ".join(redact(text).split())[:limit]
