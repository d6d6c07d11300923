"""parse_frame on hostile input: it returns or raises WireError, nothing else, promptly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pystack.wire import REASONS, TcpSegment, WireError, build_frame, parse_frame
from tests.unit.test_wire_support import FAST, MAC_A, MAC_B, refresh, segments

pytestmark = pytest.mark.timeout(120)

ETH_IPV4 = MAC_B + MAC_A + b"\x08\x00"


def parse_or_wire_error(frame: bytes | bytearray, verify: bool) -> None:
    try:
        parsed = parse_frame(frame, verify_checksums=verify)
    except WireError as e:
        assert e.reason in REASONS
        return
    seg = parsed.segment
    assert 0 <= seg.src_port <= 0xFFFF and 0 <= seg.ecn <= 3
    assert len(seg.payload) <= len(frame)


@FAST
@given(st.binary(max_size=200), st.booleans())
def test_arbitrary_bytes(raw: bytes, verify: bool) -> None:
    parse_or_wire_error(raw, verify)


@FAST
@given(st.binary(max_size=120), st.booleans())
def test_arbitrary_bytes_after_ipv4_ethertype(raw: bytes, verify: bool) -> None:
    parse_or_wire_error(ETH_IPV4 + raw, verify)


@FAST
@given(
    st.integers(0, 10),
    st.integers(0, 3),
    st.binary(max_size=80),
    st.binary(max_size=20),
    st.booleans(),
)
def test_plausible_headers_random_tcp(
    ihl_extra: int, frag: int, tcp: bytes, tail: bytes, fix_checksums: bool
) -> None:
    """A well-formed-looking IPv4 header around random TCP bytes: reaches the option walk."""
    ihl = 5 + ihl_extra
    ip = bytearray(ihl * 4)
    ip[0] = 0x40 | ihl
    ip[2:4] = (len(ip) + len(tcp)).to_bytes(2, "big")
    ip[6] = 0x40 if frag == 0 else 0x20
    ip[8], ip[9] = 64, 6
    frame = bytearray(ETH_IPV4 + ip + tcp + tail)
    if fix_checksums:
        refresh(frame)
    parse_or_wire_error(frame, verify=fix_checksums)


@FAST
@given(
    segments,
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), min_size=1, max_size=8),
    st.booleans(),
    st.booleans(),
)
def test_mutated_valid_frames(
    seg: TcpSegment, edits: list[tuple[int, int]], fix_checksums: bool, verify: bool
) -> None:
    frame = bytearray(build_frame(seg, MAC_A, MAC_B))
    for pos, value in edits:
        frame[pos % len(frame)] = value
    if fix_checksums and len(frame) >= 34:
        refresh(frame)
    parse_or_wire_error(frame, verify)


@FAST
@given(segments, st.integers(0, 2000), st.booleans())
def test_truncated_valid_frames(seg: TcpSegment, cut: int, verify: bool) -> None:
    frame = build_frame(seg, MAC_A, MAC_B)
    assert isinstance(frame, bytes)
    if cut >= len(frame):
        assert parse_frame(frame[:cut], verify_checksums=verify).segment == seg
        return
    with pytest.raises(WireError):
        parse_frame(frame[:cut], verify_checksums=verify)
