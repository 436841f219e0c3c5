"""lbcluster.httpd without sockets: the request parser, response encoding, log lines.

The server itself (the event loop) is tested through the web app in test_webapp.py.
"""

from __future__ import annotations

import email.utils

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbcluster.httpd import (
    CONTINUE,
    MAX_BODY,
    MAX_HEAD,
    HttpError,
    Request,
    RequestParser,
    Response,
    access_line,
    encode_response,
    http_date,
    request_path,
)

Outcome = list[tuple[object, ...]]


def outcome(parser: RequestParser) -> Outcome:
    """What the parser has for now: requests, then an error or nothing."""
    results: Outcome = []
    while True:
        item = parser.next_request()
        if item is None:
            return results
        if isinstance(item, HttpError):
            results.append(("error", item.status, item.message))
            assert parser.next_request() is item  # final
            return results
        results.append(("request", item.method, item.target, item.version, item.headers, item.body))


def parse(data: bytes, **limits: int) -> Outcome:
    parser = RequestParser(**limits)
    parser.feed(data)
    return outcome(parser)


def one(data: bytes) -> Request:
    parser = RequestParser()
    parser.feed(data)
    item = parser.next_request()
    assert isinstance(item, Request), item
    assert parser.next_request() is None
    return item


def error(data: bytes, **limits: int) -> tuple[int, str]:
    results = parse(data, **limits)
    assert results, "expected an error, got nothing"
    kind, status, message = results[-1]
    assert kind == "error", results
    assert isinstance(status, int)
    return status, str(message)


# --- heads ------------------------------------------------------------------


def test_simple_get() -> None:
    request = one(b"GET /x?y=1 HTTP/1.1\r\nHost: a\r\nUser-Agent: t/1\r\n\r\n")
    assert (request.method, request.target, request.path) == ("GET", "/x?y=1", "/x")
    assert request.version == (1, 1)
    assert request.headers == {"host": "a", "user-agent": "t/1"}
    assert request.body == b""
    assert request.keep_alive


def test_header_names_lower_case_values_trimmed_repeats_joined() -> None:
    request = one(
        b"GET / HTTP/1.1\r\nX-A:  one \t\r\nx-a: two\r\nCookie: a=1\r\ncookie: b=2\r\n"
        b"Empty:\r\nLatin: caf\xe9\r\n\r\n"
    )
    assert request.headers == {
        "x-a": "one, two",
        "cookie": "a=1; b=2",
        "empty": "",
        "latin": "café",
    }


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive", "parsed"),
    [
        (b"HTTP/1.1", b"", True, (1, 1)),
        (b"HTTP/1.1", b"Connection: close\r\n", False, (1, 1)),
        (b"HTTP/1.1", b"Connection: Upgrade, CLOSE\r\n", False, (1, 1)),
        (b"HTTP/1.0", b"", False, (1, 0)),
        (b"HTTP/1.0", b"Connection: Keep-Alive\r\n", True, (1, 0)),
        (b"HTTP/1.2", b"", True, (1, 1)),
    ],
)
def test_keep_alive_by_version_and_connection(
    version: bytes, connection: bytes, keep_alive: bool, parsed: tuple[int, int]
) -> None:
    request = one(b"GET / " + version + b"\r\n" + connection + b"\r\n")
    assert request.keep_alive is keep_alive
    assert request.version == parsed


