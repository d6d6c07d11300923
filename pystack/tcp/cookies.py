"""SYN cookies, the control plane's half (net.ipv4.tcp_syncookies; RFC 4987 §3.6).

The XDP program (bpf/xdp_ingress.c) answers SYNs with cookie SYN-ACKs and checks the ACKs
that come back; an ACK whose cookie checks reaches the engine with `TcpSegment.syncookie`
saying what the cookie encoded (pystack.xdp.abi.decode_cookie_info). Here:

- :func:`cookie_ack` makes the connection from such an ACK without ever having held state
  for its SYN (Linux ``cookie_v4_check`` + ``tcp_get_cookie_sock``);
- :func:`conn_request` is Linux ``tcp_conn_request``'s admission of a SYN that did reach
  the engine: a full request queue means a cookie (raising the listener's pressure flag, so
  that in mode 1 the XDP program answers the next SYNs itself) or a drop; a full accept
  queue drops; without cookies the last quarter of tcp_max_syn_backlog is kept;
- :class:`SynCookies` holds what the engine shares with the XDP program: the keys, what
  cookie SYN-ACKs offer (MSS, window, window scale, options) and the timestamp clock's
  offset, so that a SYN already on its way to Python when pressure rose gets the same
  cookie SYN-ACK XDP would send, and a connection made from a cookie continues the
  SYN-ACK's timestamp clock.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from pystack.tcp import seq as sq
from pystack.tcp.connection import Connection
from pystack.tcp.constants import F_PASSIVE, F_SACK, F_TS, F_WSCALE, TS_OPT_LEN
from pystack.tcp.state import TcpState
from pystack.wire.segment import ACK, FIN, RST, SYN, FourTuple, TcpOptions, TcpSegment
from pystack.xdp import abi
from pystack.xdp.syncookie import check_cookie, make_cookie, time_counter, ts_options

if TYPE_CHECKING:
    from pystack.tcp.engine import Listener, TcpEngine

__all__ = ["COOKIE_COUNTERS", "SynCookies", "attach", "conn_request", "cookie_ack",
           "info_word"]

log = logging.getLogger("pystack.cookies")

# Engine MIB counters this module adds (Linux TcpExt names). SyncookiesRecv/Failed and most
# of SyncookiesSent are the XDP program's (IngressProgram.syncookie_counters); the host adds
# them up for the exporter.
COOKIE_COUNTERS = ("SyncookiesSent", "TCPReqQFullDoCookies")

_TS_BITS = 6  # low TSval bits carrying the options (Linux TSBITS)


class SynCookies:
    """What the engine shares with the XDP program's cookie code (bpf/pystack_xdp.h).

    ``on_pressure(listener, up)`` is called when a listener's SYN backlog overflows (up)
    and when it has drained again; the host mirrors it into the XDP pressure map."""

    def __init__(
        self,
        key: bytes | None = None,
        *,
        on_pressure: Callable[[Listener, bool], None] | None = None,
    ) -> None:
        k = key if key is not None else os.urandom(16)
        if len(k) != 16:
            raise ValueError("the SYN-cookie key is 16 bytes")
        self.keys: list[bytes] = [k]  # the primary, then the previous one (still accepted)
        self.on_pressure = on_pressure
        self.pressure: set[Listener] = set()
        # What a cookie SYN-ACK says, as the XDP program's syncookie_cfg (see configure()).
        self.mss = 1460
        self.window = 65535
        self.wscale = 7
        self.timestamps = True
        self.sack = True
        self.window_scaling = True
        self._ts_secret = int.from_bytes(os.urandom(4), "big")
        self.ts_offset = self._ts_secret

    # ---- configuration, shared with the XDP program ----
    def configure(self, engine: TcpEngine) -> None:
        """Derive what cookie SYN-ACKs offer from the engine's settings, as the engine's
        own SYN-ACK would: our MSS, the window and window scale of a listener's child
        (Linux tcp_openreq_init_rwin), which options are on, and the timestamp offset
        (tcp_timestamps=1: one random offset for all cookie connections, where Linux
        keys one per address pair; 2: none)."""
        s = engine.settings
        probe = Connection(engine, FourTuple(0, 0, 0, 0))
        self.mss = probe._advmss()
        windows = []
        for ts in (False, True):
            probe._f = F_WSCALE if s.tcp_window_scaling else 0
            probe._init_rcv_window(self.mss - (TS_OPT_LEN if ts else 0))
            windows.append(probe.rcv_wnd)
        # The smaller of the two: a connection never holds less than it advertised.
        self.window = min(windows)
        self.wscale = probe.rcv_wscale if s.tcp_window_scaling else 0
        self.timestamps = bool(s.tcp_timestamps)
        self.sack = bool(s.tcp_sack)
        self.window_scaling = bool(s.tcp_window_scaling)
        self.ts_offset = self._ts_secret if s.tcp_timestamps == 1 else 0

    def rotate(self, key: bytes) -> None:
        """A new primary key; the old primary stays valid for checks (one rotation)."""
        if len(key) != 16:
            raise ValueError("the SYN-cookie key is 16 bytes")
        self.keys = [key, self.keys[0]]

    # ---- pressure (mode 1) ----
    def raise_pressure(self, lst: Listener) -> None:
        if lst in self.pressure:
            return
        self.pressure.add(lst)
        # Linux tcp_syn_flood_action's one-line warning.
        log.info("possible SYN flooding on port %d: sending cookies", lst.port)
        if self.on_pressure is not None:
            self.on_pressure(lst, True)

    def lower_pressure(self, lst: Listener) -> None:
        if lst not in self.pressure:
            return
        self.pressure.discard(lst)
        if self.on_pressure is not None:
            self.on_pressure(lst, False)

    def drain(self) -> list[Listener]:
        """Lower the flag of every listener whose SYN backlog has drained to half its
        limit (hysteresis: the flag does not flap with every request that completes or
        expires) or that is closed. Returns them."""
        done = [lst for lst in self.pressure
                if lst.closed or lst._syn_recv + lst._xdp_reqs <= lst.backlog // 2]
        for lst in done:
            self.lower_pressure(lst)
        return done

    def clear_pressure(self) -> None:
        for lst in list(self.pressure):
            self.lower_pressure(lst)

    # ---- cookies made and checked in Python (the XDP program's twin) ----
    def synack(self, seg: TcpSegment, now: float) -> TcpSegment:
        """The cookie SYN-ACK the XDP program would send for SYN `seg` at `now`
        (seconds of CLOCK_MONOTONIC, the clock bpf_ktime_get_ns reads)."""
        o = seg.options
        ts = o.timestamp is not None and self.timestamps
        # As Linux: without timestamps there is nowhere to keep window scale and SACK.
        ws = o.wscale if ts and o.wscale is not None and self.window_scaling else None
        sack = ts and o.sack_permitted and self.sack
        count = time_counter(int(now * 1e9))
        cookie = make_cookie(self.keys[0], seg.src_ip, seg.dst_ip, seg.src_port,
                             seg.dst_port, seg.seq, count, o.mss)
        opts = TcpOptions(mss=self.mss)
        if ts:
            assert o.timestamp is not None
            opts.timestamp = (self._cookie_tsval(now, ws, sack), o.timestamp[0])
            opts.sack_permitted = sack
            if ws is not None:
                opts.wscale = self.wscale
        return TcpSegment(seg.dst_ip, seg.src_ip, seg.dst_port, seg.src_port, cookie,
                          sq.add(seg.seq, 1), SYN | ACK, self.window, options=opts)

    def _cookie_tsval(self, now: float, ws: int | None, sack: bool) -> int:
        """Linux cookie_init_timestamp(): the options in the low bits, never ahead of the
        clock (the offset is added first, as the XDP program does)."""
        now_ms = (int(now * 1000) + self.ts_offset) & sq.MASK
        tsval = ((now_ms >> _TS_BITS) << _TS_BITS) | ts_options(ws, sack, False)
        if sq.gt(tsval, now_ms):
            tsval = (tsval - (1 << _TS_BITS)) & sq.MASK
        return tsval

    def check(self, seg: TcpSegment, now: float) -> int:
        """What the XDP program's check of an ACK gives (bpf cookie_ack): the cookie info
        word if the ACK's cookie is valid under either key, else 0. For a simulated link,
        where no XDP program runs."""
        if seg.flags & (SYN | RST | ACK) != ACK:
            return 0
        mss = check_cookie(self.keys, seg.src_ip, seg.dst_ip, seg.src_port, seg.dst_port,
                           sq.sub(seg.seq, 1) & sq.MASK, sq.sub(seg.ack, 1) & sq.MASK,
                           time_counter(int(now * 1e9)))
        if mss is None:
            return 0
        ts = seg.options.timestamp
        if ts is None:
            return info_word(mss, None, self.wscale, False, False, False)
        opt = ts[1] & 0x3F
        ws = opt & 0xF
        return info_word(mss, None if ws == abi.SC_WSCALE_NONE else ws, self.wscale,
                         bool(opt & 0x10), True, bool(opt & 0x20))


def info_word(mss: int, snd_wscale: int | None, rcv_wscale: int, sack: bool, ts: bool,
              ecn: bool) -> int:
    """pystack_meta.syncookie as the XDP program writes it (abi.decode_cookie_info's
    inverse): for tests and simulated links."""
    ws = abi.SC_WSCALE_NONE if snd_wscale is None else snd_wscale
    return ((mss & abi.SC_INFO_MSS_MASK) | (ws << abi.SC_INFO_WSCALE_SHIFT)
            | (abi.SC_INFO_SACK if sack else 0) | (abi.SC_INFO_TS if ts else 0)
            | (abi.SC_INFO_ECN if ecn else 0) | ((rcv_wscale & 0xF) << abi.SC_INFO_OUR_WS_SHIFT))


def attach(engine: TcpEngine, cookies: SynCookies) -> None:
    """Give the engine SYN-cookie support (the host does, with the XDP program's key)."""
    engine.syncookies = cookies
    cookies.configure(engine)
    for name in COOKIE_COUNTERS:
        engine.mib[name] += 0


def conn_request(engine: TcpEngine, lst: Listener, seg: TcpSegment, now: float,
                 isn: int | None) -> bool:
    """Linux tcp_conn_request's admission of a SYN to `lst`: True to make the request
    (SYN-RECEIVED), False when the SYN was dropped or answered with a cookie.

    ``isn`` is set for a SYN taking over a TIME-WAIT connection: Linux lets those in
    whatever the queues ("the peer is evidently a real one")."""
    s = engine.settings
    mib = engine.mib
    qlen = lst._syn_recv + lst._xdp_reqs  # with the requests XDP holds (xdpsyn.py)
    want_cookie = False
    # Request queue full (Linux >= 6.13 inet_csk_reqsk_queue_is_full: qlen > backlog; the
    # request queue is bounded by the listen backlog, tcp_max_syn_backlog plays below).
    if isn is None and qlen > lst.backlog:
        sc = engine.syncookies
        if s.tcp_syncookies and sc is not None:
            # tcp_syn_flood_action: cookies from now on (mode 1: XDP answers the next SYNs).
            want_cookie = True
            mib["TCPReqQFullDoCookies"] += 1
            sc.raise_pressure(lst)
        else:
            mib["TCPReqQFullDrop"] += 1
            mib["ListenDrops"] += 1
            return False
    # Accept queue full (sk_acceptq_is_full) -> drop.
    if lst.acceptq_full:
        mib["ListenOverflows"] += 1
        mib["ListenDrops"] += 1
        return False
    if want_cookie:
        assert engine.syncookies is not None
        engine._tx.append(engine.syncookies.synack(seg, now))
        mib["SyncookiesSent"] += 1
        return False
    # Without cookies the last quarter of tcp_max_syn_backlog is kept for peers proven
    # alive (Linux; pystack keeps no per-destination metrics, so no peer is "proven").
    if isn is None and not s.tcp_syncookies:
        msb = s.tcp_max_syn_backlog
        if msb - qlen < (msb >> 2):
            mib["ListenDrops"] += 1
            return False
    return True


def cookie_ack(engine: TcpEngine, lst: Listener, seg: TcpSegment, now: float
               ) -> Connection | None:
    """An ACK to `lst` whose SYN cookie the XDP program validated (seg.syncookie != 0) and
    no connection: establish it (Linux cookie_v4_check + tcp_get_cookie_sock + the child's
    SYN-RECV -> ESTABLISHED step). ISS = SEG.ACK - 1 (the cookie), IRS = SEG.SEQ - 1; MSS,
    window scale, SACK and timestamps from the cookie. Returns the connection, or None
    when it was not made (accept queue full: dropped and counted, never a RST, whatever
    tcp_abort_on_overflow says, as Linux; the client's next segment tries again)."""
    if seg.flags & (SYN | RST | ACK) != ACK:
        # Not what the XDP program marks; judge it as any segment to a listener.
        engine._listen_input(lst, seg, now, None)
        return None
    mib = engine.mib
    # tcp_v4_syn_recv_sock: sk_acceptq_is_full -> ListenOverflows, ListenDrops, no child.
    # Or no room for another connection at all (pystack.max_connections).
    full = lst.acceptq_full
    if full:
        mib["ListenOverflows"] += 1
        mib["ListenDrops"] += 1
    if full or engine.at_connection_limit():
        # The XDP program steered the flow to us when it validated the cookie; give it
        # back so the client's retry is judged as a cookie ACK again.
        if engine.on_remove is not None:
            engine.on_remove(seg.tuple_at_receiver())
        return None
    info = abi.decode_cookie_info(seg.syncookie)
    t = seg.tuple_at_receiver()
    c = Connection(engine, t, listener=lst)
    c._inherit(lst)
    c._f |= F_PASSIVE
    # Options as the cookie recorded them (the SYN-ACK offered exactly these). ECN is not
    # taken: the engine does not do ECN (the host tells XDP not to offer it).
    if info.snd_wscale is not None:
        c._f |= F_WSCALE
    if info.sack_permitted:
        c._f |= F_SACK
    ts = seg.options.timestamp
    if info.timestamps and ts is not None:
        c._f |= F_TS
    c.irs = sq.sub(seg.seq, 1) & sq.MASK
    c.rcv_nxt = seg.seq
    c._peer_mss = info.mss
    # Linux tcp_openreq_init_rwin (the window is computed on MSS minus the TS option).
    c._init_rcv_window(c._advmss() - (TS_OPT_LEN if c._f & F_TS else 0))
    if c._f & F_WSCALE:
        c.snd_wscale = min(info.snd_wscale or 0, 14)
        ws = info.rcv_wscale
        if ws != c.rcv_wscale:
            # RFC 7323 §2.2: our shift is the one the SYN-ACK offered (the configuration
            # changed in between, or this listener's buffer sizes differ).
            c.rcv_wscale = ws
            c._wnd_clamp = min(c._wnd_clamp, 65535 << ws)
            c._rcv_ssthresh = min(c._rcv_ssthresh, c._wnd_clamp)
    c._compute_snd_mss()
    c._rcv_mss = engine._initial_rcv_mss(c)
    if c._f & F_TS:
        assert ts is not None
        c.ts_recent = ts[0]
        c.ts_recent_age = now
        # Continue the clock the cookie SYN-ACK's TSval came from (RFC 7323 §5.4: the
        # peer's PAWS needs our TSvals never to go back).
        sc = engine.syncookies
        c._ts_offset = sc.ts_offset if sc is not None else 0
    iss = sq.sub(seg.ack, 1) & sq.MASK
    c.iss = iss
    c.snd_una = c.snd_nxt = c._write_seq = seg.ack
    c._snd_sml = iss
    c._last_rcv = now
    c.segs_in = 1
    if seg.payload:
        c.data_segs_in = 1
    engine.connections[t] = c
    if engine.on_add is not None:
        engine.on_add(t)
    # SYN-RECEIVED -> ESTABLISHED (RFC 9293 §3.10.7.4). No RTT sample: nothing recorded
    # when the SYN-ACK left, and its TSval is rounded down by up to 63 ms.
    mib["PassiveOpens"] += 1
    c.bytes_acked = 1
    c.snd_wnd = seg.window << c.snd_wscale
    c.max_window = c.snd_wnd
    c.snd_wl1 = seg.seq
    c.snd_wl2 = seg.ack
    c._set_state(TcpState.ESTABLISHED)
    c._on_established(now)
    lst._accept_q.append(c)
    lst._emit_accept()
    if seg.payload or seg.flags & FIN:
        # The third segment's data or FIN (RFC 9293 §3.10.7.4 sixth to eighth).
        c._process_text(seg, now, seg.seq)
    if c.state is TcpState.ESTABLISHED:
        c._compact()  # memory, as Connection._input does after the handshake's last segment
    engine._touch(c)
    return c
