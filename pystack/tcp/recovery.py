"""Loss recovery and the congestion response of the sender, arranged as Linux arranges them
in ``tcp_input.c`` (``tcp_ack`` -> ``tcp_sacktag_write_queue``, ``tcp_fastretrans_alert``,
``tcp_cong_control``) with the mechanisms of the RFCs:

* NewReno (RFC 6582) when SACK was not negotiated: fast retransmit on ``tcp_reordering``
  duplicate ACKs (RFC 5681 §3.2), window inflation, partial ACKs, the "recover" rule and its
  ACK heuristic (§4.1), the Impatient timer variant;
* SACK loss recovery (RFC 6675) over :class:`~pystack.tcp.scoreboard.Scoreboard`: DupAcks or
  IsLost(HighACK+1) starts it, cwnd = ssthresh, then NextSeg/SetPipe (rules 1-4 with the
  rescue retransmission); limited transmit (RFC 3042) falls out of pipe;
* undo of spurious reductions (Linux ``undo_marker``/``undo_retrans``): D-SACK (RFC 2883,
  RFC 3708), timestamps (Eifel detection, RFC 3522), F-RTO (RFC 5682) after an RTO;
* ``tcp_reordering`` as the duplicate threshold, raised up to ``tcp_max_reordering`` when
  reordering is seen (Linux ``tcp_check_sack_reordering``);
* lost retransmissions found from SACKs of data sent after them (Linux's former
  ``tcp_mark_lost_retrans``), and SACK reneging;
* ECN (RFC 3168): negotiation on the SYNs, ECT(0) on new data, CE -> ECE until CWR, one
  cwnd reduction per window on ECE (the CWR state);
* switching the congestion-control algorithm of a live connection (TCP_CONGESTION, Linux
  ``tcp_reinit_congestion_control``);
* Tail Loss Probe (RFC 8985 §7, Linux ``tcp_schedule_loss_probe``/``tcp_send_loss_probe``/
  ``tcp_process_tlp_ack``; ``tcp_early_retrans`` 3 or 4): a probe after 2*SRTT instead of
  waiting for the RTO when the tail of a flight is lost.

Windows are in segments as in Linux (``CcState``); RFC 6675's pipe is in octets.
Counters use Linux's TcpExt names.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from pystack import cc
from pystack.cc.base import CaEvent, CaState
from pystack.tcp import seq as sq
from pystack.tcp.constants import (
    _SYNC_NOT_TW,
    F_ACK_NOW,
    F_LOSS_PROBE,
    F_PERSIST,
    F_RTX_ONE,
    F_SACK,
    F_TLP_ARM,
    F_TS,
    TCP_INIT_CWND,
    TCP_RTO_MIN,
    TCP_TIMEOUT_INIT,
    TCP_TIMEOUT_MIN,
)
from pystack.tcp.scoreboard import Scoreboard
from pystack.tcp.state import TCP_CONGESTION, TcpState
from pystack.wire.segment import ACK, CWR, ECE, SYN, TcpSegment

if TYPE_CHECKING:
    pass

__all__ = [
    "CE",
    "ECN_DEMAND_CWR",
    "ECN_OK",
    "ECN_QUEUE_CWR",
    "ECN_SEEN",
    "ECT0",
    "ECT1",
    "F_LOSS_PROBE",
    "F_TLP_ARM",
    "FRTO_NEW",
    "FRTO_ON",
    "NOT_ECT",
    "RecoveryMixin",
]

# Connection._ecn bits (Linux tp->ecn_flags).
ECN_OK = 1  # TCP_ECN_OK: negotiated (or requested, while SYN-SENT)
ECN_QUEUE_CWR = 2  # TCP_ECN_QUEUE_CWR: put CWR on the next new data segment
ECN_DEMAND_CWR = 4  # TCP_ECN_DEMAND_CWR: echo ECE until the peer's CWR arrives
ECN_SEEN = 8  # TCP_ECN_SEEN: an ECT or CE data segment arrived

# The IP header's ECN field (RFC 3168 §5).
NOT_ECT = 0
ECT1 = 1
ECT0 = 2
CE = 3

# Connection._frto (RFC 5682; Linux tp->frto is a boolean plus REXMIT_NEW).
FRTO_ON = 1  # F-RTO runs for the current timeout
FRTO_NEW = 2  # step 2.b: the next output sends new data instead of retransmissions


class RecState:
    """Loss-recovery state of one connection, made at the first sign of loss, reordering
    or D-SACK: a connection that never saw any keeps none (``Connection._rs`` is None), so
    an idle connection stays small.  Fields are reached as ``conn._<field>`` through
    :class:`_Field` descriptors on :class:`RecoveryMixin`."""

    __slots__ = (
        "sb",  # RFC 6675 Scoreboard while something is SACKed, retransmitted or lost
        "reordering",  # dupthresh in segments (Linux tp->reordering)
        "reord_seen",  # reordering events (tcp_info reord_seen)
        "reord_cand",  # reordering distance a D-SACK undo would prove (bytes)
        "high_rxt",  # RFC 6675 HighRxt (one past the last retransmitted octet)
        "rescue_rxt",  # RFC 6675 RescueRxt (one past), None = undefined
        "rtx_log",  # retransmissions in flight: (start, end, SND.NXT when sent)
        "undo_marker",  # Linux undo_marker: SND.UNA when cwnd was cut, None = no undo
        "undo_retrans",  # Linux undo_retrans: retransmissions not yet D-SACKed (-1: none)
        "undo_tsval",  # TSval of the first retransmission (Eifel detection)
        "frto",  # F-RTO (RFC 5682) state: FRTO_ON / FRTO_NEW or 0
        "last_advance",  # bytes of the last cumulative ACK advance (RFC 6582 §4.1)
        "partials",  # partial ACKs in this recovery (NewReno Impatient timer)
        "dsack_dups",  # segments reported as duplicates by D-SACK (tcp_info)
        "tlp_high",  # Linux tlp_high_seq: SND.NXT when the probe went out, None = no episode
        "tlp_seg",  # the probe's [start, end), until its delivery proves earlier losses
        "tlp_rxt",  # Linux tlp_retrans: the probe was a retransmission
    )

    def __init__(self, reordering: int) -> None:
        self.sb: Scoreboard | None = None
        self.reordering = reordering
        self.reord_seen = self.reord_cand = self.high_rxt = 0
        self.rescue_rxt: int | None = None
        self.rtx_log: deque[tuple[int, int, int]] | None = None
        self.undo_marker: int | None = None
        self.undo_retrans = -1
        self.undo_tsval: int | None = None
        self.frto = self.last_advance = self.partials = self.dsack_dups = 0
        self.tlp_high: int | None = None
        self.tlp_seg: tuple[int, int] | None = None
        self.tlp_rxt = False


class _Field:
    """``conn._name`` reads RecState.name (its default while there is none); setting a
    non-default value creates the RecState."""

    __slots__ = ("name", "default")

    def __init__(self, default: Any) -> None:
        self.default = default
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name[1:]

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        rs = obj._rs
        if rs is None:
            d = self.default
            return obj.engine.settings.tcp_reordering if d is _REORDERING else d
        return getattr(rs, self.name)

    def __set__(self, obj: Any, value: Any) -> None:
        rs = obj._rs
        if rs is None:
            if value == self.default:
                return
            rs = obj._rs = RecState(obj.engine.settings.tcp_reordering)
        setattr(rs, self.name, value)


_REORDERING = object()  # default of _reordering: the tcp_reordering sysctl

_OPEN, _DISORDER, _CWR, _RECOVERY, _LOSS = (
    CaState.OPEN,
    CaState.DISORDER,
    CaState.CWR,
    CaState.RECOVERY,
    CaState.LOSS,
)


class RecoveryMixin:
    """Loss detection, recovery and the congestion response (a slot-less mixin)."""

    __slots__ = ()

    _sb = _Field(None)
    _reordering = _Field(_REORDERING)
    _reord_seen = _Field(0)
    _reord_cand = _Field(0)
    _high_rxt = _Field(0)
    _rescue_rxt = _Field(None)
    _rtx_log = _Field(None)
    _undo_marker = _Field(None)
    _undo_retrans = _Field(-1)
    _undo_tsval = _Field(None)
    _frto = _Field(0)
    _last_advance = _Field(0)
    _partials = _Field(0)
    _dsack_dups = _Field(0)
    _tlp_high = _Field(None)
    _tlp_seg = _Field(None)
    _tlp_rxt = _Field(False)

    # =================================================================================
    # ACK side
    # =================================================================================
    def _ca_ack(
        self, seg: TcpSegment, now: float, prior_una: int, acked: int, is_dup: bool, pkts: int
    ) -> None:
        """Everything one ACK means for recovery and congestion control (Linux ``tcp_ack``
        after ``tcp_clean_rtx_queue``).  ``acked`` bytes were newly acknowledged
        cumulatively (``pkts`` segments); ``is_dup`` is RFC 5681's duplicate ACK."""
        tp = self.ccs
        ops = self.cc
        if tp is None or ops is None:
            return
        advanced = acked > 0
        if advanced:
            # Linux FLAG_SET_XMIT_TIMER: the timer _new_ack rearms is the RTO; the next
            # output may turn it into a probe timeout (tcp_set_xmit_timer).
            self._f = (self._f | F_TLP_ARM) & ~F_LOSS_PROBE
        ece = bool(self._ecn & ECN_OK and seg.flags & ECE and not seg.flags & SYN)
        rs = self._rs
        if (
            rs is None
            and tp.ca_state == _OPEN
            and not is_dup
            and not ece
            and not seg.options.sack_blocks
        ):
            # Linux's fast path: an in-order ACK and nothing to recover or undo.
            if advanced:
                self._dupacks = 0
                ops.cong_avoid(tp, self.snd_una, pkts)
            return
        mss = self._eff_mss()
        sb = rs.sb if rs is not None else None
        if sb is None and seg.options.sack_blocks and self._f & F_SACK:
            sb = self._scoreboard()
        newly_sacked = 0
        orig = False
        if sb is not None:
            newly_sacked, orig = self._sacktag(seg, prior_una, mss)
        elif advanced and self._frto:
            hi = self._high_seq if sq.lt(self._high_seq, self.snd_una) else self.snd_una
            orig = sq.gt(hi, prior_una) and self._fresh_nosack(prior_una, hi)
        if advanced:
            self._trim_rtx_log()
            rs = self._rs
            if rs is not None:  # only needed once "recover" exists (a loss was seen)
                rs.last_advance = acked
            self._dupacks = 0
        # RFC 5681 §2 duplicate ACK; with SACK an ACK carrying new SACK information (RFC
        # 6675 §2 / §5 (**)), but not one whose blocks are all old or D-SACK (those report
        # duplicates, not arrivals; Linux counts only SACKed segments).
        if newly_sacked and not advanced:
            dup = True
        else:
            dup = is_dup and not (seg.options.sack_blocks and self._f & F_SACK)
        if dup:
            self._dupacks += 1
        if self._tlp_high is not None:
            self._process_tlp_ack(seg, advanced, newly_sacked)
        may_raise = self._fastretrans_alert(
            seg, prior_una, acked, pkts, dup, newly_sacked, orig, ece, mss
        )
        # Linux tcp_cong_control: grow cwnd outside cwnd reductions (RFC 5681 §3.1).
        if may_raise and advanced and tp.ca_state in (_OPEN, _DISORDER, _LOSS):
            ops.cong_avoid(tp, self.snd_una, pkts)
        if sb is not None and sb.empty and tp.ca_state == _OPEN:
            self._sb = None  # nothing to remember: an idle connection keeps no scoreboard

    def _scoreboard(self) -> Scoreboard:
        sb = self._sb
        if sb is None:
            sb = self._sb = Scoreboard(self._reordering)
            sb.sync(self.snd_una, self.snd_nxt)
        return sb

    def _fastretrans_alert(
        self,
        seg: TcpSegment,
        prior_una: int,
        acked: int,
        pkts: int,
        dup: bool,
        newly_sacked: int,
        orig: bool,
        ece: bool,
        mss: int,
    ) -> bool:
        """Linux ``tcp_fastretrans_alert``: the recovery state machine.  Returns whether
        cwnd may grow on this ACK."""
        tp = self.ccs
        una = self.snd_una
        advanced = acked > 0
        if ece:
            tp.prior_ssthresh = 0  # the ECN reduction must stand: no undo of ssthresh
        st = tp.ca_state
        may_raise = True
        # State exits once the window of the reduction is acknowledged.
        if st == _CWR and sq.gt(una, self._high_seq):
            # "something above high_seq" acknowledged: our CWR reached the receiver.
            self._end_cwnd_reduction(st)
            self._set_ca_state(_OPEN)
            may_raise = False
        elif st == _RECOVERY and sq.ge(una, self._recover):
            # RFC 6582 §3.2 step 3 full acknowledgment / RFC 6675 §5 (A): recovery ends.
            if not self._try_undo_recovery(seg):
                self._end_cwnd_reduction(st)
            may_raise = False
        st = tp.ca_state
        if st == _RECOVERY:
            if not advanced:
                if not self._f & F_SACK and dup:
                    tp.snd_cwnd += 1  # RFC 5681 §3.2 step 4, RFC 6582 §3.2 step 5: inflate
            elif self._try_undo_partial(seg, prior_una, mss):
                return False
            else:
                self._partials += 1
                if not self._f & F_SACK:
                    # RFC 6582 §3.2 step 4, partial acknowledgment: retransmit the first
                    # unacknowledged segment, deflate cwnd by the amount acknowledged and
                    # add back one SMSS if at least one SMSS was acknowledged.
                    self._f |= F_RTX_ONE
                    tp.snd_cwnd = max(tp.snd_cwnd - pkts + (1 if acked >= mss else 0), 1)
            if self._try_undo_dsack():
                self._try_to_open(ece)
            return False
        if st == _LOSS:
            self._process_loss(seg, advanced, dup, newly_sacked, orig, mss)
            if tp.ca_state == _LOSS:
                return may_raise
        # Open, Disorder, CWR.
        if tp.ca_state in (_OPEN, _DISORDER):
            self._try_undo_dsack()
        if not self._time_to_recover(mss):
            self._try_to_open(ece)
            return may_raise
        self._enter_recovery(ece)
        return False

    def _time_to_recover(self, mss: int) -> bool:
        """Whether the duplicate ACKs / SACKs seen now start a fast retransmit."""
        una = self.snd_una
        if una == self.snd_nxt:
            return False
        rec = self._recover
        if self._f & F_SACK:
            # RFC 6675 §5: a new recovery only once HighACK has passed the last
            # RecoveryPoint.  An ACK exactly at it qualifies here (deviation): SACK blocks
            # above it prove the loss is of newer data, which is what the rule protects.
            if rec is not None and sq.lt(una, rec):
                return False
            # RFC 6675 §5 (**) steps (1) DupAcks >= DupThresh and (2) IsLost(HighACK + 1).
            sb = self._sb
            return self._dupacks >= self._reordering or (
                sb is not None and sb.is_lost(una, mss))
        if self._dupacks < self._reordering:
            return False
        # RFC 6582 §3.2 step 2: only if the ACK covers more than "recover" ...
        if rec is None or sq.gt(una, rec):
            return True
        # ... or, by the §4.1 ACK heuristic, the last cumulative advance was at most four
        # segments (larger ones come from unnecessary retransmissions after an RTO).
        return self.ccs.snd_cwnd > 1 and self._last_advance <= 4 * mss

    def _enter_recovery(self, ece: bool) -> None:
        """Fast retransmit and enter fast recovery (Linux ``tcp_enter_recovery``)."""
        tp = self.ccs
        sack = bool(self._f & F_SACK)
        self.engine.mib["TCPSackRecovery" if sack else "TCPRenoRecovery"] += 1
        tp.prior_ssthresh = 0
        self._init_undo()
        if tp.ca_state != _CWR:  # not already reduced for this window (ECN)
            if not ece:
                tp.prior_ssthresh = self._current_ssthresh()
            self._init_cwnd_reduction()
        self._set_ca_state(_RECOVERY)
        # RFC 6582 §3.2 step 2 "recover" / RFC 6675 §5 step (4.1) RecoveryPoint = HighData.
        self._recover = self.snd_nxt
        self._partials = 0
        if sack:
            self._scoreboard()
            tp.snd_cwnd = tp.snd_ssthresh  # RFC 6675 §5 step (4.2): cwnd = ssthresh
            self._high_rxt = self.snd_una
            self._rescue_rxt = None
        else:
            tp.snd_cwnd = tp.snd_ssthresh + 3  # RFC 5681 §3.2 step 3: ssthresh + 3*SMSS
        # RFC 5681 §3.2 step 2 / RFC 6675 §5 step (4.3): retransmit HighACK + 1 now.
        self._f |= F_RTX_ONE

    def _init_cwnd_reduction(self) -> None:
        """Linux ``tcp_init_cwnd_reduction``: the new ssthresh from the algorithm."""
        tp = self.ccs
        self._high_seq = self.snd_nxt
        tp.snd_cwnd_cnt = 0
        tp.prior_cwnd = tp.snd_cwnd
        tp.snd_ssthresh = self.cc.ssthresh(tp)
        self._ecn_queue_cwr()
        self._tlp_high = None  # a reduction ends the TLP episode (Linux 6.x)

    def _end_cwnd_reduction(self, st: CaState) -> None:
        """cwnd at the end of a recovery or CWR that was not undone."""
        tp = self.ccs
        if st == _RECOVERY and not self._f & F_SACK:
            # RFC 6582 §3.2 step 3 option (1): min(ssthresh, max(FlightSize, SMSS) + SMSS).
            flight = self._inflight(self.snd_nxt, self._eff_mss())
            tp.snd_cwnd = max(min(tp.snd_ssthresh, max(flight, 1) + 1), 1)
        elif st == _CWR or self._undo_marker is not None:
            tp.snd_cwnd = tp.snd_ssthresh  # Linux tcp_end_cwnd_reduction
        self._set_ca_state(_OPEN)
        self.cc.cwnd_event(tp, CaEvent.COMPLETE_CWR)

    def _current_ssthresh(self) -> int:
        """Linux ``tcp_current_ssthresh``: the ssthresh an undo restores."""
        tp = self.ccs
        if tp.ca_state in (_CWR, _RECOVERY):
            return tp.snd_ssthresh
        return max(tp.snd_ssthresh, (tp.snd_cwnd >> 1) + (tp.snd_cwnd >> 2))

    def _try_to_open(self, ece: bool) -> None:
        """Linux ``tcp_try_to_open``: ECE starts a CWR reduction, else Open or Disorder."""
        if ece:
            self._enter_cwr()
        if self.ccs.ca_state != _CWR:
            self._try_keep_open()

    def _try_keep_open(self) -> None:
        sb = self._sb
        held = self._dupacks or (sb is not None and sb.sacked_bytes) or self._retrans_out()
        state = _DISORDER if held else _OPEN
        if self.ccs.ca_state != state:
            self._set_ca_state(state)
            self._high_seq = self.snd_nxt

    # ---------------------------------------------------------------------------------
    # SACK scoreboard update (RFC 6675 §5 Update(), RFC 2883 D-SACK, reordering)
    # ---------------------------------------------------------------------------------
    def _sacktag(self, seg: TcpSegment, prior_una: int, mss: int) -> tuple[int, bool]:
        """Update the scoreboard from one ACK; returns (bytes newly SACKed, whether data
        never retransmitted below high_seq was newly (S)ACKed -- F-RTO's signal)."""
        sb = self._sb
        una, nxt = self.snd_una, self.snd_nxt
        prior_fack = sb.high_sacked
        low: int | None = None  # lowest never-retransmitted octet newly (S)ACKed below fack
        orig = False
        if una != prior_una:
            # What the cumulative ACK covers, judged before the scoreboard forgets it
            # (Linux tcp_clean_rtx_queue).
            head_end = sq.add(prior_una, mss) if sq.lt(sq.add(prior_una, mss), una) else una
            head_rtx = sb.ever_retransmitted(prior_una, head_end)
            if prior_fack is not None and sq.lt(prior_una, prior_fack):
                if not head_rtx:
                    low = prior_una  # a hole filled by its original: reordering
                else:
                    # Maybe the original filled it: kept for a D-SACK undo to judge.
                    self._reord_cand = max(self._reord_cand, sq.sub(prior_fack, prior_una))
            if self._frto:
                hi = self._high_seq if sq.lt(self._high_seq, una) else una
                orig = sq.gt(hi, prior_una) and sb.fresh(prior_una, hi)
        blocks = seg.options.sack_blocks
        if not blocks:
            sb.sync(una, nxt)
            new = 0
        else:
            new = sb.on_ack(una, blocks, nxt)
            if sb.last_dsack is not None:
                self._dsack_rcv(sb.last_dsack, mss)
            for s, e in sb.last_new:
                if sb.ever_retransmitted(s, e):
                    continue  # ambiguous: the original or the retransmission
                if self._frto and sq.le(e, self._high_seq):
                    orig = True
                if prior_fack is not None and sq.lt(s, prior_fack):
                    if low is None or sq.lt(s, low):
                        low = s
        if low is not None:
            self._check_reordering(prior_fack, low, mss, "TCPSACKReorder")
        if new:
            self._detect_lost_retrans(sb)
        return new, orig

    def _dsack_rcv(self, block: tuple[int, int], mss: int) -> None:
        """A D-SACK (RFC 2883 §4): count it and, Linux ``tcp_check_dsack``'s "dumb
        counting", credit it against the retransmissions of the current reduction."""
        s, e = block
        eng = self.engine
        una = self.snd_una
        eng.mib["TCPDSACKRecv" if sq.lt(s, una) else "TCPDSACKOfoRecv"] += 1
        n = sq.sub(e, s)
        if n <= 0 or n > 0x40000000:
            return
        segs = -(-n // mss)
        self._dsack_dups += segs
        marker = self._undo_marker
        if marker is None:
            eng.mib["TCPDSACKIgnoredNoUndo"] += 1
            return
        if self._undo_retrans > 0 and sq.gt(e, marker):
            sb = self._sb
            if sq.le(e, una) or (sb is not None and sb.ever_retransmitted(s, e)):
                self._undo_retrans = max(0, self._undo_retrans - segs)

    def _check_reordering(self, fack: int | None, low: int, mss: int, counter: str) -> None:
        """Linux ``tcp_check_sack_reordering``: ``low`` arrived after data up to ``fack``;
        raise the duplicate threshold to that distance (at most tcp_max_reordering)."""
        if fack is None or not sq.lt(low, fack):
            return
        self._raise_reordering(sq.sub(fack, low), mss)
        self._reord_seen += 1
        self.engine.mib[counter] += 1

    def _raise_reordering(self, metric: int, mss: int) -> None:
        if metric > self._reordering * mss:
            limit = self.engine.settings.tcp_max_reordering
            self._reordering = max(self._reordering, min(-(-metric // mss), limit))
            if self._sb is not None:
                self._sb.dupthresh = self._reordering

    def _detect_lost_retrans(self, sb: Scoreboard) -> None:
        """A retransmission is lost when data sent after it is SACKed but it is not
        (Linux's former ``tcp_mark_lost_retrans``; RFC 6675 leaves this to the RTO).
        It becomes eligible for NextSeg again."""
        log = self._rtx_log
        fack = sb.high_sacked
        if not log or fack is None:
            return
        una = self.snd_una
        while log and sq.lt(log[0][2], fack):
            s, e, _ = log.popleft()
            if sq.le(e, una) or sb.is_sacked(s):
                continue  # delivered
            sb.unmark_retransmitted(s, e)
            if sq.lt(s, self._high_rxt):
                self._high_rxt = s
            self.engine.mib["TCPLostRetransmit"] += 1

    def _check_reneging(self, now: float) -> None:
        """The cumulative ACK stops at data the receiver had SACKed: it dropped what it
        SACKed (RFC 2018 §8).  Linux ``tcp_check_sack_reneging`` shortens the timer; the
        RTO then forgets the SACK information."""
        sb = self._sb
        if sb is not None and self.snd_una != self.snd_nxt and sb.is_sacked(self.snd_una):
            self.engine.mib["TCPSACKReneging"] += 1
            self._t_rtx = now + max((self.rtt.srtt or 0.0) / 16, 0.01)
            self._f &= ~F_LOSS_PROBE

    # ---------------------------------------------------------------------------------
    # Undo of spurious reductions (RFC 2883/3708, RFC 3522, RFC 5682; Linux undo_*)
    # ---------------------------------------------------------------------------------
    def _init_undo(self) -> None:
        """Linux ``tcp_init_undo`` (+ ``tcp_retrans_stamp_cleanup``): the Eifel stamp is
        kept while earlier retransmissions are still in flight, so their echoes do not
        look like original transmissions."""
        out = self._retrans_out()
        self._undo_marker = self.snd_una
        self._undo_retrans = out or -1
        if not out:
            self._undo_tsval = None
        self._reord_cand = 0

    def _packet_delayed(self, seg: TcpSegment) -> bool:
        """Eifel detection (RFC 3522 §3.2): the ACK echoes a timestamp older than our
        first retransmission, so an original transmission got through."""
        tv = self._undo_tsval
        if tv is None or not self._f & F_TS:
            return False
        ts = seg.options.timestamp
        return ts is not None and ts[1] != 0 and sq.lt(ts[1], tv)

    def _may_undo(self, seg: TcpSegment) -> bool:
        """Linux ``tcp_may_undo``: every retransmission was D-SACKed, or Eifel."""
        return self._undo_marker is not None and (
            self._undo_retrans == 0 or self._packet_delayed(seg)
        )

    def _undo_cwnd_reduction(self, unmark_loss: bool) -> None:
        """Linux ``tcp_undo_cwnd_reduction``: restore cwnd (``undo_cwnd``) and ssthresh."""
        tp = self.ccs
        if tp.prior_ssthresh:
            tp.snd_cwnd = self.cc.undo_cwnd(tp)
            if tp.prior_ssthresh > tp.snd_ssthresh:
                tp.snd_ssthresh = tp.prior_ssthresh
                self._ecn &= ~ECN_QUEUE_CWR  # tcp_ecn_withdraw_cwr
        self._undo_marker = None
        if unmark_loss:
            self._rtx_nxt = None
            if self._sb is not None:
                self._sb.clear_lost()

    def _try_undo_recovery(self, seg: TcpSegment) -> bool:
        """End of Recovery/Loss (Linux ``tcp_try_undo_recovery``): undo if spurious."""
        tp = self.ccs
        st = tp.ca_state
        undone = False
        if self._may_undo(seg):
            self._undo_cwnd_reduction(False)
            self.engine.mib["TCPLossUndo" if st == _LOSS else "TCPFullUndo"] += 1
            if st == _RECOVERY and self._reord_cand:
                self._raise_reordering(self._reord_cand, self._eff_mss())
            undone = True
        self._set_ca_state(_OPEN)
        self._rtx_nxt = None
        self._frto = 0
        return undone

    def _try_undo_dsack(self) -> bool:
        """Linux ``tcp_try_undo_dsack``: every retransmission of the reduction came back
        as a D-SACK, so none was needed (RFC 3708 §3)."""
        if self._undo_marker is not None and self._undo_retrans == 0:
            self._undo_cwnd_reduction(False)
            self.engine.mib["TCPDSACKUndo"] += 1
            if self._reord_cand:
                # The hole was filled by its original: that was reordering.
                self._raise_reordering(self._reord_cand, self._eff_mss())
                self._reord_seen += 1
                self.engine.mib["TCPSACKReorder"] += 1
                self._reord_cand = 0
            return True
        return False

    def _try_undo_partial(self, seg: TcpSegment, prior_una: int, mss: int) -> bool:
        """Linux ``tcp_try_undo_partial``: a partial ACK that timestamps show was caused by
        an original transmission.  Returns True when nothing more should be done."""
        if self._undo_marker is None or not self._packet_delayed(seg):
            return False
        sb = self._sb
        fack = sb.high_sacked if sb is not None else None
        self._check_reordering(fack if fack is not None else self.snd_una, prior_una, mss,
                               "TCPTSReorder")
        if self._retrans_out():
            return True  # keep clocking out new data, retransmit nothing more now
        self._undo_cwnd_reduction(True)
        self.engine.mib["TCPPartialUndo"] += 1
        self._try_keep_open()
        return True

    def _try_undo_loss(self, seg: TcpSegment, frto_undo: bool) -> bool:
        """Linux ``tcp_try_undo_loss``: the timeout was spurious."""
        if not (frto_undo or self._may_undo(seg)):
            return False
        self._undo_cwnd_reduction(True)
        self.engine.mib["TCPLossUndo"] += 1
        if frto_undo:
            self.engine.mib["TCPSpuriousRTOs"] += 1
        self._retransmits = 0
        self._frto = 0
        if frto_undo or self._f & F_SACK:
            # Without SACK Linux stays in Loss up to high_seq so duplicate ACKs from the
            # retransmissions do not trigger a false fast retransmit.
            self._set_ca_state(_OPEN)
        return True

    # ---------------------------------------------------------------------------------
    # Retransmission timeout (RFC 6298 §5.4-5.6) and F-RTO (RFC 5682)
    # ---------------------------------------------------------------------------------
    def _enter_loss(self) -> None:
        """Linux ``tcp_enter_loss``: everything outstanding is presumed lost; slow start
        from cwnd 1 (RFC 5681 §3.1); F-RTO may prove the timeout spurious."""
        tp = self.ccs
        ops = self.cc
        s = self.engine.settings
        sack = bool(self._f & F_SACK)
        sb = self._scoreboard() if sack else None
        una = self.snd_una
        new_recovery = True
        if tp is not None and ops is not None:
            st = tp.ca_state
            new_recovery = st < _RECOVERY
            if not self._retransmits:
                mib = self.engine.mib
                if st == _RECOVERY or st == _DISORDER:
                    mib["TCPSackFailures" if sack else "TCPRenoFailures"] += 1
                elif st == _LOSS:
                    mib["TCPLossFailures"] += 1
            # Reduce ssthresh only if not yet done for this window.
            if (
                st <= _DISORDER
                or not sq.gt(self._high_seq, una)
                or (st == _LOSS and not self._retransmits)
            ):
                tp.prior_ssthresh = self._current_ssthresh()
                tp.prior_cwnd = tp.snd_cwnd
                tp.snd_ssthresh = ops.ssthresh(tp)
                ops.cwnd_event(tp, CaEvent.LOSS)
                self._init_undo()
            tp.snd_cwnd = 1
            tp.snd_cwnd_cnt = 0
            # A timeout in Disorder after many SACKs: the reordering degree was too high.
            if st <= _DISORDER and sb is not None and s.tcp_reordering < self._reordering:
                if sb.sacked_bytes >= s.tcp_reordering * self._eff_mss():
                    self._reordering = s.tcp_reordering
                    sb.dupthresh = self._reordering
            self._set_ca_state(_LOSS)
        self._high_seq = self.snd_nxt
        self._recover = self.snd_nxt  # RFC 6582 §3.2 step 6, RFC 6675 §5.1
        self._tlp_high = None  # Linux tcp_enter_loss: the TLP episode is over
        self._tlp_seg = None
        self._ecn_queue_cwr()
        # RFC 5682 §3.1 step 1 (Linux): not when a recovery is under way, except for
        # repeated timeouts of the same segment.
        self._frto = FRTO_ON if s.tcp_frto and (new_recovery or self._retransmits) else 0
        self._dupacks = 0
        self._rtx_log = None  # retransmissions in flight are presumed lost too
        if sb is not None:
            if sb.is_sacked(una):
                sb.clear()  # the receiver reneged (RFC 2018 §8): forget its SACKs
            sb.mark_lost_below(una, self.snd_nxt)
            self._high_rxt = una
            self._rtx_nxt = None
        else:
            self._rtx_nxt = una  # go-back-N

    def _process_loss(
        self, seg: TcpSegment, advanced: bool, dup: bool, newly_sacked: int, orig: bool,
        mss: int,
    ) -> None:
        """Linux ``tcp_process_loss``: an ACK in Loss, with F-RTO (RFC 5682 §2 basic
        without SACK, §3 SACK-enhanced)."""
        recovered = sq.ge(self.snd_una, self._high_seq)
        if advanced and self._try_undo_loss(seg, False):
            return
        if self._frto:
            if sq.gt(self.snd_nxt, self._high_seq):
                # Step 3 (new data went out in step 2.b).  3.b: the ACK (S)ACKs data that
                # was never retransmitted: the timeout was spurious.  (Linux checks this
                # on the first ACK too; RFC 5682 only here, so a timeout after which the
                # retransmission completes everything (2.a) is never undone by F-RTO.)
                if orig and self._try_undo_loss(seg, True):
                    return
                if newly_sacked or dup:
                    self._frto = 0  # step 3.a: the loss was real
            elif advanced and not recovered:
                # Step 2.b: send new data (at most what cwnd allows: two segments) and
                # wait; without any, fall back to the conventional recovery.
                self._high_seq = self.snd_nxt
                if self._new_data_ok(mss):
                    self._frto = FRTO_NEW
                    return
                self._frto = 0
        if recovered:
            self._try_undo_recovery(seg)  # step 2.a / the conventional end of Loss

    # =================================================================================
    # Output side
    # =================================================================================
    def _xmit_recovery(self, now: float, out: list[TcpSegment], mss: int) -> tuple[int, bool]:
        """Retransmissions due now, before any new data.  Returns (segments sent, whether
        new data must wait for a go-back-N retransmission still pending)."""
        sent = 0
        tp = self.ccs
        rs = self._rs
        if rs is None and not self._f & F_RTX_ONE and self._rtx_nxt is None:
            return 0, False  # the common case: nothing to recover
        una = self.snd_una
        nxt = self.snd_nxt
        sb = rs.sb if rs is not None else None
        if sb is None and self._f & F_SACK and tp is not None and (
            self._f & F_RTX_ONE or tp.ca_state >= _RECOVERY
        ):
            sb = self._scoreboard()
        if self._f & F_RTX_ONE:
            self._f &= ~F_RTX_ONE
            if una != nxt:
                size = mss
                if sb is not None:
                    size = sb.hole_len(una, nxt, mss)
                span = self._retransmit(now, out, una, size)
                if sb is not None:
                    end = sq.add(una, span)
                    # RFC 6675 §5 step (4.3): HighRxt and RescueRxt past this segment.
                    self._high_rxt = end
                    if self._rescue_rxt is None:
                        self._rescue_rxt = end
                if not self._partials:
                    # The fast retransmit restarts the timer (Linux); NewReno's partial
                    # ACKs follow RFC 6582's Impatient rule in _rearm_on_ack instead.
                    self._t_rtx = now + self._rto_clamped(now)
                    self._f &= ~F_LOSS_PROBE
                sent += 1
        if tp is None:
            return sent, False
        if self._frto == FRTO_NEW:
            self._frto = FRTO_ON
            return sent, False  # RFC 5682 step 2.b: new data instead of retransmissions
        st = tp.ca_state
        if sb is not None and (st == _RECOVERY or st == _LOSS):
            # RFC 6675 §5 (C): NextSeg rule (1) while cwnd - pipe >= 1 SMSS.  After an RTO
            # every un-SACKed octet is lost, so this is go-back-N skipping SACKed data.
            while self._sack_room(mss):
                rng = sb.next_seg(una, nxt, mss, self._high_rxt, skip_rxt=True)
                if rng is None:
                    break
                s, e = rng
                span = self._retransmit(now, out, s, sq.sub(e, s))
                if span <= 0:
                    break
                self._high_rxt = sq.add(s, span)  # (C.2)
                sent += 1
            return sent, False
        p = self._rtx_nxt
        if p is not None:
            # No SACK, after an RTO: go-back-N up to what was outstanding then, paced by
            # cwnd (RFC 5681 §3.1 slow start, RFC 6582 §3.2 step 6).
            if sq.lt(p, una):
                p = una
            top = self._recover if self._recover is not None else nxt
            cwnd = tp.snd_cwnd
            while sq.lt(p, top) and self._loss_flight(p, mss) < cwnd:
                span = self._retransmit(now, out, p, min(mss, sq.sub(top, p)))
                if span <= 0:
                    break
                p = sq.add(p, span)
                sent += 1
            self._rtx_nxt = p if sq.lt(p, top) else None
            if self._rtx_nxt is not None:
                tp.is_cwnd_limited = True
                return sent, True
        return sent, False

    def _xmit_recovery_tail(self, now: float, out: list[TcpSegment], mss: int) -> int:
        """RFC 6675 NextSeg rules (3) and (4), used when no new data can be sent."""
        tp = self.ccs
        sb = self._sb
        if sb is None or tp is None or tp.ca_state != _RECOVERY or self._new_data_ok(mss):
            return 0
        sent = 0
        una = self.snd_una
        nxt = self.snd_nxt
        while self._sack_room(mss):
            # Rule (3): un-SACKed, not yet lost, below the highest SACK.
            rng = sb.next_seg(una, nxt, mss, self._high_rxt, new_data=False, skip_rxt=True)
            if rng is None:
                break
            s, e = rng
            span = self._retransmit(now, out, s, sq.sub(e, s))
            if span <= 0:
                break
            self._high_rxt = sq.add(s, span)
            sent += 1
        rescue = self._rescue_rxt
        if (
            sq.sub(self._write_seq, nxt) <= 0
            and self._sack_room(mss)
            and (rescue is None or sq.gt(una, rescue))
        ):
            # Rule (4): one rescue retransmission per recovery, of the highest un-SACKed
            # segment; RescueRxt = RecoveryPoint, HighRxt unchanged.  Only for a tail
            # (nothing left unsent): when new data merely waits for the receive window
            # the highest un-SACKed segment was just sent and is not lost.
            rng = sb.rescue_seg(una, nxt, mss)
            if rng is not None:
                s, e = rng
                self._retransmit(now, out, s, sq.sub(e, s), rescue=True)
                self._rescue_rxt = self._recover
                sent += 1
        return sent

    def _retransmit(
        self, now: float, out: list[TcpSegment], seq: int, size: int, *, rescue: bool = False,
        probe: bool = False,
    ) -> int:
        """Retransmit up to ``size`` bytes at ``seq`` with the bookkeeping recovery needs
        (Linux ``tcp_retransmit_skb``); returns the sequence space sent."""
        tp = self.ccs
        log = self._rtx_log
        loss = tp is not None and tp.ca_state == _LOSS
        rto_head = loss and seq == self.snd_una and self._retransmits > 0
        span = self._xmit(now, out, seq, size, retrans=True)
        if span <= 0:
            return 0
        end = sq.add(seq, span)
        if log is None:
            log = self._rtx_log = deque()
        log.append((seq, end, self.snd_nxt))
        if self._undo_marker is not None:
            if self._undo_retrans < 0:
                self._undo_retrans = 0
            self._undo_retrans += 1
        if self._undo_tsval is None and self._f & F_TS:
            self._undo_tsval = self._tsval(now)
        sb = self._sb
        if sb is not None:
            sb.mark_retransmitted(seq, end, in_flight=not rescue)
        self._karn_mark(seq, end)
        if tp is not None and not rto_head and not probe:
            # (Linux counts these in tcp_xmit_retransmit_queue only: not for a TLP.)
            self.engine.mib["TCPSlowStartRetrans" if loss else "TCPFastRetrans"] += 1
        return span

    def _karn_mark(self, seq: int, end: int) -> None:
        """Karn (RFC 6298 §3): no RTT sample from an ACK of retransmitted data; the send
        times of the segments in [seq, end) are marked unusable."""
        q = self._txtimes
        if not q:
            return
        marks: list[int] = []
        start: int | None = None
        for i, (e, t) in enumerate(q):
            if start is not None and sq.ge(start, end):
                break
            if sq.gt(e, seq) and t >= 0:
                marks.append(i)
            start = e
        for i in marks:
            q[i] = (q[i][0], -1.0)

    def _trim_rtx_log(self) -> None:
        log = self._rtx_log
        if log:
            una = self.snd_una
            while log and sq.le(log[0][1], una):
                log.popleft()
            if not log:
                self._rtx_log = None

    def _retrans_out(self) -> int:
        """Retransmitted segments not yet acknowledged (Linux ``retrans_out``)."""
        log = self._rtx_log
        if not log:
            return 0
        una = self.snd_una
        return sum(1 for _, e, _ in log if sq.gt(e, una))

    def _fresh_nosack(self, s: int, e: int) -> bool:
        """Without SACK: some octet of [s, e) was never retransmitted since the RTO."""
        log = self._rtx_log
        if not log:
            return True
        spans = sorted((sq.sub(a, s), sq.sub(b, s)) for a, b, _ in log)
        cur = 0
        n = sq.sub(e, s)
        for a, b in spans:
            if a > cur:
                return True
            cur = max(cur, b)
            if cur >= n:
                return False
        return cur < n

    def _loss_flight(self, p: int, mss: int) -> int:
        """Segments in flight in Loss without SACK: the retransmitted ones below ``p``
        and new data sent since the RTO, less the duplicate ACKs it caused (Linux counts
        them as SACKed)."""
        n = self._inflight(p, mss)
        rec = self._recover
        if rec is not None and sq.gt(self.snd_nxt, rec):
            new = -(-sq.sub(self.snd_nxt, rec) // mss)
            n += max(0, new - self._dupacks)
        return n

    def _sack_room(self, mss: int) -> bool:
        """RFC 6675 §5 (C): cwnd - pipe >= 1 SMSS (cwnd in segments)."""
        tp = self.ccs
        pipe = self._sb.pipe(self.snd_una, self.snd_nxt, mss)
        return tp.snd_cwnd * mss - pipe >= mss

    def _cwnd_room(self, mss: int) -> bool:
        """May one more new segment go out under cwnd?"""
        tp = self.ccs
        if tp is None:
            return self._inflight(self.snd_nxt, mss) < TCP_INIT_CWND
        rs = self._rs
        sb = rs.sb if rs is not None else None
        if sb is not None and sb.active:
            return self._sack_room(mss)  # RFC 6675 pipe (limited transmit included)
        cwnd = tp.snd_cwnd
        st = tp.ca_state
        if st == _LOSS and self._rtx_nxt is not None:
            return self._loss_flight(self._rtx_nxt, mss) < cwnd
        if st == _DISORDER:
            # RFC 3042 limited transmit: one new segment for each of the first
            # (dupthresh - 1) duplicate ACKs.
            cwnd += min(self._dupacks, self._reordering - 1)
        return self._inflight(self.snd_nxt, mss) < cwnd

    def _new_data_ok(self, mss: int) -> bool:
        """RFC 6675 NextSeg rule (2) / RFC 5682 step 2.b: unsent data the receive window
        allows exists."""
        unsent = sq.sub(self._write_seq, self.snd_nxt)
        if unsent <= 0:
            return False
        end = sq.add(self.snd_nxt, min(mss, unsent))
        return sq.le(end, sq.add(self.snd_una, self.snd_wnd))

    def _rearm_on_ack(self) -> bool:
        """RFC 6582 §3.2 step 4 (Impatient variant): during NewReno recovery the timer is
        restarted by the first partial ACK only; otherwise RFC 6298 §5.3."""
        tp = self.ccs
        return not (
            tp is not None and tp.ca_state == _RECOVERY and not self._f & F_SACK
            and self._partials > 1
        )

    # =================================================================================
    # Tail Loss Probe (RFC 8985 §7; Linux tcp_schedule_loss_probe, tcp_send_loss_probe,
    # tcp_process_tlp_ack)
    # =================================================================================
    def _schedule_loss_probe(self, now: float, advancing: bool) -> bool:
        """Linux ``tcp_schedule_loss_probe`` (RFC 8985 §7.2): with SACK, tcp_early_retrans
        3 or 4 and data outstanding in the Open or CWR state, the retransmission timer
        becomes the probe timeout PTO = 2*SRTT (+ TCP_RTO_MIN for one segment in flight,
        the peer's delayed ACK; else + TCP_TIMEOUT_MIN), never later than the RTO.
        ``advancing``: an ACK just advanced SND.UNA (the RTO restarts from now)."""
        tp = self.ccs
        if (
            tp is None
            or self.engine.settings.tcp_early_retrans not in (3, 4)
            or not self._f & F_SACK
            or self.snd_una == self.snd_nxt
            or (tp.ca_state != _OPEN and tp.ca_state != _CWR)
            or self.state not in _SYNC_NOT_TW  # (not a Fast Open child in SYN-RECEIVED)
        ):
            return False
        srtt = self.rtt.srtt
        if srtt:
            one = self._inflight(self.snd_nxt, self._eff_mss()) == 1
            pto = 2 * srtt + (TCP_RTO_MIN if one else TCP_TIMEOUT_MIN)
        else:
            pto = TCP_TIMEOUT_INIT  # no RTT sample yet
        rto = self._rto_clamped(now)
        delta = rto if advancing else self._rto_delta(now, rto)
        if delta > 0:
            pto = min(pto, delta)  # "if the RTO formula yields an earlier time, use it"
        self._t_rtx = now + pto
        self._f = (self._f | F_LOSS_PROBE) & ~F_PERSIST
        return True

    def _rto_delta(self, now: float, rto: float) -> float:
        """Linux ``tcp_rto_delta_us``: how far in the future the RTO of the oldest
        outstanding segment is (its send time + RTO - now)."""
        q = self._txtimes
        if q and q[0][1] >= 0:
            return rto - (now - q[0][1])
        return rto

    def _rearm_rto(self, now: float) -> None:
        """Linux ``tcp_rearm_rto`` while the probe timer was pending: the RTO of the oldest
        outstanding segment, at least 1 ms from now."""
        self._f &= ~F_LOSS_PROBE
        self._t_rtx = now + max(self._rto_delta(now, self._rto_clamped(now)), 0.001)

    def _loss_probe_timeout(self, now: float) -> None:
        """Linux ``tcp_send_loss_probe`` (RFC 8985 §7.3): send one new segment if the
        receive window allows (cwnd does not apply), else retransmit the last segment;
        at most one probe per episode (tlp_high_seq).  The RTO is then restarted."""
        tp = self.ccs
        if self.snd_una == self.snd_nxt or self.state not in _SYNC_NOT_TW or tp is None:
            self._f &= ~F_LOSS_PROBE
            return
        if tp.ca_state != _OPEN and tp.ca_state != _CWR:
            # Recovery started after the probe was scheduled (a stale PTO): the RTO rules.
            self._rearm_rto(now)
            return
        if self._tlp_high is not None:
            self._rearm_rto(now)  # at most one outstanding TLP
            return
        mss = self._eff_mss()
        out = self.engine._tx
        una = self.snd_una
        nxt = self.snd_nxt
        if self._new_data_ok(mss):
            start = nxt
            span = self._xmit(now, out, start, mss, retrans=False)
            rxt = False
        else:
            # The last segment: from the last send boundary (_txtimes), at most one MSS
            # of data before SND.NXT (and the FIN, if it was sent).
            data_end = self._write_seq if sq.gt(nxt, self._write_seq) else nxt
            start = sq.add(data_end, -mss)
            q = self._txtimes
            if q and len(q) >= 2 and sq.gt(q[-2][0], start) and sq.lt(q[-2][0], data_end):
                start = q[-2][0]
            if sq.lt(start, una):
                start = una
            if self._retrans_stamp is None and q:
                # Linux: retrans_stamp is the probed segment's first send time, so the
                # tcp_retries2 / TCP_USER_TIMEOUT clock starts at the original transmission.
                self._retrans_stamp = q[-1][1] if q[-1][1] >= 0 else None
            span = self._retransmit(now, out, start, mss, probe=True)
            rxt = True
        if span <= 0:
            self._rearm_rto(now)
            return
        self._tlp_high = self.snd_nxt  # record SND.NXT for the loss detection
        self._tlp_seg = (start, sq.add(start, span))
        self._tlp_rxt = rxt
        self.engine.mib["TCPLossProbes"] += 1
        self._f &= ~F_LOSS_PROBE
        self._t_rtx = now + self._rto_clamped(now)  # the RTO restarts from the probe

    def _process_tlp_ack(self, seg: TcpSegment, advanced: bool, newly_sacked: int) -> None:
        """Linux ``tcp_process_tlp_ack`` (RFC 8985 §7.4): ends the TLP episode and, when
        the probe repaired a loss, reduces cwnd once (TCPLossProbeRecovery)."""
        una = self.snd_una
        probe = self._tlp_seg
        sb = self._sb
        if probe is not None and sb is not None and newly_sacked and sb.is_sacked(probe[0]):
            # RFC 8985 §6.2 (RACK) applied to the probe: it was delivered, and every
            # un-SACKed octet below it was sent at least a PTO (more than the reordering
            # window) before it: lost.  Recovery then starts on this ACK.
            self._tlp_seg = None
            if sq.lt(una, probe[0]):
                sb.mark_lost_below(una, probe[0])
        high = self._tlp_high
        if high is None or sq.lt(una, high):
            return
        dsack = sb.last_dsack if sb is not None and seg.options.sack_blocks else None
        if not self._tlp_rxt:
            self._tlp_high = None  # a probe of new data was acknowledged
        elif (dsack is not None and dsack[1] == high
              and sq.sub(dsack[1], dsack[0]) <= self._eff_mss()):
            # FLAG_DSACK_TLP (a D-SACK of one segment ending at tlp_high_seq): the
            # original and the probe both arrived, no loss.
            self._tlp_high = None
        elif sq.gt(una, high):
            # The ACK goes past the probe without a D-SACK: the probe repaired a loss.
            self._init_cwnd_reduction()  # (ends the episode)
            self._set_ca_state(_CWR)
            self._end_cwnd_reduction(_CWR)
            self._try_keep_open()
            self.engine.mib["TCPLossProbeRecovery"] += 1
        elif not (advanced or seg.payload or newly_sacked
                  or (seg.window << self.snd_wscale) != self.snd_wnd):
            self._tlp_high = None  # pure duplicate ACK: both arrived, no loss

    # =================================================================================
    # ECN (RFC 3168)
    # =================================================================================
    def _ecn_negotiate(self, seg: TcpSegment, passive: bool) -> None:
        """ECN setup from the peer's SYN or SYN-ACK (RFC 3168 §6.1.1)."""
        f = seg.flags
        if passive:
            # Linux tcp_ecn_create_request: an ECN-setup SYN (ECE and CWR) that is not
            # itself ECT, and tcp_ecn 1 or 2.
            ok = bool(self.engine.settings.tcp_ecn) and f & (ECE | CWR) == ECE | CWR
            self._ecn = ECN_OK if ok and seg.ecn == NOT_ECT else 0
        elif self._ecn & ECN_OK:
            if f & ACK:
                bad = not f & ECE or f & CWR  # ECN-setup SYN-ACK: ECE without CWR
            else:
                bad = f & (ECE | CWR) != ECE | CWR  # simultaneous open: an ECN-setup SYN
            if bad:
                self._ecn = 0

    def _ecn_syn_flags(self) -> int:
        """ECE/CWR for our SYN or SYN-ACK (Linux tcp_ecn_send_syn / tcp_ecn_make_synack)."""
        s = self.engine.settings
        if self.state == TcpState.SYN_SENT:
            if self.snd_nxt == self.iss:  # the first SYN: request ECN if tcp_ecn is 1
                self._ecn = ECN_OK if s.tcp_ecn == 1 else 0
                return ECE | CWR if self._ecn else 0
            # RFC 3168 §6.1.1.1 fallback (tcp_ecn_fallback): a retransmitted SYN goes
            # without ECE/CWR in case a middlebox drops ECN-setup SYNs.
            if self._ecn & ECN_OK and not s.tcp_ecn_fallback:
                return ECE | CWR
            return 0
        return ECE if self._ecn & ECN_OK else 0

    def _ecn_rcv(self, seg: TcpSegment) -> None:
        """Receiver side (RFC 3168 §6.1.3): CE on data -> ECE on every ACK until CWR."""
        if not seg.payload:
            return
        if seg.flags & CWR:
            self._ecn &= ~ECN_DEMAND_CWR  # Linux tcp_ecn_accept_cwr
            self._f |= F_ACK_NOW
        ecn = seg.ecn
        if ecn == CE:
            if not self._ecn & ECN_DEMAND_CWR:
                self._quick = max(self._quick, 2)  # ACK it at once (tcp_enter_quickack_mode)
                self._ecn |= ECN_DEMAND_CWR
            self._ecn |= ECN_SEEN
            self._ca_event(CaEvent.ECN_IS_CE)
        elif ecn != NOT_ECT:
            self._ecn |= ECN_SEEN
            self._ca_event(CaEvent.ECN_NO_CE)

    def _ca_event(self, ev: CaEvent) -> None:
        tp = self.ccs
        if tp is not None and self.cc is not None:
            self.cc.cwnd_event(tp, ev)

    def _ecn_queue_cwr(self) -> None:
        if self._ecn & ECN_OK:
            self._ecn |= ECN_QUEUE_CWR

    def _enter_cwr(self) -> None:
        """ECE: reduce once per window of data (RFC 3168 §6.1.2, Linux tcp_enter_cwr)."""
        tp = self.ccs
        tp.prior_ssthresh = 0
        if tp.ca_state < _CWR:
            self._undo_marker = None
            self._init_cwnd_reduction()
            tp.snd_cwnd = max(min(tp.snd_cwnd, tp.snd_ssthresh), 1)
            self._set_ca_state(_CWR)

    def _ecn_mark(self, seg: TcpSegment, new_data: bool) -> None:
        """RFC 3168 §6.1.2/§6.1.5: ECT(0) on new data only (never on retransmissions,
        pure ACKs or SYNs); CWR on the first new data segment after a reduction."""
        if new_data:
            seg.ecn = ECT0
            if self._ecn & ECN_QUEUE_CWR:
                self._ecn &= ~ECN_QUEUE_CWR
                seg.flags |= CWR

    # =================================================================================
    # Congestion control switch and introspection
    # =================================================================================
    def _set_opt(self, name: int, value: Any) -> None:
        super()._set_opt(name, value)  # type: ignore[misc]
        if name == TCP_CONGESTION and self.cc is not None and self.ccs is not None:
            self._switch_cc(str(value))

    def _switch_cc(self, name: str) -> None:
        """TCP_CONGESTION on a live connection (Linux ``tcp_reinit_congestion_control``):
        release the old algorithm, clear its private state, init the new one; cwnd and
        ssthresh carry over."""
        old = self.cc
        tp = self.ccs
        if old is None or tp is None or old.name == name:
            return
        ops = cc.for_connection(name)
        tp.now_us = int(self.engine._now * 1e6)
        old.release(tp)
        tp.priv = None
        tp.prior_ssthresh = 0
        ops.init(tp)
        self.cc = ops

    def _recovery_info(self) -> dict[str, Any]:
        """``tcp_info`` fields of this module (``ss -ti``: sacked, lost, reordering ...)."""
        sb = self._sb
        mss = self._eff_mss()
        sacked = lost = 0
        if sb is not None and self.ccs is not None:
            sacked = -(-sb.sacked_bytes // mss)
            lost = -(-sb.lost_bytes(self.snd_una, self.snd_nxt, mss) // mss)
        elif self._rtx_nxt is not None and self._recover is not None:
            lost = -(-max(0, sq.sub(self._recover, self._rtx_nxt)) // mss)
        return {
            "sacked": sacked,
            "lost": lost,
            "reordering": self._reordering,
            "reord_seen": self._reord_seen,
            "dsack_dups": self._dsack_dups,
        }

    def _ecn_options(self) -> list[str]:
        """The ECN words ``ss`` prints among the options (TCPI_OPT_ECN / _ECN_SEEN)."""
        opts = []
        if self._ecn & ECN_OK and self.state != TcpState.SYN_SENT:
            opts.append("ecn")
        if self._ecn & ECN_SEEN:
            opts.append("ecnseen")
        return opts
