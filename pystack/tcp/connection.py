"""One TCP connection: the RFC 9293 TCB, its socket-like user API and its state changes.

A :class:`Connection` is driven by its :class:`~pystack.tcp.engine.TcpEngine`: segments
arrive through ``_input``, timers fire through ``_on_timer`` and segments leave through
``_output`` when the engine polls.  Nothing here does I/O or reads a clock; every entry
point gets ``now`` (float seconds) from the engine.  The user side (``send``, ``recv``,
``close`` ...) is socket-like and non-blocking; ``on_event(conn, kind)`` reports
"connected", "readable", "writable" (space freed after a short send), "drained" (all
written data acknowledged), "urgent" and "closed".

One concern per file, as gVisor splits its TCP: ``input`` (segment arrival by state),
``ack`` (ACK processing and fast retransmit), ``receive`` (data, delayed ACK, FIN, urgent),
``send`` (segmentation and emission), ``timers``, ``window`` (MSS and advertised window),
``sockopt`` (options).  Each is a slot-less mixin; this class holds every field.

RFC sections are cited next to the code they justify.  Where RFC 9293 leaves a choice,
Linux's behaviour (``net/ipv4/tcp_input.c``, ``tcp_output.c``, ``tcp_timer.c``) is used.
"""

from __future__ import annotations

import errno
from collections import deque
from typing import TYPE_CHECKING, Any

from pystack import cc
from pystack.cc.base import CcState, CongestionOps
from pystack.tcp import seq as sq
from pystack.tcp.buffers import RecvBuffer, SendBuffer
from pystack.tcp.rtt import RttEstimator
from pystack.tcp.state import (
    IPPROTO_TCP,
    SO_KEEPALIVE,
    SYNCHRONIZED,
    TCP_CONGESTION,
    TCP_CORK,
    TCP_KEEPCNT,
    TCP_KEEPIDLE,
    TCP_KEEPINTVL,
    TCP_LINGER2,
    TCP_MAXSEG,
    TCP_NODELAY,
    TCP_NOTSENT_LOWAT,
    TCP_QUICKACK,
    TCP_USER_TIMEOUT,
    TCP_WINDOW_CLAMP,
    TcpState,
)
from pystack.wire.segment import ACK, FourTuple, TcpSegment, ip_to_str

if TYPE_CHECKING:
    from pystack.tcp.engine import Listener, TcpEngine
    from pystack.tcp.fastopen import ConnFastOpen

from pystack.tcp.ack import AckMixin
from pystack.tcp.constants import (
    _SEND_STATES,
    _SYNC_NOT_TW,
    F_ACK_NOW,
    F_CLOSED_EVT,
    F_CORK,
    F_ERR_REPORTED,
    F_IN_ORPHANS,
    F_IN_TW,
    F_NODELAY,
    F_OOBINLINE,
    F_ORPHAN,
    F_PASSIVE,
    F_PINGPONG,
    F_PUSH_ONCE,
    F_RD_EOF,
    F_SACK,
    F_SEND_SYN,
    F_TS,
    F_WANT_WRITE,
    F_WR_SHUT,
    F_WSCALE,
    TCP_INIT_CWND,
    TCP_MAX_QUICKACKS,
    TCP_MSS_DEFAULT,
    TCP_RTO_MAX,
    TCP_RTO_MIN,
    TCP_TIMEOUT_INIT,
    TCP_TIMEWAIT_LEN,
    URG_NONE,
    URG_NOTYET,
    URG_READ,
    URG_VALID,
    EventCallback,
)
from pystack.tcp.input import InputMixin
from pystack.tcp.receive import ReceiveMixin
from pystack.tcp.send import SendMixin
from pystack.tcp.sockopt import _Sock
from pystack.tcp.timers import TimerMixin
from pystack.tcp.window import RcvSpace, WindowMixin

__all__ = ["Connection", "EventCallback"]


# States in which segment text is still accepted (RFC 9293 §3.10.7.4, seventh step).
_RCV_STATES = frozenset({TcpState.ESTABLISHED, TcpState.FIN_WAIT_1, TcpState.FIN_WAIT_2})

# Memory (issue 7): one shared int object per window / MSS value (Connection._compact).
# Bounded: once full, further values are simply not shared.
_SHARED_INTS: dict[int, int] = {}
_SHARED_INTS_MAX = 2048


