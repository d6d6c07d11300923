"""ACK processing: SND.UNA advance, RTT samples, duplicate ACKs and fast retransmit
(RFC 5681, RFC 6298).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pystack.cc.base import AckSample, CaEvent, CaState
from pystack.tcp import seq as sq
from pystack.wire.segment import FIN, SYN, TcpSegment

if TYPE_CHECKING:
    pass

from pystack.tcp.constants import (
    F_PERSIST,
    F_RTX_ONE,
    F_TS,
)


class AckMixin:
    """What an arriving ACK does to the send side and congestion control."""

    __slots__ = ()

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