def test_empty_lines_before_a_request_are_skipped() -> None:
    assert one(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n").path == "/"


def test_need_more_then_complete() -> None:
    parser = RequestParser()
    for piece in (b"GE", b"T / HTTP/1.1\r", b"\nHost: a\r\n", b"\r"):
        parser.feed(piece)
        assert parser.next_request() is None
    parser.feed(b"\n")
    assert isinstance(parser.next_request(), Request)
    assert parser.next_request() is None
    assert parser.buffered == 0


def test_pipelined_requests_come_out_in_order() -> None:
    data = (
        b"GET /1 HTTP/1.1\r\n\r\n"
        b"POST /2 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
        b"HEAD /3 HTTP/1.1\r\n\r\n"
        b"GET"
    )
    parser = RequestParser()
    parser.feed(data)
    results = outcome(parser)
    assert [(r[1], r[2], r[5]) for r in results] == [
        ("GET", "/1", b""),
        ("POST", "/2", b"abc"),
        ("HEAD", "/3", b""),
    ]
    assert parser.buffered == 3


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (b"GARBAGE\r\n\r\n", 400, "malformed request line"),
        (b"GET /\r\n\r\n", 400, "malformed request line"),
        (b"GET  / HTTP/1.1\r\n\r\n", 400, "malformed request line"),
        (b"GET / HTTP/1.1 \r\n\r\n", 400, "malformed request line"),
        (b"G(T / HTTP/1.1\r\n\r\n", 400, "malformed request line"),
        (b"GET /\x7f HTTP/1.1\r\n\r\n", 400, "malformed request line"),
        (b"GET / HTTP/1.x\r\n\r\n", 400, "malformed request line"),
        (b"GET / HTTPS/1.1\r\n\r\n", 400, "malformed request line"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400, "malformed request line"),
        (b"GET / HTTP/2.0\r\n\r\n", 505, "HTTP/2.0 is not supported"),
        (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400, "malformed header line"),
        (b"GET / HTTP/1.1\r\nno colon\r\n\r\n", 400, "malformed header line"),
        (b"GET / HTTP/1.1\r\n: empty name\r\n\r\n", 400, "malformed header line"),
        (
            b"GET / HTTP/1.1\r\nA: 1\r\n folded\r\n\r\n",
            400,
            "obsolete line folding in the request head",
        ),
        (b"GET / HTTP/1.1\r\nA: x\x00y\r\n\r\n", 400, "control character in a header value"),
        (b"GET / HTTP/1.1\r\nA: x\ry\r\n\r\n", 400, "control character in a header value"),
        (b"GET / HTTP/1.1\r\nA: x\ny\r\n\r\n", 400, "control character in a header value"),
        (b"GET / HTTP/1.1\n\n", 400, "lines of the request head must end with CRLF"),
        (b"GET / HTTP/1.1\r\nHost: a\n\n", 400, "lines of the request head must end with CRLF"),
    ],
)
def test_malformed_heads(data: bytes, status: int, message: str) -> None:
    assert error(data) == (status, message)


def test_tab_in_a_header_value_is_allowed() -> None:
    assert one(b"GET / HTTP/1.1\r\nA: x\ty\r\n\r\n").headers == {"a": "x\ty"}


def test_head_limit() -> None:
    line = b"GET / HTTP/1.1\r\n"
    big = b"X: " + b"a" * (MAX_HEAD - len(line) - 7) + b"\r\n\r\n"
    assert len(line + big) == MAX_HEAD
    assert parse(line + big)[0][0] == "request"  # exactly the limit
    too_big = b"X: " + b"a" * (MAX_HEAD - len(line) - 6) + b"\r\n\r\n"
    assert error(line + too_big) == (431, f"request head larger than {MAX_HEAD} bytes")
    # Without its end yet: refused as soon as it is over the limit.
    assert error(line + b"X: " + b"a" * MAX_HEAD) == (
        431,
        f"request head larger than {MAX_HEAD} bytes",
    )
    assert parse(line + b"X: " + b"a" * (MAX_HEAD - len(line) - 3)) == []


def test_an_error_is_final() -> None:
    parser = RequestParser()
    parser.feed(b"BAD\r\n\r\n")
    first = parser.next_request()
    assert isinstance(first, HttpError)
    parser.feed(b"GET / HTTP/1.1\r\n\r\n")
    assert parser.next_request() is first


# --- bodies -----------------------------------------------------------------


