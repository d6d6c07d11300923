"""What a :class:`~pystack.api.driver.Driver` moves segments over.

A link receives and sends :class:`~pystack.wire.segment.TcpSegment` batches and tells the
driver, inside its asyncio loop, when a batch may be waiting. Two exist:

* :class:`XdpLink`: a :class:`~pystack.host.Host`'s data path (XDP + AF_XDP). The AF_XDP
  socket's descriptor is pollable, so the loop's selector watches it (``add_reader``).
  Flows are steered by the Host (``Host.connect`` for active opens, ``engine.on_add``
  for passive ones, ``engine.on_remove`` when they go).
* :class:`MemoryLink`: two stacks in one process joined in memory, for tests and examples
  (no privileges, no interface). Optional one-way delay and a ``filter`` to drop segments.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from pystack.sim.network import copy_segment
from pystack.wire.segment import TcpSegment

if TYPE_CHECKING:
    from pystack.api.netns import NamespaceThread
    from pystack.host import Host

__all__ = ["Link", "MemoryLink", "XdpLink"]


class Link(Protocol):
    """The driver's view of a network attachment."""

    local_ips: list[int]

    def attach(self, loop: asyncio.AbstractEventLoop, on_ready: Callable[[], None]) -> None:
        """Call ``on_ready()`` in ``loop`` whenever :meth:`receive` may return segments."""

    def detach(self) -> None: ...

    def receive(self) -> list[TcpSegment]:
        """One batch of received segments (empty when none are waiting)."""

    def send(self, segs: list[TcpSegment]) -> None: ...

    @property
    def pending(self) -> bool:
        """Segments are held back (waiting for a neighbour): call ``send([])`` again soon."""

    def own_port(self, port: int, ip: int) -> None: ...

    def disown_port(self, port: int, ip: int) -> None: ...

    def close(self) -> None: ...


class XdpLink:
    """A Host's data path: frames its XDP program steers to the AF_XDP socket."""

    def __init__(self, host: Host, owner: NamespaceThread | None = None) -> None:
        self.host = host
        self._owner = owner  # the thread that built the Host closes it too
        self.dp = host.dp
        self.local_ips = list(host.dp.local_ips)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd = -1

    def attach(self, loop: asyncio.AbstractEventLoop, on_ready: Callable[[], None]) -> None:
        self._loop = loop
        self._fd = self.dp.fd  # every rx queue's socket (an epoll set when several)
        loop.add_reader(self._fd, on_ready)
        loop.call_soon(on_ready)  # frames may have arrived before the loop watched the fd

    def detach(self) -> None:
        if self._loop is not None and self._fd >= 0 and not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
        self._loop = None

    def receive(self) -> list[TcpSegment]:
        return self.dp.receive()

    def send(self, segs: list[TcpSegment]) -> None:
        self.dp.send(segs)

    @property
    def pending(self) -> bool:
        # Segments held for a later send(): waiting for ARP or for tx ring room.
        return self.dp.tx_pending > 0

    def own_port(self, port: int, ip: int) -> None:
        self.dp.own_port(port, ip)

    def disown_port(self, port: int, ip: int) -> None:
        self.dp.disown_port(port, ip)

    def close(self) -> None:
        self.detach()
        if self._owner is not None:
            self._owner.call(self.host.close)
        else:
            self.host.close()


class MemoryLink:
    """One end of an in-memory link; make both ends with :meth:`pair`.

    ``delay`` is the one-way delay in seconds (0: delivered on the receiver's next loop
    turn). ``filter(seg) -> bool`` decides per segment whether it is delivered (tests drop
    chosen segments with it). Segments are deep-copied, as a wire would.
    """

    def __init__(self, ip: int, *, delay: float = 0.0) -> None:
        self.local_ips = [ip]
        self.delay = delay
        self.peer: MemoryLink | None = None
        self.filter: Callable[[TcpSegment], bool] | None = None
        self.sent = 0
        self.dropped = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = 0
        self._on_ready: Callable[[], None] | None = None
        self._inbox: list[TcpSegment] = []
        self._notified = False

    @classmethod
    def pair(cls, ip_a: int, ip_b: int, *, delay: float = 0.0) -> tuple[MemoryLink, MemoryLink]:
        a, b = cls(ip_a, delay=delay), cls(ip_b, delay=delay)
        a.peer, b.peer = b, a
        return a, b

    def attach(self, loop: asyncio.AbstractEventLoop, on_ready: Callable[[], None]) -> None:
        self._loop = loop
        self._thread = threading.get_ident()
        self._on_ready = on_ready
        if self._inbox:
            self._notify()

    def detach(self) -> None:
        self._loop = None
        self._on_ready = None

    def receive(self) -> list[TcpSegment]:
        self._notified = False
        out, self._inbox = self._inbox, []
        return out

    def send(self, segs: list[TcpSegment]) -> None:
        peer = self.peer
        if peer is None or not segs:
            return
        out = []
        for s in segs:
            self.sent += 1
            if self.filter is not None and not self.filter(s):
                self.dropped += 1
                continue
            out.append(copy_segment(s))
        if out:
            peer._arrive(out)

    @property
    def pending(self) -> bool:
        return False

    def own_port(self, port: int, ip: int) -> None:
        pass

    def disown_port(self, port: int, ip: int) -> None:
        pass

    def close(self) -> None:
        self.detach()
        self._inbox = []

    # -- receiving side ---------------------------------------------------------------
    def _arrive(self, segs: list[TcpSegment]) -> None:
        """Called by the sending end, in the sender's thread."""
        loop = self._loop
        if loop is None:
            self._inbox.extend(segs)  # delivered once a loop drives this end
            return
        same = self._thread == threading.get_ident()
        if self.delay > 0:
            if same:
                loop.call_later(self.delay, self._deliver, segs)
            else:
                loop.call_soon_threadsafe(loop.call_later, self.delay, self._deliver, segs)
        elif same:
            self._deliver(segs)
        else:
            loop.call_soon_threadsafe(self._deliver, segs)

    def _deliver(self, segs: list[TcpSegment]) -> None:
        self._inbox.extend(segs)
        self._notify()

    def _notify(self) -> None:
        if not self._notified and self._loop is not None and self._on_ready is not None:
            self._notified = True
            self._loop.call_soon(self._on_ready)
