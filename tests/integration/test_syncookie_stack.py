"""SYN cookies end to end: the XDP program, the engine and the host together on the veth
bed, against the Linux kernel's TCP in the peer namespace (and hand-made segments from
there where a real client cannot misbehave on purpose).

Flood and hand-made segments come from addresses of 198.18.0.0/24 that nothing owns
(FLOOD_NET): the peer namespace's kernel drops the SYN-ACKs sent to them (they are not its
addresses and it does not forward), so no RST comes back to disturb the listener."""

from __future__ import annotations

import hashlib
import os
import random
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from pystack.apps import Echo
from pystack.host import Host
from pystack.tcp.state import TcpState
from pystack.xdp.program import IngressProgram, _ip_be, _port_be
from tests.helpers import connect_error, wait_for

PORT = 7
FLOOD_NET = "198.18.0.{}"  # .100 - .250: owned by nobody
LINUX_OPTS = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1000, 0)), ("NOP", None),
              ("WScale", 7)]


@pytest.fixture
def make_host(bed, program) -> Iterator[Callable[..., Host]]:
    hosts: list[Host] = []

    def make(*sysctls: str, backlog: int = 128, **kw: object) -> Host:
        with bed.enter("stack"):
            h = Host(bed.stack.ifname, program=program, sysctls=sysctls, **kw)  # type: ignore[arg-type]
        hosts.append(h)
        h.serve(PORT, Echo, backlog=backlog)
        count_syns(h)
        h.start()
        return h

    bed.run("peer", ["sysctl", "-qw", "net.ipv4.ip_forward=0"])
    try:
        yield make
    finally:
        for h in hosts:
            h.close()


def count_syns(h: Host) -> None:
    """Count the SYNs the control plane receives (h.syns_seen), at the data path."""
    h.syns_seen = 0  # type: ignore[attr-defined]
    receive = h.dp.receive

    def counting():  # type: ignore[no-untyped-def]
        segs = receive()
        h.syns_seen += sum(1 for s in segs if s.flags & 0x12 == 0x02)  # type: ignore[attr-defined]
        return segs

    h.dp.receive = counting  # type: ignore[method-assign]


def mib(h: Host) -> dict[str, int]:
    return h.call(h.mib)


def delta(before: dict[str, int], after: dict[str, int], *names: str) -> dict[str, int]:
    return {n: after.get(n, 0) - before.get(n, 0) for n in names}


def pressure_up(p: IngressProgram, port: int = PORT) -> bool:
    key = p.syncookie_pressure.Key(_ip_be(0), _port_be(port), 0)
    return key in p.syncookie_pressure


def echo_round_trip(bed, size: int) -> tuple[socket.socket, tuple[int, int, int]]:
    """A kernel client: connect, send `size` random bytes, read them back, half-close,
    see our FIN. Returns the socket (closed) and its (tcpi_options, snd_wscale,
    rcv_wscale) while connected."""
    c = bed.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
    assert connect_error(c, (bed.stack.ip, PORT)) == 0, "the kernel client did not connect"
    c.setblocking(True)
    c.settimeout(20)
    raw = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    info = (raw[5], raw[6] & 0xF, raw[6] >> 4)
    data = os.urandom(size)
    t = threading.Thread(target=lambda: (c.sendall(data), c.shutdown(socket.SHUT_WR)))
    t.start()
    got = bytearray()
    while chunk := c.recv(1 << 16):
        got += chunk
    t.join()
    c.close()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest(), "echo differs"
    return c, info


def three_echoes(bed, h: Host) -> None:  # type: ignore[no-untyped-def]
    """Three kernel clients echo 1 B, 1 kB and 200 kB; then every connection has closed."""
    for size in (1, 1000, 200_000):
        _, (opts, snd_ws, rcv_ws) = echo_round_trip(bed, size)
        # The options the SYN-ACK from XDP offered are in force: timestamps, SACK, window
        # scaling (our shift 7, the client's its own).
        assert opts & 0x7 == 0x7 and snd_ws == 7 and rcv_ws > 0
    wait_for(lambda: h.call(lambda: not h.engine.connections), 10, "connections to close")


