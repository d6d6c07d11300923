"""One TCP connection: the RFC 9293 state machine, send side, receive side and timers.

A :class:`Connection` is driven by its :class:`~pystack.tcp.engine.TcpEngine`: segments
arrive through ``_input``, timers fire through ``_on_timer`` and segments leave through
``_output`` when the engine polls.  Nothing here does I/O or reads a clock; every entry
point gets ``now`` (float seconds) from the engine.  The user side (``send``, ``recv``,
``close`` ...) is socket-like and non-blocking; ``on_event(conn, kind)`` reports
"connected", "readable", "writable" (space freed after a short send), "drained" (all
written data acknowledged), "urgent" and "closed".

RFC sections are cited next to the code they justify.  Where RFC 9293 leaves a choice,
Linux's behaviour (``net/ipv4/tcp_input.c``, ``tcp_output.c``, ``tcp_timer.c``) is used.
"""

from __future__ import annotations

import errno
import math
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pystack import cc
from pystack.cc.base import AckSample, CaEvent, CaState, CcState, CongestionOps
from pystack.tcp import seq as sq
from pystack.tcp.buffers import RecvBuffer, SendBuffer
from pystack.tcp.rtt import RttEstimator
from pystack.tcp.state import (
    IPPROTO_TCP,
    OPTION_NAMES,
    SO_KEEPALIVE,
    SO_OOBINLINE,
    SO_RCVBUF,
    SO_SNDBUF,
    SOL_SOCKET,
    SYNCHRONIZED,
    TCP_CONGESTION,
    TCP_CORK,
    TCP_DEFER_ACCEPT,
    TCP_INFO,
    TCP_KEEPCNT,
    TCP_KEEPIDLE,
    TCP_KEEPINTVL,
    TCP_LINGER2,
    TCP_MAXSEG,
    TCP_NODELAY,
    TCP_NOTSENT_LOWAT,
    TCP_QUICKACK,
    TCP_SYNCNT,
    TCP_USER_TIMEOUT,
    TCP_WINDOW_CLAMP,
    TcpState,
)
from pystack.wire.segment import ACK, FIN, PSH, RST, SYN, URG, FourTuple, TcpOptions, TcpSegment

if TYPE_CHECKING:
    from pystack.tcp.engine import Listener, TcpEngine

__all__ = ["Connection", "EventCallback", "model_timeout"]

EventCallback = Callable[[Any, str], None]

# Linux constants (include/net/tcp.h).
TCP_TIMEWAIT_LEN = 60.0  # 2*MSL as Linux uses it (RFC 9293 §3.4.2 suggests MSL = 2 min)
TCP_FIN_TIMEOUT_MAX = 120
TCP_RTO_MIN = 0.2
TCP_RTO_MAX = 120.0
TCP_TIMEOUT_INIT = 1.0
TCP_ATO_MIN = 0.04
TCP_DELACK_MAX = 0.2
TCP_MAX_QUICKACKS = 16
TCP_MSS_DEFAULT = 536  # RFC 9293 §3.7.1: assumed when the peer sends no MSS option
TCP_MIN_MSS = 88
TCP_MAX_WSCALE = 14  # RFC 7323 §2.3
TCP_INIT_CWND = 10  # RFC 6928
MAX_TCP_KEEPIDLE = 32767
MAX_TCP_KEEPINTVL = 32767
MAX_TCP_KEEPCNT = 127
MAX_TCP_SYNCNT = 127
MAX_TCP_WINDOW = 32767
SOCK_MIN_SNDBUF = 4608
SOCK_MIN_RCVBUF = 2304
CORK_CEILING = 0.2  # tcp(7) TCP_CORK: "a 200 millisecond ceiling"
PAWS_IDLE = 24 * 86400.0  # RFC 7323 §5.5: TS.Recent is invalid after 24 days idle
TS_OPT_LEN = 12  # aligned timestamp option (RFC 7323 Appendix A)

# Connection flags (one int per connection instead of many attributes).
F_NODELAY = 1 << 0
F_CORK = 1 << 1
F_KEEPALIVE = 1 << 2
F_OOBINLINE = 1 << 3
F_TS = 1 << 4  # timestamps offered (SYN-SENT) / negotiated (later)
F_SACK = 1 << 5
F_WSCALE = 1 << 6
F_PASSIVE = 1 << 7  # created by a listener
F_ORPHAN = 1 << 8  # close() was called: no user any more
F_WR_SHUT = 1 << 9  # FIN queued (shutdown_write / close)
F_FIN_SENT = 1 << 10
F_RD_EOF = 1 << 11  # peer's FIN received in order
F_ACK_NOW = 1 << 12
F_SEND_SYN = 1 << 13
F_RTX_ONE = 1 << 14  # retransmit the segment at SND.UNA (fast retransmit / partial ACK)
F_SNDBUF_LOCK = 1 << 15
F_RCVBUF_LOCK = 1 << 16
F_WANT_WRITE = 1 << 17
F_PINGPONG = 1 << 18  # delayed-ACK "interactive" mode (TCP_QUICKACK 0)
F_ERR_REPORTED = 1 << 19
F_DEFER_ACKED = 1 << 20  # TCP_DEFER_ACCEPT: bare ACK of our SYN-ACK seen
F_PERSIST = 1 << 21  # the retransmission timer is the persist timer
F_PUSH_ONCE = 1 << 22  # send partial segments once despite Nagle/cork
F_CLOSED_EVT = 1 << 23
F_SYN_RETRANS = 1 << 24  # SYN or SYN-ACK was retransmitted (Karn)
F_URG_INLINE_SEEN = 1 << 25
F_IN_ORPHANS = 1 << 26  # counted in engine.orphan_count
F_IN_TW = 1 << 27  # counted in engine.tw_count

# Urgent data state (Linux tp->urg_data).
URG_NONE = 0
URG_NOTYET = 1
URG_VALID = 2
URG_READ = 3

_SYNC_NOT_TW = frozenset(SYNCHRONIZED - {TcpState.TIME_WAIT})
_SEND_STATES = frozenset(
    {TcpState.SYN_SENT, TcpState.SYN_RECEIVED, TcpState.ESTABLISHED, TcpState.CLOSE_WAIT}
)


def model_timeout(boundary: int, rto_base: float) -> float:
    """Linux ``tcp_model_timeout``: seconds ``boundary`` backed-off RTOs take from ``rto_base``.

    Used to turn ``tcp_retries2`` into a time limit (15 -> 924.6 s with a 200 ms base).
    """
    thresh = int(math.log2(TCP_RTO_MAX / rto_base))
    if boundary <= thresh:
        return ((2 << boundary) - 1) * rto_base
    return ((2 << thresh) - 1) * rto_base + (boundary - thresh) * TCP_RTO_MAX


def secs_to_retrans(seconds: int, timeout: int = 1, rto_max: int = 120) -> int:
    """Linux ``secs_to_retrans`` (TCP_DEFER_ACCEPT seconds -> SYN-ACK retransmissions)."""
    res = 0
    if seconds > 0:
        period = timeout
        res = 1
        while seconds > period and res < 255:
            res += 1
            timeout = min(timeout << 1, rto_max)
            period += timeout
    return res


def retrans_to_secs(retrans: int, timeout: int = 1, rto_max: int = 120) -> int:
    """Linux ``retrans_to_secs``: the inverse of :func:`secs_to_retrans`."""
    period = 0
    if retrans > 0:
        period = timeout
        while retrans > 1:
            retrans -= 1
            timeout = min(timeout << 1, rto_max)
            period += timeout
    return period


