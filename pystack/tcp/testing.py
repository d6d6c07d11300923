"""A harness that drives one engine with hand-written segments (smoltcp-style tests).

The "remote" side is the test itself: it sends segments with :meth:`Harness.send` and
checks exactly what the engine emits with :meth:`Harness.recv` / :meth:`Harness.expect`.
Time only moves when the test says so (:meth:`Harness.advance`).
"""

from __future__ import annotations

from typing import Any

from pystack.tcp.connection import Connection
from pystack.tcp.engine import Listener, TcpEngine
from pystack.tcp.settings import Settings
from pystack.wire.segment import ACK, SYN, TcpOptions, TcpSegment

__all__ = ["LOCAL_IP", "REMOTE_IP", "LOCAL_PORT", "REMOTE_PORT", "LOCAL_ISN", "Harness",
           "flags_str"]

LOCAL_IP = 0xC6120001  # 198.18.0.1 (RFC 2544 benchmarking range)
REMOTE_IP = 0xC6120002  # 198.18.0.2
LOCAL_PORT = 80
REMOTE_PORT = 49152
LOCAL_ISN = 1000
REMOTE_ISN = 5000

_FLAG_NAMES = "FSRPAUEC"


def flags_str(flags: int) -> str:
    """``0x12`` -> ``"SA"`` (tcpdump letters: F S R P . U E C, with A for ACK)."""
    return "".join(ch for i, ch in enumerate(_FLAG_NAMES) if flags & (1 << i)) or "-"


class Harness:
    """One engine, the test playing the peer at REMOTE_IP:REMOTE_PORT."""

    def __init__(self, settings: Settings | None = None, *, mtu: int = 1500,
                 plain: bool = True, **sysctls: Any) -> None:
        if settings is None:
            settings = Settings()
            if plain:
                # Exact-segment tests read best without options; option tests enable them.
                settings.tcp_timestamps = 0
                settings.tcp_sack = 0
                settings.tcp_window_scaling = 0
            for k, v in sysctls.items():
                settings.set(k, v)
        self.engine = TcpEngine(settings, mtu=mtu, secret=bytes(16),
                                isn=lambda t, now: LOCAL_ISN)
        self.now = 0.0
        self.events: list[tuple[Any, str]] = []
        self._pending: list[TcpSegment] = []
        self.sent_at: list[tuple[float, TcpSegment]] = []

    # -- peer actions ---------------------------------------------------------------
    def seg(self, flags: int, seq: int, ack: int = 0, window: int = 65535,
            payload: bytes = b"", *, options: TcpOptions | None = None, urgent: int = 0,
            src_port: int = REMOTE_PORT, dst_port: int = LOCAL_PORT) -> TcpSegment:
        return TcpSegment(REMOTE_IP, LOCAL_IP, src_port, dst_port, seq & 0xFFFFFFFF,
                          ack & 0xFFFFFFFF, flags, window, urgent,
                          options if options is not None else TcpOptions(), payload)

    def send(self, flags: int, seq: int, ack: int = 0, window: int = 65535,
             payload: bytes = b"", **kw: Any) -> None:
        """Deliver one segment from the peer to the engine at the current time."""
        self.engine.input(self.seg(flags, seq, ack, window, payload, **kw), self.now)

    def recv(self) -> list[TcpSegment]:
        """Everything the engine transmitted since the last call (timers included)."""
        out = self._pending + self.engine.poll(self.now)
        self._pending = []
        return out

    def recv_one(self) -> TcpSegment:
        segs = self.recv()
        assert len(segs) == 1, f"expected one segment, got {[describe(s) for s in segs]}"
        return segs[0]

    def expect(self, **fields: Any) -> TcpSegment:
        """Exactly one segment is emitted and its fields match (flags as "SA", "A" ...)."""
        seg = self.recv_one()
        check(seg, **fields)
        return seg

    def expect_none(self) -> None:
        segs = self.recv()
        assert not segs, f"expected nothing, got {[describe(s) for s in segs]}"

    def advance(self, dt: float) -> None:
        """Move the clock forward, running every timer due on the way, in order; what
        they transmit is kept for :meth:`recv` together with its send time in
        :attr:`sent_at`."""
        self.advance_to(self.now + dt)

    def advance_to(self, t: float) -> None:
        eng = self.engine
        self._pending.extend(eng.poll(self.now))
        while True:
            d = eng.next_deadline()
            if d is None or d > t:
                break
            self.now = max(self.now, d)
            eng.on_timer(self.now)
            for seg in eng.poll(self.now):
                self._pending.append(seg)
                self.sent_at.append((self.now, seg))
        self.now = max(self.now, t)

    # -- canned setups -----------------------------------------------------------------
    def listen(self, backlog: int = 16) -> Listener:
        lst = self.engine.listen(0, LOCAL_PORT, backlog)
        lst.on_event = lambda o, k: self.events.append((o, k))
        return lst

    def connect(self, **kw: Any) -> Connection:
        c = self.engine.connect(LOCAL_IP, REMOTE_IP, REMOTE_PORT, local_port=LOCAL_PORT, **kw)
        c.on_event = lambda o, k: self.events.append((o, k))
        return c

    def established_server(self, *, window: int = 65535, options: TcpOptions | None = None,
                           backlog: int = 16) -> Connection:
        """LISTEN -> SYN-RECEIVED -> ESTABLISHED by a handshake from the peer."""
        lst = self.listen(backlog)
        self.send(SYN, REMOTE_ISN, window=window, options=options)
        self.expect(flags="SA", seq=LOCAL_ISN, ack=REMOTE_ISN + 1)
        self.send(ACK, REMOTE_ISN + 1, LOCAL_ISN + 1, window)
        self.expect_none()
        c = lst.accept()
        assert c is not None
        c.on_event = lambda o, k: self.events.append((o, k))
        return c

    def established_client(self, *, window: int = 65535,
                           options: TcpOptions | None = None) -> Connection:
        """SYN-SENT -> ESTABLISHED by a SYN-ACK from the peer."""
        c = self.connect()
        self.expect(flags="S", seq=LOCAL_ISN)
        self.send(SYN | ACK, REMOTE_ISN, LOCAL_ISN + 1, window,
                  options=options if options is not None else TcpOptions(mss=1460))
        self.expect(flags="A", seq=LOCAL_ISN + 1, ack=REMOTE_ISN + 1)
        return c


def describe(seg: TcpSegment) -> str:
    return (f"[{flags_str(seg.flags)} seq={seg.seq} ack={seg.ack} win={seg.window} "
            f"len={len(seg.payload)} {seg.options}]")


def check(seg: TcpSegment, **fields: Any) -> None:
    """Assert segment fields: flags (str or int), seq, ack, window, payload, len, options,
    urgent, and option attributes as ``mss=``, ``wscale=``, ``sack_blocks=``, ``ts=``."""
    for k, v in fields.items():
        if k == "flags":
            got: Any = flags_str(seg.flags) if isinstance(v, str) else seg.flags
        elif k == "payload":
            got = bytes(seg.payload)
        elif k == "len":
            got = len(seg.payload)
        elif k == "ts":
            got = seg.options.timestamp
        elif k in ("mss", "wscale", "sack_permitted", "sack_blocks", "timestamp"):
            got = getattr(seg.options, k)
        else:
            got = getattr(seg, k)
        assert got == v, f"{k}: expected {v!r}, got {got!r} in {describe(seg)}"
