"""Echo (RFC 862 over TCP): returns every byte; after the peer's FIN, finishes echoing and
then sends its own FIN. Stops reading while its echo cannot be queued (back-pressure: the
receive window closes and the peer slows down)."""

from __future__ import annotations

from pystack.apps.base import App
from pystack.tcp.connection import Connection


class Echo(App):
    name = "echo"
    __slots__ = ("pending", "eof")

    def __init__(self, conn: Connection) -> None:
        self.pending = b""
        self.eof = False
        super().__init__(conn)

    def pump(self) -> None:
        c = self.conn
        if self.done:
            return
        try:
            if self.pending:
                n = c.send(self.pending)
                self.pending = self.pending[n:]
                if self.pending:
                    return  # "writable" comes when the send buffer drains
            while not self.eof:
                try:
                    data = c.recv(65536)
                except BlockingIOError:
                    return
                if not data:
                    self.eof = True
                    break
                n = c.send(data)
                if n < len(data):
                    self.pending = data[n:]
                    return
        except OSError as e:  # reset, timed out, or the peer is gone
            self.abort(e.strerror or "error")
            return
        self.close()  # FIN after everything echoed is queued
