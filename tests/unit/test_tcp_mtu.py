"""tcp_mtu_probing and tcp_base_mss: black-hole detection lowers the MSS (Linux
tcp_mtu_probing), and mode 2 starts at tcp_base_mss (tcp_mtup_init)."""

from __future__ import annotations

from pystack.tcp.testing import LOCAL_ISN, REMOTE_ISN, Harness
from pystack.wire.segment import ACK, SYN, TcpOptions

L = LOCAL_ISN + 1
R = REMOTE_ISN + 1


def _sizes(h: Harness) -> list[int]:
    return [len(s.payload) for s in h.recv() if s.payload]


def test_probing_off_never_lowers_the_mss() -> None:
    h = Harness()
    c = h.established_client()
    c._mtu_probing()  # what the retransmission timer calls past tcp_retries1
    assert c.snd_mss == 1460


def test_black_hole_detection_starts_at_base_mss_then_halves() -> None:
    h = Harness(tcp_mtu_probing=1)
    c = h.established_client()
    assert c.snd_mss == 1460  # mode 1: off until a black hole is suspected
    steps = []
    for _ in range(7):
        c._mtu_probing()
        steps.append(c.snd_mss)
    # tcp_base_mss, then halving, floored by tcp_mtu_probe_floor (48).
    assert steps == [1024, 512, 256, 128, 64, 48, 48]
    c.send(bytes(200))
    assert _sizes(h) == [48, 48, 48, 48, 8]


def test_black_hole_detection_with_timestamps_counts_the_option() -> None:
    h = Harness(plain=False, tcp_mtu_probing=1, tcp_base_mss=1200)
    c = h.connect()
    h.recv()
    h.send(SYN | ACK, REMOTE_ISN, L, 65535,
           options=TcpOptions(mss=1460, timestamp=(5, 0), sack_permitted=True, wscale=7))
    h.recv()
    assert c.snd_mss == 1448
    c._mtu_probing()
    assert c.snd_mss == 1200
    c._mtu_probing()
    assert c.snd_mss == 600
    assert c._mtup_low == 600 + 40 + 12  # search_low is an MTU


def test_mode_2_starts_at_base_mss() -> None:
    h = Harness(tcp_mtu_probing=2, tcp_base_mss=1000)
    c = h.connect()
    h.expect(flags="S", mss=1460)  # what we announce is not affected
    h.send(SYN | ACK, REMOTE_ISN, L, 65535, options=TcpOptions(mss=1460))
    h.recv()
    assert c.snd_mss == 1000
    c.send(bytes(2500))
    assert _sizes(h) == [1000, 1000, 500]


def test_mode_2_on_a_passive_open() -> None:
    h = Harness(tcp_mtu_probing=2)
    lst = h.listen()
    h.send(SYN, REMOTE_ISN, options=TcpOptions(mss=1460))
    h.expect(flags="SA", mss=1460)
    h.send(ACK, R, L)
    c = lst.accept()
    assert c is not None and c.snd_mss == 1024


def test_peer_mss_below_base_mss_wins() -> None:
    h = Harness(tcp_mtu_probing=2)
    c = h.established_client(options=TcpOptions(mss=900))
    assert c.snd_mss == 900


def test_retransmissions_past_retries1_lower_the_mss() -> None:
    h = Harness(tcp_mtu_probing=1)
    c = h.established_client()
    c.send(bytes(1460))
    assert _sizes(h) == [1460]
    # RTO 200 ms (handshake RTT ~0), doubling: retransmissions at 0.2, 0.6, 1.4 s ...
    h.advance(2.9)
    assert _sizes(h) == [1460, 1460, 1460]
    h.advance(0.1)  # ... and 3.0 s: past tcp_retries1 (3 -> 3.0 s): a black hole?
    assert _sizes(h) == [1024]
    h.advance(3.2)  # 6.2 s
    assert _sizes(h) == [512]
    h.send(ACK, R, L + 1460)
    assert c.snd_mss == 512
