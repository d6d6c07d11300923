"""Shared helpers and hypothesis strategies for the wire tests (no tests here)."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from pystack.wire import (
    ACK,
    PSH,
    SYN,
    TcpOptions,
    TcpSegment,
    build_frame,
    internet_checksum,
    options_len,
    tcp_checksum,
)

# Deterministic runs: a fixed seed per test and no example database on disk.
FAST = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow],
)
SLOW = settings(FAST, max_examples=40)

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")
IP_A = 0x0A000001  # 10.0.0.1
IP_B = 0x0A000002  # 10.0.0.2
ETH = 14
IP = 14 + 20  # start of the TCP header in frames we build

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)

cookies = st.one_of(
    st.none(),
    st.just(b""),
    st.integers(2, 8).flatmap(lambda n: st.binary(min_size=2 * n, max_size=2 * n)),
)

options = st.builds(
    TcpOptions,
    mss=st.none() | u16,
    wscale=st.none() | st.integers(0, 255),
    sack_permitted=st.booleans(),
    sack_blocks=st.lists(st.tuples(u32, u32), max_size=4),
    timestamp=st.none() | st.tuples(u32, u32),
    fastopen_cookie=cookies,
).filter(lambda o: options_len(o) <= 40)

segments = st.builds(
    TcpSegment,
    src_ip=u32,
    dst_ip=u32,
    src_port=u16,
    dst_port=u16,
    seq=u32,
    ack=u32,
    flags=st.integers(0, 255),
    window=u16,
    urgent=u16,
    options=options,
    payload=st.binary(max_size=1460),
    ecn=st.integers(0, 3),
)


def syn_segment(payload: bytes = b"") -> TcpSegment:
    """A Linux-like SYN with every option we know."""
    return TcpSegment(
        src_ip=IP_A,
        dst_ip=IP_B,
        src_port=40000,
        dst_port=80,
        seq=0x12345678,
        ack=0,
        flags=SYN,
        window=64240,
        options=TcpOptions(
            mss=1460,
            wscale=7,
            sack_permitted=True,
            timestamp=(1000, 0),
            fastopen_cookie=bytes(range(8)),
        ),
        payload=payload,
    )


def data_segment(payload: bytes = b"hello, world") -> TcpSegment:
    return TcpSegment(
        src_ip=IP_B,
        dst_ip=IP_A,
        src_port=80,
        dst_port=40000,
        seq=1,
        ack=0xFFFFFFF0,
        flags=ACK | PSH,
        window=502,
        options=TcpOptions(timestamp=(7, 8), sack_blocks=[(100, 200), (300, 400)]),
        payload=payload,
    )


def bare_ack() -> TcpSegment:
    return TcpSegment(IP_A, IP_B, 1, 2, 3, 4, ACK, 5)


def build(seg: TcpSegment) -> bytearray:
    out = build_frame(seg, MAC_A, MAC_B)
    assert isinstance(out, bytes)
    return bytearray(out)


def refresh(frame: bytearray, ip_off: int = ETH) -> bytearray:
    """Recompute the IPv4 and TCP checksums of `frame` from its current header fields,
    so a test can change one field and see only that fault."""
    ihl = (frame[ip_off] & 0x0F) * 4
    total = int.from_bytes(frame[ip_off + 2 : ip_off + 4], "big")
    frame[ip_off + 10 : ip_off + 12] = b"\0\0"
    frame[ip_off + 10 : ip_off + 12] = internet_checksum(frame[ip_off : ip_off + ihl]).to_bytes(
        2, "big"
    )
    tcp = ip_off + ihl
    end = min(ip_off + total, len(frame))
    if end - tcp >= 18:
        src = int.from_bytes(frame[ip_off + 12 : ip_off + 16], "big")
        dst = int.from_bytes(frame[ip_off + 16 : ip_off + 20], "big")
        frame[tcp + 16 : tcp + 18] = b"\0\0"
        csum = tcp_checksum(src, dst, frame[tcp:end])
        frame[tcp + 16 : tcp + 18] = csum.to_bytes(2, "big")
    return frame


def with_raw_options(raw: bytes, payload: bytes = b"xyz") -> bytearray:
    """A frame whose TCP option bytes are exactly `raw` (padded with zeros to 4n), with
    correct lengths and checksums."""
    pad = (-len(raw)) % 4
    opts = raw + b"\0" * pad
    frame = build(TcpSegment(IP_A, IP_B, 1000, 2000, 1, 2, ACK, 100, payload=payload))
    frame[IP + 20 : IP + 20] = opts
    frame[IP + 12] = ((20 + len(opts)) // 4) << 4
    total = int.from_bytes(frame[ETH + 2 : ETH + 4], "big") + len(opts)
    frame[ETH + 2 : ETH + 4] = total.to_bytes(2, "big")
    return refresh(frame)


def set_total_length(frame: bytearray, total: int) -> bytearray:
    frame[ETH + 2 : ETH + 4] = total.to_bytes(2, "big")
    return refresh(frame)
