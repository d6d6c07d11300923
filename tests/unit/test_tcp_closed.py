"""CLOSED state: no connection, no listener (RFC 9293 §3.10.7.1)."""

from pystack.tcp.testing import LOCAL_IP, LOCAL_PORT, REMOTE_IP, REMOTE_PORT, Harness
from pystack.wire.segment import ACK, FIN, RST, SYN


def test_syn_to_closed_port_gets_rst_ack() -> None:
    h = Harness()
    h.send(SYN, 100)
    seg = h.expect(flags="RA", seq=0, ack=101, window=0)
    assert (seg.src_ip, seg.src_port, seg.dst_ip, seg.dst_port) == (
        LOCAL_IP, LOCAL_PORT, REMOTE_IP, REMOTE_PORT)
    assert h.engine.mib["OutRsts"] == 1


def test_syn_with_data_counts_segment_length() -> None:
    h = Harness()
    h.send(SYN | FIN, 100, payload=b"abc")
    h.expect(flags="RA", seq=0, ack=105)


def test_ack_to_closed_port_gets_rst_with_its_ack_as_seq() -> None:
    h = Harness()
    h.send(ACK, 100, 777, payload=b"x")
    h.expect(flags="R", seq=777, ack=0)


def test_rst_to_closed_port_is_dropped() -> None:
    h = Harness()
    h.send(RST, 100)
    h.send(RST | ACK, 100, 5)
    h.expect_none()
    assert h.engine.mib["OutRsts"] == 0
    assert h.engine.mib["InSegs"] == 2
