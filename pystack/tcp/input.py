"""Segment arrival: the RFC 9293 §3.10.7 event processing, state by state."""

from __future__ import annotations

import errno
from dataclasses import replace
from typing import TYPE_CHECKING

from pystack.tcp import seq as sq
from pystack.tcp.state import (
    TCP_DEFER_ACCEPT,
    TcpState,
)
from pystack.wire.segment import ACK, FIN, RST, SYN, TcpSegment

if TYPE_CHECKING:
    pass

from pystack.tcp.constants import (
    F_ACK_NOW,
    F_DEFER_ACKED,
    F_FIN_SENT,
    F_PASSIVE,
    F_SACK,
    F_SEND_SYN,
    F_SYN_RETRANS,
    F_TS,
    F_WR_SHUT,
    F_WSCALE,
    PAWS_IDLE,
    TCP_MAX_WSCALE,
    TCP_MSS_DEFAULT,
    TCP_RTO_MAX,
    TCP_TIMEWAIT_LEN,
)


class InputMixin:
    """SEGMENT ARRIVES for SYN-SENT and the synchronized states."""

    __slots__ = ()

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
        tsopt = seg.options.timestamp
        if (
            not ack_ok
            and self.ts_recent_age is not None  # TS.Recent inherited (tcp_tw_reuse, twreuse.py)
            and tsopt is not None
            and sq.lt(tsopt[0], self.ts_recent)
            and now - self.ts_recent_age <= PAWS_IDLE
        ):
            return  # RFC 7323 §5.3 PAWS on a crossing SYN (Linux tcp_rcv_synsent_state_process)
        # Fourth: the SYN.
        self.irs = seg.seq
        self.rcv_nxt = sq.add(seg.seq, 1)
        self._negotiate(seg, passive=False)
        self._last_rcv = now
        if self._f & F_TS and seg.options.timestamp is not None:
            self.ts_recent = seg.options.timestamp[0]
            self.ts_recent_age = now
        if ack_ok:
            data_acked = sq.sub(seg.ack, sq.add(self.iss, 1))
            self.snd_una = seg.ack
            self.bytes_acked += 1
            if data_acked > 0:
                self._syn_data_acked(data_acked)
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
            if self._fo is not None:
                self.engine.fastopen.on_synack(self, seg)  # RFC 7413 §4.2.1
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

    def _syn_data_acked(self, n: int) -> None:
        """The SYN-ACK acknowledged data our SYN carried (Fast Open, RFC 7413 §4.2.1)."""
        sb = self._sndbuf
        if sb is not None:
            sb.ack(min(n, len(sb)))
        self.bytes_acked += n
        self._write_space()
        if sb is not None and not len(sb):
            self._emit_event("drained")

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
        self._ecn_negotiate(seg, passive)  # loss recovery / ECN: RFC 3168 §6.1.1 (recovery.py)
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
        mask = sq.MASK
        # sq.in_window(x, rn, wnd), inlined: (x - rn) mod 2**32 < wnd
        if seg_len == 0:
            if wnd == 0:
                return s == rn
            return ((s - rn) & mask) < wnd
        if wnd == 0:
            return False
        return ((s - rn) & mask) < wnd or ((s + seg_len - 1 - rn) & mask) < wnd

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
        elif (
            f & SYN
            and not f & (ACK | RST)
            and seg.seq == self.irs
            and self._fo is not None
            and self._fo.child
            and self.snd_una == self.iss
        ):
            # A Fast Open child closed before its handshake completed (FIN-WAIT-1): the
            # peer still waits for our SYN-ACK (Linux tcp_check_req on the child).
            self._send_syn(now, eng._tx, SYN | ACK)
            return
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
        elif (
            self.snd_una == self.iss
            and self._fo is not None
            and self._fo.child
            and sq.lt(self.iss, seg.ack)
            and sq.le(seg.ack, self.snd_nxt)
        ):
            # A Fast Open child closed before its handshake completed: the SYN-ACK is
            # acknowledged now; start what ESTABLISHED would have (Linux
            # tcp_rcv_synrecv_state_fastopen from FIN-WAIT-1).
            self._on_established(now)
        if not self._process_ack(seg, now):
            return  # discarded (e.g. an ACK of unsent data): its TSval is not remembered
        # RFC 7323 §4.3 (2): remember TSval if the segment covers Last.ACK.sent; after the
        # ACK check, as Linux tcp_ack, so a forged segment cannot poison PAWS.
        if ts is not None and sq.le(seg.seq, self.rcv_wup) and sq.ge(ts[0], self.ts_recent):
            self.ts_recent = ts[0]
            self.ts_recent_age = now
        st = self.state
        if st == TcpState.FIN_WAIT_1 and self._fin_acked():
            self._enter_fin_wait_2(now)
            if self.state == TcpState.CLOSED:
                return
        elif st == TcpState.CLOSING and self._fin_acked():
            self._enter_time_wait(now)
            return
        elif st == TcpState.LAST_ACK and self._fin_acked():
            eng.tcp_metrics.save(self, now)  # tcp_metrics (metrics_cache.py): as Linux
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
            if self._f & F_PASSIVE and self.listener is None:
                # A Fast Open child, already in the accept queue: reset like an
                # established connection (Linux tcp_check_req -> tcp_reset).
                self._fail(errno.ECONNRESET)
            elif self._f & F_PASSIVE:
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
            if lst.acceptq_full:
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
            if not self._f & F_PASSIVE:  # (a passive one here is a Fast Open child)
                self._emit_event("connected")
            self._emit_event("writable")
            if self._f & F_WR_SHUT:
                self._set_state(TcpState.FIN_WAIT_1)
        return True

    # ---------------------------------------------------------------------------------
    # ACK processing (RFC 9293 §3.10.7.4 fifth check, RFC 5681, RFC 6582, RFC 6298)
    # ---------------------------------------------------------------------------------
