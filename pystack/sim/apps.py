"""Tiny event-driven applications for simulations: stream a buffer, collect what arrives.

:class:`StreamApp` attaches to a :class:`~pystack.tcp.connection.Connection` through its
``on_event`` hook (exactly as an asyncio transport would): it writes ``data`` as the send
buffer allows, optionally shuts down the write side once everything is queued, reads
everything that arrives, and closes the connection when both directions are done and
everything it wrote has been acknowledged (so an orphan never has data left to lose).
"""

from __future__ import annotations

from pystack.tcp.connection import Connection
from pystack.tcp.engine import Listener

__all__ = ["StreamApp", "accept_into"]


class StreamApp:
    """Send ``data``, receive into :attr:`received`; close when both directions are done."""

    def __init__(self, conn: Connection, data: bytes = b"", *, shutdown: bool = True,
                 close: bool = True, chunk: int = 65536) -> None:
        self.conn = conn
        self.data = data
        self.sent = 0
        self.received = bytearray()
        self.eof = False
        self.error = 0
        self.closed = False
        self.events: list[str] = []
        self._shutdown = shutdown
        self._close = close
        self._chunk = chunk
        self._did_shutdown = False
        conn.on_event = self._on_event
        self.pump()

    def _on_event(self, conn: object, kind: str) -> None:
        self.events.append(kind)
        self.pump()

    @property
    def done(self) -> bool:
        """Everything sent and the peer's EOF seen (or the connection failed)."""
        return bool(self.error) or (self.eof and self.sent == len(self.data))

    def pump(self) -> None:
        c = self.conn
        if self.closed:
            return
        try:
            mv = memoryview(self.data)
            while self.sent < len(self.data):
                n = c.send(mv[self.sent : self.sent + self._chunk])
                if n == 0:
                    break
                self.sent += n
            if self.sent == len(self.data) and self._shutdown and not self._did_shutdown:
                self._did_shutdown = True
                c.shutdown_write()
        except OSError as e:
            self.error = e.errno or -1
        try:
            while True:
                d = c.recv(1 << 20)
                if not d:
                    self.eof = True
                    break
                self.received += d
        except BlockingIOError:
            pass
        except OSError as e:
            self.error = e.errno or -1
        if self._close and self.done and not self.closed and (self.error or not c.outq):
            self.closed = True
            c.close()


def accept_into(listener: Listener, data: bytes = b"", **kw: object) -> list[StreamApp]:
    """Wrap every accepted connection of ``listener`` in a StreamApp sending ``data``."""
    apps: list[StreamApp] = []

    def on_accept(lst: object, kind: str) -> None:
        while True:
            c = listener.accept()
            if c is None:
                break
            apps.append(StreamApp(c, data, **kw))  # type: ignore[arg-type]

    listener.on_event = on_accept
    return apps
