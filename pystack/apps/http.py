"""`http:DIR`: static files over HTTP/1.1 (RFC 9110 semantics, RFC 9112 message syntax).

GET and HEAD, persistent connections (pipelined requests are answered in order),
Content-Length on every response, ``index.html`` for directories, Content-Type by file
extension. Errors: 400 (malformed, or a path climbing out of DIR), 404, 405 (other
methods), 414 (request line too long), 431 (header section too large), 501 (a transfer
coding on a request), 505 (not HTTP/1.x). Files are read a chunk at a time as the send
buffer drains, so a large file costs one chunk of memory per connection.

:func:`parse_request` is pure (no I/O) and unit-tested on its own.
"""

from __future__ import annotations

import email.utils
import logging
import mimetypes
import os
import re
import stat
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from pystack.apps.base import App, describe
from pystack.tcp.connection import Connection

log = logging.getLogger("pystack.apps")

MAX_REQUEST_LINE = 8192  # like nginx's large_client_header_buffers / Apache's LimitRequestLine
MAX_HEADER_BYTES = 32768
CHUNK = 256 * 1024

REASONS = {
    200: "OK", 301: "Moved Permanently", 400: "Bad Request", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 414: "URI Too Long",
    431: "Request Header Fields Too Large", 500: "Internal Server Error",
    501: "Not Implemented", 505: "HTTP Version Not Supported",
}

# RFC 9110 §5.6.2 token.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION = re.compile(rb"HTTP/(\d)\.(\d)")
_HEADER_END = re.compile(rb"\r?\n\r?\n")


