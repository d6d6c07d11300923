"""CLOSE-WAIT and LAST-ACK (RFC 9293 §3.10.7.4): the passive close."""

import errno

import pytest

from pystack.tcp.state import TcpState
from pystack.tcp.testing import LOCAL_ISN, REMOTE_ISN, Harness
from pystack.wire.segment import ACK, FIN, RST, TcpOptions

L = LOCAL_ISN + 1
R = REMOTE_ISN + 1


def _close_wait(h: Harness):
    c = h.established_server(options=TcpOptions(mss=1460))
    h.send(FIN | ACK, R, L)
    h.expect(flags="A", seq=L, ack=R + 1)
    assert c.state == TcpState.CLOSE_WAIT
    return c


def test_send_in_close_wait_half_close() -> None:
    h = Harness()
    c = _close_wait(h)
    assert c.recv(10) == b""
    assert c.send(b"reply") == 5
    h.expect(flags="PA", seq=L, ack=R + 1, payload=b"reply")
    h.send(ACK, R + 1, L + 5)
    assert c.outq == 0


def test_close_sends_fin_last_ack_then_closed() -> None:
    h = Harness()
    c = _close_wait(h)
    c.close()
    assert c.state == TcpState.LAST_ACK
    h.expect(flags="FA", seq=L, ack=R + 1)
    h.send(ACK, R + 1, L + 1)
    assert c.state == TcpState.CLOSED
    assert not h.engine.connections
    assert h.engine.mib["CurrEstab"] == 0
    assert h.engine.mib["EstabResets"] == 0


def test_last_ack_retransmits_fin() -> None:
    h = Harness()
    c = _close_wait(h)
    c.shutdown_write()
    h.expect(flags="FA")
    h.advance(0.2)
    h.expect(flags="FA", seq=L)
    assert c.state == TcpState.LAST_ACK


def test_retransmitted_fin_in_close_wait_is_acked() -> None:
    h = Harness()
    c = _close_wait(h)
    h.send(FIN | ACK, R, L)
    h.expect(flags="A", ack=R + 1)
    assert c.state == TcpState.CLOSE_WAIT


def test_rst_in_close_wait_reports_epipe() -> None:
    h = Harness()
    c = _close_wait(h)
    h.send(RST, R + 1)
    assert c.state == TcpState.CLOSED
    assert c.error == errno.EPIPE
    assert h.engine.mib["EstabResets"] == 1


def test_rst_in_last_ack_closes() -> None:
    h = Harness()
    c = _close_wait(h)
    c.close()
    h.expect(flags="FA")
    h.send(RST, R + 1)
    assert c.state == TcpState.CLOSED


def test_send_after_shutdown_raises_epipe() -> None:
    h = Harness()
    c = _close_wait(h)
    c.shutdown_write()
    with pytest.raises(BrokenPipeError):
        c.send(b"x")
