"""ACK processing: SND.UNA advance, RTT samples, the send window, and the hand-over to
loss recovery and congestion control (RFC 9293 §3.10.7.4, RFC 5681, RFC 6298; the
recovery state machine itself is :mod:`pystack.tcp.recovery`).
"""

from __future__ import annotations

from pystack.cc.base import AckSample, CaState
from pystack.tcp import seq as sq
from pystack.tcp.constants import F_PERSIST, F_TS
from pystack.tcp.recovery import ECN_OK, RecoveryMixin
from pystack.wire.segment import ECE, FIN, SYN, TcpSegment


class AckMixin(RecoveryMixin):
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
        if self._ecn & ECN_OK:
            self._ecn_rcv(seg)  # RFC 3168 §6.1.3: CE / CWR on arriving data
        wnd = seg.window << self.snd_wscale
        prior_una = self.snd_una
        if sq.gt(ack, prior_una):
            self._new_ack(seg, ack, now)
        elif self.ccs is not None:
            # RFC 5681 §2: a duplicate ACK carries no data, no SYN/FIN, does not move
            # SND.UNA or the window, while data is outstanding.
            is_dup = (
                ack == prior_una
                and prior_una != self.snd_nxt
                and not seg.payload
                and not seg.flags & (SYN | FIN)
                and wnd == self.snd_wnd
            )
            if is_dup or seg.options.sack_blocks or seg.flags & ECE:
                self.ccs.now_us = int(now * 1e6)
                self._ca_ack(seg, now, prior_una, 0, is_dup, 0)
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
        prior_una = self.snd_una
        acked = (ack - prior_una) & sq.MASK  # sq.sub inlined (hot path)
        if acked >= sq.HALF:
            acked -= sq.MOD
        sb = self._sndbuf
        buffered = len(sb) if sb is not None else 0
        sb_seq = (self._write_seq - buffered) & sq.MASK
        data_acked = 0
        d = (ack - sb_seq) & sq.MASK  # sq.gt(ack, sb_seq): 0 < d < HALF
        if 0 < d < sq.HALF:
            data_acked = min(d, buffered)
            if sb is not None:
                sb.ack(data_acked)
        self.bytes_acked += acked
        self.snd_una = ack
        self._retransmits = 0
        self._probe_backoff = 0
        mss = self._eff_mss()
        pkts = max(1, (acked + mss - 1) // mss)
        # RTT: the oldest newly acked never-retransmitted segment's send time (Linux
        # seq_rtt; Karn, RFC 6298 §3: never from a retransmitted one).  When retransmitted
        # data is acknowledged too, the timestamp echo is preferred (Linux); without
        # timestamps the younger segment's sample (an overestimate) is still taken, so a
        # backed-off RTO can collapse (RFC 6298 §5.7) on a lossy path.
        q = self._txtimes
        sample: float | None = None
        if q:
            first: float | None = None
            karn = False
            while q and sq.le(q[0][0], ack):
                _, t = q.popleft()
                if t < 0:
                    karn = True
                elif first is None:
                    first = t
            if first is not None and not (karn and self._f & F_TS):
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
            rec = self._recover
            self._rtx_nxt = None if rec is None or sq.ge(ack, rec) else ack
        # Congestion control and loss recovery.
        tp = self.ccs
        ops = self.cc
        if tp is not None and ops is not None:
            tp.now_us = int(now * 1e6)
            tp.delivered += pkts
            tp.packets_out = self._inflight(self.snd_nxt, mss)
            ops.pkts_acked(tp, AckSample(pkts, int(sample * 1e6) if sample else -1,
                                         tp.packets_out))
            self._ca_ack(seg, now, prior_una, acked, False, pkts)
        # RFC 6298 §5.2/§5.3: restart the timer when new data is acknowledged.
        if self.snd_una == self.snd_nxt:
            self._t_rtx = None
            self._f &= ~F_PERSIST
        elif self._rearm_on_ack():
            self._t_rtx = now + self._rto_clamped(now)
        self._check_reneging(now)
        self._retrans_stamp = None
        if data_acked:
            self._write_space()
            if sb is not None and not len(sb):
                self._emit_event("drained")  # everything written has been acknowledged

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
