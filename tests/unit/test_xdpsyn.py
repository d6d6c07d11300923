"""pystack.xdp_synack, the control plane's half (pystack/tcp/xdpsyn.py): which listeners
XDP may answer for, and the requests it holds (synack_req entries, made here as the
program writes them): SYN-ACK retransmission, expiry, SYN-queue length and pressure."""

from __future__ import annotations

import pytest

from pystack.tcp import cookies
from pystack.tcp.cookies import SynCookies
from pystack.tcp.settings import Settings
from pystack.tcp.testing import LOCAL_IP, LOCAL_PORT, REMOTE_IP, REMOTE_PORT, Harness
from pystack.tcp.xdpsyn import XdpSynAcks
from pystack.wire.segment import ACK, SYN
from pystack.xdp import abi

T0 = 1000.0  # seconds of CLOCK_MONOTONIC when XDP sent the SYN-ACK
ISN = 0xC0FFEE03  # the cookie XDP used as our ISN
PEER_ISN = 777
PEER_TS = 424242
MAC = bytes.fromhex("02aabbccddee")


def setup(**sysctls: object) -> tuple[Harness, SynCookies, XdpSynAcks, list[tuple[int, bytes]]]:
    s = Settings()
    s.set("pystack.xdp_synack", 1)
    for k, v in sysctls.items():
        s.set(k, v)
    h = Harness(s)
    sc = SynCookies(bytes(16))
    cookies.attach(h.engine, sc)
    learned: list[tuple[int, bytes]] = []
    xs = XdpSynAcks(h.engine, sc, lambda ip, mac: learned.append((ip, mac)))
    return h, sc, xs, learned


def req(port: int = REMOTE_PORT, sent: float = T0, *, mss: int = 1400, ws: int = 6,
        flags: int = abi.REQ_SACK) -> tuple[bytes, bytes]:
    return (abi.FLOW_KEY.pack(REMOTE_IP, LOCAL_IP, port, LOCAL_PORT),
            abi.SYNACK_REQ.pack(int(sent * 1e9), ISN, PEER_ISN, PEER_TS, mss, ws, flags, MAC, 0))


def test_synack_is_retransmitted_on_linux_schedule_with_the_same_isn_then_expires() -> None:
    h, sc, xs, learned = setup(**{"net.ipv4.tcp_synack_retries": 2})
    h.listen()
    r = [req()]
    times = []
    for now in (T0 + 0.1, T0 + 0.99, T0 + 1.0, T0 + 2.0, T0 + 2.99, T0 + 3.0, T0 + 6.99):
        assert xs.tick(now, r) == []
        for seg in h.engine.poll(now):
            times.append(now)
            assert seg.flags == SYN | ACK and seg.seq == ISN and seg.ack == PEER_ISN + 1
            o = seg.options
            assert o.timestamp is not None and o.timestamp[1] == PEER_TS
            assert o.mss == sc.mss and o.wscale == sc.wscale and o.sack_permitted
            # The options ride in the TSval as in XDP's SYN-ACK (the ACK's cookie check).
            assert o.timestamp[0] & 0x3F == 0x10 | 6
    # TCP_TIMEOUT_INIT, then doubled: 1 s after the SYN-ACK, then 2 s after that.
    assert times == [T0 + 1.0, T0 + 3.0]
    assert learned == [(REMOTE_IP, MAC)] * 2
    mib = h.engine.mib
    assert (mib["TCPSynRetrans"], mib["RetransSegs"]) == (2, 2)
    # tcp_synack_retries=2 used up: at the next timeout the request goes, silently.
    assert xs.tick(T0 + 7.0, r) == [r[0][0]]
    assert h.engine.poll(T0 + 7.0) == [] and not xs.tracking


def test_an_answered_request_leaves_the_map_and_its_timer_goes() -> None:
    h, sc, xs, _ = setup()
    h.listen()
    xs.tick(T0 + 0.5, [req()])
    assert xs.tracking
    xs.tick(T0 + 1.5, [])  # XDP took it out when its ACK came
    assert not xs.tracking and h.engine.poll(T0 + 1.5) == []


def test_xdp_answering_a_retransmitted_syn_restarts_the_timer() -> None:
    h, sc, xs, _ = setup()
    h.listen()
    xs.tick(T0 + 0.5, [req()])
    xs.tick(T0 + 1.2, [req(sent=T0 + 0.9)])  # a new SYN-ACK left XDP at T0 + 0.9
    assert h.engine.poll(T0 + 1.2) == []
    xs.tick(T0 + 1.9, [req(sent=T0 + 0.9)])
    assert [s.seq for s in h.engine.poll(T0 + 1.9)] == [ISN]


def test_a_request_without_a_listener_is_dropped() -> None:
    h, sc, xs, _ = setup()
    lst = h.listen()
    r = req()
    lst.close()
    assert xs.tick(T0 + 0.1, [r]) == [r[0]]


def test_the_requests_count_as_the_syn_queue_and_raise_pressure_past_the_backlog() -> None:
    h, sc, xs, _ = setup()
    lst = h.listen(backlog=2)
    reqs = [req(REMOTE_PORT + i) for i in range(3)]
    xs.tick(T0 + 0.1, reqs[:2])
    assert lst._xdp_reqs == 2 and lst not in sc.pressure
    xs.tick(T0 + 0.2, reqs)
    assert lst._xdp_reqs == 3 and lst in sc.pressure
    # A SYN reaching the engine meanwhile sees the full queue: a cookie (Linux's rule).
    h.send(SYN, 5000, options=None)
    assert h.engine.mib["TCPReqQFullDoCookies"] == 1 and lst._syn_recv == 0
    h.recv()
    # Drained to half the backlog: the flag drops (hysteresis as for the engine's queue).
    xs.tick(T0 + 0.3, reqs[:1])
    assert sc.drain() == [lst] and lst not in sc.pressure


def test_wanted_listeners() -> None:
    h, sc, xs, _ = setup()
    plain = h.listen(backlog=1)
    other = h.engine.listen(0, LOCAL_PORT + 1, 16)
    assert xs.wanted() == {plain, other}
    other.set_option("SO_RCVBUF", 65536)  # its SYN-ACK's window is its own
    assert xs.wanted() == {plain}
    # An accept queue past the backlog drops SYNs (Linux): the engine's to do.
    for port in (REMOTE_PORT, REMOTE_PORT + 1):
        h.send(SYN, 5000, src_port=port)
        synack = h.recv_one()
        h.send(ACK, 5001, synack.seq + 1, src_port=port)
    assert plain.pending == 2 and xs.wanted() == set()
    plain.accept()
    assert xs.wanted() == {plain}
    plain.close()
    assert xs.wanted() == set()


@pytest.mark.parametrize("sysctl", [("pystack.xdp_synack", 0), ("net.ipv4.tcp_syncookies", 0),
                                    ("net.ipv4.tcp_syncookies", 2)])
def test_only_with_the_setting_and_tcp_syncookies_1(sysctl: tuple[str, int]) -> None:
    h, sc, xs, _ = setup()
    h.listen()
    h.engine.settings.set(*sysctl)
    assert xs.wanted() == set()
