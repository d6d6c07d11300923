"""The data path on a real veth pair, against the peer namespace's kernel TCP."""

from __future__ import annotations

import select
import signal
import socket
import struct

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from pystack.iface.datapath import Datapath
from pystack.wire.segment import ACK, RST, SYN, TcpSegment
from tests.helpers import connect_error, wait_for

PORT = 7777
KPORT = 8888


def ip_int(s: str) -> int:
    return int.from_bytes(socket.inet_aton(s), "big")


@pytest.fixture
def dp(bed, program):
    with bed.enter("stack"):
        d = Datapath(bed.stack.ifname, program=program)
    d.own_port(PORT)
    try:
        yield d
    finally:
        d.close()


def receive_one(dp: Datapath, timeout: float = 5.0) -> list[TcpSegment]:
    assert dp.wait(timeout), "nothing reached the AF_XDP socket"
    segs = dp.receive()
    assert segs, "frames arrived but none parsed"
    return segs


def test_syn_reaches_python_and_our_rst_refuses_the_kernel_client(bed, dp):
    before = bed.snmp("stack")
    c = bed.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
    c.setblocking(False)
    assert c.connect_ex((bed.stack.ip, PORT)) == 115  # EINPROGRESS

    syn = receive_one(dp)[0]
    assert syn.flags == SYN
    assert (syn.src_ip, syn.dst_ip, syn.dst_port) == (ip_int(bed.peer.ip), ip_int(bed.stack.ip),
                                                      PORT)
    assert syn.src_port == c.getsockname()[1]
    assert syn.options.mss == 1460 and syn.options.sack_permitted and syn.options.timestamp

    # Python answers as a closed port (RFC 9293 §3.10.7.1): <SEQ=0><ACK=SEG.SEQ+1><RST,ACK>.
    rst = TcpSegment(syn.dst_ip, syn.src_ip, syn.dst_port, syn.src_port, 0,
                     (syn.seq + 1) & 0xFFFFFFFF, RST | ACK, 0)
    assert dp.send([rst]) == 1
    _, w, _ = select.select([], [c], [], 5)
    assert w, "the peer never saw the RST"
    assert c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 111  # ECONNREFUSED
    after = bed.snmp("stack")
    assert after["OutRsts"] == before["OutRsts"], "the stack-side kernel answered, not pystack"
    assert after["InSegs"] == before["InSegs"], "the SYN leaked to the stack-side kernel"
    assert dp.stats.tx_frames == 1
    dp.xsk.check()


