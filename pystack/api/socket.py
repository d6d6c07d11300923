"""A socket-like object for blocking code: ``pystack.api.socket.socket``.

It follows Python's ``socket.socket`` (and Linux's errnos) for TCP over IPv4::

    from pystack.api import Stack, socket as psocket
    stack = Stack("eth1"); stack.start()          # the stack's loop runs on a thread
    s = psocket.socket(stack=stack)
    s.setsockopt(IPPROTO_TCP, TCP_NODELAY, 1)      # the socket module's constants
    s.connect(("198.18.0.2", 80))                  # ConnectionRefusedError, TimeoutError ...
    s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n"); s.recv(4096); s.close()

Blocking calls wait on the calling thread while the stack's loop thread runs TCP; each
call hops to that thread (the engine is single-threaded) and comes back. Timeouts
(``settimeout``) raise ``TimeoutError("timed out")`` like Python's sockets; non-blocking
mode raises ``BlockingIOError`` (EAGAIN, EINPROGRESS for ``connect``) like Linux.

Differences from kernel sockets, by design:

* ``fileno()`` is -1: there is no kernel descriptor, so ``select``/``selectors`` cannot
  watch these sockets; event-driven code should use the asyncio API
  (:mod:`pystack.api.streams`) instead.
* ``send`` on a socket still in SYN-SENT queues the bytes (they leave after the
  handshake) instead of waiting; ``MSG_PEEK`` is not supported (EOPNOTSUPP).
* ``SO_REUSEADDR``/``SO_REUSEPORT`` are accepted and ignored (a port has one owner).
* ``SO_LINGER`` with ``l_onoff=1, l_linger=0`` makes ``close`` reset (RST), as on Linux;
  other linger times close normally.
* Calling a blocking method on the stack's own loop thread raises RuntimeError (it would
  wait forever); non-blocking calls work there.
"""

from __future__ import annotations

import errno
import io
import os
import socket as _socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from pystack.api import options as _opts
from pystack.api.stack import Stack, default_stack
from pystack.tcp.connection import Connection
from pystack.tcp.engine import Listener
from pystack.tcp.state import TcpState
from pystack.wire.segment import ip_to_int, ip_to_str

__all__ = [
    "MSG_FASTOPEN", "TCP_FASTOPEN", "TCP_FASTOPEN_CONNECT", "create_connection",
    "create_server", "socket",
]

T = TypeVar("T")

AF_INET = _socket.AF_INET
SOCK_STREAM = _socket.SOCK_STREAM
SHUT_RD, SHUT_WR, SHUT_RDWR = _socket.SHUT_RD, _socket.SHUT_WR, _socket.SHUT_RDWR
MSG_OOB = _socket.MSG_OOB
MSG_PEEK = _socket.MSG_PEEK
MSG_DONTWAIT = _socket.MSG_DONTWAIT
MSG_WAITALL = _socket.MSG_WAITALL
MSG_NOSIGNAL = getattr(_socket, "MSG_NOSIGNAL", 0x4000)
MSG_FASTOPEN = getattr(_socket, "MSG_FASTOPEN", 0x20000000)
TCP_FASTOPEN = _opts.TCP_FASTOPEN
TCP_FASTOPEN_CONNECT = _opts.TCP_FASTOPEN_CONNECT  # not in Python 3.11's socket module
SO_LINGER = _socket.SO_LINGER
SO_ERROR = _socket.SO_ERROR

_AGAIN = object()  # an attempt that would block
_CONNECTING = (TcpState.SYN_SENT, TcpState.SYN_RECEIVED)


def _err(code: int, msg: str | None = None) -> OSError:
    return OSError(code, msg or os.strerror(code))


def _ip(host: str | int | None) -> int:
    if host is None or host == "":
        return 0
    try:
        return ip_to_int(host)
    except OSError:
        pass
    infos = _socket.getaddrinfo(host, None, _socket.AF_INET, _socket.SOCK_STREAM)
    return int.from_bytes(_socket.inet_aton(infos[0][4][0]), "big")


