"""TIME-WAIT (RFC 9293 §3.10.7.4, RFC 1337, Linux reuse rules)."""

from pystack.tcp.state import TcpState
from pystack.tcp.testing import LOCAL_ISN, REMOTE_ISN, Harness
from pystack.wire.segment import ACK, FIN, RST, SYN, TcpOptions

L = LOCAL_ISN + 1
R = REMOTE_ISN + 1


def _time_wait(h: Harness, **kw):
    c = h.established_server(options=TcpOptions(mss=1460), **kw)
    c.close()
    h.expect(flags="FA")
    h.send(FIN | ACK, R, L + 1)
    h.expect(flags="A", seq=L + 1, ack=R + 1)
    assert c.state == TcpState.TIME_WAIT
    return c


def test_time_wait_lasts_60_seconds() -> None:
    h = Harness()
    c = _time_wait(h)
    h.advance(59.99)
    assert c.state == TcpState.TIME_WAIT
    h.advance(0.02)
    assert c.state == TcpState.CLOSED
    assert not h.engine.connections
    assert h.engine.mib["TW"] == 1


def test_retransmitted_fin_acked_and_timer_restarted() -> None:
    h = Harness()
    c = _time_wait(h)
    h.advance(30)
    h.send(FIN | ACK, R, L + 1)
    h.expect(flags="A", seq=L + 1, ack=R + 1)
    h.advance(59)
    assert c.state == TcpState.TIME_WAIT
    h.advance(1.1)
    assert c.state == TcpState.CLOSED


def test_rst_kills_time_wait_by_default() -> None:
    h = Harness()
    c = _time_wait(h)
    h.send(RST, R + 1)
    assert c.state == TcpState.CLOSED


def test_rfc1337_ignores_rst() -> None:
    h = Harness(tcp_rfc1337=1)
    c = _time_wait(h)
    h.send(RST, R + 1)
    assert c.state == TcpState.TIME_WAIT


def test_new_syn_with_higher_seq_reuses_the_tuple() -> None:
    h = Harness()
    c = _time_wait(h)
    h.send(SYN, R + 100000)
    seg = h.expect(flags="SA", ack=R + 100001)
    assert seg.seq == (L + 1 + 65537) & 0xFFFFFFFF  # Linux: tw_snd_nxt + 65535 + 2
    assert c.state == TcpState.CLOSED
    (n,) = h.engine.connections.values()
    assert n.state == TcpState.SYN_RECEIVED


def test_old_syn_gets_ack() -> None:
    h = Harness()
    c = _time_wait(h)
    h.send(SYN, R - 10)
    h.expect(flags="A", seq=L + 1, ack=R + 1)
    assert c.state == TcpState.TIME_WAIT


def test_data_in_time_wait_acked_not_delivered() -> None:
    h = Harness()
    c = _time_wait(h)
    h.send(ACK, R + 1, L + 1, payload=b"zz")
    h.expect(flags="A", ack=R + 1)
    assert c.state == TcpState.TIME_WAIT
