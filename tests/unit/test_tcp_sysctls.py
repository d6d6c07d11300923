"""Sysctls docs/tcp7_compat.md marks implemented that no other test pins down."""

import errno

import pytest

from pystack.tcp.testing import LOCAL_IP, REMOTE_IP, REMOTE_ISN, Harness
from pystack.wire.segment import ACK, TcpOptions

R = REMOTE_ISN + 1


def test_tcp_dsack_0_sends_no_duplicate_sack() -> None:
    h = Harness(tcp_sack=1, tcp_dsack=0)
    c = h.established_server(options=TcpOptions(mss=1460, sack_permitted=True))
    L = c.snd_nxt
    h.send(ACK, R, L, payload=b"abc")
    h.advance(0.2)
    h.expect(flags="A", ack=R + 3, sack_blocks=[])
    h.send(ACK, R, L, payload=b"abc")  # a duplicate: ACKed at once, without D-SACK
    h.expect(flags="A", ack=R + 3, sack_blocks=[])
    assert h.engine.mib["TCPDSACKOldSent"] == 0


def test_tcp_min_snd_mss_floors_the_peer_mss() -> None:
    h = Harness(tcp_min_snd_mss=200)
    c = h.established_client(options=TcpOptions(mss=100))
    assert c.snd_mss == 200
    c.send(bytes(450))
    assert [len(s.payload) for s in h.recv()] == [200, 200, 50]


def test_ip_local_port_range_bounds_ephemeral_ports() -> None:
    h = Harness(ip_local_port_range="40000 40001")
    eng = h.engine
    ports = {eng.connect(LOCAL_IP, REMOTE_IP, 80).local_port for _ in range(2)}
    assert ports == {40000, 40001}
    with pytest.raises(OSError) as ei:
        eng.connect(LOCAL_IP, REMOTE_IP, 80)
    assert ei.value.errno == errno.EADDRNOTAVAIL
    assert eng.connect(LOCAL_IP, REMOTE_IP, 81).local_port in (40000, 40001)
