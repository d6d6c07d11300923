"""Send side: segmentation, Nagle and cork, window checks, retransmission and segment
emission (RFC 9293 §3.8.6, RFC 896).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from pystack.cc.base import CaEvent, CaState
from pystack.tcp import seq as sq
from pystack.tcp.constants import F_LOSS_PROBE, F_TLP_ARM
from pystack.tcp.recovery import ECN_DEMAND_CWR, ECN_OK
from pystack.tcp.state import (
    TcpState,
)
from pystack.wire.segment import ACK, ECE, FIN, PSH, RST, SYN, URG, TcpOptions, TcpSegment

if TYPE_CHECKING:
    pass

from pystack.tcp.constants import (
    _SYNC_NOT_TW,
    CORK_CEILING,
    F_ACK_NOW,
    F_CORK,
    F_FIN_SENT,
    F_NODELAY,
    F_PERSIST,
    F_PUSH_ONCE,
    F_SACK,
    F_SEND_SYN,
    F_SYN_RETRANS,
    F_TS,
    F_WANT_WRITE,
    F_WR_SHUT,
    F_WSCALE,
    TCP_INIT_CWND,
    TCP_RTO_MAX,
    TCP_RTO_MIN,
)


class SendMixin:
    """What leaves when the engine polls a connection."""

    __slots__ = ()

    def _output(self, now: float, out: list[TcpSegment]) -> None:
        st = self.state
        f = self._f
        if st == TcpState.SYN_SENT:
            if f & F_SEND_SYN:
                self._send_syn(now, out, SYN | self._ecn_syn_flags())  # + RFC 3168 ECN setup
            return
        if st == TcpState.SYN_RECEIVED:
            if f & F_SEND_SYN:
                self._send_syn(now, out, SYN | ACK | self._ecn_syn_flags())
            elif f & F_ACK_NOW:
                self._emit(out, now, ACK, self.snd_nxt)
            # ---- Fast Open child (helper I3): data leaves once the SYN-ACK is out, before
            # the client's ACK (RFC 7413 §4.2.2; Linux tcp_fastopen_create_child). Not while
            # the SYN-ACK is being retransmitted: the data then follows the handshake.
            fo = self._fo
            if fo is None or not fo.child or self._f & (F_SEND_SYN | F_SYN_RETRANS):
                return
            # ---- end Fast Open child: fall through to the data output below.
        elif st in (TcpState.CLOSED, TcpState.LISTEN):
            return
        sent = 0
        nxt0 = self.snd_nxt  # new data sent -> maybe a loss probe (RFC 8985 §7.2)
        if st != TcpState.TIME_WAIT and st != TcpState.CLOSE_WAIT or self._sndbuf is not None:
            if st != TcpState.TIME_WAIT:
                sent = self._output_data(now, out)
                if sent and self._f & F_WANT_WRITE:
                    self._write_space()  # sending lowered the unsent bytes (notsent_lowat)
        if not sent and self._f & F_ACK_NOW:
            self._emit(out, now, ACK, self.snd_nxt)
        self._f &= ~F_PUSH_ONCE
        if st != TcpState.TIME_WAIT and self.state != TcpState.CLOSED:
            self._arm_rtx_after_output(now, self.snd_nxt != nxt0)

    def _send_syn(self, now: float, out: list[TcpSegment], flags: int) -> None:
        fo = self._fo
        if fo is not None and fo.defer:
            # Fast Open, TCP_FASTOPEN_CONNECT with a cookie: the SYN waits for data (or a
            # shutdown) to carry (Linux tcp_fastopen_defer_connect); F_SEND_SYN stays set.
            if sq.sub(self._write_seq, sq.add(self.iss, 1)) <= 0 and not self._f & F_WR_SHUT:
                return
            fo.defer = False
            self.fastopen_deferred = False
        self._f &= ~F_SEND_SYN
        retrans = self.snd_nxt != self.iss
        payload: bytes | memoryview = b""
        cookie: bytes | None = None
        if retrans:
            # Retransmitted SYNs carry neither Fast Open option nor data (Linux); SYN data
            # already sent stays counted in SND.NXT and is resent after the handshake.
            self._f |= F_SYN_RETRANS
            self.engine.mib["RetransSegs"] += 1
            self.total_retrans += 1
            self._txtimes = None
        else:
            if fo is not None:
                # RFC 7413 §4.1.3 / §4.2.2: cookie (or request, or grant) and SYN data.
                payload, cookie = self.engine.fastopen.syn_parts(self, flags)
            self.snd_nxt = sq.add(self.iss, 1 + len(payload))
            self._txtimes = deque([(self.snd_nxt, now)])
        seg = self._emit(out, now, flags, self.iss, payload)
        if cookie is not None:
            seg.options.fastopen_cookie = cookie
        if payload:
            self.data_segs_out += 1
        if self._t_rtx is None:
            self._t_rtx = now + self.rtt.rto

    def _output_data(self, now: float, out: list[TcpSegment]) -> int:
        """Retransmissions, then new data under Nagle/cork, windows and cwnd, then FIN."""
        tp = self.ccs
        mss = self._eff_mss()
        # Loss recovery first (pystack/tcp/recovery.py): fast retransmit, RFC 6675 NextSeg,
        # go-back-N after an RTO; new data waits while go-back-N is pending.
        sent, hold = self._xmit_recovery(now, out, mss)
        if hold:
            return sent
        # New data.
        wr = self._write_seq
        f = self._f
        cwnd_limited = False
        idle = self.snd_una == self.snd_nxt
        while True:
            # sq.sub / sq.gt inlined (once per segment sent): > 0 means below HALF.
            unsent = (wr - self.snd_nxt) & sq.MASK
            if not 0 < unsent < sq.HALF:
                break
            size = min(mss, unsent)
            if ((self.snd_una + self.snd_wnd - self.snd_nxt - size) & sq.MASK) >= sq.HALF:
                break  # sender SWS avoidance: whole segments only (RFC 1122 §4.2.3.4)
            if not self._cwnd_room(mss):  # cwnd, or RFC 6675 pipe / RFC 3042 (recovery.py)
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
            # TSO (helper D): further full-sized segments that pass the same checks leave
            # as one TcpSegment the data path splits into MSS-sized frames (gso_size).
            segs = self._tso_segs(mss, unsent) if size == mss else 1
            self._xmit(now, out, self.snd_nxt, mss, retrans=False, segs=segs)
            sent += segs
        if tp is not None:
            tp.is_cwnd_limited = cwnd_limited or (
                tp.snd_cwnd < tp.snd_ssthresh and self._packets_out() * 2 >= tp.snd_cwnd
            )
            if self._sb is not None:
                sent += self._xmit_recovery_tail(now, out, mss)  # RFC 6675 rules (3), (4)
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

    def _tso_segs(self, mss: int, unsent: int) -> int:
        """TSO (helper D): how many full-sized segments from SND.NXT may go as one, each
        passing _output_data's window and cwnd checks as if sent one by one; at most
        engine.tso_segs (set by a data path that splits them, pystack.stack; 1: no TSO).
        Only in the Open state without SACK recovery or urgent data: everything else
        goes one MSS at a time."""
        limit = min(self.engine.tso_segs, unsent // mss)
        tp = self.ccs
        sb = self._sb
        if (limit < 2 or tp is None or tp.ca_state != CaState.OPEN or self._snd_up is not None
                or (sb is not None and sb.active)):
            return 1
        start = self.snd_nxt
        # Whole segments the send window takes, and (Open state) what cwnd has room for;
        # then the last one is checked as the loop would check it, walking back if not.
        k = min(limit, sq.sub(sq.add(self.snd_una, self.snd_wnd), start) // mss,
                tp.snd_cwnd - self._inflight(start, mss))
        try:
            while k > 1:
                self.snd_nxt = sq.add(start, (k - 1) * mss)  # as if k - 1 had been sent
                if self._cwnd_room(mss):
                    break
                k -= 1
        finally:
            self.snd_nxt = start
        return max(k, 1)

    def _inflight(self, upto: int, mss: int) -> int:
        n = (upto - self.snd_una) & sq.MASK  # sq.sub inlined (hot): > 0 means below HALF
        return (n + mss - 1) // mss if 0 < n < sq.HALF else 0

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
            # Linux tcp_cwnd_restart: halve cwnd once per RTO idle, down to the initial
            # window; ssthresh keeps 3/4 of the old cwnd (tcp_current_ssthresh).
            ops.cwnd_event(tp, CaEvent.CWND_RESTART)
            restart = min(TCP_INIT_CWND, tp.snd_cwnd)
            cwnd = tp.snd_cwnd
            delta = idle - rto
            while delta > 0 and cwnd > restart:
                cwnd >>= 1
                delta -= rto
            tp.snd_ssthresh = max(tp.snd_ssthresh, (tp.snd_cwnd >> 1) + (tp.snd_cwnd >> 2))
            tp.snd_cwnd = max(cwnd, restart)
        ops.cwnd_event(tp, CaEvent.TX_START)

    def _xmit(self, now: float, out: list[TcpSegment], seq: int, mss: int, retrans: bool,
              segs: int = 1) -> int:
        """Send the segment starting at ``seq``; returns the sequence space it covers.
        segs > 1 (TSO, new data only): segs full-sized segments as one TcpSegment."""
        wr = self._write_seq
        avail = (wr - seq) & sq.MASK  # sq.sub inlined (hot path): > 0 means below HALF
        size = min(mss * segs, avail) if avail < sq.HALF else 0
        sb = self._sndbuf
        payload: bytes | memoryview = b""
        if size:
            assert sb is not None
            sb_seq = (wr - len(sb)) & sq.MASK
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
        seg = self._emit(out, now, flags, seq, payload)
        if segs > 1:
            # TSO (helper D): counted per MSS-sized frame, as Linux counts tcp_skb_pcount.
            seg.gso_size = mss
            seg.gso_segs = segs
            self.segs_out += segs - 1
            self.engine.mib["OutSegs"] += segs - 1
        if size and not retrans and self._ecn & ECN_OK:
            self._ecn_mark(seg, True)  # RFC 3168 ECT(0) and CWR (recovery.py)
        span = size + (1 if flags & FIN else 0)
        if size:
            self.data_segs_out += segs
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
            if f & F_SACK and flags & ACK and (
                self._dsack is not None or (self._rcvbuf is not None and self._rcvbuf.ooo)
            ):  # (the usual case, nothing to report, without building a list)
                blocks = self._sack_blocks()
                if blocks:
                    opts.sack_blocks = blocks
        if self._ecn & ECN_DEMAND_CWR and not flags & SYN:
            flags |= ECE  # RFC 3168 §6.1.3: echo CE on every segment until the peer's CWR
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
        # Positional (hot path): src_ip, dst_ip, src_port, dst_port, seq, ack, flags,
        # window, urgent, options, payload.
        seg = TcpSegment(t.local_ip, t.remote_ip, t.local_port, t.remote_port, seq,
                         self.rcv_nxt if flags & ACK else 0, flags, window, urgent, opts,
                         payload)
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
        if self._retrans_stamp is None or self._opts is None:
            return rto  # the common case: nothing retransmitted, or no TCP_USER_TIMEOUT
        ut = self._user_timeout()
        if ut:
            remaining = ut - (now - self._retrans_stamp)
            rto = min(rto, max(remaining, 0.001))
        return rto

    def _arm_rtx_after_output(self, now: float, new_data: bool = False) -> None:
        """Arm the retransmission timer (RFC 6298 §5.1) or the persist timer (RFC 9293
        §3.8.6.1) after sending; after new data or an ACK that advanced SND.UNA, the
        retransmission timer may become the tail loss probe timer (RFC 8985 §7.2, Linux
        ``tcp_schedule_loss_probe`` from ``tcp_write_xmit`` and ``tcp_set_xmit_timer``)."""
        f = self._f
        if self.snd_una != self.snd_nxt:
            if self._t_rtx is None or f & F_PERSIST:
                self._f &= ~(F_PERSIST | F_LOSS_PROBE)
                self._t_rtx = now + self._rto_clamped(now)
            if new_data or f & F_TLP_ARM:
                self._f &= ~F_TLP_ARM
                self._schedule_loss_probe(now, not new_data)
        elif sq.sub(self._write_seq, self.snd_nxt) > 0 and self.state in _SYNC_NOT_TW:
            self._f &= ~(F_LOSS_PROBE | F_TLP_ARM)
            if self._t_rtx is None:
                self._f |= F_PERSIST
                self._t_rtx = now + self._probe_interval()
        else:
            self._t_rtx = None
            self._f &= ~(F_PERSIST | F_LOSS_PROBE | F_TLP_ARM)

    def _probe_interval(self) -> float:
        base = max(self.rtt.rto, TCP_RTO_MIN)
        return min(base * (1 << min(self._probe_backoff, 20)), TCP_RTO_MAX)

    # =================================================================================
    # Timers
    # =================================================================================
