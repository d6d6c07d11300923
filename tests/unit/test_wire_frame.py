"""parse_frame / build_frame: round trips and cross-checks against scapy."""

from __future__ import annotations

import pytest
from hypothesis import given
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from pystack.wire import (
    ACK,
    CWR,
    ECE,
    FIN,
    PSH,
    RST,
    SYN,
    URG,
    ParsedFrame,
    TcpOptions,
    TcpSegment,
    WireError,
    build_frame,
    frame_len,
    parse_frame,
)
from tests.unit.test_wire_support import (
    FAST,
    IP_A,
    IP_B,
    MAC_A,
    MAC_B,
    SLOW,
    bare_ack,
    data_segment,
    segments,
    syn_segment,
)


def dotted(addr: int) -> str:
    return ".".join(str((addr >> s) & 0xFF) for s in (24, 16, 8, 0))


def mac(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


HAND_WRITTEN = [
    syn_segment(),
    syn_segment(payload=b"GET / HTTP/1.0\r\n\r\n"),  # Fast Open SYN with data
    data_segment(),
    data_segment(payload=b"odd"),
    bare_ack(),
    TcpSegment(IP_A, IP_B, 1, 2, 3, 4, RST | ACK, 0),
    TcpSegment(IP_A, IP_B, 1, 2, 3, 4, FIN | ACK | URG, 0, urgent=1, payload=b"!"),
    TcpSegment(IP_A, IP_B, 1, 2, 3, 4, SYN | ECE | CWR, 1, ecn=0),
    TcpSegment(IP_A, IP_B, 1, 2, 3, 4, ACK | ECE, 1, ecn=3, payload=b"ce"),
    TcpSegment(
        0xFFFFFFFF,
        0,
        0xFFFF,
        0,
        0xFFFFFFFF,
        0xFFFFFFFF,
        0xFF,
        0xFFFF,
        urgent=0xFFFF,
        options=TcpOptions(timestamp=(0xFFFFFFFF, 0xFFFFFFFF), sack_blocks=[(1, 2)] * 3),
        payload=bytes(range(256)) * 5,
        ecn=2,
    ),
    TcpSegment(
        IP_B,
        IP_A,
        80,
        40000,
        9,
        10,
        SYN | ACK,
        65535,
        options=TcpOptions(mss=1460, sack_permitted=True, wscale=0, fastopen_cookie=bytes(16)),
    ),
]


@pytest.mark.parametrize("seg", HAND_WRITTEN)
def test_round_trip_hand_written(seg: TcpSegment) -> None:
    frame = build_frame(seg, MAC_A, MAC_B, ttl=3, ip_id=0x1234)
    assert isinstance(frame, bytes)
    assert len(frame) == frame_len(seg)
    parsed = parse_frame(frame)
    assert parsed == ParsedFrame(MAC_B, MAC_A, seg, ttl=3, ip_id=0x1234)
    assert parsed.segment == seg


def test_payload_is_a_view_into_the_buffer() -> None:
    buf = bytearray(build_frame(data_segment(b"abcdef"), MAC_A, MAC_B))
    payload = parse_frame(buf).segment.payload
    assert isinstance(payload, memoryview)
    assert payload == b"abcdef"
    buf[-1] = ord("X")
    assert payload == b"abcdeX"  # no copy


def test_build_into_buffer() -> None:
    seg = syn_segment(b"data")
    n = frame_len(seg)
    out = bytearray(2048)
    assert build_frame(seg, MAC_A, MAC_B, out) == n
    assert bytes(out[:n]) == build_frame(seg, MAC_A, MAC_B)
    assert parse_frame(memoryview(out)[:n]).segment == seg
    # A memoryview at an offset in a larger buffer (e.g. a UMEM frame).
    umem = bytearray(4096)
    assert build_frame(seg, MAC_A, MAC_B, memoryview(umem)[100:]) == n
    assert parse_frame(memoryview(umem)[100 : 100 + n]).segment == seg
    assert build_frame(seg, MAC_A, MAC_B, bytearray(n)) == n


def test_build_errors() -> None:
    seg = syn_segment(b"data")
    with pytest.raises(ValueError):
        build_frame(seg, MAC_A, MAC_B, bytearray(frame_len(seg) - 1))
    with pytest.raises(ValueError):
        build_frame(seg, MAC_A, MAC_B, memoryview(bytes(2000)))  # read-only
    with pytest.raises(ValueError):
        build_frame(data_segment(bytes(65536 - 40 - 32)), MAC_A, MAC_B)
    big = data_segment()
    big.options.sack_blocks = [(1, 2)] * 4
    with pytest.raises(ValueError):
        frame_len(big)
    with pytest.raises(ValueError):
        build_frame(big, MAC_A, MAC_B)
    with pytest.raises(ValueError):
        build_frame(seg, MAC_A[:5], MAC_B)


def test_largest_ipv4_datagram() -> None:
    seg = data_segment(bytes(65535 - 20 - 52))  # TCP header 20 + TS 12 + 2 SACK blocks 20
    frame = build_frame(seg, MAC_A, MAC_B)
    assert len(frame) == 14 + 65535
    assert parse_frame(frame).segment == seg


def test_no_checksums_leaves_zeros() -> None:
    seg = data_segment()
    frame = build_frame(seg, MAC_A, MAC_B, fill_checksums=False)
    assert isinstance(frame, bytes)
    assert frame[24:26] == b"\0\0"
    assert frame[34 + 16 : 34 + 18] == b"\0\0"
    assert parse_frame(frame, verify_checksums=False).segment == seg
    with pytest.raises(WireError) as e:
        parse_frame(frame)
    assert e.value.reason == "bad_checksum"


def test_df_flag() -> None:
    frame = build_frame(bare_ack(), MAC_A, MAC_B)
    assert frame[20] == 0x40
    frame = build_frame(bare_ack(), MAC_A, MAC_B, df=False)
    assert frame[20] == 0x00
    parse_frame(frame)


@FAST
@given(segments)
def test_round_trip_property(seg: TcpSegment) -> None:
    frame = build_frame(seg, MAC_A, MAC_B)
    assert isinstance(frame, bytes)
    assert len(frame) == frame_len(seg)
    assert parse_frame(frame).segment == seg
    # Ethernet padding after Total Length is ignored.
    assert parse_frame(frame + bytes(7)).segment == seg


# --- scapy cross-checks -------------------------------------------------------------


def test_parse_scapy_frame_with_every_option() -> None:
    pkt = (
        Ether(src=mac(MAC_A), dst=mac(MAC_B))
        / IP(src="10.0.0.1", dst="10.0.0.2", tos=0x03, id=77, ttl=9, flags="DF")
        / TCP(
            sport=40000,
            dport=443,
            seq=0xFFFFFFFE,
            ack=5,
            flags="SE",
            window=29200,
            urgptr=0,
            options=[
                ("MSS", 1460),
                ("SAckOK", b""),
                ("Timestamp", (123456, 654321)),
                ("NOP", None),
                ("WScale", 7),
                ("TFO", b"\x11" * 8),
                ("EOL", None),
            ],
        )
        / Raw(b"payload!")
    )
    parsed = parse_frame(bytes(pkt))
    seg = parsed.segment
    assert (parsed.eth_src, parsed.eth_dst, parsed.ttl, parsed.ip_id) == (MAC_A, MAC_B, 9, 77)
    assert (seg.src_ip, seg.dst_ip, seg.src_port, seg.dst_port) == (IP_A, IP_B, 40000, 443)
    assert (seg.seq, seg.ack, seg.flags, seg.window) == (0xFFFFFFFE, 5, SYN | ECE, 29200)
    assert seg.ecn == 3
    assert seg.options == TcpOptions(
        mss=1460,
        wscale=7,
        sack_permitted=True,
        timestamp=(123456, 654321),
        fastopen_cookie=b"\x11" * 8,
    )
    assert seg.payload == b"payload!"


def test_parse_scapy_sack_and_tfo_request() -> None:
    pkt = (
        Ether()
        / IP(src="10.0.0.2", dst="10.0.0.1")
        / TCP(
            flags="A",
            options=[
                ("Timestamp", (1, 2)),
                ("SAck", (10, 20, 30, 40)),
                ("TFO", b""),
                ("NOP", None),
                (99, b"xy"),  # unknown kind, skipped
            ],
        )
    )
    seg = parse_frame(bytes(pkt)).segment
    assert seg.options == TcpOptions(
        timestamp=(1, 2), sack_blocks=[(10, 20), (30, 40)], fastopen_cookie=b""
    )


@pytest.mark.parametrize("payload", [b"", b"a", b"ab", b"abc", bytes(range(255)) * 5 + b"z"])
def test_parse_scapy_frame_odd_payloads(payload: bytes) -> None:
    pkt = (
        Ether(src=mac(MAC_A), dst=mac(MAC_B))
        / IP(src="192.0.2.1", dst="198.51.100.2")
        / TCP(sport=1, dport=2, flags="PA", options=[("NOP", None), ("NOP", None)])
        / Raw(payload)
    )
    seg = parse_frame(bytes(pkt)).segment
    assert seg.payload == payload
    assert seg.flags == PSH | ACK
    assert seg.options == TcpOptions()


def scapy_check(frame: bytes, seg: TcpSegment) -> None:
    """scapy dissects `frame` to `seg`'s fields and recomputes the same checksums."""
    pkt = Ether(frame)
    ip, tcp = pkt[IP], pkt[TCP]
    assert (ip.version, ip.ihl, ip.len, ip.proto) == (4, 5, len(frame) - 14, 6)
    assert (ip.src, ip.dst, ip.tos & 3) == (dotted(seg.src_ip), dotted(seg.dst_ip), seg.ecn)
    assert (tcp.sport, tcp.dport, tcp.seq, tcp.ack) == (
        seg.src_port,
        seg.dst_port,
        seg.seq,
        seg.ack,
    )
    assert (int(tcp.flags), tcp.window, tcp.urgptr) == (seg.flags, seg.window, seg.urgent)
    assert bytes(tcp.payload) == bytes(seg.payload)
    opts = dict((k, v) for k, v in tcp.options if k not in ("NOP", "EOL"))
    if seg.options.mss is not None:
        assert opts["MSS"] == seg.options.mss
    if seg.options.wscale is not None:
        assert opts["WScale"] == seg.options.wscale
    if seg.options.timestamp is not None:
        assert opts["Timestamp"] == seg.options.timestamp
    if seg.options.sack_blocks:
        assert opts["SAck"] == tuple(e for b in seg.options.sack_blocks for e in b)
    assert ("SAckOK" in opts) == seg.options.sack_permitted
    assert ("TFO" in opts) == (seg.options.fastopen_cookie is not None)
    ours = (ip.chksum, tcp.chksum)
    del pkt[IP].chksum
    del pkt[TCP].chksum
    again = Ether(bytes(pkt))
    assert (again[IP].chksum, again[TCP].chksum) == ours


@pytest.mark.parametrize("seg", HAND_WRITTEN)
def test_scapy_accepts_hand_written(seg: TcpSegment) -> None:
    frame = build_frame(seg, MAC_A, MAC_B)
    assert isinstance(frame, bytes)
    scapy_check(frame, seg)


@SLOW
@given(segments)
def test_scapy_accepts_random(seg: TcpSegment) -> None:
    frame = build_frame(seg, MAC_A, MAC_B)
    assert isinstance(frame, bytes)
    scapy_check(frame, seg)