def _addr(ip: int, port: int) -> tuple[str, int]:
    return (ip_to_str(ip), port)


class socket:  # noqa: N801 - the name of the thing it imitates
    """A TCP/IPv4 socket on a pystack :class:`~pystack.api.stack.Stack` (module docstring).

    ``stack`` defaults to the stack most recently started or attached; a stack nothing
    drives yet is started (``Stack.start``) on first use.
    """

    def __init__(self, family: int = AF_INET, type: int = SOCK_STREAM, proto: int = 0,
                 *, stack: Stack | None = None) -> None:
        if family != AF_INET:
            raise _err(errno.EAFNOSUPPORT)
        if type & 0xF != SOCK_STREAM or proto not in (0, _socket.IPPROTO_TCP):
            raise _err(errno.EPROTONOSUPPORT)
        st = stack if stack is not None else default_stack()
        if st.loop is None:
            st.start()
        self._stack = st
        self._drv = st.driver
        self.family, self.type, self.proto = AF_INET, SOCK_STREAM, _socket.IPPROTO_TCP
        self._timeout: float | None = _socket.getdefaulttimeout()
        self._conn: Connection | None = None
        self._lst: Listener | None = None
        self._bound: tuple[int, int] | None = None
        self._pending: list[tuple[int, int, int | str]] = []  # options set before connect
        # Validates and stores them meanwhile: a Listener object the engine never sees,
        # marked closed so that it reads as an unconnected socket (state CLOSED).
        self._holder = Listener(st.engine, 0, 0, 0)
        self._holder.closed = True
        self._noop: dict[tuple[int, int], int] = {}
        self._linger: tuple[int, int] = (0, 0)
        self._wake = threading.Event()
        self._closed = False
        self._established = False  # the handshake completed
        self._isconn = False  # connect() reported it (Linux SS_CONNECTED)
        self._so_error = 0
        self._rd_shut = False
        self._io_refs = 0
        st._users.add(self)

    @classmethod
    def _accepted(cls, stack: Stack, conn: Connection) -> socket:
        s = cls.__new__(cls)
        cls.__init__(s, stack=stack)
        s._conn = conn
        s._established = s._isconn = True
        conn.on_event = s._on_event
        return s

    def __repr__(self) -> str:
        state = "closed" if self._closed else (
            "listening" if self._lst else ("connected" if self._conn else "unconnected"))
        return f"<pystack.api.socket {state} {self._name()}>"

    def __enter__(self) -> socket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing --------------------------------------------------------------------
    def _call(self, fn: Callable[[], T]) -> T:
        return self._drv.call(fn, None)

    def _on_event(self, obj: object, kind: str) -> None:
        if kind == "connected":
            self._established = True
        elif kind == "closed" and self._conn is not None:
            err = self._conn.error
            if err or not self._established:
                self._so_error = err or errno.ECONNREFUSED
        self._wake.set()

    def _check(self) -> None:
        if self._closed:
            raise _err(errno.EBADF)

    def _blocking_wait(self, attempt: Callable[[], Any], nonblocking: bool = False) -> Any:
        """Run ``attempt`` on the loop thread until it returns something other than
        _AGAIN (it clears the wake event before saying _AGAIN, on that thread, so no
        event can be missed). Honours the timeout and non-blocking mode."""
        if nonblocking or self._timeout == 0.0:
            r = self._call(attempt)
            if r is _AGAIN:
                raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))
            return r
        if self._drv.in_thread() and self._drv.loop is not None:
            raise RuntimeError("blocking pystack socket call on the stack's own loop thread "
                               "(it would never return); use the asyncio API there")
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while True:
            r = self._call(attempt)
            if r is not _AGAIN:
                return r
            if self._stack.closed:
                raise _err(errno.ECONNABORTED, "the pystack Stack was closed")
            if deadline is None:
                self._wake.wait()
            else:
                left = deadline - time.monotonic()
                if left <= 0 or not self._wake.wait(left):
                    raise TimeoutError("timed out")

    # -- timeouts --------------------------------------------------------------------
    def settimeout(self, value: float | None) -> None:
        if value is not None:
            value = float(value)
            if value < 0:
                raise ValueError("Timeout value out of range")
        self._timeout = value

    def gettimeout(self) -> float | None:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self._timeout = None if flag else 0.0

    def getblocking(self) -> bool:
        return self._timeout != 0.0

    def fileno(self) -> int:
        """-1: pystack sockets have no kernel descriptor (see the module docstring)."""
        return -1

    # -- addresses -------------------------------------------------------------------
    def _name(self) -> tuple[str, int]:
        if self._conn is not None:
            return _addr(self._conn.local_ip, self._conn.local_port)
        if self._lst is not None:
            return _addr(self._lst.ip, self._lst.port)
        if self._bound is not None:
            return _addr(*self._bound)
        return ("0.0.0.0", 0)

    def getsockname(self) -> tuple[str, int]:
        self._check()
        return self._name()

    def getpeername(self) -> tuple[str, int]:
        self._check()
        c = self._conn
        if c is None or not self._established:
            raise _err(errno.ENOTCONN)
        return _addr(c.remote_ip, c.remote_port)

    def bind(self, address: tuple[str, int]) -> None:
        self._check()
        if self._bound is not None or self._conn is not None or self._lst is not None:
            raise _err(errno.EINVAL)
        host, port = address
        ip = _ip(host)
        st = self._stack

        def do() -> tuple[int, int]:
            if ip and ip not in st.link.local_ips:
                raise _err(errno.EADDRNOTAVAIL)
            p = port or st._free_port(ip)
            if any(q == p and (i == ip or not i or not ip) for (i, q) in st._ports) or any(
                lp == p and (i == ip or not i or not ip) for (i, lp) in st.engine.listeners
            ):
                raise _err(errno.EADDRINUSE)
            st._ports.add((ip, p))
            return (ip, p)

        self._bound = self._call(do)

    # -- listening -------------------------------------------------------------------
    def listen(self, backlog: int = 128) -> None:
        self._check()
        if self._conn is not None:
            raise _err(errno.EINVAL)
        if self._lst is not None:
            return
        if self._bound is None:
            self.bind(("", 0))
        assert self._bound is not None
        ip, port = self._bound
        st = self._stack

        def do() -> Listener:
            st._ports.discard((ip, port))
            try:
                lst = st._listen(ip, port, backlog)
            except BaseException:
                st._ports.add((ip, port))
                raise
            lst._inherit(self._holder)
            lst.on_event = self._on_event
            return lst

        self._lst = self._call(do)

    def accept(self) -> tuple[socket, tuple[str, int]]:
        self._check()
        lst = self._lst
        if lst is None:
            raise _err(errno.EINVAL)

        def attempt() -> Any:
            if self._closed:
                raise _err(errno.EBADF)
            c = lst.accept()
            if c is None:
                self._wake.clear()
                return _AGAIN
            return socket._accepted(self._stack, c)

        s = self._blocking_wait(attempt)
        c = s._conn
        return s, _addr(c.remote_ip, c.remote_port)

    # -- connecting ------------------------------------------------------------------
    def connect(self, address: tuple[str, int]) -> None:
        err = self._connect(address, raise_errors=True)
        assert err == 0

    def connect_ex(self, address: tuple[str, int]) -> int:
        """connect() returning the errno instead of raising (0 when connected)."""
        return self._connect(address, raise_errors=False)

    def _connect(self, address: tuple[str, int], raise_errors: bool,
                 data: bytes = b"", fastopen: bool = False) -> int:
        """Linux ``__inet_stream_connect``: EISCONN once connected (the first call after a
        non-blocking connect completed returns 0), EALREADY while in progress, the error
        once after a failed attempt (then a new connect starts over)."""
        self._check()

        def fail(code: int) -> int:
            if raise_errors and code:
                raise _err(code)
            return code

        if self._lst is not None:
            return fail(errno.EINVAL)
        c = self._conn
        if c is not None:
            if self._isconn:
                return fail(errno.EISCONN)
            if self._established:
                self._isconn = True
                return 0
            if self._so_error:
                code, self._so_error = self._so_error, 0
                self._conn = None
                return fail(code)
            if c.state != TcpState.CLOSED:
                return fail(errno.EALREADY)
            self._conn = None  # failed and its error already read: start over
        host, port = address
        rip = _ip(host)
        st = self._stack
        lip, lport = self._bound if self._bound is not None else (0, 0)
        options = {_opts.NAMES[(lv, o)]: v for lv, o, v in self._pending
                   if (lv, o) in _opts.NAMES}

        def do() -> Connection:
            conn = st._connect(rip, port, local_ip=lip, local_port=lport or None,
                               options=options, on_event=self._on_event,
                               fastopen=fastopen, data=data)
            if self._bound is not None:
                st._ports.discard(self._bound)
            return conn

        try:
            self._conn = self._call(do)
        except OSError as e:
            return fail(e.errno or errno.EINVAL)
        if self._fastopen_connect_ready():
            self._established = self._isconn = True  # TCP_FASTOPEN_CONNECT: SYN waits
            return 0
        if self._timeout == 0.0:
            return fail(errno.EINPROGRESS)

        def attempt() -> Any:
            conn = self._conn
            assert conn is not None
            if self._established:
                return 0
            if self._so_error or conn.state == TcpState.CLOSED:
                code = self._so_error or conn.error or errno.ECONNREFUSED
                self._so_error = 0
                self._conn = None
                return code
            self._wake.clear()
            return _AGAIN

        code = self._blocking_wait(attempt)
        if code == 0:
            self._isconn = True
        return fail(code)

    def _fastopen_connect_ready(self) -> bool:
        """TCP_FASTOPEN_CONNECT set and a cookie cached: connect() returns at once and the
        SYN leaves with the first write (tcp(7))."""
        if not any(o == TCP_FASTOPEN_CONNECT and v for _, o, v in self._pending):
            return False
        conn = self._conn
        assert conn is not None
        eng = self._stack.engine
        fn = getattr(eng, "fastopen_cookie", None)
        return fn is not None and self._call(lambda: fn(conn.remote_ip)) is not None

    # -- sending ---------------------------------------------------------------------
    def send(self, data: bytes | bytearray | memoryview, flags: int = 0) -> int:
        self._check()
        c = self._conn
        if flags & MSG_FASTOPEN and c is None:
            raise _err(errno.EDESTADDRREQ)
        if c is None:
            raise _err(errno.EPIPE)
        if not data:
            return 0
        oob = bool(flags & MSG_OOB)
        buf = bytes(data)

        def attempt() -> Any:
            conn = self._conn
            if conn is None or self._closed:
                raise _err(errno.EPIPE)
            n = conn.send(buf, oob=oob)
            if n == 0:
                self._wake.clear()
                return _AGAIN
            return n

        return int(self._blocking_wait(attempt, nonblocking=bool(flags & MSG_DONTWAIT)))

    def sendall(self, data: bytes | bytearray | memoryview, flags: int = 0) -> None:
        self._check()
        mv = memoryview(bytes(data))
        deadline = None if not self._timeout else time.monotonic() + self._timeout
        saved = self._timeout
        try:
            while mv:
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError("timed out")
                    self._timeout = left
                n = self.send(mv, flags)
                mv = mv[n:]
        finally:
            self._timeout = saved

    def sendto(self, data: bytes | bytearray | memoryview, flags_or_addr: Any,
               addr: tuple[str, int] | None = None) -> int:
        """``sendto(data, MSG_FASTOPEN, addr)`` on a new socket: connect and send ``data``
        in the SYN when a Fast Open cookie is cached (otherwise the SYN asks for one and
        the data follows the handshake). Blocking: returns once connected; non-blocking:
        the number of bytes queued, or EINPROGRESS without a cookie (Linux's behaviour).
        On a connected socket it is ``send`` (the address is ignored, as for TCP)."""
        if addr is None:
            flags, addr = 0, flags_or_addr
        else:
            flags = int(flags_or_addr)
        self._check()
        if self._conn is not None:
            return self.send(data, flags & ~MSG_FASTOPEN)  # TCP ignores the address
        if not flags & MSG_FASTOPEN:
            raise _err(errno.EPIPE)
        buf = bytes(data)
        code = self._connect(addr, raise_errors=False, data=buf, fastopen=True)
        if code == errno.EINPROGRESS:
            conn = self._conn
            queued = getattr(conn, "fastopen_queued", 0) if conn is not None else 0
            if queued:
                return len(buf)
            raise BlockingIOError(errno.EINPROGRESS, os.strerror(errno.EINPROGRESS))
        if code:
            raise _err(code)
        return len(buf)

    # -- receiving -------------------------------------------------------------------
    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        self._check()
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        if flags & MSG_PEEK:
            raise _err(errno.EOPNOTSUPP, "MSG_PEEK is not supported by pystack")
        c = self._conn
        if c is None:
            raise _err(errno.ENOTCONN)
        if self._rd_shut and not flags & MSG_OOB:
            return b""
        if bufsize == 0:
            return b""
        oob = bool(flags & MSG_OOB)
        if flags & MSG_WAITALL and not oob:
            return self._recv_all(bufsize, flags)

        def attempt() -> Any:
            conn = self._conn
            if conn is None or self._closed:
                raise _err(errno.EBADF)
            try:
                data = conn.recv(bufsize, oob=oob)
            except BlockingIOError:
                self._wake.clear()
                return _AGAIN
            return data

        return bytes(self._blocking_wait(attempt, nonblocking=bool(flags & MSG_DONTWAIT)))

    def _recv_all(self, bufsize: int, flags: int) -> bytes:
        out = bytearray()
        while len(out) < bufsize:
            chunk = self.recv(bufsize - len(out), flags & ~MSG_WAITALL)
            if not chunk:
                break
            out += chunk
        return bytes(out)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        mv = memoryview(buffer).cast("B")
        n = nbytes or len(mv)
        data = self.recv(n, flags)
        mv[: len(data)] = data
        return len(data)

    def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, Any]:
        return self.recv(bufsize, flags), None

    # -- closing ---------------------------------------------------------------------
    def shutdown(self, how: int) -> None:
        self._check()
        if how not in (SHUT_RD, SHUT_WR, SHUT_RDWR):
            raise _err(errno.EINVAL)
        c = self._conn
        if c is None or not self._established:
            raise _err(errno.ENOTCONN)
        if how in (SHUT_RD, SHUT_RDWR):
            self._rd_shut = True
        if how in (SHUT_WR, SHUT_RDWR):
            self._call(c.shutdown_write)
        self._wake.set()

    def close(self) -> None:
        """Close: FIN after the queued bytes (RST if received bytes are unread, or with
        SO_LINGER 0), stop listening; the connection finishes inside the stack."""
        if self._closed:
            return
        self._closed = True
        if self._io_refs > 0:
            return  # the makefile() objects close it when they go
        self._real_close()

    def _real_close(self) -> None:
        c, lst, st = self._conn, self._lst, self._stack
        reset = self._linger == (1, 0)

        def do() -> None:
            if c is not None:
                c.abort() if reset else c.close()
            if lst is not None:
                st._unlisten(lst)
            if self._bound is not None:
                st._ports.discard(self._bound)

        if not st.closed:
            self._stack.post(do)
        self._wake.set()

    def detach(self) -> int:
        raise _err(errno.EOPNOTSUPP, "pystack sockets have no descriptor to detach")

    # -- options ---------------------------------------------------------------------
    def setsockopt(self, level: int, optname: int, value: int | bytes,
                   optlen: int | None = None) -> None:
        self._check()
        if level == _socket.SOL_SOCKET and optname == SO_LINGER:
            if isinstance(value, bytes):
                self._linger = struct.unpack("ii", value[:8])  # type: ignore[assignment]
            else:
                self._linger = (int(bool(value)), 0)
            return
        v = _opts.coerce(optname, level, value)
        target = self._conn or self._lst

        def do() -> None:
            _opts.set_option(target or self._holder, level, optname, v, self._noop)
            if target is None and (level, optname) not in _opts._NOOP:
                self._pending.append((level, optname, v))

        self._call(do)

    def getsockopt(self, level: int, optname: int, buflen: int | None = None) -> Any:
        self._check()
        if level == _socket.SOL_SOCKET and optname == SO_ERROR:
            code, self._so_error = self._so_error, 0
            return code if buflen is None else struct.pack("<i", code)[:buflen]
        if level == _socket.SOL_SOCKET and optname == SO_LINGER:
            packed = struct.pack("ii", *self._linger)
            return packed[: buflen or 8] if buflen else self._linger[0]
        target = self._conn or self._lst or self._holder
        return self._call(lambda: _opts.get_option(
            target, level, optname, buflen, noop=self._noop, listening=self._lst is not None))

    def tcp_info(self) -> dict[str, Any]:
        """``struct tcp_info`` as a dict (``ss -ti`` names and units; times in ms)."""
        self._check()
        c = self._conn
        if c is None:
            raise _err(errno.ENOTCONN)
        return self._call(c.tcp_info)

    # -- files -----------------------------------------------------------------------
    def makefile(self, mode: str = "r", buffering: int | None = None, *,
                 encoding: str | None = None, errors: str | None = None,
                 newline: str | None = None) -> Any:
        """A file object over the socket, as ``socket.socket.makefile``."""
        if not set(mode) <= {"r", "w", "b"}:
            raise ValueError(f"invalid mode {mode!r} (only r, w, b allowed)")
        writing = "w" in mode
        reading = "r" in mode or not writing
        rawmode = ("r" if reading else "") + ("w" if writing else "")
        raw = _socket.SocketIO(self, rawmode)  # type: ignore[arg-type]
        self._io_refs += 1
        if buffering is None:
            buffering = -1
        if buffering < 0:
            buffering = io.DEFAULT_BUFFER_SIZE
        if buffering == 0:
            if "b" not in mode:
                raise ValueError("unbuffered streams must be binary")
            return raw
        buffer: Any
        if reading and writing:
            buffer = io.BufferedRWPair(raw, raw, buffering)
        elif reading:
            buffer = io.BufferedReader(raw, buffering)
        else:
            buffer = io.BufferedWriter(raw, buffering)
        if "b" in mode:
            return buffer
        text = io.TextIOWrapper(buffer, encoding, errors, newline)
        text.mode = mode  # type: ignore[misc]
        return text

    def _decref_socketios(self) -> None:
        if self._io_refs > 0:
            self._io_refs -= 1
        if self._closed and self._io_refs == 0:
            self._real_close()

    def _stack_closed(self) -> None:
        self._wake.set()


def create_connection(address: tuple[str, int], timeout: float | None = None,
                      source_address: tuple[str, int] | None = None, *,
                      stack: Stack | None = None) -> socket:
    """``socket.create_connection`` over pystack."""
    s = socket(stack=stack)
    try:
        if timeout is not None:
            s.settimeout(timeout)
        if source_address is not None:
            s.bind(source_address)
        s.connect(address)
    except BaseException:
        s.close()
        raise
    return s


def create_server(address: tuple[str, int], *, backlog: int = 128,
                  stack: Stack | None = None) -> socket:
    """``socket.create_server`` over pystack (IPv4)."""
    s = socket(stack=stack)
    try:
        s.bind(address)
        s.listen(backlog)
    except BaseException:
        s.close()
        raise
    return s
