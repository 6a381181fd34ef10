"""The dashboard server's request reading, on bytes fed to a stream: what is accepted,
and the status every malformed or oversized head gets."""

from __future__ import annotations

import asyncio

import pytest

from agentledger.handlers.dashboard import http
from agentledger.handlers.dashboard.http import Request, _BadRequest, read_request


def _read(data: bytes, *, eof: bool = True) -> Request:
    async def go() -> Request:
        reader = asyncio.StreamReader(limit=http.MAX_HEAD_BYTES)
        reader.feed_data(data)
        if eof:
            reader.feed_eof()
        return await read_request(reader)

    return asyncio.run(go())


def _status(data: bytes) -> int:
    with pytest.raises(_BadRequest) as caught:
        _read(data)
    return caught.value.status.value


def test_a_plain_request_is_read_with_its_query_and_headers() -> None:
    request = _read(
        b"GET /api/runs?agent=calc&status=failed&q=%3Cscript%3E HTTP/1.1\r\n"
        b"Host: 127.0.0.1:8765\r\nAuthorization: Bearer x\r\nX-Other: 1\r\nX-Other: 2\r\n\r\n"
    )
    assert request.method == "GET" and request.path == "/api/runs"
    assert request.query == {"agent": "calc", "status": "failed", "q": "<script>"}
    assert request.headers["host"] == "127.0.0.1:8765"
    assert request.headers["authorization"] == "Bearer x"
    assert request.headers["x-other"] == "1"
    post = _read(b"POST /api/runs/a/replay HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    assert post.method == "POST" and post.query == {}
    # The path is never decoded: routes see `%2F` as it came.
    assert _read(b"GET /api/runs/a%2F..%2Fb HTTP/1.1\r\n\r\n").path == "/api/runs/a%2F..%2Fb"


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"\x00\xff\x16\x03garbage\r\n\r\n", 400),
        (b"PRI * HTTP/2.0\r\n\r\n", 400),
        (b"GET http://evil/ HTTP/1.1\r\n\r\n", 400),
        (b"GET //evil.example/ HTTP/1.1\r\n\r\n", 400),
        (b"GET /a#frag HTTP/1.1\r\n\r\n", 400),
        (b"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n", 400),
        (b"GET /  HTTP/1.1\r\n\r\n", 400),
        (b"DELETE / HTTP/1.1\r\n\r\n", 405),
        (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n folded: value\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nAuthorization: a\r\nauthorization: b\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 413),
        (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"GET /?a=1&a=2 HTTP/1.1\r\n\r\n", 400),
        (b"GET /?x=%ff HTTP/1.1\r\n\r\n", 400),
        (b"GET /?" + b"&".join(b"f%d=1" % i for i in range(40)) + b" HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n", 431),
        (b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n", 431),
    ],
)
def test_malformed_or_oversized_heads_are_refused(data: bytes, status: int) -> None:
    assert _status(data) == status


def test_a_head_cut_short_is_no_request() -> None:
    for data in (b"", b"GET / HTT", b"GET / HTTP/1.1\r\nHost: x"):
        with pytest.raises(asyncio.IncompleteReadError):
            _read(data)
