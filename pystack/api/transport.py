"""A real ``asyncio.Transport`` over a pystack :class:`~pystack.tcp.connection.Connection`.

It behaves as asyncio's own socket transport does, so ``StreamReader``/``StreamWriter``
and any ``asyncio.Protocol`` work unchanged:

* reading: on the connection's "readable" event every ready byte goes to
  ``protocol.data_received``; end of stream calls ``eof_received`` (closing the transport
  unless it returns true); ``pause_reading`` simply stops taking bytes, so the engine's
  receive buffer fills and TCP's window closes (back-pressure reaches the peer).
* writing: ``write`` hands bytes to the connection's send buffer (``SO_SNDBUF``) and keeps
  what does not fit in a transport buffer; above the high-water mark (64 KiB by default)
  ``protocol.pause_writing()`` is called, below the low-water mark ``resume_writing()``, so
  ``StreamWriter.drain()`` waits for the peer. ``write_eof`` sends FIN after the buffered
  bytes; ``close`` does too and then reports ``connection_lost(None)``.
* ``abort()`` resets the connection (RST; the peer sees ECONNRESET), drops buffered data.
* errors (RST from the peer, timeouts) reach the protocol as ``connection_lost(exc)`` with
  the errno Linux would give: ConnectionResetError, TimeoutError (ETIMEDOUT), ...

Everything runs on the loop thread that drives the stack (see :mod:`pystack.api.driver`);
like any asyncio transport, call it only from there.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket as _socket
from typing import TYPE_CHECKING, Any

from pystack.api import options as _opts
from pystack.tcp.connection import Connection
from pystack.wire.segment import ip_to_str

if TYPE_CHECKING:
    from pystack.api.stack import Stack
    from pystack.api.streams import Server

__all__ = ["PystackTransport", "TransportSocket"]

log = logging.getLogger("pystack.api")

MAX_READ = 256 * 1024


def _addr(ip: int, port: int) -> tuple[str, int]:
    return (ip_to_str(ip), port)


def conn_error(err: int, what: str = "") -> OSError:
    """OSError for a Linux errno; Python picks the subclass (ConnectionRefusedError ...)."""
    msg = os.strerror(err)
    return OSError(err, f"{what}: {msg}" if what else msg)


class TransportSocket:
    """What ``get_extra_info('socket')`` returns: socket options and addresses of the
    connection (like asyncio's TransportSocket, no I/O methods). ``fileno()`` is -1:
    pystack connections have no kernel descriptor."""

    family = _socket.AF_INET
    type = _socket.SOCK_STREAM
    proto = _socket.IPPROTO_TCP

    def __init__(self, target: Any, stack: Stack, listening: bool = False) -> None:
        self._target = target
        self._stack = stack
        self._listening = listening
        self._noop: dict[tuple[int, int], int] = {}

    def __repr__(self) -> str:
        return f"<pystack TransportSocket {self.getsockname()}>"

    def fileno(self) -> int:
        return -1

    def getsockname(self) -> tuple[str, int]:
        t = self._target
        if self._listening:
            return _addr(t.ip, t.port)
        return _addr(t.local_ip, t.local_port)

    def getpeername(self) -> tuple[str, int]:
        if self._listening:
            raise OSError(errno.ENOTCONN, os.strerror(errno.ENOTCONN))
        return _addr(self._target.remote_ip, self._target.remote_port)

    def setsockopt(self, level: int, optname: int, value: int | bytes) -> None:
        v = _opts.coerce(optname, level, value)
        self._stack.call(lambda: _opts.set_option(self._target, level, optname, v, self._noop))

    def getsockopt(self, level: int, optname: int, buflen: int | None = None) -> Any:
        return self._stack.call(lambda: _opts.get_option(
            self._target, level, optname, buflen, noop=self._noop, listening=self._listening))

    def tcp_info(self) -> dict[str, Any]:
        """``struct tcp_info`` fields as a dict (``ss -ti`` names and units)."""
        return self._stack.call(self._target.tcp_info)


class PystackTransport(asyncio.Transport):
    """asyncio Transport over one pystack connection (see the module docstring)."""

    def __init__(self, stack: Stack, conn: Connection, *, server: Server | None = None) -> None:
        super().__init__()
        loop = stack.loop
        assert loop is not None
        self._loop = loop
        self._stack = stack
        self._kick = stack.driver.kick
        self._conn = conn
        self._protocol: asyncio.BaseProtocol | None = None
        self._server = server
        self._buffer = bytearray()
        self._high_water = 64 * 1024
        self._low_water = 16 * 1024
        self._protocol_paused = False
        self._closing = False
        self._eof = False  # write_eof() called
        self._eof_seen = False
        self._paused = False  # pause_reading()
        self._conn_lost = 0
        self._started = False
        self._waiter: asyncio.Future[None] | None = None
        self._sock: TransportSocket | None = None
        conn.on_event = self._on_event
        stack._users.add(self)
        if server is not None:
            server._attach()

    def __repr__(self) -> str:
        state = "closing" if self._closing else "open"
        return f"<PystackTransport {self._conn!r} {state}>"

    # -- set-up (loop thread) -------------------------------------------------------
    def _wait_connected(self) -> asyncio.Future[None]:
        self._waiter = self._loop.create_future()
        return self._waiter

    def _start(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol
        self._started = True
        try:
            protocol.connection_made(self)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.connection_made() call failed.")
            return
        c = self._conn
        if c.readable or c.at_eof or c.error:
            self._read_ready()

    # -- engine events (loop thread, inside the engine's turn) ------------------------
    def _on_event(self, conn: object, kind: str) -> None:
        if kind == "readable":
            if self._started and not self._paused:
                self._read_ready()
        elif kind == "writable":
            self._write_ready()
        elif kind == "connected":
            w = self._waiter
            if w is not None and not w.done():
                w.set_result(None)
        elif kind == "closed":
            w = self._waiter
            if w is not None and not w.done():
                c = self._conn
                err = c.error or errno.ECONNREFUSED
                w.set_exception(conn_error(err, f"Connect call failed {self._peer()}"))

    def _read_ready(self) -> None:
        conn = self._conn
        got = False
        while not self._paused and not self._closing and self._conn_lost == 0:
            try:
                if conn.readable:
                    data = conn.recv(MAX_READ)
                    if not data:
                        break
                elif conn.at_eof:
                    if not self._eof_seen:
                        self._eof_seen = True
                        self._on_eof()
                    break
                elif conn.error:
                    conn.recv(1)  # raises the connection's error, once
                    break
                else:
                    break
            except BlockingIOError:
                break
            except OSError as exc:
                self._fatal_error(exc, "Fatal read error on pystack transport")
                return
            got = True
            try:
                self._protocol.data_received(data)  # type: ignore[union-attr]
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")
                return
        if got:
            self._kick()  # reading may open the window: the engine sends the update

    def _on_eof(self) -> None:
        try:
            keep_open = self._protocol.eof_received()  # type: ignore[union-attr]
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.eof_received() call failed.")
            return
        if not keep_open:
            self.close()

    def _write_ready(self) -> None:
        if not self._buffer or self._conn_lost:
            return
        try:
            n = self._conn.send(self._buffer)
        except OSError as exc:
            self._fatal_error(exc, "Fatal write error on pystack transport")
            return
        if n:
            del self._buffer[:n]
            self._kick()
        self._maybe_resume_protocol()
        if not self._buffer:
            if self._closing:
                self._finish_close()
            elif self._eof:
                self._conn.shutdown_write()
                self._kick()

    # -- asyncio.BaseTransport ------------------------------------------------------
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        c = self._conn
        if name == "peername":
            return _addr(c.remote_ip, c.remote_port)
        if name == "sockname":
            return _addr(c.local_ip, c.local_port)
        if name == "socket":
            if self._sock is None:
                self._sock = TransportSocket(c, self._stack)
            return self._sock
        if name == "tcp_info":
            return c.tcp_info()
        if name == "connection":
            return c
        if name == "stack":
            return self._stack
        return super().get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if not self._buffer:
            self._finish_close()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol  # type: ignore[return-value]

    # -- asyncio.ReadTransport -----------------------------------------------------
    def is_reading(self) -> bool:
        return not self._paused and not self._closing

    def pause_reading(self) -> None:
        if self._closing or self._paused:
            return
        self._paused = True

    def resume_reading(self) -> None:
        if self._closing or not self._paused:
            return
        self._paused = False
        self._loop.call_soon(self._read_ready)

    # -- asyncio.WriteTransport ----------------------------------------------------
    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high_water, self._low_water = high, low
        self._maybe_pause_protocol()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (self._low_water, self._high_water)

    def get_write_buffer_size(self) -> int:
        """Bytes written but not yet taken into the connection's send buffer."""
        return len(self._buffer)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"data argument must be a bytes-like object, "
                            f"not {type(data).__name__!r}")
        if self._eof:
            raise RuntimeError("Cannot call write() after write_eof()")
        if not data:
            return
        if self._conn_lost:
            if self._conn_lost >= 5:
                log.warning("pystack transport: write() on a lost connection")
            self._conn_lost += 1
            return
        if not self._buffer:
            try:
                n = self._conn.send(data)
            except OSError as exc:
                self._fatal_error(exc, "Fatal write error on pystack transport")
                return
            if n:
                self._kick()
                if n == len(data):
                    return
                data = memoryview(data)[n:]
        self._buffer += data
        self._maybe_pause_protocol()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def write_eof(self) -> None:
        if self._closing or self._eof:
            return
        self._eof = True
        if not self._buffer:
            self._conn.shutdown_write()
            self._kick()

    def can_write_eof(self) -> bool:
        return True

    def abort(self) -> None:
        """Reset the connection (RST) and drop anything not yet sent."""
        self._force_close(None, reset=True)

    # -- flow control ----------------------------------------------------------------
    def _maybe_pause_protocol(self) -> None:
        if len(self._buffer) <= self._high_water or self._protocol_paused:
            return
        self._protocol_paused = True
        try:
            self._protocol.pause_writing()  # type: ignore[union-attr]
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler({
                "message": "protocol.pause_writing() failed", "exception": exc,
                "transport": self, "protocol": self._protocol})

    def _maybe_resume_protocol(self) -> None:
        if self._protocol_paused and len(self._buffer) <= self._low_water:
            self._protocol_paused = False
            try:
                self._protocol.resume_writing()  # type: ignore[union-attr]
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._loop.call_exception_handler({
                    "message": "protocol.resume_writing() failed", "exception": exc,
                    "transport": self, "protocol": self._protocol})

    # -- closing -------------------------------------------------------------------
    @property
    def _flushing(self) -> bool:
        """close() was called and buffered bytes still wait for the send buffer."""
        return self._closing and not self._conn_lost

    def _finish_close(self) -> None:
        if self._conn_lost:
            return
        self._conn_lost += 1
        self._conn.close()  # FIN after the queued bytes (RST if unread data: Linux)
        self._kick()
        self._loop.call_soon(self._call_connection_lost, None)

    def _fatal_error(self, exc: BaseException, message: str) -> None:
        if isinstance(exc, OSError):
            log.debug("%r: %s", self, message, exc_info=True)
        else:
            self._loop.call_exception_handler({
                "message": message, "exception": exc, "transport": self,
                "protocol": self._protocol})
        self._force_close(exc)

    def _force_close(self, exc: BaseException | None, *, reset: bool = False) -> None:
        if self._conn_lost:
            return
        self._buffer.clear()
        self._closing = True
        self._conn_lost += 1
        if reset:
            self._conn.abort()
        else:
            self._conn.close()
        self._kick()
        self._loop.call_soon(self._call_connection_lost, exc)

    def _stack_closed(self) -> None:
        """The stack is closing: the protocol learns the connection is gone."""
        self._force_close(ConnectionAbortedError(errno.ECONNABORTED, "pystack stack closed"),
                          reset=True)

    def _call_connection_lost(self, exc: BaseException | None) -> None:
        try:
            if self._started and self._protocol is not None:
                self._protocol.connection_lost(exc)
        finally:
            self._protocol = None
            self._stack._users.discard(self)
            server = self._server
            if server is not None:
                server._detach()
                self._server = None

    def _peer(self) -> tuple[str, int]:
        c = self._conn
        return _addr(c.remote_ip, c.remote_port)
