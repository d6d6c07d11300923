"""`proxy:HOST:PORT`: TCP terminates in pystack; each connection is relayed to a new
kernel TCP connection to HOST:PORT (the upstream), opened from the stack's namespace.

The upstream socket is non-blocking and serviced by the stack's own loop (Stack.add_reader
and add_writer: one poll for the AF_XDP socket and every upstream), so there is no thread
per connection and the engine is only ever touched from the loop thread.

- Back-pressure both ways, at most one chunk in flight per direction: the upstream is read
  only when the previous chunk has been queued on the pystack connection (whose send
  buffer bounds it), and the pystack connection is read only when the previous chunk has
  been written to the upstream socket. A slow reader on either side closes the other
  side's TCP window instead of growing a buffer here.
- Half-close both ways: the client's FIN becomes shutdown(SHUT_WR) on the upstream after
  everything before it was written; the upstream's EOF becomes our FIN to the client.
- Resets both ways: a client RST (or timeout) closes the upstream with SO_LINGER 0 (an RST);
  an upstream RST, a refused connect or any upstream error resets the client.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Callable
from typing import Protocol

from pystack.apps.base import App
from pystack.tcp.connection import Connection

CHUNK = 256 * 1024


class Loop(Protocol):
    """What the proxy needs from the stack's loop (pystack.stack.Stack has it)."""

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None: ...
    def remove_reader(self, fd: int) -> None: ...
    def add_writer(self, fd: int, callback: Callable[[], None]) -> None: ...
    def remove_writer(self, fd: int) -> None: ...


class Proxy(App):
    name = "proxy"
    __slots__ = ("loop", "up", "fd", "connected", "to_up", "to_client", "client_eof",
                 "up_eof", "up_shut", "client_shut", "reading", "writing")

    def __init__(self, conn: Connection, loop: Loop, upstream: tuple[str, int]) -> None:
        self.loop = loop
        self.connected = False
        self.to_up = memoryview(b"")  # read from the client, not yet written upstream
        self.to_client = memoryview(b"")  # read from upstream, not yet queued to the client
        self.client_eof = self.up_eof = False
        self.up_shut = self.client_shut = False  # our FIN sent that way
        self.reading = self.writing = False  # upstream fd registered with the loop
        self.up = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.fd = self.up.fileno()
        self.up.setblocking(False)
        self.up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = self.up.connect_ex(upstream)
        super().__init__(conn)
        if self.done:
            return
        if err not in (0, errno.EINPROGRESS):
            self._upstream_failed(err)
            return
        self._want_write(True)

    # ---- the loop's callbacks ----
    def _on_upstream(self) -> None:
        self.run(self.pump)

    def pump(self) -> None:
        if self.done:
            return
        if not self.connected:
            err = self.up.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._upstream_failed(err)
                return
            try:
                self.up.getpeername()
            except OSError:
                return  # still connecting
            self.connected = True
            self._want_write(False)
        try:
            self._client_to_upstream()
            if not self.done:
                self._upstream_to_client()
        except _ClientError as e:
            self._reset_upstream()
            self.abort(e.args[0])
            return
        except OSError as e:
            self._upstream_failed(e.errno or errno.EIO)
            return
        if self.done:
            return
        if self.up_shut and self.client_shut:
            self._close_upstream()
            self.close()

    # ---- client -> upstream ----
    def _client_to_upstream(self) -> None:
        c = self.conn
        while True:
            if self.to_up:
                try:
                    n = self.up.send(self.to_up)
                except BlockingIOError:
                    n = 0
                self.to_up = self.to_up[n:]
                if self.to_up:
                    self._want_write(True)  # upstream's buffer is full: stop reading the client
                    return
            self._want_write(False)
            if self.client_eof:
                break
            try:
                data = c.recv(CHUNK)
            except BlockingIOError:
                return
            except OSError as e:
                raise _ClientError(e.strerror or "error") from None
            if not data:
                self.client_eof = True
                break
            self.to_up = memoryview(data)
        if not self.up_shut:
            self.up.shutdown(socket.SHUT_WR)  # the client's FIN, after all its data
            self.up_shut = True

    # ---- upstream -> client ----
    def _upstream_to_client(self) -> None:
        c = self.conn
        while True:
            if self.to_client:
                try:
                    n = c.send(self.to_client)
                except OSError as e:
                    raise _ClientError(e.strerror or "error") from None
                self.to_client = self.to_client[n:]
                if self.to_client:
                    self._want_read(False)  # the client's window is full; "writable" resumes
                    return
            if self.up_eof:
                break
            try:
                data = self.up.recv(CHUNK)
            except BlockingIOError:
                self._want_read(True)
                return
            if not data:
                self.up_eof = True
                self._want_read(False)
                break
            self.to_client = memoryview(data)
        if not self.client_shut:
            c.shutdown_write()  # the upstream's EOF becomes our FIN
            self.client_shut = True

    # ---- endings ----
    def on_event(self, conn: object, kind: str) -> None:
        if kind == "closed" and not self.done and self.conn.error:
            self._reset_upstream()
        super().on_event(conn, kind)

    def _upstream_failed(self, err: int) -> None:
        self._close_upstream()
        self.abort(f"upstream: {errno.errorcode.get(err, str(err))}")

    def _reset_upstream(self) -> None:
        """Close the upstream with an RST (SO_LINGER 0), as the client reset us."""
        if self.fd >= 0:
            try:
                self.up.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self._close_upstream()

    def _close_upstream(self) -> None:
        if self.fd < 0:
            return
        self._want_read(False)
        self._want_write(False)
        self.up.close()
        self.fd = -1

    def finish(self, how: str) -> None:
        self._close_upstream()
        super().finish(how)

    def _want_read(self, on: bool) -> None:
        if on != self.reading and self.fd >= 0:
            self.reading = on
            if on:
                self.loop.add_reader(self.fd, self._on_upstream)
            else:
                self.loop.remove_reader(self.fd)

    def _want_write(self, on: bool) -> None:
        if on != self.writing and self.fd >= 0:
            self.writing = on
            if on:
                self.loop.add_writer(self.fd, self._on_upstream)
            else:
                self.loop.remove_writer(self.fd)


class _ClientError(Exception):
    """The pystack side of the relay failed (reset, timeout): reset the upstream."""


def parse_upstream(spec: str) -> tuple[str, int]:
    """``HOST:PORT`` (HOST an IPv4 address or a name resolved now) -> (address, port)."""
    host, sep, port = spec.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"proxy:{spec}: expected proxy:HOST:PORT")
    try:
        infos = socket.getaddrinfo(host, int(port), socket.AF_INET, socket.SOCK_STREAM)
    except OSError:
        raise ValueError(f"proxy:{spec}: cannot resolve {host!r} to an IPv4 address") from None
    return infos[0][4][0], int(port)


def proxy_app(spec: str, loop: Loop) -> Callable[[Connection], object]:
    """The factory `--app proxy:HOST:PORT` uses."""
    upstream = parse_upstream(spec)
    return lambda conn: Proxy(conn, loop, upstream)
