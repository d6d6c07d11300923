"""The sans-I/O TCP engine: demultiplexing, listeners, timers and counters.

:class:`TcpEngine` owns the listeners and connections of one stack instance.  It is
driven entirely from outside::

    engine.input_batch(segs, now)   # every received batch (or input(seg, now) for one)
    engine.on_timer(now)            # when now >= engine.next_deadline()
    for seg in engine.poll(now):    # segments to transmit (ACKs coalesce per poll)
        ...

``now`` is a float number of seconds from any fixed origin (the simulated clock in tests,
a monotonic clock in the I/O layer); the engine never reads a clock itself.

Counters use Linux's MIB names (``/proc/net/snmp`` Tcp: and ``/proc/net/netstat``
TcpExt:) in :attr:`TcpEngine.mib`, a ``Counter`` the metrics layer reads.
"""

from __future__ import annotations

import errno
import hashlib
import heapq
import os
import struct
from collections import Counter, deque
from collections.abc import Callable, Mapping

from pystack.tcp import cookies, twreuse
from pystack.tcp import fastopen as tfo
from pystack.tcp import seq as sq
from pystack.tcp.buffers import MemAccount
from pystack.tcp.connection import Connection
from pystack.tcp.constants import (
    F_PASSIVE,
    F_PERSIST,
    F_SACK,
    F_SEND_SYN,
    F_TS,
    F_WSCALE,
    TCP_MIN_MSS,
    TCP_MSS_DEFAULT,
    EventCallback,
)
from pystack.tcp.metrics_cache import MetricsCache
from pystack.tcp.settings import Settings
from pystack.tcp.sockopt import _Sock
from pystack.tcp.state import OPTION_NAMES, TCP_FASTOPEN_CONNECT, TcpState
from pystack.wire.segment import ACK, FIN, PSH, RST, SYN, FourTuple, TcpSegment

__all__ = ["MIB_COUNTERS", "Listener", "TcpEngine"]

# Every counter the engine maintains, pre-populated so exporters see zeros.
MIB_COUNTERS = (
    # Tcp: (RFC 1213 / /proc/net/snmp)
    "ActiveOpens",
    "PassiveOpens",
    "AttemptFails",
    "EstabResets",
    "CurrEstab",
    "InSegs",
    "OutSegs",
    "RetransSegs",
    "InErrs",
    "OutRsts",
    # TcpExt: (/proc/net/netstat)
    "ListenOverflows",
    "ListenDrops",
    "TCPReqQFullDrop",
    "TCPChallengeACK",
    "TCPSYNChallenge",
    "TCPACKSkippedSeq",
    "TCPACKSkippedChallenge",
    "TCPAckUnsentData",
    "DelayedACKs",
    "DelayedACKLost",
    "TCPTimeouts",
    "TCPSynRetrans",
    "TCPRenoRecovery",
    "TCPOFOQueue",
    "TCPDSACKOldSent",
    "TCPKeepAlive",
    "TCPAbortOnClose",
    "TCPAbortOnData",
    "TCPAbortOnLinger",
    "TCPAbortOnTimeout",
    "TCPAbortOnMemory",
    # tcp_mem (pystack/tcp/buffers.py MemAccount)
    "TCPMemoryPressures",
    "PruneCalled",
    "OfoPruned",
    "TCPOFODrop",
    "TCPRcvQDrop",
    "TCPDeferAcceptDrop",
    "PAWSEstabRejected",
    "EmbryonicRsts",
    "TW",
    "TWRecycled",
    "TCPTimeWaitOverflow",
    # Fast Open (RFC 7413)
    "TCPFastOpenActive",
    "TCPFastOpenActiveFail",
    "TCPFastOpenPassive",
    "TCPFastOpenPassiveFail",
    "TCPFastOpenPassiveAltKey",
    "TCPFastOpenListenOverflow",
    "TCPFastOpenCookieReqd",
    "TCPFastOpenBlackhole",
    # loss recovery (pystack/tcp/recovery.py)
    "TCPSackRecovery",
    "TCPFastRetrans",
    "TCPSlowStartRetrans",
    "TCPLostRetransmit",
    "TCPRenoFailures",
    "TCPSackFailures",
    "TCPLossFailures",
    "TCPSACKReorder",
    "TCPTSReorder",
    "TCPDSACKRecv",
    "TCPDSACKOfoRecv",
    "TCPDSACKIgnoredNoUndo",
    "TCPDSACKUndo",
    "TCPFullUndo",
    "TCPPartialUndo",
    "TCPLossUndo",
    "TCPSpuriousRTOs",
    "TCPSACKReneging",
    # pystack only (Linux has no counter for it): RTO expiries past tcp_retries1, where
    # Linux calls dst_negative_advice (see TcpEngine.on_retries1).
    "NegativeAdvice",
    # pystack only: SYNs and cookie ACKs dropped, and active opens refused, because the
    # engine held pystack.max_connections connections (TcpEngine.at_connection_limit).
    "ConnectionLimitDrops",
)

