"""Echo (RFC 862 over TCP): returns every byte; after the peer's FIN, finishes echoing and
then sends its own FIN. Stops reading while its echo cannot be queued (back-pressure)."""

from __future__ import annotations

from pystack.tcp.connection import Connection


class Echo:
    __slots__ = ("conn", "pending", "eof", "closed")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.pending = b""
        self.eof = False
        self.closed = False
        conn.on_event = self.on_event
        self.pump()

    def on_event(self, conn: object, kind: str) -> None:
        if kind == "closed":
            self.closed = True
            return
        self.pump()

    def pump(self) -> None:
        c = self.conn
        if self.closed:
            return
        if self.pending:
            n = c.send(self.pending)
            self.pending = self.pending[n:]
            if self.pending:
                return
        while not self.eof:
            try:
                data = c.recv(65536)
            except BlockingIOError:
                return
            except OSError:
                self.closed = True
                c.close()
                return
            if not data:
                self.eof = True
                break
            n = c.send(data)
            if n < len(data):
                self.pending = data[n:]
                return
        self.closed = True
        c.close()  # FIN after everything queued