class Wire:
    """Hand-made frames from the peer namespace, and what comes back (AF_PACKET)."""

    def __init__(self, bed) -> None:  # type: ignore[no-untyped-def]
        self.bed = bed
        with bed.enter("peer"):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        self.sock.bind((bed.peer.ifname, 0))
        self.eth = Ether(src=bed.peer.mac, dst=bed.stack.mac)

    def close(self) -> None:
        self.sock.close()

    def tcp(self, src: str, sport: int, flags: str, seq: int, ack: int = 0,
            opts: list | None = None) -> bytes:
        return bytes(self.eth / IP(src=src, dst=self.bed.stack.ip)
                     / TCP(sport=sport, dport=PORT, flags=flags, seq=seq, ack=ack,
                           window=64240, options=opts or []))

    def send(self, frame: bytes) -> None:
        self.sock.send(frame)

    def expect(self, dst: str, dport: int, timeout: float = 5.0) -> Ether:
        """The next TCP segment from the stack to (dst, dport)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0 and select.select([self.sock], [], [], left)[0], \
                f"nothing came back to {dst}:{dport}"
            pkt = Ether(self.sock.recv(2048))
            if (TCP in pkt and pkt[IP].src == self.bed.stack.ip and pkt[IP].dst == dst
                    and pkt[TCP].dport == dport):
                return pkt


@pytest.fixture
def wire(bed) -> Iterator[Wire]:
    w = Wire(bed)
    try:
        yield w
    finally:
        w.close()


# ---- tcp_syncookies=2: every SYN answered in XDP ----
def test_mode2_kernel_clients_connect_and_python_never_sees_a_syn(bed, make_host):
    h = make_host("net.ipv4.tcp_syncookies=2")
    assert h.dp.program.syncookies() == 2
    m0 = mib(h)
    three_echoes(bed, h)
    m1 = mib(h)
    assert h.syns_seen == 0, "a SYN reached the control plane"  # type: ignore[attr-defined]
    d = delta(m0, m1, "SyncookiesSent", "SyncookiesRecv", "PassiveOpens", "EstabResets",
              "TCPReqQFullDoCookies")
    assert d["SyncookiesSent"] == 3 and d["SyncookiesRecv"] >= 3
    assert d["PassiveOpens"] == 3 and d["EstabResets"] == 0
    assert d["TCPReqQFullDoCookies"] == 0


def test_forged_cookie_ack_is_dropped_counted_and_makes_nothing(bed, make_host, wire):
    h = make_host("net.ipv4.tcp_syncookies=2")
    src = FLOOD_NET.format(101)
    wire.send(wire.tcp(src, 40000, "S", 1000, opts=LINUX_OPTS))
    sa = wire.expect(src, 40000)
    assert sa[TCP].flags == "SA" and h.syns_seen == 0  # type: ignore[attr-defined]
    m0, d0 = mib(h), h.dp.program.drops()
    in0 = h.call(lambda: h.engine.mib["InSegs"])
    ts = dict(sa[TCP].options)["Timestamp"][0]
    forged = [  # a wrong cookie, another port's cookie, another address's cookie
        wire.tcp(src, 40000, "A", 1001, sa[TCP].seq + 2, [("Timestamp", (1001, ts))]),
        wire.tcp(src, 40001, "A", 1001, sa[TCP].seq + 1, [("Timestamp", (1001, ts))]),
        wire.tcp(FLOOD_NET.format(102), 40000, "A", 1001, sa[TCP].seq + 1),
    ]
    for f in forged:
        wire.send(f)
    # A RST to the listener reaches the control plane: once it has, the ACKs were judged.
    wire.send(wire.tcp(src, 40002, "R", 5))
    wait_for(lambda: h.call(lambda: h.engine.mib["InSegs"]) > in0, 5, "the marker RST")
    m1 = mib(h)
    assert delta(m0, m1, "SyncookiesFailed", "SyncookiesRecv") == {"SyncookiesFailed": 3,
                                                                   "SyncookiesRecv": 0}
    assert h.dp.program.drops()["syncookie_failed"] - d0["syncookie_failed"] == 3
    assert h.call(lambda: h.engine.mib["InSegs"]) == in0 + 1, "a forged ACK reached Python"
    assert h.call(lambda: len(h.engine.connections)) == 0
    assert delta(m0, m1, "OutRsts", "PassiveOpens") == {"OutRsts": 0, "PassiveOpens": 0}
    # The right ACK still works afterwards.
    wire.send(wire.tcp(src, 40000, "A", 1001, sa[TCP].seq + 1, [("Timestamp", (1001, ts))]))
    wait_for(lambda: h.call(lambda: h.engine.mib["PassiveOpens"]) == m0["PassiveOpens"] + 1,
             5, "the cookie connection")
    (c,) = h.call(lambda: list(h.engine.connections.values()))
    assert c.iss == sa[TCP].seq and c.state == TcpState.ESTABLISHED


def test_handshake_across_a_key_rotation(bed, make_host, wire):
    h = make_host("net.ipv4.tcp_syncookies=2", cookie_key_interval=0.5)
    p = h.dp.program
    src = FLOOD_NET.format(103)
    wire.send(wire.tcp(src, 40100, "S", 5000, opts=LINUX_OPTS))
    sa = wire.expect(src, 40100)
    key0 = bytes(p.syncookie_keys[0])
    wait_for(lambda: bytes(p.syncookie_keys[0]) != key0, 5, "a key rotation")
    ts = dict(sa[TCP].options)["Timestamp"][0]
    wire.send(wire.tcp(src, 40100, "A", 5001, sa[TCP].seq + 1, [("Timestamp", (5001, ts))]))
    wait_for(lambda: h.call(lambda: len(h.engine.connections)) == 1, 5,
             "a connection from a cookie of the previous key")
    _, _ = echo_round_trip(bed, 10)  # and new handshakes use the new key


def test_stateful_handshake_completes_after_cookies_switch_on(bed, make_host, wire):
    """The ACK of a handshake that started statefully is not judged as a cookie once
    cookies are on: its flow is owned from SYN-RECEIVED on."""
    h = make_host("net.ipv4.tcp_syncookies=0")
    src = FLOOD_NET.format(104)
    wire.send(wire.tcp(src, 40200, "S", 7000, opts=LINUX_OPTS))
    sa = wire.expect(src, 40200)
    assert h.syns_seen == 1  # type: ignore[attr-defined]
    states = h.call(lambda: [c.state for c in h.engine.connections.values()])
    assert states == [TcpState.SYN_RECEIVED]
    assert h.sysctl("net.ipv4.tcp_syncookies", "2") == "2"
    assert h.dp.program.syncookies() == 2
    m0 = mib(h)
    ts = dict(sa[TCP].options)["Timestamp"][0]
    wire.send(wire.tcp(src, 40200, "A", 7001, sa[TCP].seq + 1, [("Timestamp", (7001, ts))]))
    wait_for(lambda: h.call(lambda: [c.state for c in h.engine.connections.values()])
             == [TcpState.ESTABLISHED], 5, "ESTABLISHED")
    assert delta(m0, mib(h), "SyncookiesFailed", "SyncookiesRecv") == {
        "SyncookiesFailed": 0, "SyncookiesRecv": 0}


def test_runtime_mode_changes_reach_xdp(bed, make_host):
    h = make_host()  # Linux's default: 1
    p = h.dp.program
    assert p.syncookies() == 1 and h.sysctl("tcp_syncookies") == "1"
    echo_round_trip(bed, 10)
    assert h.syns_seen == 1  # type: ignore[attr-defined]
    h.sysctl("net.ipv4.tcp_syncookies", "2")
    echo_round_trip(bed, 10)
    assert h.syns_seen == 1  # type: ignore[attr-defined]
    # A write behind the host's back (the control socket's) is picked up by the tick.
    h.call(lambda: h.settings.set("net.ipv4.tcp_syncookies", "0"))
    wait_for(lambda: p.syncookies() == 0, 5, "mode 0 in XDP")
    echo_round_trip(bed, 10)
    assert h.syns_seen == 2  # type: ignore[attr-defined]
    with pytest.raises(ValueError):
        h.sysctl("net.ipv4.tcp_syncookies", "3")


# ---- tcp_syncookies=1: cookies only while a listener's SYN queue overflows ----
def flood_frames(bed, n: int, seed: int = 5) -> list[bytes]:
    rnd = random.Random(seed)
    eth = Ether(src=bed.peer.mac, dst=bed.stack.mac)
    tmpl = bytes(eth / IP(src="198.18.0.100", dst=bed.stack.ip)
                 / TCP(sport=1, dport=PORT, flags="S", seq=1, window=64240,
                       options=LINUX_OPTS))
    frames = []
    for _ in range(n):
        pkt = Ether(tmpl)
        pkt[IP].src = FLOOD_NET.format(rnd.randrange(110, 251))
        pkt[TCP].sport = rnd.randrange(1024, 65536)
        pkt[TCP].seq = rnd.getrandbits(32)
        del pkt[IP].chksum, pkt[TCP].chksum
        frames.append(bytes(pkt))
    return frames


def test_mode1_flood_fills_the_backlog_cookies_start_clients_connect_cookies_stop(
        bed, make_host, wire):
    h = make_host("net.ipv4.tcp_syncookies=1", "net.ipv4.tcp_synack_retries=1", backlog=32)
    p = h.dp.program
    frames = flood_frames(bed, 3000)
    m0 = mib(h)
    stop = threading.Event()
    flooded = [0]

    def flood() -> None:  # bounded: 3000 SYNs in about 3 s, at most 8 s
        end = time.monotonic() + 8
        for i, f in enumerate(frames):
            if stop.is_set() or time.monotonic() > end:
                return
            wire.send(f)
            flooded[0] += 1
            if i % 50 == 49:
                time.sleep(0.05)

    t = threading.Thread(target=flood)
    t.start()
    try:
        wait_for(lambda: pressure_up(p), 10, "the pressure flag")
        wait_for(lambda: mib(h)["SyncookiesSent"] - m0["SyncookiesSent"] > 50, 10,
                 "cookies from XDP")
        opens = h.call(lambda: h.engine.mib["PassiveOpens"])
        for _ in range(3):  # legitimate clients during the flood
            echo_round_trip(bed, 2000)
        assert t.is_alive(), "the flood ended before the clients were done"
        assert h.call(lambda: h.engine.mib["PassiveOpens"]) - opens == 3
        t.join()
    finally:
        stop.set()
        t.join()
    m1 = mib(h)
    seen = h.syns_seen  # type: ignore[attr-defined]
    # 33 requests fill a backlog of 32 (Linux >= 6.13 admits backlog + 1); the SYNs already
    # on their way when the flag rose got cookies from Python, the rest from XDP.
    assert 34 <= seen <= 300, seen
    d = delta(m0, m1, "SyncookiesSent", "SyncookiesRecv", "TCPReqQFullDoCookies")
    assert d["SyncookiesRecv"] >= 3 and d["TCPReqQFullDoCookies"] >= 1
    assert flooded[0] > 1000 and d["SyncookiesSent"] >= flooded[0] - seen, (flooded, d)
    # After the flood: the half-open requests expire (1 retransmission, 3 s), the flag
    # drops, and SYNs reach the engine again.
    wait_for(lambda: not pressure_up(p), 20, "the pressure flag to drop")
    sent = mib(h)["SyncookiesSent"]
    seen = h.syns_seen  # type: ignore[attr-defined]
    echo_round_trip(bed, 100)
    assert h.syns_seen == seen + 1  # type: ignore[attr-defined]
    assert mib(h)["SyncookiesSent"] == sent


def test_host_reports_xdp_cookie_counters_as_mib(bed, make_host):
    h = make_host("net.ipv4.tcp_syncookies=2")
    xdp0, m0 = h.dp.program.syncookie_counters(), mib(h)
    echo_round_trip(bed, 10)
    xdp1, m1 = h.dp.program.syncookie_counters(), mib(h)
    for k in ("SyncookiesSent", "SyncookiesRecv", "SyncookiesFailed"):
        assert m1[k] - m0[k] == xdp1[k] - xdp0[k]
    assert xdp1["SyncookiesSent"] - xdp0["SyncookiesSent"] == 1


# ---- pystack.xdp_synack: SYN-ACKs from XDP, the request kept in its map (xdpsyn.py) ----
def synack_listening(p: IngressProgram, port: int = PORT) -> bool:
    return p.synack_listen.Key(_ip_be(0), _port_be(port), 0) in p.synack_listen


def test_xdp_synack_kernel_clients_connect_and_python_never_sees_a_syn(bed, make_host):
    h = make_host("pystack.xdp_synack=1")
    p = h.dp.program
    wait_for(lambda: synack_listening(p), 5, "the listener in synack_listen")
    m0 = mib(h)
    three_echoes(bed, h)
    m1 = mib(h)
    assert h.syns_seen == 0, "a SYN reached the control plane"  # type: ignore[attr-defined]
    d = delta(m0, m1, "XdpSynAcks", "SyncookiesSent", "SyncookiesRecv", "PassiveOpens",
              "EstabResets", "TCPSynRetrans")
    # Stateful, not cookies: nothing counted as a cookie, and no retransmission.
    assert d == {"XdpSynAcks": 3, "SyncookiesSent": 0, "SyncookiesRecv": 0,
                 "PassiveOpens": 3, "EstabResets": 0, "TCPSynRetrans": 0}
    assert p.synack_requests() == [], "the ACKs took the requests out of the map"


def test_xdp_synack_keeps_the_exact_mss_then_retransmits_and_expires(bed, make_host, wire):
    h = make_host("pystack.xdp_synack=1", "net.ipv4.tcp_synack_retries=1")
    p = h.dp.program
    wait_for(lambda: synack_listening(p), 5, "the listener in synack_listen")
    opts = [("MSS", 1400), ("SAckOK", b""), ("Timestamp", (3000, 0)), ("NOP", None),
            ("WScale", 6)]
    # A handshake completed by hand: the connection has the SYN's MSS, not the cookie's
    # 1300 (msstab's entry below 1400).
    src = FLOOD_NET.format(105)
    wire.send(wire.tcp(src, 40300, "S", 9000, opts=opts))
    sa = wire.expect(src, 40300)
    assert sa[TCP].flags == "SA" and h.syns_seen == 0  # type: ignore[attr-defined]
    assert dict(sa[TCP].options)["Timestamp"][1] == 3000
    ts = dict(sa[TCP].options)["Timestamp"][0]
    wire.send(wire.tcp(src, 40300, "A", 9001, sa[TCP].seq + 1, [("Timestamp", (3001, ts))]))
    wait_for(lambda: h.call(lambda: len(h.engine.connections)) == 1, 5, "the connection")
    (c,) = h.call(lambda: list(h.engine.connections.values()))
    assert c.state == TcpState.ESTABLISHED and c._peer_mss == 1400 and c.snd_wscale == 6
    # A SYN whose ACK never comes: XDP's SYN-ACK, then the control plane's retransmission
    # one TCP_TIMEOUT_INIT later with the same ISN, then (tcp_synack_retries=1) it expires.
    m0 = mib(h)
    src = FLOOD_NET.format(106)
    wire.send(wire.tcp(src, 40301, "S", 12000, opts=opts))
    first = wire.expect(src, 40301)
    t0 = time.monotonic()
    assert len(p.synack_requests()) == 1
    again = wire.expect(src, 40301, timeout=5)
    gap = time.monotonic() - t0
    assert again[TCP].flags == "SA" and again[TCP].seq == first[TCP].seq
    assert again[TCP].ack == 12001 and dict(again[TCP].options)["Timestamp"][1] == 3000
    assert dict(again[TCP].options)["WScale"] == dict(first[TCP].options)["WScale"]
    assert 0.8 <= gap <= 2.0, gap
    wait_for(lambda: not p.synack_requests(), 10, "the request to expire")
    d = delta(m0, mib(h), "XdpSynAcks", "TCPSynRetrans", "RetransSegs", "PassiveOpens")
    assert d == {"XdpSynAcks": 1, "TCPSynRetrans": 1, "RetransSegs": 1, "PassiveOpens": 0}
    assert h.syns_seen == 0  # type: ignore[attr-defined]


def test_xdp_synack_off_by_default_and_not_for_a_listener_with_options(bed, make_host):
    h = make_host()  # pystack.xdp_synack=0
    p = h.dp.program
    echo_round_trip(bed, 10)
    assert h.syns_seen == 1 and not synack_listening(p)  # type: ignore[attr-defined]
    assert h.sysctl("pystack.xdp_synack", "1") == "1"
    wait_for(lambda: synack_listening(p), 5, "the listener in synack_listen")
    # A per-socket option changes the SYN-ACK: such a listener's SYNs go to the engine.
    h.call(lambda: next(iter(h.engine.listeners.values())).set_option("SO_RCVBUF", 65536))
    wait_for(lambda: not synack_listening(p), 5, "the listener out of synack_listen")
    echo_round_trip(bed, 10)
    assert h.syns_seen == 2  # type: ignore[attr-defined]
