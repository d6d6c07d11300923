"""Discard (RFC 863 over TCP): reads and drops everything; closes after the peer's FIN."""

from __future__ import annotations

from pystack.apps.base import App
from pystack.tcp.connection import Connection


class Discard(App):
    name = "discard"
    __slots__ = ("received",)

    def __init__(self, conn: Connection) -> None:
        self.received = 0
        super().__init__(conn)

    def pump(self) -> None:
        c = self.conn
        while not self.done:
            try:
                data = c.recv(1 << 20)
            except BlockingIOError:
                return
            except OSError as e:
                self.abort(e.strerror or "error")
                return
            if not data:
                self.close()
                return
            self.received += len(data)