SOMAXCONN_DEFAULT = 4096


# Events that report a condition (data to read, room to write, nothing unacknowledged),
# not an occurrence: one delivery after a batch stands for any number of repeats.
_LEVEL_EVENTS = frozenset(("readable", "writable", "drained"))


def _coalesce(events: list[tuple[object, str]]) -> list[tuple[object, str]]:
    """``events`` with repeated level-triggered (object, kind) pairs dropped."""
    if len(set(events)) == len(events):
        return events  # the common case: no repeats at all
    seen: set[tuple[int, str]] = set()
    out: list[tuple[object, str]] = []
    for ev in events:
        kind = ev[1]
        if kind in _LEVEL_EVENTS:
            key = (id(ev[0]), kind)
            if key in seen:
                continue
            seen.add(key)
        out.append(ev)
    return out


class Listener(_Sock):
    """A listening socket (RFC 9293 LISTEN state, §3.10.7.2)."""

    __slots__ = ("ip", "port", "backlog", "_accept_q", "_syn_recv", "_xdp_reqs", "_fo_qlen",
                 "closed")

    def __init__(self, engine: TcpEngine, ip: int, port: int, backlog: int) -> None:
        super().__init__(engine)
        self.ip = ip
        self.port = port
        self.backlog = backlog
        self._accept_q: deque[Connection] = deque()
        self._syn_recv = 0  # children in SYN-RECEIVED (the "SYN queue")
        self._xdp_reqs = 0  # requests the XDP program holds (xdpsyn.py), as of the last tick
        self._fo_qlen = 0  # Fast Open children still in SYN-RECEIVED (TCP_FASTOPEN bounds it)
        self.closed = False

    @property
    def state(self) -> TcpState:
        return TcpState.CLOSED if self.closed else TcpState.LISTEN

    def __repr__(self) -> str:
        return f"<Listener port {self.port} backlog {self.backlog} queued {len(self._accept_q)}>"

    @property
    def pending(self) -> int:
        """Established connections waiting in the accept queue."""
        return len(self._accept_q)

    @property
    def acceptq_full(self) -> bool:
        """Linux ``sk_acceptq_is_full``: it admits backlog + 1 connections."""
        return len(self._accept_q) > self.backlog

    def accept(self) -> Connection | None:
        """The next established connection, or None if the accept queue is empty."""
        if self._accept_q:
            c = self._accept_q.popleft()
            c.listener = None  # accepted: the connection no longer refers to its listener
            return c
        return None

    def close(self) -> None:
        """Stop listening; queued and half-open connections are reset (Linux)."""
        if self.closed:
            return
        self.closed = True
        eng = self.engine
        eng._unlisten(self)
        for c in list(self._accept_q):
            c.abort()
        self._accept_q.clear()
        for c in list(eng.connections.values()):
            if c.listener is self and c.state == TcpState.SYN_RECEIVED:
                c.abort()

    def _emit_accept(self) -> None:
        if self.on_event is not None:
            self.engine._queue_event(self, "accept")


