"""Every malformed frame is rejected by parse_frame with the right WireError reason."""

from __future__ import annotations

import pytest

from pystack.wire import WireError, internet_checksum, parse_frame
from tests.unit.test_wire_support import (
    ETH,
    IP,
    bare_ack,
    build,
    data_segment,
    refresh,
    set_total_length,
    syn_segment,
    with_raw_options,
)

SYN_FRAME = build(syn_segment(b"0123456789"))  # 14 + 20 + 20 + 32 options + 10
TCP_HLEN = 20 + 32


def reason_of(frame: bytes | bytearray, verify: bool = True) -> str:
    with pytest.raises(WireError) as e:
        parse_frame(frame, verify_checksums=verify)
    return e.value.reason


def test_base_frame_is_valid() -> None:
    assert len(SYN_FRAME) == ETH + 20 + TCP_HLEN + 10
    assert parse_frame(SYN_FRAME).segment == syn_segment(b"0123456789")


# --- truncation ---------------------------------------------------------------------


@pytest.mark.parametrize("cut", range(IP))
def test_truncated_ethernet_or_ip_header(cut: int) -> None:
    assert reason_of(SYN_FRAME[:cut]) == "truncated"


@pytest.mark.parametrize("cut", range(IP, len(SYN_FRAME)))
def test_cut_below_total_length(cut: int) -> None:
    # The IP header claims more bytes than the frame has.
    assert reason_of(SYN_FRAME[:cut]) == "bad_total_length"


@pytest.mark.parametrize("tcp_len", range(20))
def test_truncated_tcp_header(tcp_len: int) -> None:
    # Total Length consistent with the cut: the TCP segment itself is too short.
    frame = set_total_length(SYN_FRAME[: IP + tcp_len], 20 + tcp_len)
    assert reason_of(frame) == "truncated"


@pytest.mark.parametrize("tcp_len", range(20, TCP_HLEN))
def test_options_cut_by_total_length(tcp_len: int) -> None:
    frame = set_total_length(SYN_FRAME[: IP + tcp_len], 20 + tcp_len)
    assert reason_of(frame) == "bad_doff"


# --- Ethernet and IPv4 --------------------------------------------------------------


@pytest.mark.parametrize("ethertype", [0x0806, 0x86DD, 0x8100, 0x0000, 0x0801])
def test_not_ipv4_ethertype(ethertype: int) -> None:
    frame = bytearray(SYN_FRAME)
    frame[12:14] = ethertype.to_bytes(2, "big")
    assert reason_of(frame) == "not_ipv4"


@pytest.mark.parametrize("version", [0, 6, 15])
def test_not_ipv4_version(version: int) -> None:
    frame = bytearray(SYN_FRAME)
    frame[ETH] = (version << 4) | 5
    assert reason_of(refresh(frame)) == "not_ipv4"


@pytest.mark.parametrize("ihl", [0, 1, 4])
def test_ihl_below_5(ihl: int) -> None:
    frame = bytearray(SYN_FRAME)
    frame[ETH] = 0x40 | ihl
    assert reason_of(frame) == "bad_ihl"
    assert reason_of(frame, verify=False) == "bad_ihl"


def test_ihl_15_beyond_buffer() -> None:
    frame = build(bare_ack())  # a 40-byte IP packet; IHL 15 claims 60 bytes of header
    frame[ETH] = 0x4F
    assert reason_of(frame) == "bad_ihl"
    assert reason_of(frame, verify=False) == "bad_ihl"


def test_ihl_with_ip_options_is_accepted() -> None:
    frame = bytearray(SYN_FRAME)
    frame[IP:IP] = b"\x01\x01\x01\x00"  # NOP NOP NOP EOL (RFC 791 §3.1)
    frame[ETH] = 0x46
    frame[ETH + 2 : ETH + 4] = (len(frame) - ETH).to_bytes(2, "big")
    refresh(frame)
    assert parse_frame(frame).segment == syn_segment(b"0123456789")


def test_ihl_15_within_buffer_then_bad_tcp() -> None:
    # The header swallows the TCP header; what follows is payload bytes as TCP.
    frame = bytearray(SYN_FRAME)
    frame[ETH] = 0x4F
    refresh(frame)
    assert reason_of(frame) in {"bad_doff", "bad_checksum", "truncated", "bad_option"}


@pytest.mark.parametrize("total", [0, 1, 19])
def test_total_length_below_ip_header(total: int) -> None:
    assert reason_of(set_total_length(bytearray(SYN_FRAME), total)) == "bad_total_length"


@pytest.mark.parametrize("extra", [1, 2, 100])
def test_total_length_beyond_buffer(extra: int) -> None:
    frame = set_total_length(bytearray(SYN_FRAME), len(SYN_FRAME) - ETH + extra)
    assert reason_of(frame) == "bad_total_length"
    assert reason_of(frame, verify=False) == "bad_total_length"


def test_ethernet_padding_is_ignored() -> None:
    frame = build(bare_ack())
    assert len(frame) == 54
    parsed = parse_frame(frame + bytes(6))  # padded to the 60-byte minimum
    assert parsed.segment == bare_ack()
    assert parsed.segment.payload == b""
    parsed = parse_frame(frame + b"\xff" * 6)
    assert parsed.segment == bare_ack()