class _Rare:
    """Memory (issue 7): a connection's rarely used fields (urgent data, Fast Open
    client, zero-window probing, MTU probing, retransmission count, out-of-window
    rate limit); one is made on the first non-default value (``Connection._rare``)."""

    __slots__ = ("last_oow", "urg_off", "urg_byte", "probes_stamp", "total_retrans",
                 "mtup_low", "fastopen_queued", "fastopen_deferred")

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(Connection, _RARE_ATTR[name]).default)


class _RareField:
    """``conn.<name>`` is ``conn._rare.<name>``, its default while there is no _Rare;
    setting a non-default value makes the _Rare (recovery._Field's pattern)."""

    __slots__ = ("name", "default")

    def __init__(self, default: object) -> None:
        self.default = default
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name.lstrip("_")
        _RARE_ATTR[self.name] = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        r = obj._rare
        return self.default if r is None else getattr(r, self.name)

    def __set__(self, obj: Any, value: Any) -> None:
        r = obj._rare
        if r is None:
            if value == self.default and type(value) is type(self.default):
                return
            r = obj._rare = _Rare()
        setattr(r, self.name, value)


_RARE_ATTR: dict[str, str] = {}  # _Rare slot -> Connection attribute

# Window and MSS fields Connection._compact takes from the shared table.
_SHARED_FIELDS = ("snd_wnd", "max_window", "rcv_wnd", "_rcv_ssthresh", "_wnd_clamp",
                  "snd_mss", "_peer_mss", "_rcv_mss")


def _shared_int(v: int) -> int:
    """The shared object equal to ``v`` (``v`` itself if it is new and the table full)."""
    if -5 <= v <= 256:
        return v  # CPython's small-int cache already shares these
    s = _SHARED_INTS.get(v)
    if s is not None:
        return s
    if len(_SHARED_INTS) < _SHARED_INTS_MAX and type(v) is int:
        _SHARED_INTS[v] = v
    return v


