"""CUBIC (RFC 9438 as Linux tcp_cubic.c) driven by scripted ACK streams and an explicit clock."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

import pystack.cc.cubic as cubic
from pystack.cc.base import TCP_INFINITE_SSTHRESH, AckSample, CaEvent, CaState, CcState
from pystack.cc.cubic import BicTcp, Cubic, cubic_root, k_fixed

MSS = 1448
C = 0.4  # RFC 9438 §5.1
BETA = 0.7  # RFC 9438 §4.6
C_LINUX = cubic.bic_scale * 10 / 1024  # what Linux actually uses (0.4004)


def ack(ops: Cubic, tp: CcState, now_us: int, rtt_us: int, n: int = 1) -> None:
    """One ACK for ``n`` segments, in the order the engine calls the hooks."""
    tp.now_us = now_us
    tp.delivered += n
    tp.packets_out = max(tp.packets_out - n, 0)
    ops.pkts_acked(tp, AckSample(pkts_acked=n, rtt_us=rtt_us, in_flight=tp.packets_out))
    ops.cong_avoid(tp, 0, n)
    tp.packets_out = tp.snd_cwnd  # the sender refills the window


def ack_clocked(
    ops: Cubic,
    tp: CcState,
    start_us: int,
    until_us: int,
    rtt_us: int,
    on_ack: Callable[[int], None] | None = None,
) -> int:
    """Steady ACK clock: one ACK per segment, cwnd ACKs spread over each RTT."""
    now = start_us
    while now < until_us:
        ack(ops, tp, now, rtt_us)
        if on_ack is not None:
            on_ack(now)
        now += max(rtt_us // tp.snd_cwnd, 1)
    return now


def new_conn(cwnd: int = 10, ssthresh: int = TCP_INFINITE_SSTHRESH) -> tuple[Cubic, CcState]:
    ops = Cubic()
    tp = CcState(mss=MSS, snd_cwnd=cwnd, snd_ssthresh=ssthresh)
    ops.init(tp)
    return ops, tp


def enter_recovery(ops: Cubic, tp: CcState) -> None:
    """What the engine does on a fast-retransmit loss, then at the end of recovery."""
    tp.prior_cwnd = tp.snd_cwnd
    tp.snd_ssthresh = ops.ssthresh(tp)
    tp.snd_cwnd = tp.snd_ssthresh


# -- arithmetic ---------------------------------------------------------------------------


def test_cubic_root_exact() -> None:
    for a in [0, 1, 7, 8, 26, 27, 1000, 10**12, 2**63 - 1, 2**64 + 12345]:
        r = cubic_root(a)
        assert r**3 <= a < (r + 1) ** 3


@pytest.mark.parametrize("w_max", [10, 20, 100, 1000, 20000])
def test_k_matches_rfc9438_formula(w_max: int) -> None:
    cwnd_epoch = w_max * 717 // 1024
    k_rfc = ((w_max - cwnd_epoch) / C) ** (1 / 3)  # RFC 9438 §4.2 eq. 2
    k = k_fixed(w_max, cwnd_epoch) / 1024
    assert k == pytest.approx(k_rfc, rel=0.005, abs=2 / 1024)
    assert k == pytest.approx(((w_max - cwnd_epoch) / C_LINUX) ** (1 / 3), abs=2 / 1024)
    assert k_fixed(w_max, w_max) == 0 and k_fixed(w_max, w_max + 5) == 0


@pytest.mark.parametrize("cwnd", [2, 3, 10, 100, 1000, 12345])
def test_ssthresh_is_beta_cubic(cwnd: int) -> None:
    ops, tp = new_conn(cwnd=cwnd)
    assert ops.ssthresh(tp) == max(cwnd * 717 // 1024, 2)


def test_ssthresh_floor_and_wmax() -> None:
    ops, tp = new_conn(cwnd=1)
    assert ops.ssthresh(tp) == 2
    ops, tp = new_conn(cwnd=100)
    assert ops.ssthresh(tp) == 70
    assert isinstance(tp.priv, BicTcp) and tp.priv.last_max_cwnd == 100


def test_fast_convergence_lowers_wmax(monkeypatch: pytest.MonkeyPatch) -> None:
    ops, tp = new_conn(cwnd=100)
    ops.ssthresh(tp)
    tp.snd_cwnd = 90  # second loss below the previous W_max
    ops.ssthresh(tp)
    assert isinstance(tp.priv, BicTcp)
    # RFC 9438 §4.7: W_max = cwnd * (1 + beta) / 2
    assert tp.priv.last_max_cwnd == 90 * (1024 + 717) // 2048 == 76
    tp.snd_cwnd = 120  # a loss above W_max: plain W_max = cwnd
    ops.ssthresh(tp)
    assert tp.priv.last_max_cwnd == 120

    monkeypatch.setattr(cubic, "fast_convergence", 0)
    ops, tp = new_conn(cwnd=100)
    ops.ssthresh(tp)
    tp.snd_cwnd = 90
    ops.ssthresh(tp)
    assert isinstance(tp.priv, BicTcp) and tp.priv.last_max_cwnd == 90


# -- window growth ------------------------------------------------------------------------


def test_window_follows_cubic_curve_after_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cubic, "tcp_friendliness", 0)
    rtt = 100_000
    ops, tp = new_conn(cwnd=100, ssthresh=80)  # congestion avoidance at W = 100
    ack(ops, tp, 0, rtt)  # learn delay_min
    t0 = 2_000_000
    tp.now_us = t0
    enter_recovery(ops, tp)
    assert tp.snd_cwnd == 70  # 100 * 717 // 1024
    w_max = 100
    k = ((w_max - 70) / C_LINUX) ** (1 / 3)
    assert isinstance(tp.priv, BicTcp)
    errors: list[float] = []

    def check(now: int) -> None:
        t = (now - t0) / 1e6
        w = C_LINUX * (t - k) ** 3 + w_max  # RFC 9438 §4.2 eq. 1
        errors.append(tp.snd_cwnd - w)
        # Linux aims one RTT ahead (t + delay_min) and integer cwnd lags an RTT behind;
        # the two cancel, leaving rounding: within 2 segments.
        assert abs(tp.snd_cwnd - w) <= 2, (t, tp.snd_cwnd, w)

    end = ack_clocked(ops, tp, t0, t0 + int((k + 3) * 1e6), rtt, check)
    assert tp.priv.bic_K == k_fixed(100, 70)
    assert tp.priv.bic_origin_point == 100
    assert len(errors) > 1000
    # concave then plateau near W_max around t = K, then convex
    t_end = (end - t0) / 1e6
    assert tp.snd_cwnd == pytest.approx(C_LINUX * (t_end - k) ** 3 + w_max, abs=3)
    assert tp.snd_cwnd > w_max


def test_plateau_around_wmax(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cubic, "tcp_friendliness", 0)
    rtt = 50_000
    ops, tp = new_conn(cwnd=200, ssthresh=100)
    ack(ops, tp, 0, rtt)
    enter_recovery(ops, tp)  # at t = 0 (epoch starts on the next ACK)
    k_s = k_fixed(200, tp.snd_cwnd) / 1024
    ack_clocked(ops, tp, 1, int(k_s * 1e6), rtt)
    at_k = tp.snd_cwnd
    assert 196 <= at_k <= 201
    ack_clocked(ops, tp, int(k_s * 1e6), int((k_s + 0.5) * 1e6), rtt)
    assert tp.snd_cwnd - at_k <= 2  # flat around the old maximum


def test_tcp_friendly_region_at_small_rtt() -> None:
    rtt = 1000  # 1 ms: CUBIC's curve is far slower than Reno here (RFC 9438 §4.3)
    ops, tp = new_conn(cwnd=20, ssthresh=10)
    ack(ops, tp, 0, rtt)
    tp.now_us = 2_000_000
    enter_recovery(ops, tp)
    w0 = tp.snd_cwnd  # 14
    rounds = 200
    ack_clocked(ops, tp, 2_000_000, 2_000_000 + rounds * rtt, rtt)
    # Reno-friendly estimate: W_est = W_max*beta + alpha_cubic * t / RTT
    alpha = 3 * (1 - BETA) / (1 + BETA)
    w_est = w0 + alpha * rounds
    k = ((20 - w0) / C_LINUX) ** (1 / 3)
    w_cubic = C_LINUX * (rounds * rtt / 1e6 - k) ** 3 + 20
    assert w_cubic < 20
    assert tp.snd_cwnd == pytest.approx(w_est, rel=0.1)


def test_without_friendliness_small_rtt_stays_on_curve(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cubic, "tcp_friendliness", 0)
    rtt = 1000
    ops, tp = new_conn(cwnd=20, ssthresh=10)
    ack(ops, tp, 0, rtt)
    tp.now_us = 2_000_000
    enter_recovery(ops, tp)
    ack_clocked(ops, tp, 2_000_000, 2_200_000, rtt)
    assert tp.snd_cwnd <= 17  # W_cubic(0.2 s) ~ 15.4


def test_growth_capped_at_1_5x_per_rtt() -> None:
    # Far above W_max the curve is steep; cnt >= 2 limits growth to 1.5x per RTT.
    ops, tp = new_conn(cwnd=100, ssthresh=50)
    assert isinstance(tp.priv, BicTcp)
    tp.priv.last_max_cwnd = 10
    for _ in range(100):
        ack(ops, tp, 50_000_000, 100_000)
    assert tp.snd_cwnd <= 150


def test_no_growth_when_not_cwnd_limited() -> None:
    ops, tp = new_conn(cwnd=50, ssthresh=20)
    tp.is_cwnd_limited = False
    ack_clocked(ops, tp, 0, 1_000_000, 10_000)
    assert tp.snd_cwnd == 50


def test_first_epoch_without_wmax_grows_at_least_5_percent() -> None:
    ops, tp = new_conn(cwnd=100, ssthresh=50)
    ack(ops, tp, 0, 100_000)
    ack_clocked(ops, tp, 1, 100_000, 100_000)
    assert tp.snd_cwnd >= 105


def test_idle_tx_start_shifts_epoch() -> None:
    ops, tp = new_conn(cwnd=100, ssthresh=50)
    ack(ops, tp, 0, 10_000)
    enter_recovery(ops, tp)
    ack_clocked(ops, tp, 1_000_000, 1_500_000, 10_000)
    assert isinstance(tp.priv, BicTcp) and tp.priv.epoch_start is not None
    epoch = tp.priv.epoch_start
    tp.now_us = 5_000_000  # idle for ~3.5 s, then the application sends again
    ops.cwnd_event(tp, CaEvent.TX_START)
    assert tp.priv.epoch_start - epoch == pytest.approx(3500, abs=2)  # jiffies
    ops.cwnd_event(tp, CaEvent.CWND_RESTART)  # other events: no-op


def test_loss_state_resets() -> None:
    ops, tp = new_conn(cwnd=100, ssthresh=50)
    ack(ops, tp, 0, 10_000)
    enter_recovery(ops, tp)
    ops.set_state(tp, CaState.RECOVERY)
    assert isinstance(tp.priv, BicTcp) and tp.priv.last_max_cwnd == 100
    ops.set_state(tp, CaState.LOSS)
    assert tp.priv.last_max_cwnd == 0 and tp.priv.delay_min == 0
    assert tp.priv.epoch_start is None


def test_pkts_acked_ignores_missing_rtt_and_tracks_min() -> None:
    ops, tp = new_conn()
    ops.pkts_acked(tp, AckSample(1, -1, 0))
    assert isinstance(tp.priv, BicTcp) and tp.priv.delay_min == 0
    ops.pkts_acked(tp, AckSample(1, 30_000, 0))
    ops.pkts_acked(tp, AckSample(1, 20_000, 0))
    ops.pkts_acked(tp, AckSample(1, 25_000, 0))
    assert tp.priv.delay_min == 20_000
    ops.pkts_acked(tp, AckSample(1, 0, 0))
    assert tp.priv.delay_min == 1


def test_undo_and_info_and_release() -> None:
    ops, tp = new_conn(cwnd=40)
    tp.prior_cwnd = 60
    assert ops.undo_cwnd(tp) == 60
    ops.ssthresh(tp)
    info = ops.get_info(tp)
    assert info["last_max_cwnd"] == 40 and "bic_K_ms" in info
    ops.release(tp)
    assert tp.priv is None
    # hooks tolerate a missing init (lazy state)
    ops.cong_avoid(tp, 0, 1)
    assert isinstance(tp.priv, BicTcp)


def test_initial_ssthresh_param_without_hystart(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cubic, "hystart", 0)
    monkeypatch.setattr(cubic, "initial_ssthresh", 64)
    _, tp = new_conn()
    assert tp.snd_ssthresh == 64


# -- HyStart ------------------------------------------------------------------------------


def slow_start_rounds(
    ops: Cubic, tp: CcState, rtts_us: list[int], spacing_us: int
) -> list[tuple[int, int]]:
    """Scripted slow start: round r sends cwnd segments; their ACKs arrive rtts[r] later,
    ``spacing_us`` apart.  Returns (cwnd at round start, ssthresh at round end) per round."""
    trace = []
    now = 0
    tp.packets_out = tp.snd_cwnd
    for rtt in rtts_us:
        n = tp.snd_cwnd
        start_cwnd = n
        round_start = now
        for i in range(n):
            ack(ops, tp, round_start + rtt + i * spacing_us, rtt)
        now = round_start + rtt + n * spacing_us
        trace.append((start_cwnd, tp.snd_ssthresh))
    return trace


def test_hystart_flat_rtt_keeps_slow_start() -> None:
    ops, tp = new_conn()
    trace = slow_start_rounds(ops, tp, [100_000] * 7, spacing_us=50)
    assert [c for c, _ in trace] == [10, 20, 40, 80, 160, 320, 640]
    assert all(s == TCP_INFINITE_SSTHRESH for _, s in trace)
    assert tp.snd_cwnd == 1280
    assert isinstance(tp.priv, BicTcp) and not tp.priv.found


def test_hystart_delay_increase_exits_slow_start() -> None:
    ops, tp = new_conn()
    rtts = [100_000] * 4 + [120_000] * 3  # +20 ms > clamp(100 ms / 8, 4, 16) ms
    trace = slow_start_rounds(ops, tp, rtts, spacing_us=50)
    assert trace[3][1] == TCP_INFINITE_SSTHRESH
    assert isinstance(tp.priv, BicTcp) and tp.priv.found
    # Detected in round 4 (cwnd 160 at its start) after HYSTART_MIN_SAMPLES samples.
    assert trace[4][0] == 160
    # The round's first ACK starts it; the (MIN_SAMPLES + 1)th ACK decides, before its own
    # cong_avoid: cwnd = 160 + MIN_SAMPLES.
    assert tp.snd_ssthresh == 160 + cubic.HYSTART_MIN_SAMPLES
    assert tp.snd_cwnd < 2 * tp.snd_ssthresh  # growth is now congestion avoidance


def test_hystart_small_delay_increase_ignored() -> None:
    ops, tp = new_conn()
    rtts = [100_000] * 4 + [110_000] * 3  # +10 ms < 12.5 ms threshold
    trace = slow_start_rounds(ops, tp, rtts, spacing_us=50)
    assert all(s == TCP_INFINITE_SSTHRESH for _, s in trace)


def test_hystart_below_low_window_ignored() -> None:
    ops, tp = new_conn(cwnd=4)
    trace = slow_start_rounds(ops, tp, [100_000] + [200_000], spacing_us=50)
    assert all(s == TCP_INFINITE_SSTHRESH for _, s in trace)  # cwnd < 16


def test_hystart_ack_train_exits_slow_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cubic, "hystart_detect", cubic.HYSTART_ACK_TRAIN)
    ops, tp = new_conn()
    # 10 ms RTT, ACKs 100 us apart: a train spans delay_min/2 = 5 ms after 50 ACKs, so
    # the round of 40 does not trigger and the round of 80 does, at its ~51st ACK.
    trace = slow_start_rounds(ops, tp, [10_000] * 6, spacing_us=100)
    assert isinstance(tp.priv, BicTcp) and tp.priv.found
    assert trace[2] == (40, TCP_INFINITE_SSTHRESH)
    assert trace[3][0] == 80
    assert 80 + 49 <= tp.snd_ssthresh <= 80 + 52


def test_hystart_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cubic, "hystart", 0)
    ops, tp = new_conn()
    slow_start_rounds(ops, tp, [100_000] * 4 + [150_000] * 3, spacing_us=50)
    assert tp.snd_ssthresh == TCP_INFINITE_SSTHRESH


def test_delay_samples_ignored_right_after_recovery() -> None:
    ops, tp = new_conn(cwnd=100, ssthresh=50)
    ack(ops, tp, 0, 50_000)
    enter_recovery(ops, tp)
    ack(ops, tp, 10_000, 50_000)  # starts the epoch
    ops.pkts_acked(tp, AckSample(1, 1_000, 0))  # within 1 s of the epoch: discarded
    assert isinstance(tp.priv, BicTcp) and tp.priv.delay_min == 50_000
    assert math.isfinite(tp.priv.delay_min)
