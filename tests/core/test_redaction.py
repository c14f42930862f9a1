"""batch.core.redaction: no endpoint password in anything the job writes or prints."""

from __future__ import annotations

from botocore.exceptions import ConnectionClosedError, EndpointConnectionError, ReadTimeoutError
from hypothesis import given
from hypothesis import strategies as st

from batch.core.redaction import one_line, redact

#: What a URL's userinfo may hold besides percent escapes (RFC 3986 unreserved and sub-delims, ":"),
#: and "@", which URL parsers accept in a password (the host starts after the last one).
USERINFO_CHARS = st.characters(codec="ascii", categories=("L", "N"), include_characters="-._~!$&'()*+,;=:@%")
HOST = "127.0.0.1:4566"


@given(user=st.text(USERINFO_CHARS, max_size=12), password=st.text(USERINFO_CHARS, min_size=6, max_size=30))
def test_botocore_messages_keep_the_host_and_lose_the_userinfo(user: str, password: str) -> None:
    url = f"http://{user}:{password}@{HOST}"
    for error in (
        EndpointConnectionError(endpoint_url=f"{url}/"),
        ReadTimeoutError(endpoint_url=f"{url}/bucket/key.jpg"),
        ConnectionClosedError(endpoint_url=url),
    ):
        message = redact(str(error))
        assert f"{user}:{password}" not in message
        assert password not in message.replace(HOST, "")
        assert f"http://***@{HOST}" in message


def test_every_url_of_a_message_is_redacted_and_the_rest_kept() -> None:
    text = 'a "https://u:p4ss@proxy.example/x" then s3://bucket/key@odd.jpg and https://host/ and me@mail'
    assert redact(text) == (
        'a "https://***@proxy.example/x" then s3://bucket/key@odd.jpg and https://host/ and me@mail'
    )
    assert redact("http://token@host:1/") == "http://***@host:1/"
    assert redact("no url here") == "no url here"


def test_one_line_redacts_before_it_cuts() -> None:
    # Cut first, "http://user:hunter2" would be left without its "@" for the pattern to find.
    message = "Could not connect to the endpoint URL:\n  http://user:hunter2@10.0.0.1:9/"
    assert one_line(message, 40) == "Could not connect to the endpoint URL: h"
    assert "hunter2" not in one_line(message, 60)
    assert one_line(message) == "Could not connect to the endpoint URL: http://***@10.0.0.1:9/"
