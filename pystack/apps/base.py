"""What the server apps share: connection-event logging, and a guard so that neither an
app's bug nor a failed connection escapes into the engine's event dispatch (an exception
there would stop the stack's loop for every connection).

Connection events go to the ``pystack.apps`` logger at INFO (`pystackctl attach
--log-level info`): one line when a connection is accepted, one when it ends.
"""

from __future__ import annotations

import errno
import logging
import socket
import time

from pystack.tcp.connection import Connection

log = logging.getLogger("pystack.apps")


def addr(ip: int, port: int) -> str:
    return f"{socket.inet_ntoa(ip.to_bytes(4, 'big'))}:{port}"


def describe(conn: Connection) -> str:
    """``198.18.0.2:40312 -> 198.18.0.1:80``"""
    t = conn.four_tuple
    return f"{addr(t.remote_ip, t.remote_port)} -> {addr(t.local_ip, t.local_port)}"


class App:
    """One server connection. Subclasses implement :meth:`pump`, called on every event of
    the connection (and at start); it reads and writes as far as it can without blocking.
    :meth:`close` / :meth:`abort` end the connection and log how it ended, once."""

    name = "app"
    __slots__ = ("conn", "done", "_t0")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.done = False
        self._t0 = time.monotonic()
        log.info("%s: accepted %s", self.name, describe(conn))
        conn.on_event = self.on_event
        self.run(self.pump)

    def on_event(self, conn: object, kind: str) -> None:
        if self.done or kind == "drained":
            return  # ("drained": all sent data acknowledged; pump has nothing new to do)
        if kind == "closed" and self.conn.error:
            # Reset or timed out under us: let the app see the error, then make sure.
            self.run(self.pump)
            if not self.done:
                self.finish(errno.errorcode.get(self.conn.error, str(self.conn.error)))
            return
        self.run(self.pump)

    def run(self, fn: object) -> None:
        try:
            fn()  # type: ignore[operator]
        except Exception:
            log.exception("%s: %s: internal error, resetting the connection", self.name,
                          describe(self.conn))
            self.abort("internal error")

    def pump(self) -> None:
        raise NotImplementedError

    def close(self, how: str = "closed") -> None:
        """close(2): FIN after everything queued (RST if unread data is left, as Linux)."""
        if not self.done:
            self.conn.close()
            self.finish(how)

    def abort(self, how: str = "reset") -> None:
        if not self.done:
            self.conn.abort()
            self.finish(how)

    def finish(self, how: str) -> None:
        if self.done:
            return
        self.done = True
        c = self.conn
        c.on_event = None
        log.info("%s: %s %s: %d bytes in, %d bytes out, %.3f s", self.name, how, describe(c),
                 c.bytes_received, c.bytes_acked, time.monotonic() - self._t0)
