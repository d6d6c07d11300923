"""The http app's request parser, path decoding and file resolution (no I/O but files)."""

from __future__ import annotations

import os

import pytest

from pystack.apps.http import (
    MAX_HEADER_BYTES,
    MAX_REQUEST_LINE,
    HttpError,
    content_type,
    decode_path,
    parse_request,
    resolve,
)


def parse(raw: bytes):
    got = parse_request(raw)
    assert got is not None
    return got


def status_of(raw: bytes) -> int:
    with pytest.raises(HttpError) as e:
        parse_request(raw)
    return e.value.status


def test_simple_get() -> None:
    raw = b"GET /a/b.txt?x=1 HTTP/1.1\r\nHost: h\r\nUser-Agent: curl\r\n\r\nNEXT"
    req, used = parse(raw)
    assert (req.method, req.target, req.path, req.version) == ("GET", "/a/b.txt?x=1",
                                                               "/a/b.txt", (1, 1))
    assert req.headers == {"host": "h", "user-agent": "curl"}
    assert req.keep_alive and req.body_length == 0
    assert raw[used:] == b"NEXT"


def test_incomplete_needs_more() -> None:
    assert parse_request(b"") is None
    assert parse_request(b"GET / HTTP/1.1\r\nHost: h\r\n") is None


def test_bare_lf_and_leading_empty_lines_accepted() -> None:
    req, used = parse(b"\r\n\nGET / HTTP/1.1\nHost: h\n\n")
    assert req.path == "/" and used == len(b"\r\n\nGET / HTTP/1.1\nHost: h\n\n")


@pytest.mark.parametrize("raw,keep", [
    (b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", True),
    (b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", False),
    (b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Keep-Alive, CLOSE\r\n\r\n", False),
    (b"GET / HTTP/1.0\r\n\r\n", False),
    (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", True),
])
def test_persistence_rfc9112_9_3(raw: bytes, keep: bool) -> None:
    assert parse(raw)[0].keep_alive is keep


def test_content_length_body_is_reported() -> None:
    req, used = parse(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello")
    assert req.body_length == 5


@pytest.mark.parametrize("raw,status", [
    (b"GET /\r\n\r\n", 400),  # HTTP/0.9 style: no version
    (b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400),  # two spaces
    (b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400),  # not a token
    (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
    (b"GET / HTTX/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host (RFC 9112 3.2)
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400),  # space before colon (5.1)
    (b"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n", 400),  # obs-fold (5.2)
    (b"GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
    (b"GET relative HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET /\xff HTTP/1.1\r\nHost: h\r\n\r\n", 400),
])
def test_malformed_requests(raw: bytes, status: int) -> None:
    assert status_of(raw) == status


def test_long_request_line_is_414_even_before_it_ends() -> None:
    assert status_of(b"GET /" + b"a" * (MAX_REQUEST_LINE + 10)) == 414
    assert status_of(b"GET /" + b"a" * MAX_REQUEST_LINE + b" HTTP/1.1\r\nHost: h\r\n\r\n") == 414


def test_huge_header_section_is_431() -> None:
    raw = b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X-A: " + b"b" * MAX_HEADER_BYTES + b"\r\n"
    assert status_of(raw) == 431


@pytest.mark.parametrize("target,path", [
    ("/", "/"),
    ("/a/b", "/a/b"),
    ("/a/b/", "/a/b/"),
    ("/a//b", "/a/b"),
    ("/a/./b", "/a/b"),
    ("/a/../b", "/b"),
    ("/a/b/..", "/a/"),  # RFC 3986 5.2.4 keeps the slash
    ("/a/%62", "/a/b"),
    ("/a%20b", "/a b"),
    ("/caf%C3%A9", "/café"),
    ("/x?q=/../../etc", "/x"),
    ("http://example.org/a/b", "/a/b"),
    ("http://example.org", "/"),
])
def test_decode_path(target: str, path: str) -> None:
    assert decode_path(target) == path


@pytest.mark.parametrize("target", [
    "/..", "/../etc/passwd", "/a/../../etc/passwd", "/%2e%2e/etc/passwd", "/a/%2E%2E/..",
    "/a%2fb", "/a%00", "/a%zz", "/a%4", "*",
])
def test_decode_path_refuses_traversal_and_bad_encoding(target: str) -> None:
    with pytest.raises(HttpError) as e:
        decode_path(target)
    assert e.value.status == 400


def test_resolve(tmp_path) -> None:
    root = tmp_path / "www"
    (root / "sub").mkdir(parents=True)
    (root / "index.html").write_text("home")
    (root / "sub" / "f.txt").write_text("file")
    (tmp_path / "secret").write_text("outside")
    os.symlink(tmp_path / "secret", root / "escape")
    os.symlink(root / "sub" / "f.txt", root / "inside")
    r = str(root)
    assert resolve(r, "/").status == 200 and resolve(r, "/").path.endswith("index.html")
    assert resolve(r, "/sub/f.txt").size == 4
    assert resolve(r, "/sub").status == 301 and resolve(r, "/sub").location == "/sub/"
    assert resolve(r, "/sub/").status == 404  # no index.html there
    assert resolve(r, "/missing").status == 404
    assert resolve(r, "/sub/f.txt/").status == 404
    assert resolve(r, "/escape").status == 404  # a symlink out of the root
    assert resolve(r, "/inside").status == 200  # a symlink within it


def test_content_type_by_extension() -> None:
    assert content_type("a.html") == "text/html; charset=utf-8"
    assert content_type("a.png") == "image/png"
    assert content_type("a.json") == "application/json; charset=utf-8"
    assert content_type("a.unknownext") == "application/octet-stream"
