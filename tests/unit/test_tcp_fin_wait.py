"""FIN-WAIT-1 and FIN-WAIT-2 (RFC 9293 §3.10.7.4), half-close, orphan timeouts."""

import errno

from pystack.tcp.state import TcpState
from pystack.tcp.testing import LOCAL_ISN, REMOTE_ISN, Harness
from pystack.wire.segment import ACK, FIN, PSH, RST, TcpOptions

L = LOCAL_ISN + 1
R = REMOTE_ISN + 1
MSS = TcpOptions(mss=1460)


def _fin_wait_1(h: Harness, *, close: bool = True):
    c = h.established_server(options=MSS)
    if close:
        c.close()
    else:
        c.shutdown_write()
    assert c.state == TcpState.FIN_WAIT_1
    h.expect(flags="FA", seq=L, ack=R)
    return c


def test_close_sends_fin() -> None:
    h = Harness()
    _fin_wait_1(h)


def test_fin_piggybacks_on_last_data() -> None:
    h = Harness()
    c = h.established_server(options=MSS)
    c.send(b"last words")
    c.close()
    h.expect(flags="FPA", seq=L, payload=b"last words")
    h.send(ACK, R, L + 11)
    assert c.state == TcpState.FIN_WAIT_2


def test_fin_waits_for_queued_data_window() -> None:
    h = Harness()
    c = h.established_server(window=100, options=MSS)
    c.send(bytes(150))
    c.close()
    h.expect(flags="A", seq=L, len=100)
    h.send(ACK, R, L + 100, 100)
    h.expect(flags="FPA", seq=L + 100, len=50)


def test_ack_of_fin_goes_to_fin_wait_2_then_fin_to_time_wait() -> None:
    h = Harness()
    c = _fin_wait_1(h)
    h.send(ACK, R, L + 1)
    h.expect_none()
    assert c.state == TcpState.FIN_WAIT_2
    h.send(FIN | ACK, R, L + 1)
    h.expect(flags="A", seq=L + 1, ack=R + 1)
    assert c.state == TcpState.TIME_WAIT


def test_fin_ack_together_goes_straight_to_time_wait() -> None:
    h = Harness()
    c = _fin_wait_1(h)
    h.send(FIN | ACK, R, L + 1)
    h.expect(flags="A", seq=L + 1, ack=R + 1)
    assert c.state == TcpState.TIME_WAIT


def test_simultaneous_close_goes_through_closing() -> None:
    h = Harness()
    c = _fin_wait_1(h)
    h.send(FIN | ACK, R, L)  # the peer's FIN does not acknowledge ours
    h.expect(flags="A", seq=L + 1, ack=R + 1)
    assert c.state == TcpState.CLOSING
    h.send(ACK, R + 1, L + 1)
    assert c.state == TcpState.TIME_WAIT


def test_closing_retransmits_fin() -> None:
    h = Harness()
    c = _fin_wait_1(h)
    h.send(FIN | ACK, R, L)
    h.expect(flags="A")
    h.advance(0.2)  # RTO from the handshake's RTT sample (0) is the 200 ms minimum
    h.expect(flags="FA", seq=L, ack=R + 1)
    assert c.state == TcpState.CLOSING


def test_half_close_data_still_flows_in() -> None:
    h = Harness()
    c = _fin_wait_1(h, close=False)
    h.send(ACK, R, L + 1)
    assert c.state == TcpState.FIN_WAIT_2
    h.send(ACK | PSH, R, L + 1, payload=b"more data")
    h.expect(flags="A", ack=R + 9)
    assert c.recv(100) == b"more data"
    h.advance(600)  # not an orphan: FIN-WAIT-2 has no timeout
    assert c.state == TcpState.FIN_WAIT_2


def test_orphan_fin_wait_2_times_out_after_fin_timeout() -> None:
    h = Harness()
    c = _fin_wait_1(h)
    h.send(ACK, R, L + 1)
    assert c.state == TcpState.FIN_WAIT_2
    h.advance(59.9)
    assert c.state == TcpState.FIN_WAIT_2
    h.advance(0.2)
    assert c.state == TcpState.CLOSED
    h.expect_none()  # silently, as Linux's FIN-WAIT-2 timewait socket
    assert not h.engine.connections


def test_tcp_linger2_sets_fin_wait_2_lifetime() -> None:
    h = Harness()
    c = h.established_server(options=MSS)
    c.set_option("TCP_LINGER2", 5)
    assert c.get_option("TCP_LINGER2") == 5
    c.close()
    h.expect(flags="FA")
    h.send(ACK, R, L + 1)
    h.advance(5.1)
    assert c.state == TcpState.CLOSED


def test_tcp_linger2_negative_resets() -> None:
    h = Harness()
    c = h.established_server(options=MSS)
    c.set_option("TCP_LINGER2", -1)
    c.close()
    h.expect(flags="FA")
    h.send(ACK, R, L + 1)
    h.expect(flags="RA", seq=L + 1, ack=R)
    assert c.state == TcpState.CLOSED


def test_data_after_close_gets_rst() -> None:
    h = Harness()
    c = _fin_wait_1(h)
    h.send(ACK, R, L + 1)
    h.send(ACK, R, L + 1, payload=b"late")
    h.expect(flags="RA", seq=L + 1, ack=R)
    assert c.state == TcpState.CLOSED
    assert h.engine.mib["TCPAbortOnData"] == 1


def test_close_with_unread_data_sends_rst() -> None:
    h = Harness()
    c = h.established_server(options=MSS)
    h.send(ACK, R, L, payload=b"unread")
    h.expect(flags="A")
    c.close()
    h.expect(flags="RA", seq=L, ack=R + 6)
    assert c.state == TcpState.CLOSED
    assert h.engine.mib["TCPAbortOnClose"] == 1
    assert h.engine.mib["EstabResets"] == 1


def test_fin_retransmitted_until_acked() -> None:
    h = Harness()
    c = _fin_wait_1(h)
    h.advance(0.2)
    h.expect(flags="FA", seq=L)
    h.advance(0.4)
    h.expect(flags="FA", seq=L)
    h.send(ACK, R, L + 1)
    assert c.state == TcpState.FIN_WAIT_2


def test_rst_in_fin_wait_2() -> None:
    h = Harness()
    c = _fin_wait_1(h, close=False)
    h.send(ACK, R, L + 1)
    h.send(RST, R)
    assert c.state == TcpState.CLOSED
    assert c.error == errno.ECONNRESET