class Connection(InputMixin, AckMixin, ReceiveMixin, SendMixin, TimerMixin, WindowMixin, _Sock):
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
        # urgent data (the offset and byte are rare fields, below)
        "_urg_state",
        # statistics (tcp_info)
        "bytes_acked",
        "bytes_received",
        "segs_in",
        "segs_out",
        "data_segs_in",
        "data_segs_out",
        # loss recovery / ECN (pystack/tcp/recovery.py)
        "_rs",
        "_ecn",
        # receive autotuning / memory (window.py, receive.py): Linux rcvq_space and
        # rcv_rtt_est (a RcvSpace, made once bulk data arrives)
        "_rtune",
        # Fast Open (RFC 7413; pystack/tcp/fastopen.py)
        "_fo",
        # memory (issue 7): the rare fields' _Rare, None until one is set (see _RareField)
        "_rare",
        "__weakref__",
    )

    # Memory (issue 7): fields most connections never set live in a _Rare made on the
    # first non-default value; reading one of an ordinary connection gives its default.
    _last_oow = _RareField(-1e9)  # last out-of-window ACK sent (RFC 5961 rate limit)
    _urg_off = _RareField(0)  # urgent data: receive-stream offset of the mark
    _urg_byte = _RareField(0)  # urgent data: the byte (MSG_OOB)
    _probes_stamp = _RareField(0.0)  # zero-window probes: first probe's time
    total_retrans = _RareField(0)  # tcp_info: retransmitted segments, ever
    _mtup_low = _RareField(0)  # path-MTU search_low; 0: MTU probing off (mtu.py)
    fastopen_queued = _RareField(0)  # bytes a connect(fastopen=True, data=...) queued
    fastopen_deferred = _RareField(False)  # the SYN waits for a write (TFO_CONNECT)

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
        self._urg_state = URG_NONE
        self.bytes_acked = self.bytes_received = 0
        self.segs_in = self.segs_out = self.data_segs_in = self.data_segs_out = 0
        # loss recovery / ECN (pystack/tcp/recovery.py)
        self._rs = None  # recovery.RecState, made at the first loss/reordering (else None)
        self._ecn = 0  # ECN flags, recovery.ECN_* (Linux ecn_flags)
        # receive autotuning / memory
        self._rtune: RcvSpace | None = None  # None until bulk data arrives (window.py)
        # Fast Open: per-connection state (None on plain connections)
        self._fo: ConnFastOpen | None = None
        self._rare: _Rare | None = None  # memory: the rare fields (_RareField), if any set

    def __repr__(self) -> str:
        t = self.four_tuple
        return (
            f"<Connection {ip_to_str(t.local_ip)}:{t.local_port} -> {ip_to_str(t.remote_ip)}:"
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
            self._sndbuf = SendBuffer(self._tcp_mem())
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
            # Nothing was sent yet: queue the FIN for after the handshake. A deferred Fast
            # Open connect (TCP_FASTOPEN_CONNECT) sends its SYN now.
            self._f |= F_WR_SHUT
            self.engine._touch(self)
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
            and (
                self.engine.orphan_count > self.engine.settings.tcp_max_orphans
                or self._out_of_memory()
            )
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
        """``struct tcp_info`` / ``ss -ti`` fields (times in ms as ``ss`` prints them).

        Names follow ``ss -ti``: state, ca_state, retransmits (consecutive RTOs), probes,
        backoff, options, wscale, rto, ato, rtt/rttvar, minrtt, rcv_rtt, mss, pmtu, rcvmss,
        advmss, cwnd, ssthresh, bytes_sent/acked/received, segs_in/out, data_segs_in/out,
        delivered, unacked, retrans (= total_retrans, every retransmitted segment), lost,
        reordering, lastsnd/lastrcv/lastack (ms since data sent, data received, ACK
        received), snd_wnd, rcv_wnd, rcv_space (bytes read in the last receiver RTT, the
        autotuning measure), rcv_ssthresh, notsent, cc, and skmem as ``ss -m`` prints it
        (r: bytes held for reading, rb: receive buffer, t: bytes queued to send, tb: send
        buffer). Not provided: pacing_rate (pystack does not pace), delivery_rate, busy,
        rwnd_limited/sndbuf_limited, app_limited (no per-segment rate sampling).
        """
        tp = self.ccs
        r = self.rtt
        now = self.engine._now
        rt = self._rtune
        rb = self._rcvbuf
        opts = []
        if self._f & F_TS:
            opts.append("ts")
        if self._f & F_SACK:
            opts.append("sack")
        if self._f & F_WSCALE:
            opts.append("wscale")
        opts.extend(self._ecn_options())  # loss recovery / ECN: "ecn", "ecnseen"
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
            "delivered": tp.delivered if tp else 0,
            "unacked": self._packets_out(),
            "retrans": self._retrans_out(),  # Linux tcpi_retrans: retransmitted, in flight
            "total_retrans": self.total_retrans,
            "lost": 0,
            "reordering": self.engine.settings.tcp_reordering,
            "minrtt": round(tp.min_rtt_us / 1000, 3) if tp and tp.min_rtt_us else 0,
            "rcv_rtt": round(rt.rtt * 1000, 3) if rt is not None else 0,
            "lastsnd": round((now - self._last_send) * 1000),
            "lastrcv": round((now - (self._lrcvtime or self._last_rcv)) * 1000),
            "lastack": round((now - self._last_rcv) * 1000),
            "snd_wnd": self.snd_wnd,
            "rcv_wnd": self.rcv_wnd,
            "rcv_space": rt.space if rt is not None else min(
                self._rcv_ssthresh, self.rcv_wnd, TCP_INIT_CWND * self._advmss()),
            "rcv_ssthresh": self._rcv_ssthresh,
            "notsent": self.unsent,
            "cc": self.cc.name if self.cc else self._cc_name(),
            "skmem": {
                "r": rb.used if rb is not None else 0,
                "rb": self.rcvbuf_size,
                "t": self.outq,
                "tb": self.sndbuf_size,
            },
        }
        info.update(self._recovery_info())  # loss recovery: sacked, lost, reordering, ...
        return info

    # =================================================================================
    # Helpers: sizes, windows, MSS
    # =================================================================================
    def _maxseg_value(self) -> int:
        if self.state in SYNCHRONIZED:
            return self.snd_mss
        return super()._maxseg_value()

    def _window_clamp_value(self) -> int:
        return self._wnd_clamp or int(self._opt(TCP_WINDOW_CLAMP, 0))


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
        # Queued even while no callback is set: the engine looks for one when it delivers,
        # so a callback set by an earlier event of the same batch (an accept callback that
        # attaches the application) still gets "readable" for data in that batch.
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
        if err == errno.ETIMEDOUT:
            # Linux tcp_write_err: retransmission, SYN, persist, keepalive and user timeouts.
            self.engine.mib["TCPAbortOnTimeout"] += 1
        self.error = err
        self._set_state(TcpState.CLOSED)
        self._release()

    def _on_established(self, now: float) -> None:
        """Initialise congestion control and timers once synchronized."""
        self._compute_snd_mss()
        tp = CcState(mss=self.snd_mss)
        tp.now_us = int(now * 1e6)
        # tcp_metrics (metrics_cache.py): Linux tcp_init_metrics, before the CC init.
        self.engine.tcp_metrics.init_conn(self, tp, now)
        try:
            ops = cc.for_connection(self._cc_name())
        except KeyError:
            ops = cc.for_connection("reno")
        ops.init_deferred(tp)
        self.cc = ops
        self.ccs = tp
        self._retransmits = 0
        self._last_rcv = now
        self._last_send = now
        self._t_rtx = None
        self._f &= ~F_SEND_SYN
        self._arm_keepalive(now)

    def _compact(self) -> None:
        """Memory (issue 7): an idle connection's ints beyond the small-int cache cost 28-32
        bytes each.  Fields holding equal values share one object (after the handshake
        SND.UNA = SND.NXT = the write sequence = SND.WL2, RCV.NXT = RCV.WUP, SND.WL1 =
        RCV.NXT or IRS), and window and MSS values, the same on most connections, come from
        a shared table.  No value changes.  Called once, after the segment that established the
        connection (``_input``; ``cookies.cookie_ack`` for a connection made from a cookie)."""
        una = self.snd_una
        if self.snd_nxt == una:
            self.snd_nxt = una
        if self._write_seq == una:
            self._write_seq = una
        if self.snd_wl2 == una:
            self.snd_wl2 = una
        nxt = self.rcv_nxt
        if self.rcv_wup == nxt:
            self.rcv_wup = nxt
        wl1 = self.snd_wl1
        if wl1 == nxt:
            self.snd_wl1 = nxt
        elif wl1 == self.irs:  # an active opener's: the SYN-ACK's sequence
            self.snd_wl1 = self.irs
        if self._snd_sml == self.iss:
            self._snd_sml = self.iss
        for name in _SHARED_FIELDS:
            setattr(self, name, _shared_int(getattr(self, name)))
        tp = self.ccs
        if tp is not None:
            tp.mss = _shared_int(tp.mss)

    def _enter_time_wait(self, now: float) -> None:
        eng = self.engine
        # tcp_metrics (metrics_cache.py): Linux tcp_time_wait -> tcp_update_metrics (an
        # orphan's FIN-WAIT-2 saved them when its timer was armed, tcp_time_wait there).
        if not (self.state == TcpState.FIN_WAIT_2 and self._f & F_ORPHAN and self._t_wait):
            eng.tcp_metrics.save(self, now)
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
                self.engine.tcp_metrics.save(self, now)  # tcp_metrics: tcp_time_wait(FW2)
                self._t_wait = now + self._fin_time()

    # =================================================================================
    # Segment arrival (RFC 9293 §3.10.7)
    # =================================================================================
    def _input(self, seg: TcpSegment, now: float) -> None:
        rb = self._rcvbuf
        if seg.payload and self._f & F_ACK_NOW and rb is not None and rb.ooo and (
            self.state in _RCV_STATES
        ):
            # RFC 5681 §4.2: every out-of-order segment gets its own immediate (duplicate)
            # ACK, as Linux sends one per skb. One input batch can carry several: ACK the
            # previous one now, before this one changes the SACK blocks; otherwise ranges
            # between holes might never be reported and the sender would resend them.
            self._emit(self.engine._tx, now, ACK, self.snd_nxt)
        self.segs_in += seg.gso_segs  # segments GRO merged count one by one, as Linux
        if seg.payload:
            self.data_segs_in += seg.gso_segs
        st = self.state
        if st == TcpState.SYN_SENT:
            self._input_syn_sent(seg, now)
        elif st in (TcpState.CLOSED, TcpState.LISTEN):
            return
        else:
            self._input_other(seg, now)
        new = self.state
        if new != TcpState.CLOSED:
            if new is not st and new is TcpState.ESTABLISHED:
                self._compact()  # memory: the handshake is over, the fields are settled
            self.engine._touch(self)

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
