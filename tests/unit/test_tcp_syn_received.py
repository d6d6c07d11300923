"""SYN-RECEIVED state (RFC 9293 §3.10.7.4 with a passive open)."""


from pystack.tcp.state import TcpState
from pystack.tcp.testing import LOCAL_ISN, REMOTE_ISN, Harness
from pystack.wire.segment import ACK, FIN, PSH, RST, SYN


def _syn_received(h: Harness):
    lst = h.listen()
    h.send(SYN, REMOTE_ISN)
    h.expect(flags="SA", seq=LOCAL_ISN, ack=REMOTE_ISN + 1)
    (c,) = h.engine.connections.values()
    assert c.state == TcpState.SYN_RECEIVED
    return lst, c


def test_duplicate_syn_retransmits_syn_ack() -> None:
    h = Harness()
    _syn_received(h)
    h.send(SYN, REMOTE_ISN)
    h.expect(flags="SA", seq=LOCAL_ISN, ack=REMOTE_ISN + 1)


def test_unacceptable_ack_gets_rst() -> None:
    h = Harness()
    lst, c = _syn_received(h)
    h.send(ACK, REMOTE_ISN + 1, LOCAL_ISN + 9)
    h.expect(flags="R", seq=LOCAL_ISN + 9)
    assert c.state == TcpState.SYN_RECEIVED
    assert lst.pending == 0


def test_rst_returns_to_listen() -> None:
    h = Harness()
    lst, c = _syn_received(h)
    h.send(RST, REMOTE_ISN + 1)
    h.expect_none()
    assert c.state == TcpState.CLOSED
    assert not h.engine.connections
    assert h.engine.mib["AttemptFails"] == 1
    assert h.engine.mib["EmbryonicRsts"] == 1
    # the listener still works
    h.send(SYN, REMOTE_ISN)
    h.expect(flags="SA")


def test_out_of_window_rst_ignored() -> None:
    h = Harness()
    _, c = _syn_received(h)
    h.send(RST, REMOTE_ISN + 100000)
    h.expect_none()
    assert c.state == TcpState.SYN_RECEIVED


def test_new_syn_in_window_resets_the_request() -> None:
    h = Harness()
    _, c = _syn_received(h)
    h.send(SYN, REMOTE_ISN + 1)
    h.expect(flags="RA", seq=0, ack=REMOTE_ISN + 2)
    assert c.state == TcpState.CLOSED


def test_ack_with_data_establishes_and_delivers() -> None:
    h = Harness()
    lst, c = _syn_received(h)
    h.send(ACK | PSH, REMOTE_ISN + 1, LOCAL_ISN + 1, payload=b"hello")
    h.expect(flags="A", seq=LOCAL_ISN + 1, ack=REMOTE_ISN + 6)
    assert lst.accept() is c
    assert c.state == TcpState.ESTABLISHED
    assert c.recv(100) == b"hello"


def test_ack_with_fin_goes_to_close_wait() -> None:
    h = Harness()
    lst, c = _syn_received(h)
    h.send(ACK | FIN, REMOTE_ISN + 1, LOCAL_ISN + 1)
    h.expect(flags="A", ack=REMOTE_ISN + 2)
    assert c.state == TcpState.CLOSE_WAIT
    assert lst.accept() is c
    assert c.recv(10) == b""


def test_syn_ack_retransmissions_then_request_dropped() -> None:
    h = Harness()
    _, c = _syn_received(h)
    h.advance(100)
    assert [t for t, _ in h.sent_at] == [1, 3, 7, 15, 31]  # tcp_synack_retries = 5
    assert all(s.flags == SYN | ACK for _, s in h.sent_at)
    assert c.state == TcpState.CLOSED
    assert not h.engine.connections
    assert len(h.recv()) == 5
