"""LISTEN state (RFC 9293 §3.10.7.2), backlogs and overflow counters."""

import pytest

from pystack.tcp.state import TcpState
from pystack.tcp.testing import LOCAL_ISN, LOCAL_PORT, REMOTE_ISN, Harness
from pystack.wire.segment import ACK, RST, SYN, TcpOptions


def test_syn_creates_syn_received_and_syn_ack() -> None:
    h = Harness()
    h.listen()
    h.send(SYN, REMOTE_ISN, window=8192, options=TcpOptions(mss=1400))
    h.expect(flags="SA", seq=LOCAL_ISN, ack=REMOTE_ISN + 1, window=64240, mss=1460)
    (c,) = h.engine.connections.values()
    assert c.state == TcpState.SYN_RECEIVED
    assert c.snd_mss == 1400


def test_rst_in_listen_ignored() -> None:
    h = Harness()
    h.listen()
    h.send(RST, 1)
    h.expect_none()
    assert not h.engine.connections


def test_ack_in_listen_gets_rst() -> None:
    h = Harness()
    h.listen()
    h.send(ACK, 1, 4242)
    h.expect(flags="R", seq=4242)


def test_segment_without_syn_dropped() -> None:
    h = Harness()
    h.listen()
    h.send(0, 1, payload=b"data")
    h.expect_none()


def test_listen_on_specific_ip_and_address_in_use() -> None:
    h = Harness()
    h.engine.listen(0xC6120001, 80)
    with pytest.raises(OSError):
        h.engine.listen(0xC6120001, 80)
    h.send(SYN, 1)
    h.expect(flags="SA")


def test_accept_queue_overflow_counts_and_drops_syn() -> None:
    h = Harness()
    lst = h.listen(backlog=1)
    for port in (1000, 1001):
        h.send(SYN, 10, src_port=port)
        h.expect(flags="SA")
        h.send(ACK, 11, LOCAL_ISN + 1, src_port=port)
    assert lst.pending == 2  # Linux admits backlog + 1
    h.send(SYN, 10, src_port=1002)
    h.expect_none()
    assert h.engine.mib["ListenOverflows"] == 1
    assert h.engine.mib["ListenDrops"] == 1


def _handshake_parts(h: Harness, port: int) -> None:
    h.send(SYN, 10, src_port=port)
    h.expect(flags="SA", dst_port=port)


def test_third_ack_dropped_when_accept_queue_full_then_synack_retransmitted() -> None:
    h = Harness()
    lst = h.listen(backlog=2)
    _handshake_parts(h, 1000)
    _handshake_parts(h, 1001)
    h.send(ACK, 11, LOCAL_ISN + 1, src_port=1000)
    h.send(ACK, 11, LOCAL_ISN + 1, src_port=1001)
    _handshake_parts(h, 1002)
    _handshake_parts(h, 1003)
    h.send(ACK, 11, LOCAL_ISN + 1, src_port=1002)
    assert lst.pending == 3  # Linux admits backlog + 1
    # port 1003 completes but the queue is full now: the ACK is dropped and counted
    h.send(ACK, 11, LOCAL_ISN + 1, src_port=1003)
    assert lst.pending == 3
    assert h.engine.mib["ListenOverflows"] == 1
    h.advance(1.0)
    h.expect(flags="SA", dst_port=1003)  # the SYN-ACK timer keeps the request alive
    assert lst.accept() is not None
    h.send(ACK, 11, LOCAL_ISN + 1, src_port=1003)
    assert lst.pending == 3


def test_abort_on_overflow_sends_rst() -> None:
    h = Harness(tcp_abort_on_overflow=1)
    lst = h.listen(backlog=2)
    for port in (1000, 1001):
        _handshake_parts(h, port)
        h.send(ACK, 11, LOCAL_ISN + 1, src_port=port)
    _handshake_parts(h, 1002)
    _handshake_parts(h, 1003)
    h.send(ACK, 11, LOCAL_ISN + 1, src_port=1002)
    h.send(ACK, 11, LOCAL_ISN + 1, src_port=1003)
    h.expect(flags="R", seq=LOCAL_ISN + 1, dst_port=1003)
    assert lst.pending == 3
    assert len(h.engine.connections) == 3


def test_syn_queue_full_drops() -> None:
    h = Harness()
    h.listen(backlog=2)
    # Linux >= 6.13 inet_csk_reqsk_queue_is_full: full when more than backlog are pending,
    # so backlog + 1 requests are answered. No SYN cookies here: the next one is dropped.
    for port in (1000, 1001, 1002):
        h.send(SYN, 10, src_port=port)
        h.expect(flags="SA")
    h.send(SYN, 10, src_port=1003)
    h.expect_none()
    assert h.engine.mib["ListenDrops"] == 1
    assert h.engine.mib["TCPReqQFullDrop"] == 1


def test_listener_close_resets_pending_connections() -> None:
    h = Harness()
    lst = h.listen()
    h.send(SYN, 10, src_port=1000)
    h.expect(flags="SA")
    h.send(ACK, 11, LOCAL_ISN + 1, src_port=1000)
    h.send(SYN, 10, src_port=1001)
    h.expect(flags="SA")
    lst.close()
    segs = h.recv()
    assert sorted((s.dst_port, s.flags) for s in segs) == [(1000, RST | ACK), (1001, RST | ACK)]
    assert not h.engine.connections
    h.send(SYN, 10, src_port=1003)
    h.expect(flags="RA")


def test_accept_event_and_passive_open_counter() -> None:
    h = Harness()
    lst = h.listen()
    h.send(SYN, 10)
    h.expect(flags="SA")
    h.send(ACK, 11, LOCAL_ISN + 1)
    assert h.events == [(lst, "accept")]
    assert h.engine.mib["PassiveOpens"] == 1
    assert h.engine.mib["CurrEstab"] == 1
    assert lst.accept().local_port == LOCAL_PORT
