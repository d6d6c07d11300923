"""RFC 1071 internet checksum and the TCP pseudo header."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, in4_chksum
from scapy.utils import checksum as scapy_checksum

from pystack.wire import internet_checksum, ones_sum, pseudo_header_sum, tcp_checksum
from tests.unit.test_wire_support import FAST


def reference_sum(data: bytes, initial: int = 0) -> int:
    """The RFC 1071 §4.1 loop, word by word, with end-around carry."""
    if len(data) % 2:
        data += b"\0"
    s = initial
    for i in range(0, len(data), 2):
        s += (data[i] << 8) | data[i + 1]
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def test_rfc1071_example() -> None:
    # RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (with carries).
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert ones_sum(data) == 0xDDF2
    assert internet_checksum(data) == 0x220D


def test_zero_and_all_ones() -> None:
    assert internet_checksum(b"") == 0xFFFF
    assert internet_checksum(b"\0" * 20) == 0xFFFF
    assert ones_sum(b"\xff\xff") == 0xFFFF
    assert internet_checksum(b"\xff\xff" * 3) == 0
    assert internet_checksum(b"\x12\x34" + (~0x1234 & 0xFFFF).to_bytes(2, "big")) == 0


def test_accepts_bytes_bytearray_memoryview() -> None:
    data = bytes(range(101))
    want = scapy_checksum(data)
    assert internet_checksum(data) == want
    assert internet_checksum(bytearray(data)) == want
    assert internet_checksum(memoryview(data)) == want
    assert internet_checksum(memoryview(data)[1:]) == scapy_checksum(data[1:])


@FAST
@given(st.binary(max_size=3000), st.integers(0, 0xFFFFF))
def test_matches_reference_loop(data: bytes, initial: int) -> None:
    assert ones_sum(data, initial) == reference_sum(data, initial)
    assert internet_checksum(data, initial) == ~reference_sum(data, initial) & 0xFFFF


@FAST
@given(st.binary(max_size=1501).filter(lambda b: len(b) % 2 == 1))
def test_odd_length_matches_scapy(data: bytes) -> None:
    assert internet_checksum(data) == scapy_checksum(data)


def test_pseudo_header_sum() -> None:
    # 10.0.0.1 -> 10.0.0.2, TCP, 40 bytes: 0a00+0001+0a00+0002+0006+0028.
    assert pseudo_header_sum(0x0A000001, 0x0A000002, 6, 40) == 0x1431


@FAST
@given(
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.binary(min_size=20, max_size=1500),
)
def test_tcp_checksum_matches_scapy(src: int, dst: int, tcp: bytes) -> None:
    # Odd lengths included; scapy's in4_chksum builds the same pseudo header.
    ip = IP(src=str(_dotted(src)), dst=str(_dotted(dst)), proto=6)
    tcp = tcp[:16] + b"\0\0" + tcp[18:]
    assert tcp_checksum(src, dst, tcp) == in4_chksum(6, ip, tcp)


def test_tcp_checksum_verifies_to_zero() -> None:
    full = bytes(IP(src="192.0.2.1", dst="198.51.100.7") / TCP(sport=1, dport=2) / b"odd")
    tcp_bytes = full[20:]
    assert tcp_checksum(0xC0000201, 0xC6336407, tcp_bytes) == 0


def _dotted(addr: int) -> str:
    return ".".join(str((addr >> s) & 0xFF) for s in (24, 16, 8, 0))
