"""Retransmission: RFC 6298 timer, Karn, tcp_retries2 / TCP_USER_TIMEOUT, NewReno."""

import errno

import pytest

from pystack.tcp.constants import model_timeout
from pystack.tcp.state import TcpState
from pystack.tcp.testing import LOCAL_ISN, REMOTE_ISN, Harness
from pystack.wire.segment import ACK

L = LOCAL_ISN + 1
R = REMOTE_ISN + 1


def test_model_timeout_matches_linux() -> None:
    assert model_timeout(15, 0.2) == pytest.approx(924.6)
    assert model_timeout(6, 1.0) == pytest.approx(127.0)
    assert model_timeout(8, 0.2) == pytest.approx(102.2)
    assert model_timeout(3, 0.2) == pytest.approx(3.0)


def test_rto_retransmits_head_with_backoff() -> None:
    h = Harness()
    c = h.established_client()
    c.send(b"abc")
    h.expect(flags="PA", seq=L, payload=b"abc")
    h.advance(0.199)
    h.expect_none()
    h.advance(0.001)
    h.expect(flags="PA", seq=L, payload=b"abc")
    assert h.engine.mib["RetransSegs"] == 1
    assert h.engine.mib["TCPTimeouts"] == 1
    h.advance(0.4)
    h.expect(flags="PA", seq=L, payload=b"abc")
    assert c.tcp_info()["retransmits"] == 2
    h.send(ACK, R, L + 3)
    assert c.outq == 0
    assert c.tcp_info()["retransmits"] == 0


def test_karn_no_sample_from_retransmitted_segment() -> None:
    h = Harness()
    c = h.established_client()
    c.send(b"abc")
    h.recv()
    h.advance(0.2)
    h.recv()
    assert c.rtt.backoff == 1
    h.advance(0.05)
    h.send(ACK, R, L + 3)
    assert c.rtt.backoff == 1  # ambiguous ACK: no RTT sample, backoff kept (RFC 6298 §5.7)
    c.send(b"def")
    h.recv()
    h.advance(0.01)
    h.send(ACK, R, L + 6)
    assert c.rtt.backoff == 0
    assert c.rtt.srtt == pytest.approx(0.005, abs=0.006)


def test_go_back_n_after_rto_is_paced_by_cwnd() -> None:
    h = Harness()
    c = h.established_client()
    c.send(bytes(1460 * 4))
    assert len(h.recv()) == 4
    h.advance(0.2)
    segs = h.recv()
    assert [(s.seq, len(s.payload)) for s in segs] == [(L, 1460)]  # cwnd 1 after RTO
    assert c.ccs.snd_cwnd == 1
    h.send(ACK, R, L + 1460)
    segs = h.recv()
    assert [s.seq for s in segs] == [L + 1460, L + 2920]  # slow start: cwnd 2
    h.send(ACK, R, L + 4380)  # the receiver had the rest: skip what arrived
    segs = h.recv()
    assert [s.seq for s in segs] == [L + 4380]


def test_retries2_gives_up_after_linux_time() -> None:
    h = Harness()
    c = h.established_client()
    c.send(b"x")
    h.recv()
    h.advance(924.5)
    times = [round(t, 6) for t, _ in h.sent_at]
    assert times == [0.2, 0.6, 1.4, 3.0, 6.2, 12.6, 25.4, 51.0, 102.2, 204.6,
                     324.6, 444.6, 564.6, 684.6, 804.6]
    assert c.state == TcpState.ESTABLISHED
    h.advance(0.2)
    assert c.state == TcpState.CLOSED
    assert c.error == errno.ETIMEDOUT
    assert h.engine.mib["EstabResets"] == 1


def test_retries2_sysctl() -> None:
    h = Harness(tcp_retries2=3)
    c = h.established_client()
    c.send(b"x")
    h.recv()
    h.advance(2.9)
    assert c.state == TcpState.ESTABLISHED
    h.advance(0.2)
    assert c.error == errno.ETIMEDOUT  # (2^4 - 1) * 200 ms = 3 s


def test_user_timeout_overrides_retries2() -> None:
    h = Harness()
    c = h.established_client()
    c.set_option("TCP_USER_TIMEOUT", 1000)
    c.send(b"x")
    h.recv()
    h.advance(0.99)
    assert [round(t, 6) for t, _ in h.sent_at] == [0.2, 0.6]
    assert c.state == TcpState.ESTABLISHED
    h.advance(0.02)
    assert c.error == errno.ETIMEDOUT


def _dupack(h: Harness, ack: int, n: int = 1) -> None:
    for _ in range(n):
        h.send(ACK, R, ack)


def test_fast_retransmit_on_third_dup_ack_and_newreno_partial_ack() -> None:
    h = Harness()
    c = h.established_client()
    c.send(bytes(1460 * 6))
    assert len(h.recv()) == 6
    _dupack(h, L, 2)
    h.expect_none()
    _dupack(h, L)
    h.expect(seq=L, len=1460)
    assert h.engine.mib["TCPRenoRecovery"] == 1
    tp = c.ccs
    assert tp.ca_state.name == "RECOVERY"
    assert tp.snd_cwnd == tp.snd_ssthresh + 3
    # partial ACK: the next hole is retransmitted at once (RFC 6582 §3.2 step 4)
    h.send(ACK, R, L + 2920)
    segs = h.recv()
    assert segs[0].seq == L + 2920
    # full ACK ends recovery
    h.send(ACK, R, L + 1460 * 6)
    assert tp.ca_state.name == "OPEN"
    assert tp.snd_cwnd <= tp.snd_ssthresh


def test_window_update_is_not_a_dup_ack() -> None:
    h = Harness()
    c = h.established_client()
    c.send(bytes(1460 * 4))
    h.recv()
    for w in (1000, 2000, 3000):
        h.send(ACK, R, L, w)
    assert c.ccs.ca_state.name == "OPEN"