class TcpEngine:
    """All TCP state of one stack instance; see the module docstring for the driving loop."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        mtu: int = 1500,
        secret: bytes | None = None,
        isn: Callable[[FourTuple, float], int] | None = None,
    ) -> None:
        self.settings = settings if settings is not None else Settings()
        self.mtu = mtu
        self.mib: Counter[str] = Counter({name: 0 for name in MIB_COUNTERS})
        self.connections: dict[FourTuple, Connection] = {}
        self.listeners: dict[tuple[int, int], Listener] = {}
        # Called with a connection's four-tuple when it is forgotten (the data path stops
        # steering an active open's flow then).
        self.on_remove: Callable[[FourTuple], None] | None = None
        # ---- SYN cookies hook (pystack/tcp/cookies.py, set up by pystack/host.py) ----
        # on_add: called with a passive open's four-tuple when it enters the table
        # (SYN-RECEIVED, or ESTABLISHED from a cookie ACK): the data path steers the flow.
        # syncookies: the cookie keys and SYN-ACK parameters shared with the XDP program
        # (cookies.attach); None: a full SYN queue drops instead of answering with cookies.
        self.on_add: Callable[[FourTuple], None] | None = None
        self.syncookies: cookies.SynCookies | None = None
        # ---- end SYN cookies hook ----
        # Called with a connection's four-tuple at every retransmission timeout once it has
        # been retransmitting for longer than tcp_retries1 allows (Linux tcp_write_timeout
        # calls dst_negative_advice there): the data path can re-confirm the neighbour.
        self.on_retries1: Callable[[FourTuple], None] | None = None
        # Linux tcp_orphan_count and the TIME-WAIT bucket count (tcp_max_orphans,
        # tcp_max_tw_buckets): orphans are closed connections still in a state other than
        # TIME-WAIT; kept exact by Connection._account.
        self.orphan_count = 0
        self.tw_count = 0
        # tcp_mem: pages charged by every receive and send queue (sockstat "TCP: mem").
        self.tcp_memory = MemAccount(self.settings, self.mib)
        # TSO: the most MSS-sized frames one emitted segment may carry (the data path
        # splits them; pystack.stack sets it from the data path, 1 = no TSO).
        self.tso_segs = 1
        self._secret = secret if secret is not None else os.urandom(16)
        self._isn_fn = isn
        self._tx: list[TcpSegment] = []
        self._dirty: dict[Connection, None] = {}
        self._heap: list[tuple[float, int, Connection]] = []
        self._serial = 0
        self._now = 0.0
        self._events: list[tuple[object, str]] = []
        self._port_counter = 0
        self._chal_second = -1
        self._chal_count = 0
        # Fast Open keys, client cookie cache and blackhole state (pystack/tcp/fastopen.py).
        self.fastopen = tfo.FastOpen(self)
        # Per-destination metrics saved at close, read at establishment (Linux tcp_metrics).
        self.tcp_metrics = MetricsCache(self.settings)

    # =================================================================================
    # User API
    # =================================================================================
    def listen(self, ip: int, port: int, backlog: int = 128) -> Listener:
        """Listen on (ip, port); ip 0 accepts any local address."""
        key = (ip, port)
        if key in self.listeners:
            raise OSError(errno.EADDRINUSE, f"port {port} already listening")
        backlog = max(0, min(backlog, self.settings.somaxconn))
        lst = Listener(self, ip, port, backlog)
        self.fastopen.on_listen(lst)
        self.listeners[key] = lst
        return lst

    def connect(
        self,
        local_ip: int,
        remote_ip: int,
        remote_port: int,
        local_port: int | None = None,
        options: Mapping[str, int | str] | None = None,
        *,
        now: float | None = None,
        on_event: EventCallback | None = None,
        fastopen: bool = False,
        data: bytes | bytearray | memoryview = b"",
    ) -> Connection:
        """Active open (RFC 9293 §3.10.1): the SYN leaves at the next :meth:`poll`.

        ``options`` are socket options by name applied before the SYN, e.g.
        ``{"TCP_MAXSEG": 1200, "SO_RCVBUF": 65536}``.

        Fast Open (RFC 7413), with ``tcp_fastopen`` & 0x1:

        * ``fastopen=True`` is sendto(MSG_FASTOPEN): ``data`` is queued (as much as the
          send buffer takes; ``conn.fastopen_queued`` says how much) and, with a cookie
          cached for the destination (or 0x4 set), the SYN carries the part that fits in
          one segment, with the cookie; without one the SYN requests a cookie and the data
          follows the handshake.  OSError(EOPNOTSUPP) if the client side is disabled.
        * option ``TCP_FASTOPEN_CONNECT``: with a cookie the SYN waits for the first
          :meth:`Connection.send` (``conn.fastopen_deferred``) and leaves with that data;
          without one it leaves at once, requesting a cookie.
        """
        if fastopen:
            tfo.check_connect_allowed(self)
        if now is not None:
            self._now = max(self._now, now)
        now = self._now
        bound = local_port is not None
        if local_port is None:
            local_port = self._ephemeral_port(local_ip, remote_ip, remote_port)
        t = FourTuple(local_ip, local_port, remote_ip, remote_port)
        old = self.connections.get(t)
        # tcp_tw_reuse (twreuse.py): a TIME-WAIT four-tuple is taken over below.
        if old is not None and not twreuse.unique(self, old, bound, now):
            raise OSError(errno.EADDRINUSE, "four-tuple in use")
        if old is None and self.at_connection_limit(passive=False):
            raise OSError(errno.EAGAIN, "pystack.max_connections connections already held")
        c = Connection(self, t)
        c.on_event = on_event
        if options:
            for name, value in options.items():
                if name not in OPTION_NAMES:
                    raise OSError(errno.ENOPROTOOPT, f"unknown socket option {name!r}")
                c.set_option(name, value)
        s = self.settings
        if s.tcp_timestamps:
            c._f |= F_TS
        if s.tcp_sack:
            c._f |= F_SACK
        if s.tcp_window_scaling:
            c._f |= F_WSCALE
        c._init_rcv_window(c._advmss())
        c._rcv_mss = self._initial_rcv_mss(c)
        iss, c._ts_offset = self._isn_ts(t, now)
        c.iss = c.snd_una = c.snd_nxt = iss
        c._write_seq = sq.add(iss, 1)
        c._snd_sml = iss
        if old is not None:
            twreuse.take_over(self, old, c)  # tcp_tw_reuse: ISN after the old SND.NXT
        c._set_state(TcpState.SYN_SENT)
        c._f |= F_SEND_SYN
        self.connections[t] = c
        self.mib["ActiveOpens"] += 1
        if fastopen or c._opt(TCP_FASTOPEN_CONNECT, 0):
            self._fastopen_connect(c, fastopen, data, now)
        self._touch(c)
        return c

    def fastopen_cookie(self, remote_ip: int) -> bytes | None:
        """The Fast Open cookie cached for a destination (RFC 7413 §4.1.3), or None."""
        return self.fastopen.cookie(remote_ip)

    def _fastopen_connect(self, c: Connection, fastopen: bool, data: bytes | bytearray |
                          memoryview, now: float) -> None:
        """Set up the first SYN of an active Fast Open (Linux ``tcp_sendmsg_fastopen``,
        ``tcp_fastopen_defer_connect``)."""
        fo = c._fo = self.fastopen.prepare_active(c, now)
        if fastopen:
            if data:
                c.fastopen_queued = c.send(data)
        elif fo.data_ok:
            fo.defer = True  # TCP_FASTOPEN_CONNECT with a cookie: wait for the first write
            c.fastopen_deferred = True

    # =================================================================================
    # Driving the engine
    # =================================================================================
    def input(self, seg: TcpSegment, now: float) -> None:
        """Process one received segment (RFC 9293 §3.10.7); events fire before it returns."""
        self._input_seg(seg, now)
        if self._events:
            self._flush_events()

    def input_batch(self, segs: list[TcpSegment], now: float) -> None:
        """Process a batch of segments received together, as :meth:`input` does each, but
        fire the connection events once, after the whole batch: a connection that got
        several segments reports "readable" (or "writable", "drained") once, and its
        callback reads everything they carried in one go.  Other events ("accept",
        "connected", "closed", "urgent") are all delivered, in order."""
        inp = self._input_seg
        for seg in segs:
            inp(seg, now)
        if self._events:
            self._flush_events(coalesce=True)

    def _input_seg(self, seg: TcpSegment, now: float) -> None:
        """One received segment, its events left queued (input/input_batch fire them)."""
        if now > self._now:
            self._now = now
        self.mib["InSegs"] += seg.gso_segs  # Linux counts the segments GRO merged
        t = seg.tuple_at_receiver()
        c = self.connections.get(t)
        if c is not None:
            if c.state == TcpState.TIME_WAIT and self._tw_syn(c, seg):
                isn_hint = sq.add(c.snd_nxt, 65535 + 2) or 1  # never 0 (Linux)
                lst = self._find_listener(seg)
                if lst is not None:
                    self.mib["TWRecycled"] += 1
                    c._set_state(TcpState.CLOSED)
                    self._remove(c)
                    self._listen_input(lst, seg, now, isn_hint)
                    return
            c._input(seg, now)
            return
        lst = self._find_listener(seg)
        if lst is not None:
            if seg.syncookie:  # SYN cookies: an ACK whose cookie XDP validated (cookies.py)
                cookies.cookie_ack(self, lst, seg, now)
            else:
                self._listen_input(lst, seg, now, None)
            return
        self._closed_input(seg)

    def poll(self, now: float) -> list[TcpSegment]:
        """Segments to transmit now (ACKs, data, retransmissions, RSTs), in order."""
        if now > self._now:
            self._now = now
        out = self._tx
        self._tx = []
        while self._dirty:
            dirty = self._dirty
            self._dirty = {}
            for c in dirty:
                if c.state != TcpState.CLOSED:
                    c._output(now, out)
                self._schedule(c)
            if self._tx:
                out.extend(self._tx)
                self._tx = []
        self.mib["OutSegs"] += len(out)
        self._flush_events()
        return out

    def next_deadline(self) -> float | None:
        """The earliest time :meth:`on_timer` has work to do (``now`` if poll is due)."""
        if self._dirty or self._tx:
            return self._now
        heap = self._heap
        while heap:
            d, _, c = heap[0]
            if c._sched != d or c.state == TcpState.CLOSED:
                heapq.heappop(heap)
                continue
            return d
        return None

    def on_timer(self, now: float) -> None:
        """Run every timer due at ``now`` (retransmission, delayed ACK, keepalive, ...)."""
        if now > self._now:
            self._now = now
        heap = self._heap
        while heap and heap[0][0] <= now:
            d, _, c = heapq.heappop(heap)
            if c._sched != d or c.state == TcpState.CLOSED:
                continue
            c._sched = None
            if c._fo is not None:
                self._timer_fastopen(c, now)
            else:
                c._on_timer(now)
            self._touch(c)
        self._flush_events()

    # =================================================================================
    # Introspection
    # =================================================================================
    def state_counts(self) -> dict[str, int]:
        """Connections per state (for ``pystack_tcp_connections{state}``)."""
        counts: Counter[str] = Counter()
        for c in self.connections.values():
            counts[c.state.name] += 1
        counts["LISTEN"] += len(self.listeners)
        return dict(counts)

    def isn(self, t: FourTuple, now: float) -> int:
        """RFC 6528 §3: ISN = M + F(4-tuple, secret), M a 4 µs timer, F a keyed hash."""
        return self._isn_ts(t, now)[0]

    def _isn_ts(self, t: FourTuple, now: float) -> tuple[int, int]:
        """ISN (isn()) and TSval offset (tcp_timestamps=1; 0 for 2) of a new connection,
        from one keyed hash of the four-tuple: its first half is RFC 6528's F, its second
        the offset (Linux secure_tcp_seq and secure_tcp_ts_off, one siphash each)."""
        h = hashlib.blake2s(struct.pack(">IHIH", *t), key=self._secret, digest_size=8).digest()
        if self._isn_fn is not None:
            isn = self._isn_fn(t, now) & sq.MASK
        else:
            isn = (int.from_bytes(h[:4], "big") + int(now * 250_000)) & sq.MASK
        ts_off = int.from_bytes(h[4:], "big") if self.settings.tcp_timestamps == 1 else 0
        return isn, ts_off

    # =================================================================================
    # Internals used by Connection
    # =================================================================================
    def _touch(self, c: Connection) -> None:
        self._dirty[c] = None

    def _schedule(self, c: Connection) -> None:
        d = c.next_deadline() if c.state != TcpState.CLOSED else None
        if d != c._sched:
            c._sched = d
            if d is not None:
                self._serial += 1
                heapq.heappush(self._heap, (d, self._serial, c))

    def _remove(self, c: Connection) -> None:
        c._account(gone=True)
        if self.connections.get(c.four_tuple) is c:
            if c._fo is not None:
                self.fastopen.on_remove(c)  # Fast Open blackhole check
            del self.connections[c.four_tuple]
            if self.on_remove is not None:
                self.on_remove(c.four_tuple)
        c._sched = None

    def _timer_fastopen(self, c: Connection, now: float) -> None:
        """Timers of a Fast Open connection. A child resends its SYN-ACK until it is
        acknowledged (fastopen.child_rto); an active one tells the blackhole detector about
        retransmission timeouts (Linux ``tcp_write_timeout`` calls
        ``tcp_fastopen_active_detect_blackhole`` at each)."""
        fo = c._fo
        assert fo is not None
        if not fo.active:
            if fo.child:
                self.fastopen.child_rto(c, now)
            if c.state != TcpState.CLOSED:
                c._on_timer(now)
            return
        rto = c._t_rtx is not None and c._t_rtx <= now and not c._f & F_PERSIST
        before = c._retransmits
        c._on_timer(now)
        if rto:
            expired = c.state == TcpState.CLOSED and c.error == errno.ETIMEDOUT
            if expired or c._retransmits == before + 1:
                self.fastopen.after_rto(c, before, expired, now)

    def _unlisten(self, lst: Listener) -> None:
        if self.listeners.get((lst.ip, lst.port)) is lst:
            del self.listeners[(lst.ip, lst.port)]

    def _state_changed(self, c: Connection, old: TcpState, new: TcpState) -> None:
        if old == TcpState.TIME_WAIT and new == TcpState.CLOSED:
            self.mib["TW"] += 1
        elif old == TcpState.SYN_RECEIVED and c._fo is not None:
            lst = c._fo.listener
            if lst is not None:
                # A Fast Open child left SYN-RECEIVED: its listener's queue has room again.
                lst._fo_qlen -= 1
                c._fo.listener = None

    def _queue_event(self, obj: object, kind: str) -> None:
        self._events.append((obj, kind))

    def _flush_events(self, coalesce: bool = False) -> None:
        """Deliver the queued events. ``coalesce``: repeats of a level-triggered event
        (_LEVEL_EVENTS) for one object are delivered once, where the first one was queued;
        callbacks only learn that the condition holds and read the state themselves."""
        while self._events:
            events = self._events
            self._events = []
            if coalesce and len(events) > 1:
                events = _coalesce(events)
            for obj, kind in events:
                cb = getattr(obj, "on_event", None)
                if cb is not None:
                    cb(obj, kind)

    def _send_rst(self, t: FourTuple, seq: int, ack: int, flags: int) -> None:
        self._tx.append(
            TcpSegment(
                src_ip=t.local_ip,
                dst_ip=t.remote_ip,
                src_port=t.local_port,
                dst_port=t.remote_port,
                seq=seq & sq.MASK,
                ack=ack & sq.MASK if flags & ACK else 0,
                flags=flags,
                window=0,
            )
        )
        self.mib["OutRsts"] += 1

    def _challenge_ack_allowed(self, now: float) -> bool:
        """Global challenge-ACK budget per second (RFC 5961 §7, tcp_challenge_ack_limit)."""
        second = int(now)
        if second != self._chal_second:
            self._chal_second = second
            self._chal_count = 0
        self._chal_count += 1
        return self._chal_count <= self.settings.tcp_challenge_ack_limit

    @staticmethod
    def _initial_rcv_mss(c: Connection) -> int:
        """Linux ``tcp_initialize_rcv_mss``."""
        hint = min(c._advmss(), c.snd_mss, max(c.rcv_wnd // 2, 1), TCP_MSS_DEFAULT)
        return max(hint, TCP_MIN_MSS)

    def _ephemeral_port(self, local_ip: int, remote_ip: int, remote_port: int) -> int:
        """RFC 6056 §3.3.3 style: hash-chosen start, then the first free port (or one
        whose four-tuple is in a TIME-WAIT tcp_tw_reuse lets us take over, Linux
        ``__inet_check_established``)."""
        lo, hi = self.settings.ip_local_port_range
        n = hi - lo + 1
        h = hashlib.blake2s(struct.pack(">IIH", local_ip, remote_ip, remote_port),
                            key=self._secret, digest_size=4, person=b"port")
        offset = int.from_bytes(h.digest(), "big")
        for i in range(n):
            port = lo + (offset + self._port_counter + i) % n
            t = FourTuple(local_ip, port, remote_ip, remote_port)
            old = self.connections.get(t)
            if (old is not None and not twreuse.unique(self, old, False, self._now)) or (
                local_ip, port) in self.listeners or (0, port) in self.listeners:
                continue
            self._port_counter += i + 1
            return port
        raise OSError(errno.EADDRNOTAVAIL, "no free local port")

    def at_connection_limit(self, passive: bool = True) -> bool:
        """True, counted, when the engine holds pystack.max_connections connections (any
        state: each is an entry of the XDP program's flow table). A SYN or cookie ACK
        (`passive`) is then dropped, as Linux drops a SYN it cannot allocate for, and also
        counted as ListenDrops; an active open fails with EAGAIN, and ListenDrops, a
        listener's counter, is left alone."""
        if len(self.connections) < self.settings.max_connections:
            return False
        self.mib["ConnectionLimitDrops"] += 1
        if passive:
            self.mib["ListenDrops"] += 1
        return True

    def _find_listener(self, seg: TcpSegment) -> Listener | None:
        lst = self.listeners.get((seg.dst_ip, seg.dst_port))
        if lst is None:
            lst = self.listeners.get((0, seg.dst_port))
        return lst

    def _tw_syn(self, c: Connection, seg: TcpSegment) -> bool:
        """A new SYN may reuse a TIME-WAIT four-tuple (Linux tcp_timewait_state_process)."""
        if seg.flags & (SYN | RST | ACK) != SYN:
            return False
        if sq.gt(seg.seq, c.rcv_nxt):
            return True
        ts = seg.options.timestamp
        return bool(c._f & F_TS) and ts is not None and sq.gt(ts[0], c.ts_recent)

    def _closed_input(self, seg: TcpSegment) -> None:
        """RFC 9293 §3.10.7.1: no connection and no listener -> RST (never for a RST)."""
        f = seg.flags
        if f & RST:
            return
        t = seg.tuple_at_receiver()
        if f & ACK:
            self._send_rst(t, seg.ack, 0, RST)
        else:
            self._send_rst(t, 0, sq.add(seg.seq, seg.seg_len), RST | ACK)

    def _listen_input(self, lst: Listener, seg: TcpSegment, now: float, isn: int | None) -> None:
        """RFC 9293 §3.10.7.2 LISTEN STATE."""
        f = seg.flags
        if f & RST:
            return  # first: an incoming RST is ignored
        if f & ACK:
            # second: any acknowledgment is bad -> <SEQ=SEG.ACK><CTL=RST>
            self._send_rst(seg.tuple_at_receiver(), seg.ack, 0, RST)
            return
        if not f & SYN:
            return
        if self.at_connection_limit():
            return  # no room for one more connection (pystack.max_connections)
        # Admission, Linux tcp_conn_request: request and accept queue limits, SYN cookies
        # (pystack/tcp/cookies.py: cookie SYN-ACK or drop, pressure flag, 3/4 rule).
        if not cookies.conn_request(self, lst, seg, now, isn):
            return
        t = seg.tuple_at_receiver()
        c = Connection(self, t, listener=lst)
        c._inherit(lst)
        c._f |= F_PASSIVE
        c.irs = seg.seq
        c.rcv_nxt = sq.add(seg.seq, 1)
        c._negotiate(seg, passive=True)
        ts = seg.options.timestamp
        if c._f & F_TS and ts is not None:
            c.ts_recent = ts[0]
            c.ts_recent_age = now
        # Linux tcp_openreq_init_rwin: the window is computed on MSS minus the TS option.
        c._init_rcv_window(c._advmss() - (12 if c._f & F_TS else 0))
        c._rcv_mss = self._initial_rcv_mss(c)
        iss, c._ts_offset = self._isn_ts(t, now)
        if isn is not None:
            iss = isn
        c.iss = c.snd_una = c.snd_nxt = iss
        c._write_seq = sq.add(iss, 1)
        c._snd_sml = iss
        c.snd_wnd = seg.window  # SYN windows are not scaled (RFC 7323 §2.2)
        c.max_window = seg.window
        c.snd_wl1 = seg.seq
        c.snd_wl2 = iss
        c._last_rcv = now
        c.segs_in = 1
        # Fast Open (RFC 7413 §4.2.2): a cookie option or data decides here.
        fo_accept = False
        if seg.payload or seg.flags & FIN or seg.options.fastopen_cookie is not None:
            fo_accept, grant = self.fastopen.try_passive(lst, seg)
            if fo_accept or grant is not None:
                c._fo = tfo.ConnFastOpen(active=False)
                c._fo.grant = grant
        if not fo_accept:
            # Data or FIN on a SYN without Fast Open is ignored; the peer retransmits it.
            c._set_state(TcpState.SYN_RECEIVED)
            lst._syn_recv += 1
        c._f |= F_SEND_SYN
        c.on_event = None
        self.connections[t] = c
        if self.on_add is not None:  # SYN cookies hook: the data path steers the new flow
            self.on_add(t)
        if fo_accept:
            self._fastopen_child(lst, c, seg, now)
        self._touch(c)

    def _fastopen_child(self, lst: Listener, c: Connection, seg: TcpSegment, now: float) -> None:
        """RFC 7413 §4.2.2: a SYN with a valid cookie is accepted at once (Linux
        ``tcp_fastopen_create_child``): the child, in SYN-RECEIVED, holds the SYN's data
        readable, the SYN-ACK will acknowledge it, and it is in the accept queue already.
        It counts in the listener's Fast Open queue, not in its SYN queue, until the
        handshake completes.  A FIN on the SYN is left for the peer to retransmit."""
        fo = c._fo
        assert fo is not None
        fo.child = True
        fo.listener = lst
        lst._fo_qlen += 1
        c.listener = None  # owned by the accept queue from now on, like an accepted one
        c._set_state(TcpState.SYN_RECEIVED)
        self.mib["PassiveOpens"] += 1  # Linux counts at child creation
        if seg.payload:
            c._data(c.rcv_nxt, seg.payload, now, bool(seg.flags & PSH))
        # The SYN-ACK leaves before the application sees the child (Linux sends it in
        # tcp_conn_request first): whatever it does next (even close) comes after.
        c._output(now, self._tx)
        lst._accept_q.append(c)
        lst._emit_accept()

