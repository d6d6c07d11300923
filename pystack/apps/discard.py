"""Discard (RFC 863 over TCP): reads and drops everything; closes after the peer's FIN."""

from __future__ import annotations

from pystack.tcp.connection import Connection


class Discard:
    __slots__ = ("conn", "received", "closed")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.received = 0
        self.closed = False
        conn.on_event = self.on_event
        self.pump()

    def on_event(self, conn: object, kind: str) -> None:
        if kind != "closed":
            self.pump()

    def pump(self) -> None:
        c = self.conn
        while not self.closed:
            try:
                data = c.recv(1 << 20)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self.closed = True
                c.close()
                return
            self.received += len(data)
