"""Reno (RFC 5681 as Linux tcp_reno_*) and the shared slow-start / AI helpers."""

from __future__ import annotations

from pystack.cc.base import (
    TCP_INFINITE_SSTHRESH,
    CcState,
    tcp_cong_avoid_ai,
    tcp_in_slow_start,
    tcp_slow_start,
)
from pystack.cc.reno import Reno

MSS = 1448


def ack_one_rtt(ops: Reno, tp: CcState) -> None:
    """Deliver one ACK per segment of the current window, one segment each."""
    for _ in range(tp.snd_cwnd):
        ops.cong_avoid(tp, 0, 1)


def test_defaults_are_linux() -> None:
    tp = CcState(mss=MSS)
    assert tp.snd_cwnd == 10  # RFC 6928 IW10
    assert tp.snd_ssthresh == TCP_INFINITE_SSTHRESH == 0x7FFFFFFF
    assert tcp_in_slow_start(tp)


def test_slow_start_doubles_per_rtt() -> None:
    ops, tp = Reno(), CcState(mss=MSS)
    ops.init(tp)
    seen = [tp.snd_cwnd]
    for _ in range(5):
        ack_one_rtt(ops, tp)
        seen.append(tp.snd_cwnd)
    assert seen == [10, 20, 40, 80, 160, 320]
    assert tp.snd_cwnd_cnt == 0


def test_slow_start_stretch_ack_grows_by_acked() -> None:
    ops, tp = Reno(), CcState(mss=MSS)
    ops.cong_avoid(tp, 0, 7)  # RFC 3465 L=infinity, as Linux
    assert tp.snd_cwnd == 17


def test_slow_start_stops_at_ssthresh_leftover_goes_to_ai() -> None:
    tp = CcState(mss=MSS, snd_cwnd=10, snd_ssthresh=15)
    assert tcp_slow_start(tp, 10) == 5
    assert tp.snd_cwnd == 15
    ops = Reno()
    tp = CcState(mss=MSS, snd_cwnd=10, snd_ssthresh=15)
    ops.cong_avoid(tp, 0, 10)
    assert (tp.snd_cwnd, tp.snd_cwnd_cnt) == (15, 5)  # 5 credits toward the next +1


def test_ai_one_segment_per_window_of_acks() -> None:
    ops, tp = Reno(), CcState(mss=MSS, snd_cwnd=20, snd_ssthresh=10)
    for i in range(1, 20):
        ops.cong_avoid(tp, 0, 1)
        assert (tp.snd_cwnd, tp.snd_cwnd_cnt) == (20, i)
    ops.cong_avoid(tp, 0, 1)
    assert (tp.snd_cwnd, tp.snd_cwnd_cnt) == (21, 0)
    for _ in range(10):
        ack_one_rtt(ops, tp)
    assert tp.snd_cwnd == 31  # +1 MSS per RTT


def test_ai_counter_arithmetic_with_bulk_acks() -> None:
    tp = CcState(mss=MSS, snd_cwnd=20, snd_ssthresh=10)
    tcp_cong_avoid_ai(tp, 20, 45)  # 45 credits at w=20: +2, 5 left
    assert (tp.snd_cwnd, tp.snd_cwnd_cnt) == (22, 5)
    # Credits accumulated at a higher w are applied gently: +1 and reset.
    tp = CcState(mss=MSS, snd_cwnd=20, snd_ssthresh=10, snd_cwnd_cnt=30)
    tcp_cong_avoid_ai(tp, 20, 3)
    assert (tp.snd_cwnd, tp.snd_cwnd_cnt) == (21, 3)


def test_cwnd_clamp() -> None:
    ops, tp = Reno(), CcState(mss=MSS, snd_cwnd=10, snd_cwnd_clamp=12)
    ops.cong_avoid(tp, 0, 100)
    assert tp.snd_cwnd == 12
    tp.snd_ssthresh = 5
    for _ in range(100):
        ops.cong_avoid(tp, 0, 1)
    assert tp.snd_cwnd == 12


def test_no_growth_when_not_cwnd_limited() -> None:
    ops, tp = Reno(), CcState(mss=MSS, is_cwnd_limited=False)
    ops.cong_avoid(tp, 0, 10)
    assert tp.snd_cwnd == 10
    tp.snd_ssthresh = 5
    ops.cong_avoid(tp, 0, 100)
    assert (tp.snd_cwnd, tp.snd_cwnd_cnt) == (10, 0)


def test_ssthresh_halves_with_floor_of_two() -> None:
    ops = Reno()
    assert ops.ssthresh(CcState(mss=MSS, snd_cwnd=20)) == 10
    assert ops.ssthresh(CcState(mss=MSS, snd_cwnd=21)) == 10
    assert ops.ssthresh(CcState(mss=MSS, snd_cwnd=3)) == 2
    assert ops.ssthresh(CcState(mss=MSS, snd_cwnd=1)) == 2


def test_undo_restores_prior_cwnd() -> None:
    ops, tp = Reno(), CcState(mss=MSS, snd_cwnd=40)
    # Engine: on loss save prior_cwnd, set ssthresh, reduce cwnd.
    tp.prior_cwnd, tp.prior_ssthresh = tp.snd_cwnd, tp.snd_ssthresh
    tp.snd_ssthresh = ops.ssthresh(tp)
    tp.snd_cwnd = tp.snd_ssthresh
    assert tp.snd_cwnd == 20
    # Spurious: undo.
    assert ops.undo_cwnd(tp) == 40
    tp.snd_cwnd = 50
    assert ops.undo_cwnd(tp) == 50


def test_optional_hooks_are_noops() -> None:
    from pystack.cc.base import AckSample, CaEvent, CaState

    ops, tp = Reno(), CcState(mss=MSS)
    ops.init(tp)
    ops.pkts_acked(tp, AckSample(pkts_acked=1, rtt_us=1000, in_flight=3))
    ops.cwnd_event(tp, CaEvent.TX_START)
    ops.set_state(tp, CaState.RECOVERY)
    assert ops.get_info(tp) == {}
    ops.release(tp)
    assert tp.snd_cwnd == 10
    assert int(CaState.LOSS) == 4 and int(CaEvent.ECN_IS_CE) == 5