def test_content_length_body() -> None:
    request = one(b"POST /d HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
    assert request.body == b"hello"
    assert one(b"POST /d HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\nhello").body == b"hello"
    assert one(b"POST /d HTTP/1.1\r\nContent-Length: 0\r\n\r\n").body == b""
    assert one(b"POST /d HTTP/1.1\r\nContent-Length: 0005\r\n\r\nhello").body == b"hello"


def test_content_length_body_waits_for_all_of_it() -> None:
    parser = RequestParser()
    parser.feed(b"POST /d HTTP/1.1\r\nContent-Length: 5\r\n\r\nhel")
    assert parser.next_request() is None
    parser.feed(b"lo")
    item = parser.next_request()
    assert isinstance(item, Request)
    assert item.body == b"hello"


@pytest.mark.parametrize(
    "value", [b"abc", b"-1", b"+5", b"1, 2", b"", b"5 5", b"\xb2", b"0x10", b"1e3"]
)
def test_malformed_content_length(value: bytes) -> None:
    data = b"POST / HTTP/1.1\r\nContent-Length: " + value + b"\r\n\r\n"
    assert error(data) == (400, "malformed Content-Length")


def test_body_limit_by_content_length() -> None:
    assert parse(b"POST / HTTP/1.1\r\nContent-Length: 65536\r\n\r\n") == []  # waits for it
    too_big = f"request body larger than {MAX_BODY} bytes"
    assert error(b"POST / HTTP/1.1\r\nContent-Length: 65537\r\n\r\n") == (413, too_big)
    assert error(b"POST / HTTP/1.1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n") == (
        413,
        too_big,
    )
    zeros = b"0" * 5000 + b"3"
    assert one(b"POST / HTTP/1.1\r\nContent-Length: " + zeros + b"\r\n\r\nabc").body == b"abc"


def chunked(body_parts: list[bytes], trailer: bytes = b"") -> bytes:
    data = b"POST /delay HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    for part in body_parts:
        data += f"{len(part):x}\r\n".encode() + part + b"\r\n"
    return data + b"0\r\n" + trailer + b"\r\n"


def test_chunked_body() -> None:
    assert one(chunked([b'{"del', b'ay": 5', b"}"])).body == b'{"delay": 5}'
    assert one(chunked([])).body == b""
    data = (
        b"POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\n"
        b"00A ; ext\r\n0123456789\r\n"
        b"0\r\nTrailer-A: 1\r\nTrailer-B: 2\r\n\r\n"
    )
    request = one(data)
    assert request.body == b"hello0123456789"
    assert "trailer-a" not in request.headers


def test_chunked_body_fed_byte_by_byte() -> None:
    data = chunked([b"abc", b"defgh"], trailer=b"T: 1\r\n") + b"GET /next HTTP/1.1\r\n\r\n"
    parser = RequestParser()
    results: Outcome = []
    for i in range(len(data)):
        parser.feed(data[i : i + 1])
        results += outcome(parser)
    assert [(r[2], r[5]) for r in results] == [("/delay", b"abcdefgh"), ("/next", b"")]


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            400,
            "both Content-Length and Transfer-Encoding",
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            501,
            "unsupported transfer coding: gzip, chunked",
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n",
            501,
            "unsupported transfer coding: identity",
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            501,
            "unsupported transfer coding: chunked, chunked",
        ),
        (
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
            "Transfer-Encoding in an HTTP/1.0 request",
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,
            "malformed chunk size line",
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
            400,
            "malformed chunk size line",
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n 5\r\n",
            400,
            "malformed chunk size line",
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;a\nb\r\n",
            400,
            "malformed chunk size line",
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n",
            400,
            "chunk data not followed by CRLF",
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;" + b"x" * 2000,
            400,
            "chunk size line too long",
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10001\r\n",
            413,
            f"request body larger than {MAX_BODY} bytes",
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFFFF\r\n",
            413,
            f"request body larger than {MAX_BODY} bytes",
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nbad trailer\r\n\r\n",
            400,
            "malformed header line",
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: " + b"x" * MAX_HEAD,
            431,
            f"trailer section larger than {MAX_HEAD} bytes",
        ),
    ],
)
def test_bad_bodies(data: bytes, status: int, message: str) -> None:
    assert error(data) == (status, message)


def test_chunked_body_limit_counts_every_chunk() -> None:
    part = b"x" * 40_000
    assert error(chunked([part, part])) == (413, f"request body larger than {MAX_BODY} bytes")
    assert one(chunked([part, b"y" * (MAX_BODY - len(part))])).body.endswith(b"y")


def test_expect_continue() -> None:
    parser = RequestParser()
    parser.feed(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    assert parser.next_request() is None
    assert parser.expect_continue
    parser.feed(b"ab")
    item = parser.next_request()
    assert isinstance(item, Request)
    assert item.body == b"ab"
    assert not parser.expect_continue
    # Not for HTTP/1.0, nor without a body.
    for data in (
        b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
        b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
    ):
        parser = RequestParser()
        parser.feed(data)
        parser.next_request()
        assert not parser.expect_continue


@pytest.mark.parametrize(
    ("target", "path"),
    [
        ("/", "/"),
        ("/a/b?c=d?e", "/a/b"),
        ("http://host:80/x?y", "/x"),
        ("HTTPS://host", "/"),
        ("*", "*"),
        ("host:443", "host:443"),
        ("ftp://host/x", "ftp://host/x"),
    ],
)
def test_request_path(target: str, path: str) -> None:
    assert request_path(target) == path


# --- properties -------------------------------------------------------------

token = st.text(
    alphabet="!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    min_size=1,
    max_size=12,
)
header_value = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=30,
).map(lambda v: v.strip(" \t"))
RESERVED = {"content-length", "transfer-encoding", "connection", "expect", "cookie"}


@st.composite
def valid_requests(draw: st.DrawFn) -> tuple[bytes, tuple[object, ...]]:
    method = draw(token)
    target = "/" + draw(st.text(alphabet="abcxyz019/-._~%?=&", max_size=20))
    headers = draw(
        st.dictionaries(token.filter(lambda n: n.lower() not in RESERVED), header_value, max_size=4)
    )
    headers = {name.lower(): value for name, value in headers.items()}
    body = draw(st.binary(max_size=300))
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers.items())
    chunked = draw(st.booleans())
    if chunked:
        parts = []
        rest = body
        while rest:
            size = draw(st.integers(1, len(rest)))
            parts.append(rest[:size])
            rest = rest[size:]
        framing = (
            b"Transfer-Encoding: chunked\r\n\r\n"
            + b"".join(f"{len(p):X}\r\n".encode() + p + b"\r\n" for p in parts)
            + b"0\r\n\r\n"
        )
    else:
        framing = f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    if chunked:
        headers["transfer-encoding"] = "chunked"
    else:
        headers["content-length"] = str(len(body))
    return head.encode("latin-1") + framing, ("request", method, target, (1, 1), headers, body)


def splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@settings(max_examples=100, deadline=None)
@given(st.lists(valid_requests(), min_size=1, max_size=3), st.lists(st.integers(0, 2000)))
def test_valid_requests_parse_back_however_they_arrive(
    requests: list[tuple[bytes, tuple[object, ...]]], cuts: list[int]
) -> None:
    data = b"".join(wire for wire, _ in requests)
    parser = RequestParser()
    results: Outcome = []
    for piece in splits(data, cuts):
        parser.feed(piece)
        results += outcome(parser)
    assert results == [expected for _, expected in requests]
    assert parser.buffered == 0


def mutated(data: bytes, position: int, junk: bytes) -> bytes:
    position %= len(data) + 1
    return data[:position] + junk + data[position + len(junk) // 2 :]


any_input = st.one_of(
    st.binary(max_size=400),
    valid_requests().map(lambda r: r[0]),
    st.builds(
        mutated,
        valid_requests().map(lambda r: r[0]),
        st.integers(0, 400),
        st.sampled_from([b"\r", b"\n", b"\r\n", b" ", b"\x00", b":", b";", b"0", b"\xff", b"\t"]),
    ),
    st.lists(
        st.sampled_from(
            [
                b"GET / HTTP/1.1",
                b"\r\n",
                b"Content-Length: 3",
                b"Transfer-Encoding: chunked",
                b"3",
                b"abc",
                b"0",
                b"\n",
                b" ",
                b"x: y",
                b"5;e=1",
            ]
        ),
        max_size=20,
    ).map(b"".join),
)


@settings(max_examples=250, deadline=None)
@given(any_input, st.lists(st.integers(0, 500)))
def test_any_bytes_give_requests_then_need_more_or_an_error(data: bytes, cuts: list[int]) -> None:
    """Never an exception; and cutting the input anywhere changes nothing
    but, for input over a limit, which error is found first."""
    limits = {"max_head": 200, "max_body": 100}
    whole = parse(data, **limits)
    parser = RequestParser(**limits)
    pieces: Outcome = []
    for piece in splits(data, cuts):
        parser.feed(piece)
        pieces += outcome(parser)
        if pieces and pieces[-1][0] == "error":
            break
    assert [r for r in pieces if r[0] == "request"] == [r for r in whole if r[0] == "request"]
    assert (pieces[-1:] and pieces[-1][0]) == (whole[-1:] and whole[-1][0])
    for result in whole:
        if result[0] == "error":
            assert result[1] in (400, 413, 431, 501, 505)


# --- responses --------------------------------------------------------------


def test_encode_response() -> None:
    response = Response(201, [("X-A", "1"), ("Set-Cookie", "a=b")], b"hello")
    assert encode_response(response, date="Sun, 06 Nov 1994 08:49:37 GMT") == (
        b"HTTP/1.1 201 Unknown\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nX-A: 1\r\n"
        b"Set-Cookie: a=b\r\nContent-Length: 5\r\n\r\nhello"
    )
    assert encode_response(Response(404), keep_alive=False) == (
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    assert encode_response(Response(200, body=b"x"), http10=True) == (
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\nx"
    )
    # HEAD: the length of the body it would have, no body.
    assert encode_response(Response(200, body=b"abc"), head=True) == (
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n"
    )
    assert CONTINUE == b"HTTP/1.1 100 Continue\r\n\r\n"


@given(st.floats(min_value=0, max_value=4e9))
def test_http_date_is_the_rfc_format(seconds: float) -> None:
    assert http_date(seconds) == email.utils.formatdate(int(seconds), usegmt=True)


def test_http_date_example() -> None:
    assert http_date(784111777) == "Sun, 06 Nov 1994 08:49:37 GMT"


def test_access_line() -> None:
    request = one(b"GET /x?y HTTP/1.0\r\nUser-Agent: curl/8\r\n\r\n")
    assert access_line("10.0.0.9", request, 200, 321, 0.0012345) == (
        '10.0.0.9 "GET /x?y HTTP/1.0" 200 321 0.001234s "curl/8"'
    )
    assert access_line("10.0.0.9", one(b"HEAD / HTTP/1.1\r\n\r\n"), 503, 90, 0) == (
        '10.0.0.9 "HEAD / HTTP/1.1" 503 90 0.000000s "-"'
    )
    assert access_line("10.0.0.9", None, 400, 80, 0) == '10.0.0.9 "-" 400 80 0.000000s "-"'