@pytest.mark.parametrize(
    "flags_frag",
    [0x2000, 0x0001, 0x1FFF, 0x4001, 0x2000 | 0x00B9, 0x6000],
    ids=["mf", "off1", "offmax", "df-off1", "mf-off", "df-mf"],
)
def test_fragments(flags_frag: int) -> None:
    frame = bytearray(SYN_FRAME)
    frame[ETH + 6 : ETH + 8] = flags_frag.to_bytes(2, "big")
    assert reason_of(refresh(frame)) == "fragment"


def test_reserved_ip_flag_is_not_a_fragment() -> None:
    frame = bytearray(SYN_FRAME)
    frame[ETH + 6] |= 0x80
    parse_frame(refresh(frame))


@pytest.mark.parametrize("proto", [0, 1, 17, 41, 132, 255])
def test_not_tcp(proto: int) -> None:
    frame = bytearray(SYN_FRAME)
    frame[ETH + 9] = proto
    assert reason_of(refresh(frame)) == "not_tcp"


# --- TCP data offset and options ----------------------------------------------------


@pytest.mark.parametrize("doff", [0, 1, 4])
def test_doff_below_5(doff: int) -> None:
    frame = bytearray(SYN_FRAME)
    frame[IP + 12] = doff << 4
    assert reason_of(refresh(frame)) == "bad_doff"


def test_doff_beyond_ip_payload() -> None:
    frame = build(bare_ack())
    frame[IP + 12] = 6 << 4  # 24 bytes of header in a 20-byte segment
    assert reason_of(refresh(frame)) == "bad_doff"
    frame[IP + 12] = 15 << 4
    assert reason_of(refresh(frame)) == "bad_doff"
    # Ethernet padding does not count as TCP header.
    assert reason_of(refresh(frame) + bytes(40)) == "bad_doff"


@pytest.mark.parametrize(
    "raw",
    [
        "0200",  # MSS with length 0
        "0201",  # MSS with length 1
        "6300",  # unknown kind with length 0
        "6301",
        "01010101 0101 6308",  # unknown option runs past the header
        "010101 02",  # kind in the last byte, no length byte
        "0203 05",  # MSS length 3
        "0302",  # window scale length 2
        "0403 00",  # SACK-permitted length 3
        "0503 00",  # SACK length 3
        "0809 00000000000000",  # timestamps length 9
        "2203 00",  # Fast Open odd length
    ],
)
def test_bad_options(raw: str) -> None:
    frame = with_raw_options(bytes.fromhex(raw))
    assert reason_of(frame) == "bad_option"
    assert reason_of(frame, verify=False) == "bad_option"


def test_good_raw_options() -> None:
    frame = with_raw_options(bytes.fromhex("6304 abcd 020405b4 00 ffffff"))
    seg = parse_frame(frame).segment
    assert seg.options.mss == 1460
    assert seg.payload == b"xyz"


# --- checksums ----------------------------------------------------------------------

VERSION_IHL_BITS = range(8)
TOTAL_LENGTH_BITS = range(16, 32)
DOFF_BITS = range(12 * 8, 12 * 8 + 4)


@pytest.mark.parametrize("bit", range(20 * 8))
def test_ip_header_bit_flip(bit: int) -> None:
    frame = bytearray(SYN_FRAME)
    frame[ETH + bit // 8] ^= 0x80 >> (bit % 8)
    reason = reason_of(frame)
    if bit < 4:
        assert reason == "not_ipv4"
    elif bit in VERSION_IHL_BITS:
        assert reason in {"bad_ihl", "bad_checksum"}
    else:
        assert reason == "bad_checksum"


@pytest.mark.parametrize("bit", range(TCP_HLEN * 8))
def test_tcp_header_bit_flip(bit: int) -> None:
    frame = bytearray(SYN_FRAME)
    frame[IP + bit // 8] ^= 0x80 >> (bit % 8)
    reason = reason_of(frame)
    if bit in DOFF_BITS:
        assert reason in {"bad_doff", "bad_checksum"}
    else:
        assert reason == "bad_checksum"


@pytest.mark.parametrize("bit", [0, 7, 8 * 5 + 3, 8 * 10 - 1])
def test_payload_bit_flip(bit: int) -> None:
    frame = bytearray(SYN_FRAME)
    frame[IP + TCP_HLEN + bit // 8] ^= 0x80 >> (bit % 8)
    assert reason_of(frame) == "bad_checksum"
    seg = parse_frame(frame, verify_checksums=False).segment
    assert seg.payload != b"0123456789"


def test_odd_payload_bit_flip() -> None:
    frame = build(data_segment(b"odd"))
    frame[-1] ^= 0x01
    assert reason_of(frame) == "bad_checksum"


def test_wrong_addresses_fail_tcp_checksum() -> None:
    # The pseudo header covers the addresses (RFC 9293 §3.1): a fixed-up IP header
    # with another source must still fail the TCP checksum.
    frame = bytearray(SYN_FRAME)
    frame[ETH + 15] ^= 1
    frame[ETH + 10 : ETH + 12] = b"\0\0"
    frame[ETH + 10 : ETH + 12] = internet_checksum(frame[ETH:IP]).to_bytes(2, "big")
    assert reason_of(frame) == "bad_checksum"