class _Sock:
    """Socket options shared by connections and listeners (children inherit them)."""

    __slots__ = ("engine", "_f", "_opts", "rcvbuf_size", "sndbuf_size", "on_event")

    def __init__(self, engine: TcpEngine) -> None:
        self.engine = engine
        self._f = 0
        self._opts: dict[int, Any] | None = None  # per-socket overrides only
        s = engine.settings
        self.rcvbuf_size: int = s.tcp_rmem[1]
        self.sndbuf_size: int = s.tcp_wmem[1]
        self.on_event: EventCallback | None = None

    # -- option storage ---------------------------------------------------------------
    def _opt(self, name: int, default: Any = None) -> Any:
        o = self._opts
        if o is None:
            return default
        return o.get(name, default)

    def _set_opt(self, name: int, value: Any) -> None:
        if self._opts is None:
            self._opts = {}
        self._opts[name] = value

    def _inherit(self, parent: _Sock) -> None:
        keep = F_NODELAY | F_CORK | F_KEEPALIVE | F_OOBINLINE | F_SNDBUF_LOCK | F_RCVBUF_LOCK
        self._f |= parent._f & keep
        self._opts = dict(parent._opts) if parent._opts else None
        self.rcvbuf_size = parent.rcvbuf_size
        self.sndbuf_size = parent.sndbuf_size

    # -- setsockopt / getsockopt ------------------------------------------------------
    def set_option(self, name: str, value: int | str) -> None:
        """``setsockopt`` by name, e.g. ``set_option("TCP_NODELAY", 1)``."""
        try:
            level, opt = OPTION_NAMES[name]
        except KeyError:
            raise OSError(errno.ENOPROTOOPT, f"unknown socket option {name!r}") from None
        self.setsockopt(level, opt, value)

    def get_option(self, name: str) -> int | str:
        """``getsockopt`` by name."""
        try:
            level, opt = OPTION_NAMES[name]
        except KeyError:
            raise OSError(errno.ENOPROTOOPT, f"unknown socket option {name!r}") from None
        return self.getsockopt(level, opt)

    def setsockopt(self, level: int, optname: int, value: int | str | bytes) -> None:
        """Linux ``setsockopt`` for the SOL_SOCKET and IPPROTO_TCP options pystack knows.

        Raises OSError(EINVAL) for a bad value, OSError(ENOPROTOOPT) for an unknown option,
        OSError(ENOENT) for an unknown TCP_CONGESTION algorithm.
        """
        if level == IPPROTO_TCP and optname == TCP_CONGESTION:
            name = value.decode() if isinstance(value, bytes) else str(value)
            name = name.rstrip("\0")
            if name not in cc.available():
                raise OSError(errno.ENOENT, f"unknown congestion control {name!r}")
            self._set_opt(TCP_CONGESTION, name)
            self._option_changed(optname)
            return
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, int):
            raise OSError(errno.EINVAL, f"option {optname} needs an integer")
        v = value
        s = self.engine.settings
        if level == SOL_SOCKET:
            if optname == SO_RCVBUF:
                v = min(max(v, 0), s.rmem_max)
                self.rcvbuf_size = max(v * 2, SOCK_MIN_RCVBUF)  # socket(7): doubled
                self._f |= F_RCVBUF_LOCK
            elif optname == SO_SNDBUF:
                v = min(max(v, 0), s.wmem_max)
                self.sndbuf_size = max(v * 2, SOCK_MIN_SNDBUF)
                self._f |= F_SNDBUF_LOCK
            elif optname == SO_KEEPALIVE:
                self._flag(F_KEEPALIVE, v)
            elif optname == SO_OOBINLINE:
                self._flag(F_OOBINLINE, v)
            else:
                raise OSError(errno.ENOPROTOOPT, f"unsupported SOL_SOCKET option {optname}")
            self._option_changed(optname)
            return
        if level != IPPROTO_TCP:
            raise OSError(errno.ENOPROTOOPT, f"unsupported level {level}")
        if optname == TCP_NODELAY:
            self._flag(F_NODELAY, v)
        elif optname == TCP_CORK:
            self._flag(F_CORK, v)
        elif optname == TCP_QUICKACK:
            pass  # acted on by Connection._option_changed
        elif optname == TCP_MAXSEG:
            if v and not TCP_MIN_MSS <= v <= MAX_TCP_WINDOW:
                raise OSError(errno.EINVAL, f"TCP_MAXSEG {v} out of range")
            self._set_opt(optname, v)
        elif optname == TCP_KEEPIDLE:
            if not 1 <= v <= MAX_TCP_KEEPIDLE:
                raise OSError(errno.EINVAL, f"TCP_KEEPIDLE {v} out of range")
            self._set_opt(optname, v)
        elif optname == TCP_KEEPINTVL:
            if not 1 <= v <= MAX_TCP_KEEPINTVL:
                raise OSError(errno.EINVAL, f"TCP_KEEPINTVL {v} out of range")
            self._set_opt(optname, v)
        elif optname == TCP_KEEPCNT:
            if not 1 <= v <= MAX_TCP_KEEPCNT:
                raise OSError(errno.EINVAL, f"TCP_KEEPCNT {v} out of range")
            self._set_opt(optname, v)
        elif optname == TCP_SYNCNT:
            if not 1 <= v <= MAX_TCP_SYNCNT:
                raise OSError(errno.EINVAL, f"TCP_SYNCNT {v} out of range")
            self._set_opt(optname, v)
        elif optname == TCP_LINGER2:
            # Linux: negative -> -1 (RST instead of FIN-WAIT-2), too large -> the maximum.
            self._set_opt(optname, -1 if v < 0 else min(v, TCP_FIN_TIMEOUT_MAX))
        elif optname == TCP_DEFER_ACCEPT:
            self._set_opt(optname, secs_to_retrans(max(v, 0)))
        elif optname == TCP_WINDOW_CLAMP:
            if v == 0:
                if getattr(self, "state", TcpState.CLOSED) not in (
                    TcpState.CLOSED,
                    TcpState.LISTEN,
                ):
                    raise OSError(errno.EINVAL, "TCP_WINDOW_CLAMP 0 only before connecting")
                self._set_opt(optname, 0)
            else:
                self._set_opt(optname, max(v, SOCK_MIN_RCVBUF // 2))
        elif optname == TCP_USER_TIMEOUT:
            if v < 0:
                raise OSError(errno.EINVAL, "TCP_USER_TIMEOUT must be >= 0")
            self._set_opt(optname, v)
        elif optname == TCP_NOTSENT_LOWAT:
            self._set_opt(optname, v & 0xFFFFFFFF)  # Linux: any int, kept as a u32
        else:
            raise OSError(errno.ENOPROTOOPT, f"unsupported TCP option {optname}")
        self._option_changed(optname)

    def getsockopt(self, level: int, optname: int) -> int | str:
        """Linux ``getsockopt`` counterpart of :meth:`setsockopt`."""
        s = self.engine.settings
        if level == SOL_SOCKET:
            if optname == SO_RCVBUF:
                return self.rcvbuf_size
            if optname == SO_SNDBUF:
                return self.sndbuf_size
            if optname == SO_KEEPALIVE:
                return int(bool(self._f & F_KEEPALIVE))
            if optname == SO_OOBINLINE:
                return int(bool(self._f & F_OOBINLINE))
            raise OSError(errno.ENOPROTOOPT, f"unsupported SOL_SOCKET option {optname}")
        if level != IPPROTO_TCP:
            raise OSError(errno.ENOPROTOOPT, f"unsupported level {level}")
        if optname == TCP_NODELAY:
            return int(bool(self._f & F_NODELAY))
        if optname == TCP_CORK:
            return int(bool(self._f & F_CORK))
        if optname == TCP_QUICKACK:
            return int(not self._f & F_PINGPONG)
        if optname == TCP_MAXSEG:
            return self._maxseg_value()
        if optname == TCP_KEEPIDLE:
            return int(self._opt(optname, s.tcp_keepalive_time))
        if optname == TCP_KEEPINTVL:
            return int(self._opt(optname, s.tcp_keepalive_intvl))
        if optname == TCP_KEEPCNT:
            return int(self._opt(optname, s.tcp_keepalive_probes))
        if optname == TCP_SYNCNT:
            return int(self._opt(optname, s.tcp_syn_retries))
        if optname == TCP_LINGER2:
            v = self._opt(optname, 0)
            return v if v < 0 else (v or s.tcp_fin_timeout)
        if optname == TCP_DEFER_ACCEPT:
            return retrans_to_secs(self._opt(optname, 0))
        if optname == TCP_WINDOW_CLAMP:
            return self._window_clamp_value()
        if optname == TCP_USER_TIMEOUT:
            return int(self._opt(optname, 0))
        if optname == TCP_CONGESTION:
            return str(self._opt(TCP_CONGESTION, s.tcp_congestion_control))
        if optname == TCP_NOTSENT_LOWAT:
            return int(self._opt(optname, 0))  # Linux: 0 = "use net.ipv4.tcp_notsent_lowat"
        if optname == TCP_INFO:
            raise OSError(errno.ENOPROTOOPT, "use tcp_info()")
        raise OSError(errno.ENOPROTOOPT, f"unsupported TCP option {optname}")

    def _flag(self, bit: int, on: int) -> None:
        if on:
            self._f |= bit
        else:
            self._f &= ~bit

    def _maxseg_value(self) -> int:
        return int(self._opt(TCP_MAXSEG, 0)) or TCP_MSS_DEFAULT

    def _window_clamp_value(self) -> int:
        return int(self._opt(TCP_WINDOW_CLAMP, 0))

    def _option_changed(self, optname: int) -> None:  # noqa: B027 - hook
        """Hook for options that act immediately on a connection."""


class Connection(_Sock):
    """A TCP connection (TCB of RFC 9293 §3.3.1 plus the socket around it)."""

    __slots__ = (
        "four_tuple",
        "state",
        "error",
        "listener",
        # send sequence variables (RFC 9293 §3.3.1)
        "iss",
        "snd_una",
        "snd_nxt",
        "snd_wnd",
        "snd_wl1",
        "snd_wl2",
        "max_window",
        "_write_seq",
        "_snd_up",
        "_snd_sml",
        "_sndbuf",
        # receive sequence variables
        "irs",
        "rcv_nxt",
        "rcv_wup",
        "rcv_wnd",
        "_rcv_ssthresh",
        "_rcvbuf",
        "_fin_seq",
        "_dsack",
        # options
        "snd_mss",
        "_peer_mss",
        "_rcv_mss",
        "snd_wscale",
        "rcv_wscale",
        "_wnd_clamp",
        "ts_recent",
        "ts_recent_age",
        "_ts_offset",
        # RTT, congestion control, loss recovery
        "rtt",
        "cc",
        "ccs",
        "_txtimes",
        "_retransmits",
        "_retrans_stamp",
        "_rtx_nxt",
        "_high_seq",
        "_recover",
        "_dupacks",
        "_probes",
        "_probe_backoff",
        "_probes_stamp",
        "_last_send",
        # timers (absolute times or None)
        "_t_rtx",
        "_t_delack",
        "_t_keep",
        "_t_wait",
        "_t_cork",
        "_sched",
        # delayed ACK
        "_ato",
        "_quick",
        "_lrcvtime",
        "_last_rcv",
        "_last_oow",
        # urgent data
        "_urg_off",
        "_urg_state",
        "_urg_byte",
        # statistics (tcp_info)
        "bytes_acked",
        "bytes_received",
        "segs_in",
        "segs_out",
        "data_segs_in",
        "data_segs_out",
        "total_retrans",
        "__weakref__",
    )

    def __init__(
        self, engine: TcpEngine, four_tuple: FourTuple, *, listener: Listener | None = None
    ) -> None:
        super().__init__(engine)
        self.four_tuple = four_tuple
        self.state = TcpState.CLOSED
        self.error = 0
        self.listener = listener
        self.iss = self.snd_una = self.snd_nxt = self._write_seq = 0
        self.snd_wnd = self.snd_wl1 = self.snd_wl2 = self.max_window = 0
        self._snd_up: int | None = None
        self._snd_sml = 0
        self._sndbuf: SendBuffer | None = None
        self.irs = self.rcv_nxt = self.rcv_wup = self.rcv_wnd = self._rcv_ssthresh = 0
        self._rcvbuf: RecvBuffer | None = None
        self._fin_seq: int | None = None
        self._dsack: tuple[int, int] | None = None
        self.snd_mss = TCP_MSS_DEFAULT
        self._peer_mss = TCP_MSS_DEFAULT
        self._rcv_mss = TCP_MSS_DEFAULT
        self.snd_wscale = self.rcv_wscale = 0
        self._wnd_clamp = 0
        self.ts_recent = 0
        self.ts_recent_age: float | None = None
        self._ts_offset = 0
        self.rtt = RttEstimator(min_rto=TCP_RTO_MIN, max_rto=TCP_RTO_MAX,
                                initial_rto=TCP_TIMEOUT_INIT)
        self.cc: CongestionOps | None = None
        self.ccs: CcState | None = None
        self._txtimes: deque[tuple[int, float]] | None = None
        self._retransmits = 0
        self._retrans_stamp: float | None = None  # first retransmission's head send time
        self._rtx_nxt: int | None = None
        self._high_seq = 0
        self._recover: int | None = None
        self._dupacks = 0
        self._probes = 0
        self._probe_backoff = 0
        self._probes_stamp = 0.0
        self._last_send = 0.0
        self._t_rtx: float | None = None
        self._t_delack: float | None = None
        self._t_keep: float | None = None
        self._t_wait: float | None = None
        self._t_cork: float | None = None
        self._sched: float | None = None
        self._ato = 0.0
        self._quick = 0
        self._lrcvtime = 0.0
        self._last_rcv = 0.0
        self._last_oow = -1e9
        self._urg_off = 0
        self._urg_state = URG_NONE
        self._urg_byte = 0
        self.bytes_acked = self.bytes_received = 0
        self.segs_in = self.segs_out = self.data_segs_in = self.data_segs_out = 0
        self.total_retrans = 0

    def __repr__(self) -> str:
        t = self.four_tuple
        return (
            f"<Connection {_ip(t.local_ip)}:{t.local_port} -> {_ip(t.remote_ip)}:"
            f"{t.remote_port} {self.state.name}>"
        )

    # =================================================================================
    # Public, socket-like API (non-blocking)
    # =================================================================================
    @property
    def local_ip(self) -> int:
        return self.four_tuple.local_ip

    @property
    def local_port(self) -> int:
        return self.four_tuple.local_port

    @property
    def remote_ip(self) -> int:
        return self.four_tuple.remote_ip

    @property
    def remote_port(self) -> int:
        return self.four_tuple.remote_port

    @property
    def readable(self) -> int:
        """SIOCINQ / FIONREAD: bytes the application can read now."""
        rb = self._rcvbuf
        return rb.ready_len if rb is not None else 0

    @property
    def outq(self) -> int:
        """SIOCOUTQ: bytes in the send queue not yet acknowledged (Linux semantics)."""
        sb = self._sndbuf
        return len(sb) if sb is not None else 0

    @property
    def unsent(self) -> int:
        """SIOCOUTQNSD: bytes queued but not sent yet."""
        return max(0, sq.sub(self._write_seq, self.snd_nxt))

    @property
    def writable(self) -> int:
        """Bytes :meth:`send` would accept now.

        With TCP_NOTSENT_LOWAT / tcp_notsent_lowat, nothing while the unsent bytes are at or
        above the mark; below it, up to the mark rounded up to whole segments (Linux adds
        whole MSS-sized buffers while ``write_seq - snd_nxt < lowat``).
        """
        if self.state not in _SEND_STATES or self._f & F_WR_SHUT or self.error:
            return 0
        room = self._sndbuf_limit() - self.outq
        lowat = self._notsent_lowat()
        unsent = self.unsent
        if unsent >= lowat:
            return 0
        mss = self._eff_mss()
        return max(0, min(room, -(-lowat // mss) * mss - unsent))

    @property
    def at_eof(self) -> bool:
        """The peer's FIN was received and all data before it has been read."""
        return bool(self._f & F_RD_EOF) and self.readable == 0

    @property
    def at_mark(self) -> bool:
        """SIOCATMARK: the next byte to read is the urgent mark."""
        rb = self._rcvbuf
        return (
            rb is not None
            and self._urg_state in (URG_NOTYET, URG_VALID, URG_READ)
            and rb.read_off == self._urg_off
        )

    def send(self, data: bytes | bytearray | memoryview, *, oob: bool = False) -> int:
        """Queue bytes for sending; returns how many were accepted (0 when the buffer is full).

        ``oob=True`` sends the last byte as urgent data (MSG_OOB, BSD urgent pointer).
        Raises BrokenPipeError after shutdown_write/close, or OSError(error) once failed.
        """
        if self.error:
            raise OSError(self.error, errno.errorcode.get(self.error, "error"))
        st = self.state
        if st not in _SEND_STATES or self._f & F_WR_SHUT:
            if st == TcpState.CLOSED and not self._f & F_WR_SHUT and self.iss == 0:
                raise OSError(errno.ENOTCONN, "not connected")
            raise BrokenPipeError(errno.EPIPE, "connection is shut down for writing")
        n = min(len(data), self.writable)
        if n < len(data):
            self._f |= F_WANT_WRITE
        if n <= 0:
            return 0
        chunk = bytes(data[:n]) if (n < len(data) or not isinstance(data, bytes)) else data
        if self._sndbuf is None:
            self._sndbuf = SendBuffer()
        self._sndbuf.append(chunk)
        self._write_seq = sq.add(self._write_seq, n)
        if oob:
            # tcp_sendmsg MSG_OOB: the urgent pointer points after the last byte sent.
            self._snd_up = self._write_seq
        self.engine._touch(self)
        return n

    def recv(self, max_bytes: int = 65536, *, oob: bool = False) -> bytes:
        """Read up to ``max_bytes``; b"" at end of stream.

        Raises BlockingIOError when nothing is readable yet, and the connection's error
        (ECONNRESET, ETIMEDOUT, ...) once after the buffered data has been read.
        ``oob=True`` reads the urgent byte (MSG_OOB), as Linux's ``tcp_recv_urg``.
        """
        if oob:
            return self._recv_oob()
        rb = self._rcvbuf
        if rb is not None and rb.ready_len:
            stop = None
            if self._urg_state in (URG_NOTYET, URG_VALID, URG_READ):
                if rb.read_off == self._urg_off:
                    if not self._f & F_OOBINLINE and self._urg_state != URG_NOTYET:
                        # The urgent byte is not part of the normal stream.
                        rb.discard(1)
                        self._urg_state = URG_NONE
                elif rb.read_off < self._urg_off:
                    stop = self._urg_off  # a read never crosses the urgent mark
            data = rb.read(max_bytes, stop)
            if data:
                self._after_read()
                return data
            if not rb.ready_len:
                return self._recv_empty()
            return rb.read(max_bytes)
        return self._recv_empty()

    def _recv_empty(self) -> bytes:
        if self.error and not self._f & F_ERR_REPORTED:
            self._f |= F_ERR_REPORTED
            raise OSError(self.error, errno.errorcode.get(self.error, "error"))
        if self._f & F_RD_EOF or self.state in (TcpState.CLOSED, TcpState.TIME_WAIT):
            return b""
        if self.state == TcpState.SYN_SENT and not self._f & F_SEND_SYN and self.iss == 0:
            raise OSError(errno.ENOTCONN, "not connected")
        raise BlockingIOError(errno.EAGAIN, "no data available")

    def _recv_oob(self) -> bytes:
        # Linux tcp_recv_urg.
        if self._f & F_OOBINLINE or self._urg_state in (URG_NONE, URG_READ):
            raise OSError(errno.EINVAL, "no urgent data")
        if self._urg_state == URG_NOTYET:
            if self.state == TcpState.CLOSED or self._f & F_RD_EOF:
                return b""
            raise BlockingIOError(errno.EAGAIN, "urgent data not arrived yet")
        self._urg_state = URG_READ
        return bytes([self._urg_byte])

    def shutdown_write(self) -> None:
        """shutdown(SHUT_WR): send FIN after the queued data (RFC 9293 §3.10.4 CLOSE)."""
        st = self.state
        if self._f & F_WR_SHUT:
            return
        if st == TcpState.SYN_SENT:
            # Nothing was sent yet: queue the FIN for after the handshake.
            self._f |= F_WR_SHUT
            return
        if st in (TcpState.SYN_RECEIVED, TcpState.ESTABLISHED):
            self._f |= F_WR_SHUT
            self._set_state(TcpState.FIN_WAIT_1)
        elif st == TcpState.CLOSE_WAIT:
            self._f |= F_WR_SHUT
            self._set_state(TcpState.LAST_ACK)
        else:
            return
        self.engine._touch(self)

    def close(self) -> None:
        """close(2): FIN after the queued data, or RST if received data is left unread.

        The connection lives on inside the engine (FIN-WAIT, TIME-WAIT ...) as an orphan.
        """
        if self._f & F_ORPHAN:
            return
        self._f |= F_ORPHAN
        self._account()
        self.on_event = None
        st = self.state
        if st == TcpState.CLOSED:
            self.engine._remove(self)
            return
        if st == TcpState.SYN_SENT:
            self._set_state(TcpState.CLOSED)
            self._release()
            return
        rb = self._rcvbuf
        if rb is not None and rb.ready_len and st in _SYNC_NOT_TW | {TcpState.SYN_RECEIVED}:
            # Linux tcp_close: unread data -> RST (RFC 2525 §2.17), TCPAbortOnClose.
            self.engine.mib["TCPAbortOnClose"] += 1
            self._send_rst_now(self.snd_nxt, self.rcv_nxt)
            self._set_state(TcpState.CLOSED)
            self._release()
            return
        if st in (TcpState.SYN_RECEIVED, TcpState.ESTABLISHED, TcpState.CLOSE_WAIT):
            self.shutdown_write()
        elif st == TcpState.FIN_WAIT_2:
            self._enter_fin_wait_2(self.engine._now)
        st = self.state
        if st == TcpState.CLOSED:
            return
        if (
            self._f & F_IN_ORPHANS
            and not (st == TcpState.FIN_WAIT_2 and self._fin_time() <= TCP_TIMEWAIT_LEN)
            and self.engine.orphan_count > self.engine.settings.tcp_max_orphans
        ):
            # Linux tcp_close -> tcp_check_oom: too many orphans -> RST instead of FIN
            # (a FIN-WAIT-2 socket with a short fin time becomes a TIME-WAIT bucket there).
            self.engine.mib["TCPAbortOnMemory"] += 1
            self._send_rst_now(self.snd_nxt, self.rcv_nxt)
            self._set_state(TcpState.CLOSED)
            self._release()
            return
        self.engine._touch(self)

    def abort(self) -> None:
        """Reset the connection (SO_LINGER 0 close / RFC 9293 §3.10.5 ABORT)."""
        st = self.state
        if st in _SYNC_NOT_TW or st == TcpState.SYN_RECEIVED:
            self._send_rst_now(self.snd_nxt, self.rcv_nxt)
        self._f |= F_ORPHAN
        self._account()
        self.on_event = None
        if st != TcpState.CLOSED:
            self._set_state(TcpState.CLOSED)
        self._release()

    def tcp_info(self) -> dict[str, Any]:
        """``struct tcp_info`` / ``ss -ti`` fields (times in ms as ``ss`` prints them)."""
        tp = self.ccs
        r = self.rtt
        opts = []
        if self._f & F_TS:
            opts.append("ts")
        if self._f & F_SACK:
            opts.append("sack")
        if self._f & F_WSCALE:
            opts.append("wscale")
        srtt = r.srtt or 0.0
        rttvar = r.rttvar if r.rttvar is not None else r.initial_rto / 4
        info: dict[str, Any] = {
            "state": self.state.ss_name,
            "ca_state": tp.ca_state.name if tp else "OPEN",
            "retransmits": self._retransmits,
            "probes": self._probes,
            "backoff": r.backoff,
            "options": opts,
            "wscale": (self.snd_wscale, self.rcv_wscale) if self._f & F_WSCALE else None,
            "rto": round(r.rto * 1000, 3),
            "ato": round(self._ato * 1000, 3),
            "rtt": round(srtt * 1000, 3),
            "rttvar": round(rttvar * 1000, 3),
            "mss": self.snd_mss,
            "pmtu": self.engine.mtu,
            "rcvmss": self._rcv_mss,
            "advmss": self._advmss(),
            "cwnd": tp.snd_cwnd if tp else TCP_INIT_CWND,
            "ssthresh": tp.snd_ssthresh if tp else 0x7FFFFFFF,
            "bytes_sent": self.bytes_acked + max(0, sq.sub(self.snd_nxt, self.snd_una)),
            "bytes_acked": self.bytes_acked,
            "bytes_received": self.bytes_received,
            "segs_in": self.segs_in,
            "segs_out": self.segs_out,
            "data_segs_in": self.data_segs_in,
            "data_segs_out": self.data_segs_out,
            "unacked": self._packets_out(),
            "retrans": self.total_retrans,
            "lost": 0,
            "snd_wnd": self.snd_wnd,
            "rcv_wnd": self.rcv_wnd,
            "rcv_space": self._full_space(),
            "rcv_ssthresh": self._rcv_ssthresh,
            "notsent": self.unsent,
            "cc": self.cc.name if self.cc else self._cc_name(),
        }
        return info

    # =================================================================================
    # Helpers: sizes, windows, MSS
    # =================================================================================
    def _win_from_space(self, space: int) -> int:
        """Linux ``tcp_win_from_space`` with tcp_adv_win_scale."""
        scale = self.engine.settings.tcp_adv_win_scale
        if scale <= 0:
            return space >> -scale
        return space - (space >> scale)

    def _full_space(self) -> int:
        return min(self._wnd_clamp or (65535 << 14), self._win_from_space(self.rcvbuf_size))

    def _sndbuf_limit(self) -> int:
        """Send buffer capacity; grows with cwnd unless SO_SNDBUF fixed it (tcp_sndbuf_expand)."""
        lim = self.sndbuf_size
        if not self._f & F_SNDBUF_LOCK and self.ccs is not None:
            want = 2 * self.ccs.snd_cwnd * self.snd_mss
            lim = max(lim, min(want, self.engine.settings.tcp_wmem[2]))
        return lim

    def _advmss(self) -> int:
        """The MSS we announce: MTU - 40, clamped by TCP_MAXSEG (RFC 9293 §3.7.1)."""
        m = self.engine.mtu - 40
        user = self._opt(TCP_MAXSEG, 0)
        if user:
            m = min(m, user)
        return m

    def _maxseg_value(self) -> int:
        if self.state in SYNCHRONIZED:
            return self.snd_mss
        return super()._maxseg_value()

    def _window_clamp_value(self) -> int:
        return self._wnd_clamp or int(self._opt(TCP_WINDOW_CLAMP, 0))

    def _compute_snd_mss(self) -> None:
        """Linux ``tcp_sync_mss``: effective send MSS from the peer's MSS, MTU, TCP_MAXSEG."""
        m = min(self._peer_mss, self.engine.mtu - 40)
        user = self._opt(TCP_MAXSEG, 0)
        if user:
            m = min(m, user)
        if self._f & F_TS:
            m -= TS_OPT_LEN
        self.snd_mss = max(m, self.engine.settings.tcp_min_snd_mss)

    def _eff_mss(self) -> int:
        """Send MSS bounded to half the largest window seen (Linux tcp_bound_to_half_wnd)."""
        m = self.snd_mss
        mw = self.max_window
        if mw:
            cutoff = mw >> 1 if mw > TCP_MSS_DEFAULT else mw
            if m > cutoff:
                m = max(cutoff, 68 - 20 - (TS_OPT_LEN if self._f & F_TS else 0))
        return max(m, 1)

    def _init_rcv_window(self, mss: int) -> None:
        """Linux ``tcp_select_initial_window``: first window, window scale, clamp."""
        s = self.engine.settings
        space = self._win_from_space(self.rcvbuf_size)
        clamp = int(self._opt(TCP_WINDOW_CLAMP, 0)) or (65535 << TCP_MAX_WSCALE)
        space = min(clamp, space)
        if space > mss:
            space = (space // mss) * mss
        self.rcv_wnd = min(space, 65535)
        ws = 0
        if self._f & F_WSCALE:
            sp = max(space, s.tcp_rmem[2], s.rmem_max)
            sp = min(sp, clamp)
            ws = max(0, min(sp.bit_length() - 1 - 15, TCP_MAX_WSCALE))
        self.rcv_wscale = ws
        self._wnd_clamp = min(65535 << ws, clamp)
        self._rcv_ssthresh = self.rcv_wnd
        self.rcv_wup = self.rcv_nxt

    def _rcv_window_now(self) -> int:
        """Linux ``tcp_receive_window``: what is left of the last advertised window."""
        return max(0, sq.sub(sq.add(self.rcv_wup, self.rcv_wnd), self.rcv_nxt))

    def _raw_window(self) -> int:
        """Linux ``__tcp_select_window``: the window we would offer now (with RFC 1122
        §4.2.3.3 receiver-side silly window avoidance)."""
        mss = self._rcv_mss
        space = self._win_from_space(self.rcvbuf_size)
        full = min(self._wnd_clamp or (65535 << 14), space)
        rb = self._rcvbuf
        used = rb.used if rb is not None else 0
        free = max(0, space - used)
        ws = self.rcv_wscale
        if mss > full:
            mss = full
            if mss <= 0:
                return 0
        if free < (full >> 1):
            self._quick = 0
            free = (free >> ws) << ws
            if free < (full >> 4) or free < mss:
                return 0
        if free > self._rcv_ssthresh:
            free = self._rcv_ssthresh
        if ws:
            unit = 1 << ws
            return (free + unit - 1) // unit * unit
        window = self.rcv_wnd
        if window <= free - mss or window > free:
            window = (free // mss) * mss
        elif mss == full and free > window + (full >> 1):
            window = free
        return window

    def _select_window(self) -> int:
        """Linux ``tcp_select_window``: never shrink the offered window (RFC 9293 §3.8.6.2.2)."""
        cur = self._rcv_window_now()
        new = self._raw_window()
        ws = self.rcv_wscale
        if new < cur:
            unit = 1 << ws
            new = (cur + unit - 1) // unit * unit
        new = min(new, 65535 << ws)
        self.rcv_wnd = new
        self.rcv_wup = self.rcv_nxt
        return new

    def _tsval(self, now: float) -> int:
        """Our TSval: a 1 ms clock plus a per-connection offset (RFC 7323 §5.4, Linux)."""
        return (int(now * 1000) + self._ts_offset) & sq.MASK

    def _packets_out(self) -> int:
        hi = self._rtx_nxt if self._rtx_nxt is not None else self.snd_nxt
        n = sq.sub(hi, self.snd_una)
        if n <= 0:
            return 0
        m = self._eff_mss()
        return (n + m - 1) // m

    def _cc_name(self) -> str:
        return str(self._opt(TCP_CONGESTION, self.engine.settings.tcp_congestion_control))

    def _keep_idle(self) -> float:
        return float(self._opt(TCP_KEEPIDLE, self.engine.settings.tcp_keepalive_time))

    def _keep_intvl(self) -> float:
        return float(self._opt(TCP_KEEPINTVL, self.engine.settings.tcp_keepalive_intvl))

    def _keep_cnt(self) -> int:
        return int(self._opt(TCP_KEEPCNT, self.engine.settings.tcp_keepalive_probes))

    def _user_timeout(self) -> float:
        return int(self._opt(TCP_USER_TIMEOUT, 0)) / 1000.0

    def _notsent_lowat(self) -> int:
        """Linux ``tcp_notsent_lowat``: the socket's TCP_NOTSENT_LOWAT, else the sysctl."""
        return int(self._opt(TCP_NOTSENT_LOWAT, 0)) or self.engine.settings.tcp_notsent_lowat

    def _write_space(self) -> None:
        """Linux ``sk_stream_write_space``: wake a writer that found no room, once there is
        room again and (TCP_NOTSENT_LOWAT) the unsent bytes are below half the mark."""
        if (
            self._f & F_WANT_WRITE
            and self.writable > 0
            and 2 * self.unsent < self._notsent_lowat()
        ):
            self._f &= ~F_WANT_WRITE
            self._emit_event("writable")

    def _fin_time(self) -> float:
        """Linux ``tcp_fin_time``: FIN-WAIT-2 lifetime of an orphan (>= 3.5 RTO)."""
        lg = self._opt(TCP_LINGER2, 0)
        t = float(lg if lg and lg > 0 else self.engine.settings.tcp_fin_timeout)
        rto = self.rtt.rto
        return max(t, rto * 4 - rto / 2)

    def _seq_of(self, off: int) -> int:
        """Sequence number of receive-stream offset ``off``."""
        return (self.irs + 1 + off) & sq.MASK

    def _emit_event(self, kind: str) -> None:
        if self.on_event is not None:
            self.engine._queue_event(self, kind)

    # =================================================================================
    # State changes
    # =================================================================================
    def _set_state(self, new: TcpState) -> None:
        old = self.state
        if old == new:
            return
        mib = self.engine.mib
        if old in (TcpState.ESTABLISHED, TcpState.CLOSE_WAIT):
            mib["CurrEstab"] -= 1
        if new in (TcpState.ESTABLISHED, TcpState.CLOSE_WAIT):
            mib["CurrEstab"] += 1
        if new == TcpState.CLOSED:
            if old in (TcpState.ESTABLISHED, TcpState.CLOSE_WAIT):
                mib["EstabResets"] += 1  # RFC 1213 tcpEstabResets (as Linux tcp_set_state)
            elif old in (TcpState.SYN_SENT, TcpState.SYN_RECEIVED):
                mib["AttemptFails"] += 1  # RFC 1213 tcpAttemptFails
        if old == TcpState.SYN_RECEIVED and self.listener is not None and self._f & F_PASSIVE:
            self.listener._syn_recv -= 1
        self.state = new
        self._account()
        self.engine._state_changed(self, old, new)

    def _account(self, gone: bool = False) -> None:
        """Keep engine.orphan_count / engine.tw_count exact (flags say where we count)."""
        f = self._f
        st = self.state
        want = 0
        if not gone:
            if st == TcpState.TIME_WAIT:
                want = F_IN_TW
            elif f & F_ORPHAN and st != TcpState.CLOSED:
                want = F_IN_ORPHANS
        have = f & (F_IN_ORPHANS | F_IN_TW)
        if want == have:
            return
        eng = self.engine
        if want and not have and eng.connections.get(self.four_tuple) is not self:
            return  # not (or no longer) in the engine's table: nothing to count
        if have == F_IN_TW:
            eng.tw_count -= 1
        elif have:
            eng.orphan_count -= 1
        if want == F_IN_TW:
            eng.tw_count += 1
        elif want:
            eng.orphan_count += 1
        self._f = (f & ~(F_IN_ORPHANS | F_IN_TW)) | want

    def _release(self) -> None:
        """Drop timers and send-side state of a connection that reached CLOSED."""
        self._t_rtx = self._t_delack = self._t_keep = self._t_wait = self._t_cork = None
        self._sndbuf = None
        self._txtimes = None
        if self.cc is not None and self.ccs is not None:
            self.cc.release(self.ccs)
        if not self._f & F_CLOSED_EVT:
            self._f |= F_CLOSED_EVT
            if self.error:
                self._emit_event("readable")
                self._emit_event("writable")
            self._emit_event("closed")
        self.engine._remove(self)

    def _fail(self, err: int) -> None:
        """Tear down with an error the user will see (RFC 9293 §3.10.7: "connection reset")."""
        self.error = err
        self._set_state(TcpState.CLOSED)
        self._release()

    def _on_established(self, now: float) -> None:
        """Initialise congestion control and timers once synchronized."""
        self._compute_snd_mss()
        tp = CcState(mss=self.snd_mss)
        tp.now_us = int(now * 1e6)
        try:
            ops = cc.get(self._cc_name())
        except KeyError:
            ops = cc.get("reno")
        ops.init(tp)
        self.cc = ops
        self.ccs = tp
        self._retransmits = 0
        self._last_rcv = now
        self._last_send = now
        self._t_rtx = None
        self._f &= ~F_SEND_SYN
        self._arm_keepalive(now)

    def _enter_time_wait(self, now: float) -> None:
        eng = self.engine
        if eng.tw_count >= eng.settings.tcp_max_tw_buckets:
            # Linux tcp_time_wait: no TIME-WAIT bucket left -> just close
            # (TCPTimeWaitOverflow); the ACK of the peer's FIN still goes out first.
            eng.mib["TCPTimeWaitOverflow"] += 1
            if self._f & F_ACK_NOW:
                self._emit(eng._tx, now, ACK, self.snd_nxt)
            self._set_state(TcpState.CLOSED)
            self._release()
            return
        self._set_state(TcpState.TIME_WAIT)
        self._t_rtx = self._t_keep = self._t_cork = None
        self._t_wait = now + TCP_TIMEWAIT_LEN
        self._sndbuf = None
        self._txtimes = None
        if not self._f & F_CLOSED_EVT:
            self._f |= F_CLOSED_EVT
            self._emit_event("closed")

    def _enter_fin_wait_2(self, now: float) -> None:
        """FIN-WAIT-2; an orphan gets tcp_fin_timeout / TCP_LINGER2 (Linux tcp_fin_time)."""
        if self.state != TcpState.FIN_WAIT_2:
            self._set_state(TcpState.FIN_WAIT_2)
        self._t_rtx = None
        if self._f & F_ORPHAN:
            if self._opt(TCP_LINGER2, 0) < 0:
                # TCP_LINGER2 < 0: reset instead of waiting (Linux tcp_close/tcp_rcv_state).
                self.engine.mib["TCPAbortOnLinger"] += 1
                self._send_rst_now(self.snd_nxt, self.rcv_nxt)
                self._set_state(TcpState.CLOSED)
                self._release()
                return
            if self._t_wait is None:
                self._t_wait = now + self._fin_time()

    # =================================================================================
    # Segment arrival (RFC 9293 §3.10.7)
    # =================================================================================
    def _input(self, seg: TcpSegment, now: float) -> None:
        self.segs_in += 1
        if seg.payload:
            self.data_segs_in += 1
        st = self.state
        if st == TcpState.SYN_SENT:
            self._input_syn_sent(seg, now)
        elif st in (TcpState.CLOSED, TcpState.LISTEN):
            return
        else:
            self._input_other(seg, now)
        if self.state != TcpState.CLOSED:
            self.engine._touch(self)

    def _input_syn_sent(self, seg: TcpSegment, now: float) -> None:
        """RFC 9293 §3.10.7.3 SYN-SENT STATE."""
        f = seg.flags
        ack_ok = False
        if f & ACK:
            # First: if SEG.ACK =< ISS or SEG.ACK > SND.NXT, send a reset (unless RST).
            if sq.le(seg.ack, self.iss) or sq.gt(seg.ack, self.snd_nxt):
                if not f & RST:
                    self.engine._send_rst(self.four_tuple, seg.ack, 0, RST)
                return
            ack_ok = True
        if f & RST:
            # Second: RST acceptable only with an acceptable ACK (RFC 5961 §3.2 for SYN-SENT).
            if ack_ok:
                self._fail(errno.ECONNREFUSED)
            return
        if not f & SYN:
            return
        # Fourth: the SYN.
        self.irs = seg.seq
        self.rcv_nxt = sq.add(seg.seq, 1)
        self._negotiate(seg, passive=False)
        self._last_rcv = now
        if self._f & F_TS and seg.options.timestamp is not None:
            self.ts_recent = seg.options.timestamp[0]
            self.ts_recent_age = now
        if ack_ok:
            self.snd_una = seg.ack
            self.bytes_acked += 1
            self._handshake_rtt(seg, now)
            # SYN windows are never scaled (RFC 7323 §2.2).
            self.snd_wnd = seg.window
            self.max_window = seg.window
            self.snd_wl1 = seg.seq
            self.snd_wl2 = seg.ack
            self.rcv_wup = self.rcv_nxt
            self._set_state(TcpState.ESTABLISHED)
            self._on_established(now)
            self._f |= F_ACK_NOW
            self._emit_event("connected")
            self._emit_event("writable")
            # Data or FIN carried by the SYN-ACK (rare): RFC 9293 step 6 onwards.
            if seg.payload or f & FIN:
                self._process_text(seg, now, sq.add(seg.seq, 1))
            if self._f & F_WR_SHUT:
                self._set_state(TcpState.FIN_WAIT_1)
        else:
            # Simultaneous open (RFC 9293 §3.10.7.3, Figure 7): SYN-RECEIVED, send SYN,ACK.
            self.snd_wnd = seg.window
            self.max_window = seg.window
            self.snd_wl1 = seg.seq
            self.snd_wl2 = self.snd_una
            self._set_state(TcpState.SYN_RECEIVED)
            self._f |= F_SEND_SYN
            self._rcv_mss = min(self._advmss(), TCP_MSS_DEFAULT)

    def _negotiate(self, seg: TcpSegment, passive: bool) -> None:
        """Options of the peer's SYN (RFC 9293 §3.7.1, RFC 7323 §2.2/§3.2, RFC 2018 §2)."""
        o = seg.options
        s = self.engine.settings
        self._peer_mss = o.mss if o.mss else TCP_MSS_DEFAULT
        if passive:
            offer_ws = bool(s.tcp_window_scaling)
            offer_sack = bool(s.tcp_sack)
            offer_ts = bool(s.tcp_timestamps)
        else:
            offer_ws = bool(self._f & F_WSCALE)
            offer_sack = bool(self._f & F_SACK)
            offer_ts = bool(self._f & F_TS)
        self._f &= ~(F_WSCALE | F_SACK | F_TS)
        if offer_ws and o.wscale is not None:
            self._f |= F_WSCALE
            self.snd_wscale = min(o.wscale, TCP_MAX_WSCALE)
        else:
            self.snd_wscale = 0
        if offer_sack and o.sack_permitted:
            self._f |= F_SACK
        if offer_ts and o.timestamp is not None:
            self._f |= F_TS
        if not self._f & F_WSCALE:
            # Window scaling only if both SYNs carry it (RFC 7323 §2.2).
            self.rcv_wscale = 0
            self._wnd_clamp = min(self._wnd_clamp, 65535) if self._wnd_clamp else 65535
            self.rcv_wnd = min(self.rcv_wnd, 65535)
            self._rcv_ssthresh = min(self._rcv_ssthresh, 65535)
        self._compute_snd_mss()

    def _handshake_rtt(self, seg: TcpSegment, now: float) -> None:
        """RTT sample from the SYN exchange unless it was retransmitted (Karn, RFC 6298 §3)."""
        if self._f & F_SYN_RETRANS:
            ts = seg.options.timestamp
            if self._f & F_TS and ts is not None and ts[1]:
                self._rtt_sample((self._tsval(now) - ts[1]) & sq.MASK, now, ts_units=True)
            return
        q = self._txtimes
        if q:
            self._rtt_sample(now - q[0][1], now)
        self._txtimes = None

    def _rtt_sample(self, value: float, now: float, ts_units: bool = False) -> None:
        rtt = value / 1000.0 if ts_units else value
        if rtt < 0 or rtt > TCP_RTO_MAX * 2:
            return
        self.rtt.sample(rtt)
        tp = self.ccs
        if tp is not None:
            us = int(rtt * 1e6)
            tp.srtt_us = int((self.rtt.srtt or rtt) * 1e6)
            if tp.min_rtt_us == 0 or us < tp.min_rtt_us:
                tp.min_rtt_us = max(us, 1)

    def _acceptable(self, seg: TcpSegment) -> bool:
        """RFC 9293 §3.10.7.4 first check: the four cases of the acceptability test."""
        seg_len = seg.seg_len
        wnd = self._rcv_window_now()
        rn = self.rcv_nxt
        s = seg.seq
        if seg_len == 0:
            if wnd == 0:
                return s == rn
            return sq.in_window(s, rn, wnd)
        if wnd == 0:
            return False
        return sq.in_window(s, rn, wnd) or sq.in_window(sq.add(s, seg_len - 1), rn, wnd)

    def _input_other(self, seg: TcpSegment, now: float) -> None:
        """RFC 9293 §3.10.7.4: SYN-RECEIVED and the synchronized states."""
        f = seg.flags
        st = self.state
        eng = self.engine
        ts = seg.options.timestamp if self._f & F_TS else None
        # RFC 7323 §5.3 R1: PAWS -- reject a segment with an older TSval than TS.Recent.
        if (
            ts is not None
            and not f & RST
            and self.ts_recent_age is not None
            and sq.lt(ts[0], self.ts_recent)
        ):
            if now - self.ts_recent_age <= PAWS_IDLE:
                eng.mib["PAWSEstabRejected"] += 1
                self._oow_ack(seg, now)
                return
            self.ts_recent_age = None  # RFC 7323 §5.5: TS.Recent too old to be trusted
        if st == TcpState.SYN_RECEIVED and f & SYN and not f & RST:
            if self._f & F_PASSIVE and not f & ACK and seg.seq == self.irs:
                # Retransmitted SYN: resend the SYN-ACK (Linux tcp_check_req).
                self._f |= F_SEND_SYN
                return
            if (
                not self._f & F_PASSIVE
                and f & ACK
                and not seg.payload
                and sq.add(seg.seq, 1) == self.rcv_nxt
                and seg.ack == self.snd_nxt
            ):
                # Simultaneous open: the peer's SYN-ACK completes the handshake (Linux
                # tcp_validate_incoming lets it pass the SYN check).
                seg = replace(seg, flags=f & ~SYN, seq=self.rcv_nxt)
                f = seg.flags
        # First: sequence number acceptability.
        if not self._acceptable(seg):
            if f & RST:
                return
            if f & SYN and st != TcpState.TIME_WAIT:
                self._syn_in_window(seg, now)
                return
            end = sq.add(seg.seq, seg.seg_len)
            if st == TcpState.TIME_WAIT and f & FIN and end == self.rcv_nxt:
                # Retransmitted FIN: ACK it and restart the 2 MSL timer (§3.10.7.4 eighth).
                self._t_wait = now + TCP_TIMEWAIT_LEN
                self._f |= F_ACK_NOW
                return
            if seg.payload and sq.le(sq.add(seg.seq, len(seg.payload)), self.rcv_nxt):
                end = sq.add(seg.seq, len(seg.payload))
                if ts is not None and sq.ge(end, self.rcv_wup) and sq.ge(ts[0], self.ts_recent):
                    # A retransmission of the last data we ACKed: echo its TSval so the
                    # sender's RTT sample is not inflated (Linux accepts such a segment,
                    # tcp_sequence's end_seq >= rcv_wup, and updates TS.Recent).
                    self.ts_recent = ts[0]
                    self.ts_recent_age = now
                self._set_dsack(seg.seq, end)
                self._f |= F_ACK_NOW  # data segments are not rate limited
                eng.mib["DelayedACKLost"] += 1
                return
            self._oow_ack(seg, now)
            return
        # Second: RST (RFC 5961 §3.2).
        if f & RST:
            if seg.seq == self.rcv_nxt:
                self._on_reset(now)
            else:
                self._challenge_ack(now)
            return
        # Fourth: SYN in a synchronized state (RFC 5961 §4.2).
        if f & SYN:
            self._syn_in_window(seg, now)
            return
        # Fifth: ACK.
        if not f & ACK:
            return
        self._last_rcv = now
        self._probes = 0
        if st == TcpState.SYN_RECEIVED:
            if sq.lt(self.snd_una, seg.ack) and sq.le(seg.ack, self.snd_nxt):
                if not self._syn_received_acked(seg, now):
                    return
            else:
                eng._send_rst(self.four_tuple, seg.ack, 0, RST)
                return
        # RFC 7323 §4.3 (2): remember TSval if the segment covers Last.ACK.sent.
        if ts is not None and sq.le(seg.seq, self.rcv_wup) and sq.ge(ts[0], self.ts_recent):
            self.ts_recent = ts[0]
            self.ts_recent_age = now
        if not self._process_ack(seg, now):
            return
        st = self.state
        if st == TcpState.FIN_WAIT_1 and self._fin_acked():
            self._enter_fin_wait_2(now)
            if self.state == TcpState.CLOSED:
                return
        elif st == TcpState.CLOSING and self._fin_acked():
            self._enter_time_wait(now)
            return
        elif st == TcpState.LAST_ACK and self._fin_acked():
            self._set_state(TcpState.CLOSED)
            self._release()
            return
        elif st == TcpState.TIME_WAIT:
            if f & FIN:
                self._t_wait = now + TCP_TIMEWAIT_LEN
            if f & FIN or seg.payload:
                self._f |= F_ACK_NOW  # Linux tcp_timewait_state_process: TCP_TW_ACK
            return
        # Sixth to eighth: URG, segment text, FIN.
        self._process_text(seg, now, seg.seq)

    def _fin_acked(self) -> bool:
        return bool(self._f & F_FIN_SENT) and self.snd_una == sq.add(self._write_seq, 1)

    def _oow_ack(self, seg: TcpSegment, now: float) -> None:
        """ACK an unacceptable segment, rate limited like Linux ``tcp_oow_rate_limited``."""
        if not seg.payload or seg.flags & SYN:
            limit = self.engine.settings.tcp_invalid_ratelimit / 1000.0
            if now - self._last_oow < limit:
                self.engine.mib["TCPACKSkippedSeq"] += 1
                return
            self._last_oow = now
        self._f |= F_ACK_NOW

    def _challenge_ack(self, now: float) -> None:
        """RFC 5961 §3.2/§4.2/§5.2 challenge ACK, rate limited (§7, Linux)."""
        limit = self.engine.settings.tcp_invalid_ratelimit / 1000.0
        if now - self._last_oow < limit:
            self.engine.mib["TCPACKSkippedChallenge"] += 1
            return
        if not self.engine._challenge_ack_allowed(now):
            return
        self._last_oow = now
        self.engine.mib["TCPChallengeACK"] += 1
        self._f |= F_ACK_NOW

    def _syn_in_window(self, seg: TcpSegment, now: float) -> None:
        st = self.state
        if st == TcpState.SYN_RECEIVED and self._f & F_PASSIVE:
            # Linux tcp_check_req "embryonic reset": a new SYN kills the request.
            self.engine._send_rst(self.four_tuple, seg.ack if seg.flags & ACK else 0,
                                  sq.add(seg.seq, seg.seg_len),
                                  RST if seg.flags & ACK else RST | ACK)
            self._set_state(TcpState.CLOSED)
            self._release()
            return
        self.engine.mib["TCPSYNChallenge"] += 1
        self.engine.mib["InErrs"] += 1
        self._challenge_ack(now)

    def _on_reset(self, now: float) -> None:
        """RFC 9293 §3.10.7.4 second check, per state (errors as Linux ``tcp_reset``)."""
        st = self.state
        if st == TcpState.SYN_RECEIVED:
            if self._f & F_PASSIVE:
                # Passive open: "return this connection to the LISTEN state".
                self.engine.mib["EmbryonicRsts"] += 1
                self._set_state(TcpState.CLOSED)
                self._release()
            else:
                self._fail(errno.ECONNREFUSED)
        elif st == TcpState.TIME_WAIT:
            # RFC 1337 hazard: Linux closes unless tcp_rfc1337 is set.
            if not self.engine.settings.tcp_rfc1337:
                self._set_state(TcpState.CLOSED)
                self._release()
        elif st == TcpState.CLOSE_WAIT:
            self._fail(errno.EPIPE)
        elif st in (TcpState.CLOSING, TcpState.LAST_ACK):
            self._set_state(TcpState.CLOSED)
            self._release()
        else:
            self._fail(errno.ECONNRESET)

    def _syn_received_acked(self, seg: TcpSegment, now: float) -> bool:
        """SYN-RECEIVED and our SYN is acknowledged: enter ESTABLISHED (RFC 9293 §3.10.7.4)."""
        eng = self.engine
        lst = self.listener
        if self._f & F_PASSIVE and lst is not None:
            defer = int(lst._opt(TCP_DEFER_ACCEPT, 0))
            if (
                defer
                and not seg.payload
                and not seg.flags & FIN
                and self._retransmits < defer
            ):
                # TCP_DEFER_ACCEPT: wait for data; the bare ACK is dropped (Linux).
                self._f |= F_DEFER_ACKED
                eng.mib["TCPDeferAcceptDrop"] += 1
                return False
            if lst.closed:
                eng._send_rst(self.four_tuple, seg.ack, 0, RST)
                self._set_state(TcpState.CLOSED)
                self._release()
                return False
            if len(lst._accept_q) > lst.backlog:
                eng.mib["ListenOverflows"] += 1
                eng.mib["ListenDrops"] += 1
                if eng.settings.tcp_abort_on_overflow:
                    eng._send_rst(self.four_tuple, seg.ack, 0, RST)
                    self._set_state(TcpState.CLOSED)
                    self._release()
                else:
                    self._f |= F_DEFER_ACKED
                return False
            eng.mib["PassiveOpens"] += 1
        self.snd_una = seg.ack
        self.bytes_acked += 1
        self._handshake_rtt(seg, now)
        self.snd_wnd = seg.window << self.snd_wscale
        self.max_window = max(self.max_window, self.snd_wnd)
        self.snd_wl1 = seg.seq
        self.snd_wl2 = seg.ack
        self._set_state(TcpState.ESTABLISHED)
        self._on_established(now)
        if self._f & F_PASSIVE and lst is not None:
            lst._accept_q.append(self)
            lst._emit_accept()
        else:
            self._emit_event("connected")
            self._emit_event("writable")
            if self._f & F_WR_SHUT:
                self._set_state(TcpState.FIN_WAIT_1)
        return True

    # ---------------------------------------------------------------------------------
    # ACK processing (RFC 9293 §3.10.7.4 fifth check, RFC 5681, RFC 6582, RFC 6298)
    # ---------------------------------------------------------------------------------
    def _process_ack(self, seg: TcpSegment, now: float) -> bool:
        ack = seg.ack
        eng = self.engine
        if sq.gt(ack, self.snd_nxt):
            # ACK of something not yet sent: send an ACK, drop the segment.
            eng.mib["TCPAckUnsentData"] += 1
            self._oow_ack(seg, now)
            return False
        if sq.lt(ack, sq.sub(self.snd_una, self.max_window) & sq.MASK):
            # RFC 5961 §5.2: too old to be a plausible duplicate -> challenge ACK.
            self._challenge_ack(now)
            return False
        tp = self.ccs
        wnd = seg.window << self.snd_wscale
        if sq.gt(ack, self.snd_una):
            self._new_ack(seg, ack, now)
        elif (
            ack == self.snd_una
            and self.snd_una != self.snd_nxt
            and not seg.payload
            and not seg.flags & (SYN | FIN)
            and wnd == self.snd_wnd
            and tp is not None
        ):
            self._dup_ack(now)
        # Window update (RFC 9293 §3.10.7.4: SND.WL1 < SEG.SEQ or (= and SND.WL2 =< SEG.ACK)).
        if sq.le(self.snd_una, ack) and (
            sq.lt(self.snd_wl1, seg.seq) or (self.snd_wl1 == seg.seq and sq.le(self.snd_wl2, ack))
        ):
            opened = self.snd_wnd == 0 and wnd > 0
            self.snd_wnd = wnd
            self.snd_wl1 = seg.seq
            self.snd_wl2 = ack
            if wnd > self.max_window:
                self.max_window = wnd
            if opened:
                self._probe_backoff = 0
                self._probes_stamp = 0.0
        return True

    def _new_ack(self, seg: TcpSegment, ack: int, now: float) -> None:
        acked = sq.sub(ack, self.snd_una)
        sb = self._sndbuf
        buffered = len(sb) if sb is not None else 0
        sb_seq = sq.sub(self._write_seq, buffered) & sq.MASK
        data_acked = 0
        if sq.gt(ack, sb_seq):
            data_acked = min(sq.sub(ack, sb_seq), buffered)
            if sb is not None:
                sb.ack(data_acked)
        self.bytes_acked += acked
        self.snd_una = ack
        self._dupacks = 0
        self._retransmits = 0
        self._probe_backoff = 0
        mss = self._eff_mss()
        pkts = max(1, (acked + mss - 1) // mss)
        # RTT: oldest newly acked never-retransmitted segment (Linux seq_rtt), else TSecr.
        q = self._txtimes
        sample: float | None = None
        if q:
            first: float | None = None
            while q and sq.le(q[0][0], ack):
                _, t = q.popleft()
                if first is None:
                    first = t
            if first is not None:
                sample = now - first
            if not q:
                self._txtimes = None  # an idle connection keeps no deque
        if sample is not None:
            self._rtt_sample(sample, now)
        else:
            ts = seg.options.timestamp
            if self._f & F_TS and ts is not None and ts[1]:
                sample = ((self._tsval(now) - ts[1]) & sq.MASK) / 1000.0
                self._rtt_sample(sample, now)
        if self._snd_up is not None and sq.ge(ack, self._snd_up):
            self._snd_up = None
        if self._rtx_nxt is not None and sq.le(self._rtx_nxt, ack):
            self._rtx_nxt = None if ack == self.snd_nxt else ack
        # Congestion control.
        tp = self.ccs
        ops = self.cc
        if tp is not None and ops is not None:
            tp.now_us = int(now * 1e6)
            tp.delivered += pkts
            tp.packets_out = self._packets_out()
            ops.pkts_acked(tp, AckSample(pkts, int(sample * 1e6) if sample else -1,
                                         tp.packets_out))
            state = tp.ca_state
            if state == CaState.RECOVERY:
                rec = self._recover
                if rec is None or sq.ge(ack, rec):
                    # RFC 6582 §3.2 step 3, full acknowledgment: deflate to ssthresh.
                    tp.snd_cwnd = max(min(tp.snd_ssthresh, tp.packets_out + 1), 1)
                    self._set_ca_state(CaState.OPEN)
                    ops.cwnd_event(tp, CaEvent.COMPLETE_CWR)
                else:
                    # Step 4, partial acknowledgment: retransmit the next hole, deflate.
                    self._f |= F_RTX_ONE
                    self._drop_txtimes_upto(sq.add(ack, mss))
                    tp.snd_cwnd = max(tp.snd_cwnd - pkts + 1, 1)
            else:
                if state == CaState.LOSS and sq.ge(ack, self._high_seq):
                    self._set_ca_state(CaState.OPEN)
                ops.cong_avoid(tp, ack, pkts)
        # RFC 6298 §5.2/§5.3: restart the timer when new data is acknowledged.
        if self.snd_una == self.snd_nxt:
            self._t_rtx = None
            self._f &= ~F_PERSIST
        else:
            self._t_rtx = now + self._rto_clamped(now)
        self._retrans_stamp = None
        if data_acked:
            self._write_space()
            if sb is not None and not len(sb):
                self._emit_event("drained")  # everything written has been acknowledged

    def _drop_txtimes_upto(self, end: int) -> None:
        q = self._txtimes
        while q and sq.le(q[0][0], end):
            q.popleft()
        if not q:
            self._txtimes = None

    def _dup_ack(self, now: float) -> None:
        """Duplicate ACK (RFC 5681 §2): fast retransmit on the third (RFC 6582 NewReno)."""
        tp = self.ccs
        ops = self.cc
        assert tp is not None and ops is not None
        state = tp.ca_state
        if state == CaState.RECOVERY:
            tp.snd_cwnd += 1  # RFC 5681 §3.2 step 4: inflate for each further dup ACK
            return
        if state == CaState.LOSS:
            return
        self._dupacks += 1
        if self._dupacks == 1 and state == CaState.OPEN:
            self._set_ca_state(CaState.DISORDER)
        if self._dupacks < self.engine.settings.tcp_reordering:
            return
        # RFC 6582 §3.2 step 2: only if the ACK covers more than "recover".
        if self._recover is not None and sq.le(self.snd_una, self._recover):
            return
        tp.now_us = int(now * 1e6)
        tp.prior_cwnd = tp.snd_cwnd
        tp.prior_ssthresh = tp.snd_ssthresh
        tp.snd_ssthresh = ops.ssthresh(tp)
        self._set_ca_state(CaState.RECOVERY)
        tp.snd_cwnd = tp.snd_ssthresh + 3
        self._recover = self.snd_nxt
        self._f |= F_RTX_ONE
        self._drop_txtimes_upto(sq.add(self.snd_una, self._eff_mss()))
        self.engine.mib["TCPRenoRecovery"] += 1

    def _set_ca_state(self, new: CaState) -> None:
        tp = self.ccs
        ops = self.cc
        if tp is None or ops is None or tp.ca_state == new:
            return
        ops.set_state(tp, new)
        tp.ca_state = new

    # ---------------------------------------------------------------------------------
    # URG, segment text and FIN (RFC 9293 §3.10.7.4 sixth to eighth)
    # ---------------------------------------------------------------------------------
    def _process_text(self, seg: TcpSegment, now: float, seq: int) -> None:
        st = self.state
        f = seg.flags
        payload = seg.payload
        fin = bool(f & FIN)
        if f & SYN:
            seq = sq.add(seq, 1)
        if st not in (TcpState.ESTABLISHED, TcpState.FIN_WAIT_1, TcpState.FIN_WAIT_2):
            # CLOSE-WAIT, CLOSING, LAST-ACK: the peer already sent FIN; ignore text.
            if fin and self._f & F_RD_EOF:
                self._f |= F_ACK_NOW
            return
        if self._f & F_RD_EOF:
            # Data after the FIN was received cannot be new.
            if payload or fin:
                self._f |= F_ACK_NOW
            return
        # Trim what lies before RCV.NXT (already received: D-SACK it, RFC 2883).
        d = sq.sub(self.rcv_nxt, seq)
        if d > 0:
            n = len(payload)
            if n:
                self._set_dsack(seq, sq.add(seq, min(d, n)))
            if d > n:
                fin = False
                payload = b""
            else:
                payload = memoryview(payload)[d:] if d else payload
            seq = self.rcv_nxt
        # Trim what lies beyond the window.
        room = self._rcv_window_now() - sq.sub(seq, self.rcv_nxt)
        if len(payload) > room:
            payload = memoryview(payload)[: max(0, room)]
            fin = False
            self._f |= F_ACK_NOW  # part of it fell outside the window: tell the peer
        if f & URG and seg.urgent:
            self._check_urg(seg, now)
        if payload:
            if self._f & F_ORPHAN:
                # Linux: data for a closed socket -> RST (TCPAbortOnData).
                self.engine.mib["TCPAbortOnData"] += 1
                self._send_rst_now(self.snd_nxt, self.rcv_nxt)
                self._set_state(TcpState.CLOSED)
                self._release()
                return
            self._data(seq, payload, now, bool(f & PSH))
        if fin:
            fin_seq = sq.add(seq, len(payload))
            if fin_seq == self.rcv_nxt:
                self._fin_received(now)
            else:
                self._fin_seq = fin_seq
                self._f |= F_ACK_NOW
        elif self._fin_seq is not None and self._fin_seq == self.rcv_nxt:
            self._fin_received(now)

    def _data(self, seq: int, payload: bytes | memoryview, now: float, psh: bool) -> None:
        rb = self._rcvbuf
        if rb is None:
            rb = self._rcvbuf = RecvBuffer()
        data = bytes(payload)
        n = len(data)
        off = rb.rcv_off + sq.sub(seq, self.rcv_nxt)
        had_ooo = bool(rb.ooo)
        newly, dup = rb.insert(off, data)
        if dup is not None:
            self._set_dsack(self._seq_of(dup[0]), self._seq_of(dup[1]))
        # RFC 9293 §3.10.7.4 seventh: advance RCV.NXT over the in-order data.
        self._event_data_recv(now, n)
        if newly:
            self.rcv_nxt = sq.add(self.rcv_nxt, newly)
            self.bytes_received += newly
            if n * 2 >= self._rcv_mss:
                self._grow_window()
            self._urg_capture()
            self._emit_event("readable")
            if self._fin_seq is not None and self._fin_seq == self.rcv_nxt:
                self._fin_received(now)
                return
            if had_ooo and not rb.ooo:
                self._f |= F_ACK_NOW  # RFC 5681 §4.2: a filled gap is ACKed at once
                return
            self._ack_snd_check(now)
        else:
            # Out of order (or duplicate): ACK immediately with SACK (RFC 5681 §4.2).
            self.engine.mib["TCPOFOQueue"] += 1
            self._f |= F_ACK_NOW
            self._quick = max(self._quick, 1)

    def _event_data_recv(self, now: float, n: int) -> None:
        """Linux ``tcp_event_data_recv``/``tcp_measure_rcv_mss``: ATO and rcv_mss estimate."""
        if n >= self._rcv_mss:
            self._rcv_mss = min(n, self._advmss())
        if not self._ato:
            self._incr_quickack()
            self._ato = TCP_ATO_MIN
        else:
            m = now - self._lrcvtime
            if m <= TCP_ATO_MIN / 2:
                self._ato = self._ato / 2 + TCP_ATO_MIN / 2
            elif m < self._ato:
                self._ato = min(self._ato / 2 + m, self.rtt.rto)
        self._lrcvtime = now

    def _incr_quickack(self) -> None:
        q = self.rcv_wnd // (2 * max(self._rcv_mss, 1))
        q = min(max(q, 2), TCP_MAX_QUICKACKS)
        if q > self._quick:
            self._quick = q

    def _grow_window(self) -> None:
        """Simplified Linux ``tcp_grow_window``: open rcv_ssthresh by 2*rcv_mss per segment."""
        full = self._full_space()
        if self._rcv_ssthresh < full:
            self._rcv_ssthresh = min(self._rcv_ssthresh + 2 * self._rcv_mss, full)

    def _ack_snd_check(self, now: float) -> None:
        """Linux ``__tcp_ack_snd_check``: ACK now or delay (RFC 1122 §4.2.3.2, RFC 5681 §4.2)."""
        # "More than one full frame received and the right edge of the window does not
        # retreat" (Linux compares window sizes; with payload-only buffer accounting the
        # right edge is the equivalent test).
        if (
            sq.sub(self.rcv_nxt, self.rcv_wup) > self._rcv_mss
            and self._raw_window() >= self._rcv_window_now()
        ) or (self._quick and not self._f & F_PINGPONG):
            self._f |= F_ACK_NOW
            return
        if self._t_delack is None:
            ato = self._ato or TCP_ATO_MIN
            if ato > TCP_ATO_MIN:
                max_ato = TCP_DELACK_MAX
                if self.rtt.srtt:
                    max_ato = min(max_ato, max(self.rtt.srtt, TCP_ATO_MIN))
                ato = min(ato, max_ato)
            self._t_delack = now + ato

    def _set_dsack(self, start: int, end: int) -> None:
        if self._f & F_SACK and self.engine.settings.tcp_dsack and self._dsack is None:
            self._dsack = (start, end)
            self.engine.mib["TCPDSACKOldSent"] += 1

    def _fin_received(self, now: float) -> None:
        """RFC 9293 §3.10.7.4 eighth: the FIN, in order."""
        self._fin_seq = None
        self.rcv_nxt = sq.add(self.rcv_nxt, 1)
        self._f |= F_RD_EOF | F_ACK_NOW
        self._t_delack = None
        self._emit_event("readable")
        st = self.state
        if st in (TcpState.SYN_RECEIVED, TcpState.ESTABLISHED):
            self._set_state(TcpState.CLOSE_WAIT)
        elif st == TcpState.FIN_WAIT_1:
            if self._fin_acked():
                self._enter_time_wait(now)
            else:
                self._set_state(TcpState.CLOSING)  # simultaneous close
        elif st == TcpState.FIN_WAIT_2:
            self._enter_time_wait(now)
        elif st == TcpState.TIME_WAIT:
            self._t_wait = now + TCP_TIMEWAIT_LEN

    def _check_urg(self, seg: TcpSegment, now: float) -> None:
        """Linux ``tcp_check_urg``: a new urgent pointer (BSD semantics unless tcp_stdurg)."""
        ptr = seg.urgent
        if ptr and not self.engine.settings.tcp_stdurg:
            ptr -= 1
        useq = sq.add(seg.seq, ptr)
        rb = self._rcvbuf
        read_off = rb.read_off if rb is not None else 0
        base = rb.rcv_off if rb is not None else 0
        off = base + sq.sub(useq, self.rcv_nxt)
        if off < read_off:
            return  # already read
        if sq.lt(useq, self.rcv_nxt):
            return  # do not replay
        if self._urg_state in (URG_NOTYET, URG_VALID) and off <= self._urg_off:
            return
        if (
            rb is not None
            and self._urg_state != URG_NONE
            and self._urg_off == read_off
            and not self._f & F_OOBINLINE
            and rb.ready_len
            and self._urg_state != URG_READ
        ):
            rb.discard(1)  # the old urgent byte at the read position is skipped
        self._urg_state = URG_NOTYET
        self._urg_off = off
        self._emit_event("urgent")

    def _urg_capture(self) -> None:
        if self._urg_state == URG_NOTYET:
            rb = self._rcvbuf
            if rb is not None and self._urg_off < rb.rcv_off:
                b = rb.peek_byte(self._urg_off)
                if b is not None:
                    self._urg_byte = b
                    self._urg_state = URG_VALID

    def _after_read(self) -> None:
        """Linux ``tcp_cleanup_rbuf``: send a window update if reading opened the window."""
        if self._f & F_RD_EOF or self.state not in _SYNC_NOT_TW:
            return
        if self._t_delack is not None and sq.sub(self.rcv_nxt, self.rcv_wup) > self._rcv_mss:
            # The once-per-two-segments ACK was held back (window would not advance).
            self._f |= F_ACK_NOW
            self.engine._touch(self)
            return
        now_win = self._rcv_window_now()
        if 2 * now_win <= self._wnd_clamp:
            new = self._raw_window()
            if new and new >= 2 * now_win:
                self._f |= F_ACK_NOW
                self.engine._touch(self)

    # =================================================================================
    # Output
    # =================================================================================
    def _output(self, now: float, out: list[TcpSegment]) -> None:
        st = self.state
        f = self._f
        if st == TcpState.SYN_SENT:
            if f & F_SEND_SYN:
                self._send_syn(now, out, SYN)
            return
        if st == TcpState.SYN_RECEIVED:
            if f & F_SEND_SYN:
                self._send_syn(now, out, SYN | ACK)
            elif f & F_ACK_NOW:
                self._emit(out, now, ACK, self.snd_nxt)
            return
        if st in (TcpState.CLOSED, TcpState.LISTEN):
            return
        sent = 0
        if st != TcpState.TIME_WAIT and st != TcpState.CLOSE_WAIT or self._sndbuf is not None:
            if st != TcpState.TIME_WAIT:
                sent = self._output_data(now, out)
                if sent and self._f & F_WANT_WRITE:
                    self._write_space()  # sending lowered the unsent bytes (notsent_lowat)
        if not sent and self._f & F_ACK_NOW:
            self._emit(out, now, ACK, self.snd_nxt)
        self._f &= ~F_PUSH_ONCE
        if st != TcpState.TIME_WAIT and self.state != TcpState.CLOSED:
            self._arm_rtx_after_output(now)

    def _send_syn(self, now: float, out: list[TcpSegment], flags: int) -> None:
        self._f &= ~F_SEND_SYN
        retrans = self.snd_nxt != self.iss
        if retrans:
            self._f |= F_SYN_RETRANS
            self.engine.mib["RetransSegs"] += 1
            self.total_retrans += 1
            self._txtimes = None
        else:
            self._txtimes = deque([(sq.add(self.iss, 1), now)])
        self.snd_nxt = sq.add(self.iss, 1)
        self._emit(out, now, flags, self.iss)
        if self._t_rtx is None:
            self._t_rtx = now + self.rtt.rto

    def _output_data(self, now: float, out: list[TcpSegment]) -> int:
        """Retransmissions, then new data under Nagle/cork, windows and cwnd, then FIN."""
        sent = 0
        tp = self.ccs
        cwnd = tp.snd_cwnd if tp is not None else TCP_INIT_CWND
        mss = self._eff_mss()
        if self._f & F_RTX_ONE:
            self._f &= ~F_RTX_ONE
            if self.snd_una != self.snd_nxt:
                self._xmit(now, out, self.snd_una, mss, retrans=True)
                sent += 1
        if self._rtx_nxt is not None:
            p = self._rtx_nxt
            if sq.lt(p, self.snd_una):
                p = self.snd_una
            while sq.lt(p, self.snd_nxt) and self._inflight(p, mss) < cwnd:
                p = sq.add(p, self._xmit(now, out, p, mss, retrans=True))
                sent += 1
            self._rtx_nxt = p if sq.lt(p, self.snd_nxt) else None
        if self._rtx_nxt is not None:
            if tp is not None:
                tp.is_cwnd_limited = True
            return sent
        # New data.
        wr = self._write_seq
        f = self._f
        cwnd_limited = False
        idle = self.snd_una == self.snd_nxt
        while True:
            unsent = sq.sub(wr, self.snd_nxt)
            if unsent <= 0:
                break
            size = min(mss, unsent)
            if sq.gt(sq.add(self.snd_nxt, size), sq.add(self.snd_una, self.snd_wnd)):
                break  # sender SWS avoidance: whole segments only (RFC 1122 §4.2.3.4)
            if self._inflight(self.snd_nxt, mss) >= cwnd:
                cwnd_limited = True
                break
            if size < mss and not f & F_PUSH_ONCE and self._snd_up is None:
                last_with_fin = bool(f & F_WR_SHUT) and size == unsent
                if not last_with_fin:
                    if f & F_CORK:
                        if self._t_cork is None:
                            self._t_cork = now + CORK_CEILING
                        break
                    if (
                        not f & F_NODELAY
                        and self.snd_una != self.snd_nxt
                        and sq.gt(self._snd_sml, self.snd_una)
                        and sq.le(self._snd_sml, self.snd_nxt)
                    ):
                        break  # Nagle (RFC 896, Minshall's variant as Linux)
            if idle and tp is not None:
                self._restart_after_idle(now)
                idle = False
            self._xmit(now, out, self.snd_nxt, mss, retrans=False)
            sent += 1
        if tp is not None:
            tp.is_cwnd_limited = cwnd_limited or (
                tp.snd_cwnd < tp.snd_ssthresh and self._packets_out() * 2 >= tp.snd_cwnd
            )
        # A FIN on its own (no data left to carry it).
        if (
            f & F_WR_SHUT
            and not self._f & F_FIN_SENT
            and self.snd_nxt == wr
            and self.state in (TcpState.FIN_WAIT_1, TcpState.LAST_ACK, TcpState.CLOSING)
        ):
            self._xmit(now, out, self.snd_nxt, mss, retrans=False)
            sent += 1
        if self._t_cork is not None and sq.sub(wr, self.snd_nxt) <= 0:
            self._t_cork = None
        return sent

    def _inflight(self, upto: int, mss: int) -> int:
        n = sq.sub(upto, self.snd_una)
        return (n + mss - 1) // mss if n > 0 else 0

    def _restart_after_idle(self, now: float) -> None:
        """RFC 2861 / Linux ``tcp_cwnd_restart`` and CA_EVENT_TX_START."""
        tp = self.ccs
        ops = self.cc
        if tp is None or ops is None:
            return
        tp.now_us = int(now * 1e6)
        idle = now - self._last_send
        rto = self.rtt.rto
        if self.engine.settings.tcp_slow_start_after_idle and idle > rto and self.bytes_acked:
            restart = min(TCP_INIT_CWND, tp.snd_cwnd)
            cwnd = tp.snd_cwnd
            n = int(idle / rto)
            while n > 0 and cwnd > restart:
                cwnd >>= 1
                n -= 1
            tp.snd_ssthresh = max(tp.snd_ssthresh, (tp.snd_cwnd >> 1) + (tp.snd_cwnd >> 2))
            tp.snd_cwnd = max(cwnd, restart)
            ops.cwnd_event(tp, CaEvent.CWND_RESTART)
        ops.cwnd_event(tp, CaEvent.TX_START)

    def _xmit(self, now: float, out: list[TcpSegment], seq: int, mss: int, retrans: bool) -> int:
        """Send the segment starting at ``seq``; returns the sequence space it covers."""
        wr = self._write_seq
        avail = sq.sub(wr, seq)
        size = min(mss, avail) if avail > 0 else 0
        sb = self._sndbuf
        payload: bytes | memoryview = b""
        if size:
            assert sb is not None
            sb_seq = sq.sub(wr, len(sb)) & sq.MASK
            payload = sb.view(sq.sub(seq, sb_seq), size)
            size = len(payload)
        end = sq.add(seq, size)
        flags = ACK
        if size and end == wr:
            flags |= PSH
        if self._f & F_WR_SHUT and end == wr and self.state in (
            TcpState.FIN_WAIT_1,
            TcpState.LAST_ACK,
            TcpState.CLOSING,
        ):
            flags |= FIN
        self._emit(out, now, flags, seq, payload)
        span = size + (1 if flags & FIN else 0)
        if size:
            self.data_segs_out += 1
            if size < mss:
                self._snd_sml = end
        if retrans:
            self.engine.mib["RetransSegs"] += 1
            self.total_retrans += 1
            if self._retrans_stamp is None:
                self._retrans_stamp = now
        else:
            new_end = sq.add(seq, span)
            if sq.gt(new_end, self.snd_nxt):
                self.snd_nxt = new_end
            if flags & FIN:
                self._f |= F_FIN_SENT
            if self._txtimes is None:
                self._txtimes = deque()
            self._txtimes.append((new_end, now))
        self._last_send = now
        return span

    def _emit(
        self,
        out: list[TcpSegment],
        now: float,
        flags: int,
        seq: int,
        payload: bytes | memoryview = b"",
    ) -> TcpSegment:
        """Build one segment with ACK, window and options (RFC 9293 §3.1, RFC 7323, RFC 2018)."""
        f = self._f
        opts = TcpOptions()
        if flags & SYN:
            opts.mss = self._advmss()
            if f & F_WSCALE:
                opts.wscale = self.rcv_wscale
            if f & F_SACK:
                opts.sack_permitted = True
            if f & F_TS:
                opts.timestamp = (self._tsval(now), self.ts_recent if flags & ACK else 0)
            window = min(self.rcv_wnd, 65535)  # RFC 7323 §2.2: never scaled in a SYN
            self.rcv_wup = self.rcv_nxt
        else:
            if f & F_TS:
                opts.timestamp = (self._tsval(now), self.ts_recent)
            window = min(self._select_window() >> self.rcv_wscale, 65535)
            if f & F_SACK and flags & ACK:
                blocks = self._sack_blocks()
                if blocks:
                    opts.sack_blocks = blocks
        urgent = 0
        up = self._snd_up
        if up is not None and not flags & SYN and sq.lt(seq, up):
            if sq.lt(up, sq.add(seq, 0x10000)):
                urgent = sq.sub(up, seq)
                flags |= URG
            elif sq.gt(sq.add(seq, 0xFFFF), self.snd_nxt):
                urgent = 0xFFFF
                flags |= URG
        t = self.four_tuple
        seg = TcpSegment(
            src_ip=t.local_ip,
            dst_ip=t.remote_ip,
            src_port=t.local_port,
            dst_port=t.remote_port,
            seq=seq,
            ack=self.rcv_nxt if flags & ACK else 0,
            flags=flags,
            window=window,
            urgent=urgent,
            options=opts,
            payload=payload,
        )
        out.append(seg)
        self.segs_out += 1
        if flags & ACK:
            self._f &= ~F_ACK_NOW
            self._t_delack = None
            if self._quick:
                self._quick -= 1
        return seg

    def _sack_blocks(self) -> list[tuple[int, int]]:
        """SACK blocks for an ACK: D-SACK first, then most recent first (RFC 2018 §4, 2883)."""
        blocks: list[tuple[int, int]] = []
        if self._dsack is not None:
            blocks.append(self._dsack)
            self._dsack = None
        rb = self._rcvbuf
        if rb is not None and rb.ooo:
            for s, e in rb.sack_ranges():
                blocks.append((self._seq_of(s), self._seq_of(e)))
        limit = 3 if self._f & F_TS else 4
        return blocks[:limit]

    def _send_rst_now(self, seq: int, ack: int) -> None:
        """An active reset from this connection (Linux ``tcp_send_active_reset``: RST|ACK)."""
        self.engine._send_rst(self.four_tuple, seq, ack, RST | ACK)

    def _rto_clamped(self, now: float) -> float:
        """RTO, clamped to what is left of TCP_USER_TIMEOUT (Linux)."""
        rto = self.rtt.rto
        ut = self._user_timeout()
        if ut and self._retrans_stamp is not None:
            remaining = ut - (now - self._retrans_stamp)
            rto = min(rto, max(remaining, 0.001))
        return rto

    def _arm_rtx_after_output(self, now: float) -> None:
        """Arm the retransmission timer (RFC 6298 §5.1) or the persist timer (RFC 9293
        §3.8.6.1) after sending."""
        if self.snd_una != self.snd_nxt:
            if self._t_rtx is None or self._f & F_PERSIST:
                self._f &= ~F_PERSIST
                self._t_rtx = now + self._rto_clamped(now)
        elif sq.sub(self._write_seq, self.snd_nxt) > 0 and self.state in _SYNC_NOT_TW:
            if self._t_rtx is None:
                self._f |= F_PERSIST
                self._t_rtx = now + self._probe_interval()
        else:
            self._t_rtx = None
            self._f &= ~F_PERSIST

    def _probe_interval(self) -> float:
        base = max(self.rtt.rto, TCP_RTO_MIN)
        return min(base * (1 << min(self._probe_backoff, 20)), TCP_RTO_MAX)

    # =================================================================================
    # Timers
    # =================================================================================
    def next_deadline(self) -> float | None:
        """The earliest armed timer of this connection."""
        best: float | None = None
        for t in (self._t_rtx, self._t_delack, self._t_keep, self._t_wait, self._t_cork):
            if t is not None and (best is None or t < best):
                best = t
        return best

    def _on_timer(self, now: float) -> None:
        t = self._t_wait
        if t is not None and now >= t:
            self._t_wait = None
            # TIME-WAIT over (2 MSL), or an orphan's FIN-WAIT-2 lifetime is over.
            self._set_state(TcpState.CLOSED)
            self._release()
            return
        t = self._t_rtx
        if t is not None and now >= t:
            self._t_rtx = None
            if self._f & F_PERSIST:
                self._f &= ~F_PERSIST
                self._persist_timeout(now)
            else:
                self._rto_timeout(now)
            if self.state == TcpState.CLOSED:
                return
        t = self._t_delack
        if t is not None and now >= t:
            self._t_delack = None
            if not self._f & F_PINGPONG:
                self._ato = min(self._ato * 2, self.rtt.rto) if self._ato else TCP_ATO_MIN
            else:
                self._f &= ~F_PINGPONG
                self._ato = TCP_ATO_MIN
            self.engine.mib["DelayedACKs"] += 1
            self._f |= F_ACK_NOW
        t = self._t_keep
        if t is not None and now >= t:
            self._t_keep = None
            self._keepalive_timeout(now)
            if self.state == TcpState.CLOSED:
                return
        t = self._t_cork
        if t is not None and now >= t:
            self._t_cork = None
            self._f |= F_PUSH_ONCE
        self.engine._touch(self)

    def _rto_timeout(self, now: float) -> None:
        """Linux ``tcp_retransmit_timer`` / RFC 6298 §5.4-5.6."""
        st = self.state
        eng = self.engine
        s = eng.settings
        if st == TcpState.SYN_SENT or (st == TcpState.SYN_RECEIVED and not self._f & F_PASSIVE):
            limit = int(self._opt(TCP_SYNCNT, s.tcp_syn_retries))
            if self._retransmits >= limit:
                self._fail(errno.ETIMEDOUT)
                return
            eng.mib["TCPTimeouts"] += 1
            self._retransmits += 1
            self.rtt.on_timeout()
            self._f |= F_SEND_SYN
            self._t_rtx = now + self.rtt.rto
            return
        if st == TcpState.SYN_RECEIVED:
            # Linux reqsk_timer_handler with syn_ack_recalc (TCP_DEFER_ACCEPT aware).
            max_retries = s.tcp_synack_retries
            defer = int(self.listener._opt(TCP_DEFER_ACCEPT, 0)) if self.listener else 0
            acked = bool(self._f & F_DEFER_ACKED)
            n = self._retransmits
            if not defer:
                expire = n >= max_retries
                resend = True
            else:
                expire = n >= max_retries and (not acked or n >= defer)
                resend = not acked or n >= defer - 1
            if expire:
                self._set_state(TcpState.CLOSED)
                self._release()
                return
            self._retransmits += 1
            self.rtt.on_timeout()
            if resend:
                eng.mib["TCPSynRetrans"] += 1
                self._f |= F_SEND_SYN
            self._t_rtx = now + self.rtt.rto
            return
        if self.snd_una == self.snd_nxt:
            return
        # Linux tcp_write_timeout for the synchronized states.
        elapsed = self._retrans_elapsed(now)
        if elapsed is not None and elapsed >= model_timeout(s.tcp_retries1, TCP_RTO_MIN) - 1e-9:
            # Past tcp_retries1: Linux gives the route/neighbour "negative advice" (and
            # probes the MTU); pystack counts it and tells the data path.
            eng.mib["NegativeAdvice"] += 1
            if eng.on_retries1 is not None:
                eng.on_retries1(self.four_tuple)
        if self._f & F_ORPHAN:
            alive = self.rtt.rto < TCP_RTO_MAX
            retry_until = self._orphan_retries(alive)
            do_reset = alive or not (
                elapsed is not None
                and elapsed >= model_timeout(retry_until, TCP_RTO_MIN) - 1e-9
            )
            if self._out_of_resources(now, do_reset):
                return
        if self._write_timeout(now):
            self._fail(errno.ETIMEDOUT)
            return
        eng.mib["TCPTimeouts"] += 1
        tp = self.ccs
        ops = self.cc
        if tp is not None and ops is not None:
            tp.now_us = int(now * 1e6)
            if (
                tp.ca_state in (CaState.OPEN, CaState.DISORDER)
                or sq.le(self._high_seq, self.snd_una)
                or (tp.ca_state == CaState.LOSS and not self._retransmits)
            ):
                tp.prior_cwnd = tp.snd_cwnd
                tp.prior_ssthresh = tp.snd_ssthresh
                tp.snd_ssthresh = ops.ssthresh(tp)
                ops.cwnd_event(tp, CaEvent.LOSS)
            tp.snd_cwnd = 1
            tp.snd_cwnd_cnt = 0
            self._set_ca_state(CaState.LOSS)
        self._high_seq = self.snd_nxt
        self._recover = self.snd_nxt
        self._dupacks = 0
        self._rtx_nxt = self.snd_una
        self._txtimes = None  # Karn: nothing outstanding can be timed any more
        if self._retrans_stamp is None:
            self._retrans_stamp = now - self.rtt.rto  # when the head was (about) sent
        self._retransmits += 1
        self.rtt.on_timeout()
        self._t_rtx = now + self._rto_clamped(now)

    def _retrans_elapsed(self, now: float) -> float | None:
        """Time since the head was first sent, once it has been retransmitted (Linux
        ``retransmits_timed_out`` measures from ``retrans_stamp``)."""
        if not self._retransmits or self._retrans_stamp is None:
            return None
        return now - self._retrans_stamp

    def _write_timeout(self, now: float) -> bool:
        """Linux ``tcp_write_timeout``/``retransmits_timed_out`` for synchronized states."""
        elapsed = self._retrans_elapsed(now)
        if elapsed is None:
            return False
        ut = self._user_timeout()
        if ut:
            return elapsed >= ut - 1e-9
        boundary = self.engine.settings.tcp_retries2
        if self._f & F_ORPHAN:
            boundary = self._orphan_retries(self.rtt.rto < TCP_RTO_MAX)
        return elapsed >= model_timeout(boundary, TCP_RTO_MIN) - 1e-9

    def _orphan_retries(self, alive: bool) -> int:
        """Linux ``tcp_orphan_retries``: 0 means 8 while the RTO is below its maximum."""
        retries = self.engine.settings.tcp_orphan_retries
        if retries == 0 and alive:
            retries = 8
        return retries

    def _out_of_resources(self, now: float, do_reset: bool) -> bool:
        """Linux ``tcp_out_of_resources`` for an orphan's retransmission or probe timer:
        over tcp_max_orphans (twice as strict for a long-silent or expired connection) the
        orphan is dropped, with a RST if it sent recently or the peer's window is closed."""
        eng = self.engine
        idle = now - self._last_send
        shift = 1 if idle > 2 * TCP_RTO_MAX or not do_reset else 0
        if eng.orphan_count << shift <= eng.settings.tcp_max_orphans:
            return False
        if idle <= TCP_TIMEWAIT_LEN or (not self.snd_wnd and not self._packets_out()):
            do_reset = True
        if do_reset:
            self._send_rst_now(self.snd_nxt, self.rcv_nxt)
        eng.mib["TCPAbortOnMemory"] += 1
        self._set_state(TcpState.CLOSED)
        self._release()
        return True

    def _persist_timeout(self, now: float) -> None:
        """Linux ``tcp_probe_timer``: zero-window probe (RFC 9293 §3.8.6.1, RFC 1122 4.2.2.17)."""
        if self.state not in _SYNC_NOT_TW or sq.sub(self._write_seq, self.snd_nxt) <= 0:
            return
        if self.snd_una != self.snd_nxt:
            return
        s = self.engine.settings
        ut = self._user_timeout()
        if not self._probes_stamp:
            self._probes_stamp = now
        elif ut and now - self._probes_stamp >= ut:
            self._fail(errno.ETIMEDOUT)
            return
        max_probes = s.tcp_retries2
        if self._f & F_ORPHAN:
            max_probes = s.tcp_orphan_retries or 8
            if self._out_of_resources(now, True):
                return
        if self._probes >= max_probes:
            self._fail(errno.ETIMEDOUT)
            return
        self._write_wakeup(now)
        if self._probe_backoff < s.tcp_retries2:
            self._probe_backoff += 1
        self._probes += 1
        self._f |= F_PERSIST
        self._t_rtx = now + self._probe_interval()

    def _write_wakeup(self, now: float) -> None:
        """Linux ``tcp_write_wakeup``: send what the window allows, else a probe at SND.UNA-1."""
        usable = sq.sub(sq.add(self.snd_una, self.snd_wnd), self.snd_nxt)
        unsent = sq.sub(self._write_seq, self.snd_nxt)
        out = self.engine._tx
        if unsent > 0 and usable > 0:
            self._xmit(now, out, self.snd_nxt, min(usable, self._eff_mss()), retrans=False)
        else:
            self._emit(out, now, ACK, sq.sub(self.snd_una, 1) & sq.MASK)

    def _arm_keepalive(self, now: float) -> None:
        if self._f & F_KEEPALIVE and self.state in _SYNC_NOT_TW:
            self._t_keep = max(self._last_rcv, now - 1e9) + self._keep_idle()
        else:
            self._t_keep = None

    def _keepalive_timeout(self, now: float) -> None:
        """Linux ``tcp_keepalive_timer`` (RFC 1122 §4.2.3.6)."""
        if not self._f & F_KEEPALIVE or self.state not in _SYNC_NOT_TW:
            return
        if self.snd_una != self.snd_nxt or sq.sub(self._write_seq, self.snd_nxt) > 0:
            self._t_keep = now + self._keep_idle()
            return
        elapsed = now - max(self._last_rcv, self._lrcvtime)
        idle = self._keep_idle()
        if elapsed >= idle - 1e-9:
            ut = self._user_timeout()
            if (ut and elapsed >= ut and self._probes > 0) or (
                not ut and self._probes >= self._keep_cnt()
            ):
                self._send_rst_now(self.snd_nxt, self.rcv_nxt)
                self._fail(errno.ETIMEDOUT)
                return
            self._write_wakeup(now)
            self._probes += 1
            self.engine.mib["TCPKeepAlive"] += 1
            self._t_keep = now + self._keep_intvl()
        else:
            self._t_keep = now + (idle - elapsed)

    def _option_changed(self, optname: int) -> None:
        eng = self.engine
        now = eng._now
        if optname in (TCP_NODELAY, TCP_CORK):
            # Setting TCP_NODELAY or clearing TCP_CORK pushes pending data (tcp(7)).
            if optname == TCP_NODELAY and self._f & F_NODELAY or (
                optname == TCP_CORK and not self._f & F_CORK
            ):
                self._f |= F_PUSH_ONCE
                self._t_cork = None
                eng._touch(self)
        elif optname == TCP_WINDOW_CLAMP and self.state != TcpState.CLOSED:
            # Linux tcp_set_window_clamp: applies to a live connection at once.
            clamp = int(self._opt(TCP_WINDOW_CLAMP, 0))
            if clamp:
                self._wnd_clamp = clamp
                self._rcv_ssthresh = min(self.rcv_wnd, clamp)
        elif optname in (SO_KEEPALIVE, TCP_KEEPIDLE):
            if self.state in _SYNC_NOT_TW:
                self._arm_keepalive(now)
                eng._touch(self)
        elif optname == TCP_NOTSENT_LOWAT:
            self._write_space()  # Linux calls sk_write_space on a new mark

    def setsockopt(self, level: int, optname: int, value: int | str | bytes) -> None:
        if level == IPPROTO_TCP and optname == TCP_QUICKACK:
            v = int(value) if not isinstance(value, bytes | str) else int(value or 0)
            if v:
                # Linux: leave pingpong mode and send a pending ACK now.
                self._f &= ~F_PINGPONG
                self._quick = max(self._quick, TCP_MAX_QUICKACKS)
                if self._t_delack is not None:
                    self._t_delack = None
                    self._f |= F_ACK_NOW
                    self.engine._touch(self)
            else:
                self._f |= F_PINGPONG
            return
        if level == IPPROTO_TCP and optname == TCP_MAXSEG and self.state in SYNCHRONIZED:
            super().setsockopt(level, optname, value)
            self._compute_snd_mss()
            return
        super().setsockopt(level, optname, value)


def _ip(v: int) -> str:
    return ".".join(str((v >> s) & 0xFF) for s in (24, 16, 8, 0))