def test_kernel_keeps_other_ports_icmp_and_arp(bed, dp, program):
    passed = program.actions()["pass"]
    srv = bed.socket("stack", socket.AF_INET, socket.SOCK_STREAM)
    srv.bind((bed.stack.ip, KPORT))
    srv.listen()
    c = bed.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
    c.settimeout(5)
    c.connect((bed.stack.ip, KPORT))
    s, _ = srv.accept()
    c.sendall(b"hello kernel")
    assert s.recv(100) == b"hello kernel"
    s.close()
    c.close()
    srv.close()
    ping = bed.run("peer", ["ping", "-c", "2", "-i", "0.2", "-W", "2", bed.stack.ip], check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    neigh = bed.run("peer", ["ip", "neigh", "show", bed.stack.ip]).stdout
    assert bed.stack.mac in neigh, f"ARP did not resolve the stack side: {neigh!r}"
    assert program.actions()["pass"] > passed
    assert dp.stats.rx_frames == 0, "kernel traffic reached Python"


def _frames(bed) -> dict[str, bytes]:
    """Bad frames (and the drop reason each must be counted under), sent to the owned port."""
    eth = Ether(src=bed.peer.mac, dst=bed.stack.mac)
    good = eth / IP(src=bed.peer.ip, dst=bed.stack.ip) / TCP(sport=40000, dport=PORT, flags="A")
    raw = bytes(good)

    def flip(b: bytes, i: int) -> bytes:
        return b[:i] + bytes([b[i] ^ 0x01]) + b[i + 1:]

    ip_hdr = 14
    tcp_hdr = 34
    frames = {
        "ip_checksum": flip(raw, ip_hdr + 10),
        "tcp_checksum": flip(raw, tcp_hdr + 16),
        "tcp_checksum_payload": bytes(eth / IP(src=bed.peer.ip, dst=bed.stack.ip) /
                                      TCP(sport=40000, dport=PORT, flags="PA", chksum=0x1234) /
                                      (b"x" * 1000)),
        "truncated_ip": raw[:14 + 12],
        "truncated_tcp": bytes(eth / IP(src=bed.peer.ip, dst=bed.stack.ip, proto=6)) + b"\0" * 8,
        "bad_ihl": raw[:ip_hdr] + bytes([0x44]) + raw[ip_hdr + 1:],
        "bad_doff_small": raw[:tcp_hdr + 12] + bytes([0x40]) + raw[tcp_hdr + 13:],
        "bad_doff_big": raw[:tcp_hdr + 12] + bytes([0xF0]) + raw[tcp_hdr + 13:],
        "bad_total_length": raw[:ip_hdr + 2] + struct.pack("!H", 400) + raw[ip_hdr + 4:],
        "bad_version": raw[:ip_hdr] + bytes([0x65]) + raw[ip_hdr + 1:],
        "fragment": bytes(eth / IP(src=bed.peer.ip, dst=bed.stack.ip, flags="MF") /
                          TCP(sport=40000, dport=PORT, flags="A") / (b"y" * 64)),
    }
    return frames


EXPECTED = {
    "ip_checksum": "ip_checksum",
    "tcp_checksum": "tcp_checksum",
    "tcp_checksum_payload": "tcp_checksum",
    "truncated_ip": "truncated",
    "truncated_tcp": "truncated",
    "bad_ihl": "bad_ihl",
    "bad_doff_small": "bad_doff",
    "bad_doff_big": "bad_doff",
    "bad_total_length": "bad_total_length",
    "bad_version": "bad_version",
    "fragment": "fragment",
}


def test_malformed_frames_are_dropped_in_xdp_and_counted_by_reason(bed, dp, program):
    frames = _frames(bed)
    before = program.drops()
    with bed.enter("peer"):
        tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    tx.bind((bed.peer.ifname, 0))
    for name in EXPECTED:
        tx.send(frames[name])
    # A valid SYN last: once it arrives, every frame before it has been judged.
    sentinel = Ether(src=bed.peer.mac, dst=bed.stack.mac) / IP(src=bed.peer.ip,
               dst=bed.stack.ip) / TCP(sport=40001, dport=PORT, flags="S", seq=12345)
    tx.send(bytes(sentinel))
    tx.close()
    segs = receive_one(dp)
    assert [(s.src_port, s.seq) for s in segs] == [(40001, 12345)], "a bad frame reached Python"
    after = program.drops()
    want: dict[str, int] = {}
    for reason in EXPECTED.values():
        want[reason] = want.get(reason, 0) + 1
    got = {r: after[r] - before[r] for r in after if after[r] != before[r]}
    assert got == want
    assert dp.stats.rx_malformed == 0 and dp.stats.rx_unverified == 0


def _kernel_serves(bed, port: int) -> bool:
    c = bed.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
    try:
        return connect_error(c, (bed.stack.ip, port), timeout=1) == 0
    finally:
        c.close()


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_port_returns_to_the_kernel_after_stop(bed, spawn_stack, how):
    srv = bed.socket("stack", socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((bed.stack.ip, PORT))
    srv.listen(16)
    proc = spawn_stack(PORT)
    assert bed.xdp_prog_id("stack") != 0
    c = bed.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
    assert connect_error(c, (bed.stack.ip, PORT)) == 111, "pystack should own the port"
    c.close()

    proc.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
    wait_for(lambda: bed.xdp_prog_id("stack") == 0, 1.0, "the XDP program to go")
    wait_for(lambda: _kernel_serves(bed, PORT), 1.0, "the kernel to serve the port again")
    proc.wait(timeout=5)
    if how == "sigterm":
        assert proc.returncode == 0
    srv.close()


# ---- batch offloads on the real path: GRO, TSO, the transmit backlog ----
def _raw_tx(bed) -> socket.socket:
    with bed.enter("peer"):
        tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    tx.bind((bed.peer.ifname, 0))
    return tx


def _capture(bed) -> socket.socket:
    """Every frame the peer's veth receives (AF_PACKET, ETH_P_ALL)."""
    with bed.enter("peer"):
        cap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    cap.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE: hold a whole burst
    cap.bind((bed.peer.ifname, 0))
    cap.settimeout(5)
    return cap


def _captured_from(cap: socket.socket, bed, sport: int, n: int) -> list[bytes]:
    """The next n TCP frames from the stack side's sport (others are skipped)."""
    from pystack.wire.frame import parse_frame

    out: list[bytes] = []
    while len(out) < n:
        f = cap.recv(4096)
        if len(f) > 34 and f[12:14] == b"\x08\x00" and f[23] == 6:
            if parse_frame(f).segment.src_port == sport and f[26:30] == socket.inet_aton(
                    bed.stack.ip):
                out.append(f)
    return out


def _burst(bed) -> list[bytes]:
    """Ten in-order 1000-byte segments of one flow (one TSval), three duplicate ACKs of
    another flow, then three ACKs of it that only advance."""
    eth = Ether(src=bed.peer.mac, dst=bed.stack.mac) / IP(src=bed.peer.ip, dst=bed.stack.ip)
    ts = [("NOP", None), ("NOP", None), ("Timestamp", (100, 200))]
    data = [eth / TCP(sport=41000, dport=PORT, flags="A", seq=1000 + 1000 * i, ack=5,
                      window=500, options=ts) / (bytes([0x41 + i]) * 1000) for i in range(10)]
    dup = [eth / TCP(sport=41001, dport=PORT, flags="A", seq=7, ack=900, window=500,
                     options=ts) for _ in range(3)]
    adv = [eth / TCP(sport=41001, dport=PORT, flags="A", seq=7, ack=900 + 1448 * (i + 1),
                     window=500, options=ts) for i in range(3)]
    return [bytes(f) for f in data + dup + adv]


def _receive_burst(bed, dp, program) -> list[TcpSegment]:
    frames = _burst(bed)
    before = program.actions()["redirect"]
    tx = _raw_tx(bed)
    for f in frames:
        tx.send(f)
    tx.close()
    # All of them in the rx ring before the one receive() that takes them as one batch.
    wait_for(lambda: program.actions()["redirect"] - before >= len(frames), 5,
             "the burst to reach the AF_XDP socket")
    return dp.receive()


@pytest.mark.parametrize("c_batch", [True, False])
def test_gro_merges_a_burst_and_keeps_duplicate_acks(bed, dp, program, c_batch):
    dp.c_batch = c_batch
    segs = _receive_burst(bed, dp, program)
    assert [(s.src_port, s.gso_segs) for s in segs] == [
        (41000, 10), (41001, 1), (41001, 1), (41001, 1), (41001, 3)]
    data = segs[0]
    assert (data.seq, data.gso_size, len(data.payload)) == (1000, 1000, 10000)
    assert data.payload == b"".join(bytes([0x41 + i]) * 1000 for i in range(10))
    assert data.options.timestamp == (100, 200)
    assert [s.ack for s in segs[1:]] == [900, 900, 900, 900 + 3 * 1448]
    assert dp.stats.rx_frames == 16 and dp.stats.rx_segments == 5
    dp.xsk.check()


def test_tso_segment_leaves_as_mss_sized_frames(bed, dp):
    bed.run("stack", ["ping", "-c", "1", "-W", "2", bed.peer.ip])  # resolve the MAC
    cap = _capture(bed)
    payload = bytes(range(256)) * 20  # 5120 bytes: 5 frames of 1000, one of 120
    seg = TcpSegment(ip_int(bed.stack.ip), ip_int(bed.peer.ip), PORT, 42000, 0xFFFFF000, 9,
                     ACK | 0x08, 1000, payload=payload, gso_size=1000)
    assert dp.send([seg]) == 1
    frames = _captured_from(cap, bed, PORT, 6)
    cap.close()
    from pystack.io.xsk import csum_ok
    from pystack.wire.frame import parse_frame

    got = [parse_frame(f).segment for f in frames]
    assert all(csum_ok(f) for f in frames)
    assert [s.seq for s in got] == [(0xFFFFF000 + 1000 * i) & 0xFFFFFFFF for i in range(6)]
    assert [s.flags for s in got] == [ACK] * 5 + [ACK | 0x08]
    assert b"".join(bytes(s.payload) for s in got) == payload
    assert dp.stats.tx_frames == 6 and dp.stats.tx_segments == 1


def test_segments_wait_for_tx_ring_room_instead_of_being_dropped(bed, program):
    bed.run("stack", ["ping", "-c", "1", "-W", "2", bed.peer.ip])
    with bed.enter("stack"):
        d = Datapath(bed.stack.ifname, program=program, frames=256, ring_size=32, batch=32)
    try:
        cap = _capture(bed)
        segs = [TcpSegment(ip_int(bed.stack.ip), ip_int(bed.peer.ip), PORT, 42001, 1000 * i, 9,
                           ACK, 1000, payload=b"b" * 1000) for i in range(300)]
        queued = d.send(segs)
        assert queued < 300 and d.tx_backlog == 300 - queued, "the ring took everything"
        wait_for(lambda: d.send([]) >= 0 and d.tx_backlog == 0, 5, "the backlog to drain")
        frames = _captured_from(cap, bed, PORT, 300)
        cap.close()
        from pystack.wire.frame import parse_frame

        assert [parse_frame(f).segment.seq for f in frames] == [1000 * i for i in range(300)]
        assert d.stats.tx_ring_full == 0 and d.stats.tx_segments == 300
        d.xsk.complete()
        d.xsk.check()
    finally:
        d.close()
