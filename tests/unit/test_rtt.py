"""RFC 6298 retransmission timer with Linux's bounds."""

from __future__ import annotations

import pytest

from pystack.tcp.rtt import CLOCK_GRANULARITY, RttEstimator


def test_initial_state() -> None:
    est = RttEstimator()
    assert est.srtt is None and est.rttvar is None
    assert est.rto == 1.0 and est.backoff == 0  # RFC 6298 §2.1, Linux TCP_TIMEOUT_INIT
    assert (est.min_rto, est.max_rto) == (0.2, 120.0)  # Linux TCP_RTO_MIN / TCP_RTO_MAX


@pytest.mark.parametrize("r", [0.05, 0.1, 0.3, 2.0])
def test_first_sample(r: float) -> None:
    est = RttEstimator()
    est.sample(r)
    assert est.srtt == r
    assert est.rttvar == r / 2
    assert est.rto == pytest.approx(max(0.2, r + 4 * r / 2))  # RFC 6298 §2.2


def test_second_sample_rfc_order() -> None:
    est = RttEstimator()
    est.sample(0.1)
    est.sample(0.2)
    # §2.3: RTTVAR uses the old SRTT, then SRTT is updated.
    rttvar = 0.75 * 0.05 + 0.25 * abs(0.1 - 0.2)
    srtt = 0.875 * 0.1 + 0.125 * 0.2
    assert est.rttvar == pytest.approx(rttvar)
    assert est.srtt == pytest.approx(srtt)
    assert est.rto == pytest.approx(srtt + 4 * rttvar)


def test_converges_on_constant_rtt() -> None:
    est = RttEstimator(min_rto=1e-6)
    for _ in range(200):
        est.sample(0.05)
    assert est.srtt == pytest.approx(0.05)
    assert est.rttvar == pytest.approx(0, abs=1e-9)
    assert est.rto == pytest.approx(0.05 + CLOCK_GRANULARITY)  # max(G, 4*RTTVAR) = G


def test_min_and_max_clamps() -> None:
    est = RttEstimator()
    est.sample(0.001)
    assert est.rto == 0.2  # 0.003 s raised to min_rto
    est = RttEstimator()
    est.sample(100.0)
    assert est.rto == 120.0  # 300 s capped at max_rto
    rfc = RttEstimator(min_rto=1.0, max_rto=60.0)  # RFC 6298's own bounds
    rfc.sample(0.1)
    assert rfc.rto == 1.0


def test_zero_rtt_uses_clock_granularity() -> None:
    est = RttEstimator(min_rto=1e-6)
    est.sample(0.0)
    assert est.rto == pytest.approx(CLOCK_GRANULARITY)


def test_backoff_doubles_and_caps() -> None:
    est = RttEstimator()
    seen = []
    for _ in range(10):
        est.on_timeout()
        seen.append(est.rto)
    assert seen == [2, 4, 8, 16, 32, 64, 120, 120, 120, 120]
    assert est.backoff == 10


def test_backoff_after_samples() -> None:
    est = RttEstimator()
    est.sample(0.1)
    base = est.rto
    est.on_timeout()
    est.on_timeout()
    assert est.rto == pytest.approx(4 * base) and est.backoff == 2


def test_sample_resets_backoff() -> None:
    est = RttEstimator()
    est.sample(0.1)
    for _ in range(3):
        est.on_timeout()
    assert est.backoff == 3
    est.sample(0.1)  # a valid (Karn-clean) sample: §5.7
    assert est.backoff == 0
    assert est.rto == pytest.approx(est.srtt + 4 * est.rttvar)  # type: ignore[operator]


def test_reset() -> None:
    est = RttEstimator(initial_rto=3.0)
    est.sample(0.5)
    est.on_timeout()
    est.reset()
    assert (est.srtt, est.rttvar, est.rto, est.backoff) == (None, None, 3.0, 0)


def test_tcp_info_fields_in_microseconds() -> None:
    est = RttEstimator()
    assert est.tcp_info_fields() == {"rtt": 0, "rttvar": 250_000, "rto": 1_000_000, "backoff": 0}
    est.sample(0.1)
    est.on_timeout()
    info = est.tcp_info_fields()
    assert info == {"rtt": 100_000, "rttvar": 50_000, "rto": 600_000, "backoff": 1}


@pytest.mark.parametrize("bad", [-0.001, float("nan"), float("inf")])
def test_invalid_sample_rejected(bad: float) -> None:
    with pytest.raises(ValueError):
        RttEstimator().sample(bad)


def test_invalid_config_rejected() -> None:
    with pytest.raises(ValueError):
        RttEstimator(min_rto=2.0, max_rto=1.0)
    with pytest.raises(ValueError):
        RttEstimator(initial_rto=0)
