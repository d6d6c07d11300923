"""SYN-SENT state (RFC 9293 §3.10.7.3) and active open."""

import errno

from pystack.tcp.state import TcpState
from pystack.tcp.testing import LOCAL_ISN, REMOTE_ISN, Harness
from pystack.wire.segment import ACK, RST, SYN, TcpOptions


def test_connect_sends_syn() -> None:
    h = Harness()
    c = h.connect()
    assert c.state == TcpState.SYN_SENT
    h.expect(flags="S", seq=LOCAL_ISN, ack=0, window=64240, mss=1460)
    assert h.engine.mib["ActiveOpens"] == 1


def test_syn_ack_establishes_and_acks() -> None:
    h = Harness()
    c = h.connect()
    h.expect(flags="S")
    h.send(SYN | ACK, REMOTE_ISN, LOCAL_ISN + 1, 1000, options=TcpOptions(mss=1200))
    h.expect(flags="A", seq=LOCAL_ISN + 1, ack=REMOTE_ISN + 1, window=64240)
    assert c.state == TcpState.ESTABLISHED
    assert c.snd_wnd == 1000
    assert c.snd_mss == 1200
    assert (c, "connected") in h.events
    assert h.engine.mib["CurrEstab"] == 1


def test_syn_ack_without_mss_option_uses_536() -> None:
    h = Harness()
    c = h.connect()
    h.expect(flags="S")
    h.send(SYN | ACK, REMOTE_ISN, LOCAL_ISN + 1, 1000)
    h.expect(flags="A")
    assert c.snd_mss == 536


def test_bad_ack_gets_rst_and_stays() -> None:
    h = Harness()
    c = h.connect()
    h.expect(flags="S")
    h.send(SYN | ACK, REMOTE_ISN, LOCAL_ISN + 5)
    h.expect(flags="R", seq=LOCAL_ISN + 5)
    h.send(ACK, REMOTE_ISN, LOCAL_ISN)  # SEG.ACK =< ISS
    h.expect(flags="R", seq=LOCAL_ISN)
    assert c.state == TcpState.SYN_SENT


def test_rst_with_acceptable_ack_refuses() -> None:
    h = Harness()
    c = h.connect()
    h.expect(flags="S")
    h.send(RST | ACK, 0, LOCAL_ISN + 1)
    h.expect_none()
    assert c.state == TcpState.CLOSED
    assert c.error == errno.ECONNREFUSED
    assert h.engine.mib["AttemptFails"] == 1
    assert (c, "closed") in h.events
    assert not h.engine.connections


def test_rst_without_ack_ignored() -> None:
    h = Harness()
    c = h.connect()
    h.expect(flags="S")
    h.send(RST, 0)
    h.send(RST | ACK, 0, LOCAL_ISN + 7)  # unacceptable ACK: no RST for a RST
    h.expect_none()
    assert c.state == TcpState.SYN_SENT


def test_segment_without_syn_or_rst_dropped() -> None:
    h = Harness()
    c = h.connect()
    h.expect(flags="S")
    h.send(ACK, 7, LOCAL_ISN + 1, payload=b"x")
    h.expect_none()
    assert c.state == TcpState.SYN_SENT


def test_syn_retransmission_schedule_then_etimedout() -> None:
    h = Harness()
    c = h.connect()
    h.expect(flags="S")
    h.advance(200)
    times = [t for t, s in h.sent_at]
    assert times == [1, 3, 7, 15, 31, 63]  # tcp_syn_retries = 6
    assert all(s.seq == LOCAL_ISN and s.flags == SYN for _, s in h.sent_at)
    assert c.state == TcpState.CLOSED and c.error == errno.ETIMEDOUT
    assert h.engine.mib["AttemptFails"] == 1
    assert h.engine.mib["RetransSegs"] == 6


def test_tcp_syncnt_limits_retries() -> None:
    h = Harness()
    c = h.connect(options={"TCP_SYNCNT": 2})
    h.expect(flags="S")
    h.advance(6.9)
    assert [t for t, _ in h.sent_at] == [1, 3]
    assert c.state == TcpState.SYN_SENT
    h.advance(0.2)
    assert c.error == errno.ETIMEDOUT


def test_syn_retries_sysctl() -> None:
    h = Harness(tcp_syn_retries=1)
    c = h.connect()
    h.expect(flags="S")
    h.advance(10)
    assert [t for t, _ in h.sent_at] == [1]
    assert c.error == errno.ETIMEDOUT


def test_simultaneous_open() -> None:
    h = Harness()
    c = h.connect()
    h.expect(flags="S", seq=LOCAL_ISN)
    # The peer's SYN crosses ours: SYN-RECEIVED, SYN-ACK with our ISN (RFC 9293 Figure 8).
    h.send(SYN, REMOTE_ISN, window=5000)
    h.expect(flags="SA", seq=LOCAL_ISN, ack=REMOTE_ISN + 1)
    assert c.state == TcpState.SYN_RECEIVED
    # The peer's SYN-ACK acknowledges our SYN.
    h.send(SYN | ACK, REMOTE_ISN, LOCAL_ISN + 1, 5000)
    assert c.state == TcpState.ESTABLISHED
    assert (c, "connected") in h.events
    c.send(b"hi")
    h.expect(flags="PA", seq=LOCAL_ISN + 1, ack=REMOTE_ISN + 1, payload=b"hi")


def test_simultaneous_open_completed_by_ack() -> None:
    h = Harness()
    c = h.connect()
    h.expect(flags="S")
    h.send(SYN, REMOTE_ISN)
    h.expect(flags="SA")
    h.send(ACK, REMOTE_ISN + 1, LOCAL_ISN + 1)
    assert c.state == TcpState.ESTABLISHED


def test_close_in_syn_sent_deletes() -> None:
    h = Harness()
    c = h.connect()
    h.expect(flags="S")
    c.close()
    h.expect_none()
    assert c.state == TcpState.CLOSED
    assert not h.engine.connections
    h.advance(5)
    h.expect_none()


def test_data_queued_before_established_is_sent_after() -> None:
    h = Harness()
    c = h.connect()
    assert c.send(b"early") == 5
    h.expect(flags="S")
    h.send(SYN | ACK, REMOTE_ISN, LOCAL_ISN + 1, 1000, options=TcpOptions(mss=1460))
    h.expect(flags="PA", seq=LOCAL_ISN + 1, ack=REMOTE_ISN + 1, payload=b"early")