class HttpError(Exception):
    """A request we answer with an error status, then close the connection."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status} {detail}")
        self.status = status
        self.detail = detail


@dataclass
class Request:
    method: str
    target: str
    path: str  # decoded, dot segments resolved, always starting with "/"
    version: tuple[int, int]
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    keep_alive: bool = True
    body_length: int = 0


def parse_request(buf: bytes | bytearray) -> tuple[Request, int] | None:
    """Parse one request head from the start of buf: (request, bytes consumed), or None
    if more bytes are needed. Raises HttpError for a request that cannot be served."""
    start = 0
    # RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the request.
    while buf.startswith(b"\r\n", start) or buf.startswith(b"\n", start):
        start += 2 if buf[start] == 13 else 1
    m = _HEADER_END.search(buf, start)
    if m is None:
        line_end = buf.find(b"\n", start)
        if line_end < 0 and len(buf) - start > MAX_REQUEST_LINE:
            raise HttpError(414, "request line too long")
        if len(buf) - start > MAX_HEADER_BYTES:
            raise HttpError(431, "header section too large")
        return None
    head = bytes(buf[start : m.start()])
    if len(head) > MAX_HEADER_BYTES:
        raise HttpError(431, "header section too large")
    lines = head.split(b"\n")
    lines = [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines]
    req = _request_line(lines[0])
    req.headers = _headers(lines[1:])
    _semantics(req)
    return req, m.end()


def _request_line(line: bytes) -> Request:
    if len(line) > MAX_REQUEST_LINE:
        raise HttpError(414, "request line too long")
    parts = line.split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]):
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    vm = _VERSION.fullmatch(version)
    if vm is None:
        raise HttpError(400, "malformed HTTP version")
    if vm.group(1) != b"1":
        raise HttpError(505, "only HTTP/1.x")
    try:
        text = target.decode("ascii")
    except UnicodeDecodeError:
        raise HttpError(400, "non-ASCII request target") from None
    if not text or any(ch <= " " or ch == "\x7f" for ch in text):
        raise HttpError(400, "malformed request target")
    return Request(method.decode(), text, decode_path(text),
                   (int(vm.group(1)), int(vm.group(2))))


def _headers(lines: list[bytes]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            raise HttpError(400, "obsolete line folding")  # RFC 9112 §5.2
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name):
            raise HttpError(400, "malformed header field")  # incl. space before ":" (§5.1)
        key = name.decode().lower()
        val = value.strip(b" \t").decode("latin-1")
        if key in headers:
            if key in ("host", "content-length") and headers[key] != val:
                raise HttpError(400, f"conflicting {key} fields")
            if key == "host":
                raise HttpError(400, "more than one Host field")  # RFC 9112 §3.2
            headers[key] = f"{headers[key]}, {val}"
        else:
            headers[key] = val
    return headers


def _semantics(req: Request) -> None:
    h = req.headers
    if req.version >= (1, 1) and "host" not in h:
        raise HttpError(400, "missing Host")  # RFC 9112 §3.2
    if "transfer-encoding" in h:
        raise HttpError(501, "transfer codings on requests are not supported")
    if "content-length" in h:
        cl = h["content-length"].split(",")[0].strip()
        if not cl.isdigit():
            raise HttpError(400, "bad Content-Length")
        req.body_length = int(cl)
    tokens = {t.strip().lower() for t in h.get("connection", "").split(",")}
    if req.version >= (1, 1):
        req.keep_alive = "close" not in tokens
    else:
        req.keep_alive = "keep-alive" in tokens and "close" not in tokens


def decode_path(target: str) -> str:
    """The request target's path, percent-decoded, dot segments resolved (RFC 3986
    §5.2.4). A path that climbs above the root is refused (400), as is a NUL."""
    if target.startswith(("http://", "https://")):  # absolute-form (RFC 9112 §3.2.2)
        rest = target.split("://", 1)[1]
        slash = rest.find("/")
        target = rest[slash:] if slash >= 0 else "/"
    if not target.startswith("/"):
        raise HttpError(400, "request target must be a path")
    raw = target.split("?", 1)[0].split("#", 1)[0]
    out: list[str] = []
    trailing = False
    segments = raw.split("/")[1:]
    for i, seg in enumerate(segments):
        name = _unquote(seg)
        if "\0" in name or "/" in name:
            raise HttpError(400, "encoded NUL or slash in path")
        last = i == len(segments) - 1
        if name in ("", "."):  # "a//b" is "a/b"; a trailing "/" or "/." stays a slash
            trailing = trailing or last
            continue
        if name == "..":
            if not out:
                raise HttpError(400, "path climbs above the document root")
            out.pop()
            trailing = last
            continue
        out.append(name)
    return "/" + "/".join(out) + ("/" if trailing and out else "")


def _unquote(seg: str) -> str:
    if "%" not in seg:
        return seg
    b = bytearray()
    i = 0
    raw = seg.encode()
    while i < len(raw):
        ch = raw[i]
        if ch == 0x25:  # %
            hx = raw[i + 1 : i + 3]
            if len(hx) != 2 or not all(c in b"0123456789abcdefABCDEF" for c in hx):
                raise HttpError(400, "bad percent-encoding")
            b.append(int(hx, 16))
            i += 3
        else:
            b.append(ch)
            i += 1
    try:
        return b.decode()
    except UnicodeDecodeError:
        raise HttpError(400, "path is not UTF-8") from None


@dataclass
class Resolved:
    status: int
    path: str = ""  # the file to send (status 200)
    location: str = ""  # for 301
    size: int = 0
    mtime: float = 0.0


def resolve(root: str, path: str) -> Resolved:
    """Map a decoded URL path to a file under root (a realpath). Symlinks may point
    anywhere inside root, never outside (404)."""
    candidate = os.path.realpath(os.path.join(root, path.lstrip("/")))
    if candidate != root and not candidate.startswith(root + os.sep):
        return Resolved(404)
    try:
        st = os.stat(candidate)
    except FileNotFoundError:
        return Resolved(404)
    except (PermissionError, NotADirectoryError):
        return Resolved(404)
    if stat.S_ISDIR(st.st_mode):
        if not path.endswith("/"):
            return Resolved(301, location=urllib.parse.quote(path + "/"))
        return resolve(root, path + "index.html")
    if not stat.S_ISREG(st.st_mode) or path.endswith("/"):
        return Resolved(404)
    if not os.access(candidate, os.R_OK):
        return Resolved(403)
    return Resolved(200, candidate, size=st.st_size, mtime=st.st_mtime)


def content_type(path: str) -> str:
    ctype, _ = mimetypes.guess_type(path, strict=False)
    if ctype is None:
        return "application/octet-stream"
    if ctype.startswith("text/") or ctype in ("application/javascript", "application/json"):
        return f"{ctype}; charset=utf-8"
    return ctype


def response_head(status: int, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}",
             f"Date: {email.utils.formatdate(usegmt=True)}", "Server: pystack"]
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def error_body(status: int, detail: str) -> bytes:
    reason = REASONS.get(status, "Error")
    return (f"<!DOCTYPE html>\n<title>{status} {reason}</title>\n<h1>{status} {reason}</h1>\n"
            f"<p>{detail}</p>\n").encode()


class HttpServer(App):
    """One HTTP connection. States: reading a request, sending a response (header bytes,
    then the file a chunk at a time), and after `Connection: close` or an error, draining
    the peer's bytes until its FIN (so a close never resets an unread pipeline)."""

    name = "http"
    __slots__ = ("root", "inbuf", "out", "file", "left", "skip", "close_after", "closing",
                 "eof", "requests")

    def __init__(self, conn: Connection, root: str) -> None:
        self.root = root
        self.inbuf = bytearray()
        self.out = memoryview(b"")
        self.file: BinaryIO | None = None
        self.left = 0  # file bytes still to send
        self.skip = 0  # request body bytes still to discard
        self.close_after = False
        self.closing = False  # our FIN is queued; drain until the peer's
        self.eof = False
        self.requests = 0
        super().__init__(conn)

    def pump(self) -> None:
        try:
            while not self.done:
                if not self._flush():
                    return  # send buffer full; "writable" resumes us
                if self.file is None and not self.out and self.close_after and not self.closing:
                    self.closing = True
                    self.conn.shutdown_write()
                if not self._read():
                    return
        except OSError as e:  # reset or timed out
            self._drop_file()
            self.abort(e.strerror or "error")

    def _read(self) -> bool:
        """Read what there is, answer the next complete request. False when nothing more
        can happen until the next event."""
        c = self.conn
        # Back-pressure: no reading ahead of a response in progress beyond one header block.
        while not self.eof and len(self.inbuf) <= MAX_HEADER_BYTES:
            try:
                data = c.recv(65536)
            except BlockingIOError:
                break
            if not data:
                self.eof = True
                break
            if self.closing:
                continue  # after our FIN: drain and drop
            if self.skip:
                n = min(self.skip, len(data))
                self.skip -= n
                data = data[n:]
            self.inbuf += data
        if self.closing:
            if self.eof:
                self._at_eof()
            return False
        if not self.out and self.file is None and not self.close_after and self._next_request():
            return True
        if self.eof:
            self._at_eof()
        return False

    def _at_eof(self) -> None:
        if self.out or self.file is not None:
            return  # finish the response first; pump comes back when it is sent
        self.close("closed")

    def _next_request(self) -> bool:
        if self.skip:
            return False
        try:
            parsed = parse_request(self.inbuf)
        except HttpError as e:
            self._error(e.status, e.detail, None)
            self.inbuf.clear()
            return True
        if parsed is None:
            if self.eof and self.inbuf.strip():
                self._error(400, "incomplete request", None)
                self.inbuf.clear()
                return True
            return False
        req, used = parsed
        del self.inbuf[:used]
        body = req.body_length
        n = min(body, len(self.inbuf))
        del self.inbuf[:n]
        self.skip = body - n
        self.requests += 1
        self._respond(req)
        return True

    def _respond(self, req: Request) -> None:
        self.close_after = not req.keep_alive
        if req.method not in ("GET", "HEAD"):
            self._error(405, f"{req.method} is not supported here", req,
                        [("Allow", "GET, HEAD")])
            return
        r = resolve(self.root, req.path)
        if r.status == 301:
            self._error(301, f"see {r.location}", req, [("Location", r.location)], close=False)
            return
        if r.status != 200:
            detail = {404: f"{req.path} is not here", 403: "not readable"}.get(r.status, "")
            self._error(r.status, detail, req, close=False)
            return
        try:
            f = open(r.path, "rb")  # noqa: SIM115 - closed when sent (_drop_file)
        except OSError:
            self._error(404, f"{req.path} is not here", req, close=False)
            return
        headers = [("Content-Type", content_type(r.path)), ("Content-Length", str(r.size)),
                   ("Last-Modified", email.utils.formatdate(r.mtime, usegmt=True))]
        headers += self._connection_header(req)
        self._log(req, 200, r.size)
        self.out = memoryview(response_head(200, headers))
        if req.method == "GET" and r.size:
            self.file = f
            self.left = r.size
        else:
            f.close()

    def _connection_header(self, req: Request | None) -> list[tuple[str, str]]:
        if self.close_after:
            return [("Connection", "close")]
        if req is not None and req.version < (1, 1):
            return [("Connection", "keep-alive")]
        return []

    def _error(self, status: int, detail: str, req: Request | None,
               extra: list[tuple[str, str]] | None = None, *, close: bool = True) -> None:
        """An error response; malformed requests (req None) also close the connection."""
        if close and (req is None or status >= 400 and status not in (404, 403, 405)):
            self.close_after = True
        body = error_body(status, detail)
        headers = [("Content-Type", "text/html; charset=utf-8"),
                   ("Content-Length", str(len(body)))] + (extra or [])
        headers += self._connection_header(req)
        self._log(req, status, len(body))
        head = response_head(status, headers)
        self.out = memoryview(head if req is not None and req.method == "HEAD" else head + body)

    def _log(self, req: Request | None, status: int, size: int) -> None:
        what = f"{req.method} {req.target}" if req is not None else "(bad request)"
        log.info("http: %s %s %d %d", describe(self.conn), what, status, size)

    def _flush(self) -> bool:
        """Send the response head and then file chunks. True when nothing is left."""
        c = self.conn
        while True:
            if self.out:
                n = c.send(self.out)
                self.out = self.out[n:]
                if self.out:
                    return False
            if self.file is None:
                return True
            if self.left <= 0:
                self._drop_file()
                return True
            chunk = self.file.read(min(CHUNK, self.left))
            if not chunk:  # the file shrank under us: the promised length cannot be met
                self._drop_file()
                self.abort("file truncated")
                return False
            self.left -= len(chunk)
            self.out = memoryview(chunk)

    def _drop_file(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
            self.left = 0

    def finish(self, how: str) -> None:
        self._drop_file()
        super().finish(how)


def http_app(directory: str) -> Callable[[Connection], object]:
    """The factory `--app http:DIR` uses."""
    root = os.path.realpath(directory)
    if not os.path.isdir(root):
        raise ValueError(f"http:{directory}: not a directory")
    return lambda conn: HttpServer(conn, root)
