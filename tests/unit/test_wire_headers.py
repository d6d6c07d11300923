"""Ethernet, IPv4 and TCP header views and emitters."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from pystack.wire import (
    ACK,
    ETH_P_ARP,
    ETH_P_IP,
    SYN,
    EthernetFrame,
    Ipv4Packet,
    TcpHeader,
    TcpOptions,
    TcpSegment,
    WireError,
    emit_ethernet,
    emit_ipv4,
    emit_tcp_header,
    internet_checksum,
)
from pystack.wire.errors import REASONS
from tests.unit.test_wire_support import IP_A, IP_B, MAC_A, MAC_B


def test_wire_error_reason() -> None:
    err = WireError("bad_doff", "doff 4")
    assert isinstance(err, ValueError)
    assert err.reason == "bad_doff"
    assert "doff 4" in str(err)
    assert len(set(REASONS)) == 9


def test_ethernet_view() -> None:
    raw = bytes(Ether(dst="02:00:00:00:00:02", src="02:00:00:00:00:01", type=0x0806) / b"x")
    eth = EthernetFrame.new_checked(raw)
    assert eth.dst == MAC_B
    assert eth.src == MAC_A
    assert eth.ethertype == ETH_P_ARP
    assert bytes(eth.payload) == b"x"


@pytest.mark.parametrize("n", range(14))
def test_ethernet_truncated(n: int) -> None:
    with pytest.raises(WireError) as e:
        EthernetFrame.new_checked(bytes(n))
    assert e.value.reason == "truncated"


def test_emit_ethernet() -> None:
    buf = bytearray(16)
    assert emit_ethernet(buf, 2, MAC_B, MAC_A, ETH_P_IP) == 14
    assert buf[2:] == MAC_B + MAC_A + b"\x08\x00"
    with pytest.raises(ValueError):
        emit_ethernet(buf, 0, b"\x01" * 5, MAC_A, ETH_P_IP)


def test_ipv4_view_against_scapy() -> None:
    pkt = IP(src="10.0.0.1", dst="10.0.0.2", tos=0xB9, id=0xBEEF, flags="DF", ttl=17, proto=6) / (
        b"\0" * 20
    )
    raw = bytes(pkt)
    ip = Ipv4Packet.new_checked(raw)
    assert (ip.version, ip.ihl, ip.header_len) == (4, 5, 20)
    assert (ip.dscp, ip.ecn) == (0xB9 >> 2, 1)
    assert ip.total_length == 40
    assert ip.ident == 0xBEEF
    assert ip.dont_frag and not ip.more_frags and ip.frag_offset == 0 and not ip.is_fragment
    assert (ip.ttl, ip.proto) == (17, 6)
    assert ip.checksum == IP(raw).chksum
    assert (ip.src, ip.dst) == (IP_A, IP_B)
    assert ip.verify_checksum()
    assert len(ip.payload) == 20


def test_ipv4_fragment_fields() -> None:
    raw = bytes(IP(flags="MF", frag=185, proto=6) / b"12345678")
    ip = Ipv4Packet.new_checked(raw)
    assert ip.more_frags and not ip.dont_frag
    assert ip.frag_offset == 185
    assert ip.is_fragment


def test_emit_ipv4_matches_scapy() -> None:
    buf = bytearray(4 + 20)
    n = emit_ipv4(
        buf, 4, src=IP_A, dst=IP_B, proto=6, payload_len=100, ttl=33, ident=7, ecn=2, dscp=10
    )
    assert n == 20
    want = bytes(
        IP(
            src="10.0.0.1",
            dst="10.0.0.2",
            proto=6,
            ttl=33,
            id=7,
            tos=(10 << 2) | 2,
            flags="DF",
            len=120,
        )
    )
    assert bytes(buf[4:]) == want
    assert internet_checksum(buf[4:]) == 0


def test_emit_ipv4_without_checksum_and_limits() -> None:
    buf = bytearray(20)
    emit_ipv4(buf, 0, src=1, dst=2, proto=6, payload_len=0, df=False, fill_checksum=False)
    assert buf[10:12] == b"\0\0"
    assert buf[6:8] == b"\0\0"
    with pytest.raises(ValueError):
        emit_ipv4(buf, 0, src=1, dst=2, proto=6, payload_len=65516)


def test_ipv4_checks() -> None:
    good = bytearray(bytes(IP(proto=6) / b"x"))
    bad = bytearray(good)
    bad[0] = 0x44
    with pytest.raises(WireError, match="bad_ihl"):
        Ipv4Packet.new_checked(bad)
    bad[0] = 0x65
    with pytest.raises(WireError, match="not_ipv4"):
        Ipv4Packet.new_checked(bad)
    bad = bytearray(good)
    bad[3] = 19
    with pytest.raises(WireError, match="bad_total_length"):
        Ipv4Packet.new_checked(bad)
    bad[3] = 22
    with pytest.raises(WireError, match="bad_total_length"):
        Ipv4Packet.new_checked(bad)
    # Padding past Total Length is not part of the packet.
    ip = Ipv4Packet.new_checked(good + b"\0" * 5)
    assert bytes(ip.payload) == b"x"


def test_tcp_view_against_scapy() -> None:
    raw = bytes(
        TCP(
            sport=1234,
            dport=80,
            seq=0xDEADBEEF,
            ack=0xFEEDFACE,
            flags="SAEC",
            window=65535,
            urgptr=9,
            options=[("MSS", 1400), ("NOP", None), ("WScale", 2)],
        )
        / b"data"
    )
    tcp = TcpHeader.new_checked(raw)
    assert (tcp.src_port, tcp.dst_port) == (1234, 80)
    assert (tcp.seq, tcp.ack) == (0xDEADBEEF, 0xFEEDFACE)
    assert (tcp.data_offset, tcp.header_len) == (7, 28)
    assert tcp.flags == 0x02 | 0x10 | 0x40 | 0x80
    assert (tcp.window, tcp.urgent) == (65535, 9)
    assert tcp.checksum == TCP(raw).chksum
    assert bytes(tcp.options) == bytes.fromhex("0204057801030302")
    assert bytes(tcp.payload) == b"data"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (bytes(19), "truncated"),
        (bytes(12) + b"\x40" + bytes(7), "bad_doff"),
        (bytes(12) + b"\x60" + bytes(7), "bad_doff"),
        (bytes(12) + b"\xf0" + bytes(46), "bad_doff"),
    ],
    ids=["short", "doff4", "doff6-past-end", "doff15-past-end"],
)
def test_tcp_checks(raw: bytes, reason: str) -> None:
    with pytest.raises(WireError) as e:
        TcpHeader.new_checked(raw)
    assert e.value.reason == reason


def test_emit_tcp_header() -> None:
    seg = TcpSegment(IP_A, IP_B, 1, 2, 3, 4, SYN | ACK, 5, urgent=6, options=TcpOptions(mss=1))
    buf = bytearray(24)
    assert emit_tcp_header(seg, buf, 0) == 24
    assert bytes(buf) == bytes.fromhex("0001 0002 00000003 00000004 60 12 0005 0000 0006 02040001")
    with pytest.raises(ValueError):
        emit_tcp_header(seg, bytearray(23), 0)
    seg.src_port = 70000
    with pytest.raises(ValueError):
        emit_tcp_header(seg, buf, 0)
