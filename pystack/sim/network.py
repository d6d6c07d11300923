"""An in-memory network for engine-vs-engine tests: deterministic clock, seeded faults.

:class:`SimNetwork` joins any number of :class:`~pystack.tcp.engine.TcpEngine` hosts (by
IPv4 address) with links that delay, drop, duplicate, reorder and corrupt segments, all
decided by one seeded ``random.Random``: the same seed gives the same run.  Time is an
event queue ordered by (time, insertion order); nothing reads a wall clock.

A corrupted segment is dropped, as the receiver's checksum check would drop it, and
counted in ``stats["corrupted"]``.

>>> from pystack.tcp.engine import TcpEngine
>>> net = SimNetwork(seed=1)
>>> a, b = TcpEngine(), TcpEngine()
>>> net.add_host(0x0A000001, a); net.add_host(0x0A000002, b)
>>> lst = b.listen(0, 80)
>>> c = a.connect(0x0A000001, 0x0A000002, 80)
>>> net.run(until=1.0, stop=lambda: c.state.name == "ESTABLISHED")
True
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace

from pystack.tcp.engine import TcpEngine
from pystack.wire.segment import TcpOptions, TcpSegment

__all__ = ["LinkConfig", "SimNetwork", "copy_segment"]


@dataclass(slots=True)
class LinkConfig:
    """One direction of a link. Probabilities are per segment, in [0, 1]."""

    delay: float = 0.001  # one-way propagation delay, seconds
    jitter: float = 0.0  # extra uniform random delay in [0, jitter)
    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0  # probability a segment is held back by ``reorder_delay``
    reorder_delay: float = 0.005
    corrupt: float = 0.0  # dropped as a checksum failure would drop it
    rate: float | None = None  # bytes per second (serialisation), None = infinite


def copy_segment(seg: TcpSegment) -> TcpSegment:
    """A deep copy, as if the segment went through the wire (payload becomes bytes)."""
    o = seg.options
    opts = TcpOptions(
        mss=o.mss,
        wscale=o.wscale,
        sack_permitted=o.sack_permitted,
        sack_blocks=list(o.sack_blocks),
        timestamp=o.timestamp,
        fastopen_cookie=o.fastopen_cookie,
    )
    return replace(seg, options=opts, payload=bytes(seg.payload))


class SimNetwork:
    """Hosts, links and a deterministic event loop."""

    def __init__(self, seed: int = 0, *, default: LinkConfig | None = None,
                 start: float = 0.0) -> None:
        self.rng = random.Random(seed)
        self.now = start
        self.default = default if default is not None else LinkConfig()
        self.hosts: dict[int, TcpEngine] = {}
        self.links: dict[tuple[int, int], LinkConfig] = {}
        self.stats: Counter[str] = Counter()
        self.trace: list[tuple[float, TcpSegment]] | None = None
        # filter(seg) -> False drops the segment (tests target exact segments with it).
        self.filter: Callable[[TcpSegment], bool] | None = None
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._serial = 0
        self._busy: dict[tuple[int, int], float] = {}

    # -- topology -----------------------------------------------------------------------
    def add_host(self, ip: int, engine: TcpEngine) -> None:
        self.hosts[ip] = engine

    def set_link(self, src: int, dst: int, config: LinkConfig,
                 reverse: LinkConfig | None = None) -> None:
        """Configure src->dst (and dst->src: ``reverse``, or the same config)."""
        self.links[(src, dst)] = config
        self.links[(dst, src)] = reverse if reverse is not None else config

    def capture(self) -> list[tuple[float, TcpSegment]]:
        """Start recording every transmitted segment as (send time, segment)."""
        self.trace = []
        return self.trace

    # -- events -------------------------------------------------------------------------
    def schedule(self, at: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` at simulated time ``at``."""
        self._serial += 1
        heapq.heappush(self._queue, (at, self._serial, fn))

    def _transmit(self, seg: TcpSegment) -> None:
        self.stats["sent"] += 1
        if self.trace is not None:
            self.trace.append((self.now, copy_segment(seg)))
        dst = self.hosts.get(seg.dst_ip)
        if dst is None:
            self.stats["unroutable"] += 1
            return
        if self.filter is not None and not self.filter(seg):
            self.stats["filtered"] += 1
            return
        cfg = self.links.get((seg.src_ip, seg.dst_ip), self.default)
        rng = self.rng
        if cfg.drop and rng.random() < cfg.drop:
            self.stats["dropped"] += 1
            return
        copies = 2 if cfg.duplicate and rng.random() < cfg.duplicate else 1
        if copies == 2:
            self.stats["duplicated"] += 1
        depart = self.now
        if cfg.rate:
            key = (seg.src_ip, seg.dst_ip)
            size = 40 + len(seg.payload)
            depart = max(self.now, self._busy.get(key, 0.0)) + size / cfg.rate
            self._busy[key] = depart
        for _ in range(copies):
            if cfg.corrupt and rng.random() < cfg.corrupt:
                self.stats["corrupted"] += 1
                continue
            at = depart + cfg.delay
            if cfg.jitter:
                at += rng.random() * cfg.jitter
            if cfg.reorder and rng.random() < cfg.reorder:
                at += cfg.reorder_delay
                self.stats["reordered"] += 1
            copy = copy_segment(seg)
            self.schedule(at, lambda d=dst, s=copy, t=at: self._deliver(d, s, t))

    def _deliver(self, dst: TcpEngine, seg: TcpSegment, at: float) -> None:
        self.stats["delivered"] += 1
        dst.input(seg, at)

    def _pump(self) -> None:
        for eng in self.hosts.values():
            for seg in eng.poll(self.now):
                self._transmit(seg)

    def _next_time(self) -> float | None:
        best = self._queue[0][0] if self._queue else None
        for eng in self.hosts.values():
            d = eng.next_deadline()
            if d is not None and (best is None or d < best):
                best = d
        return best

    def step(self, until: float | None = None) -> bool:
        """Advance to the next event (delivery or timer) and process everything due then.

        Returns False if there is nothing to do before ``until``.
        """
        t = self._next_time()
        if t is None or (until is not None and t > until):
            return False
        if t > self.now:
            self.now = t
        q = self._queue
        while q and q[0][0] <= self.now:
            _, _, fn = heapq.heappop(q)
            fn()
        for eng in self.hosts.values():
            d = eng.next_deadline()
            if d is not None and d <= self.now:
                eng.on_timer(self.now)
        self._pump()
        return True

    def run(self, until: float | None = None, *, stop: Callable[[], bool] | None = None,
            max_steps: int = 10_000_000) -> bool:
        """Run until ``stop()`` is true (returns True) or nothing is left before ``until``
        (the clock then moves to ``until``; returns False)."""
        self._pump()
        for _ in range(max_steps):
            if stop is not None and stop():
                return True
            if not self.step(until):
                if until is not None and until > self.now:
                    self.now = until
                return bool(stop is not None and stop())
        raise RuntimeError("simulation did not settle within max_steps")

    def run_for(self, seconds: float, *, stop: Callable[[], bool] | None = None) -> bool:
        """:meth:`run` for ``seconds`` of simulated time from now."""
        return self.run(self.now + seconds, stop=stop)
