"""Whole frames: Ethernet II + IPv4 + TCP, to and from `TcpSegment`.

The checks run in the order Linux's receive path uses (ip_rcv_core, then tcp_v4_rcv):
lengths of the fixed headers, IP header checksum, IP total length, fragments, protocol,
TCP data offset, TCP checksum, then the options.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pystack.wire.checksum import internet_checksum, pseudo_header_sum, tcp_checksum
from pystack.wire.errors import WireError
from pystack.wire.ethernet import ETH_HLEN, ETH_P_IP, EthernetFrame, emit_ethernet
from pystack.wire.ipv4 import IPPROTO_TCP, IPV4_MAX_TOTAL, IPV4_MIN_HLEN, Ipv4Packet, emit_ipv4
from pystack.wire.segment import TcpSegment
from pystack.wire.tcp import TcpHeader, emit_tcp_header, parse_options, tcp_header_len
from pystack.wire.view import Buffer, byte_view

_HDRS = ETH_HLEN + IPV4_MIN_HLEN
# ports, seq, ack, (data offset), flags, window, (checksum), urgent
_TCP_FIELDS = struct.Struct(">HHIIxBHxxH")


@dataclass(slots=True)
class ParsedFrame:
    """A received frame: link addresses, a few IP fields and the TCP segment."""

    eth_dst: bytes
    eth_src: bytes
    segment: TcpSegment
    ttl: int = 64
    ip_id: int = 0


def parse_frame(buf: Buffer, verify_checksums: bool = True) -> ParsedFrame:
    """Parse an Ethernet/IPv4/TCP frame. The payload is a memoryview into `buf` (no copy).

    Raises WireError with reason truncated, not_ipv4, bad_ihl, bad_checksum,
    bad_total_length, fragment, not_tcp, bad_doff or bad_option.
    """
    eth = EthernetFrame.new_checked(buf)
    if eth.ethertype != ETH_P_IP:
        raise WireError("not_ipv4", f"ethertype {eth.ethertype:#06x}")

    ip = Ipv4Packet(eth.payload)
    ip.check_header_len()
    if verify_checksums and not ip.verify_checksum():
        raise WireError("bad_checksum", "ipv4 header")
    # Bytes past Total Length are link padding (RFC 894 minimum frame size); drop them.
    ip.check_total_length()
    if ip.is_fragment:
        # No reassembly: TCP segments are sent with DF (RFC 1191) and fit the MTU.
        raise WireError("fragment", f"mf={ip.more_frags} offset={ip.frag_offset}")
    if ip.proto != IPPROTO_TCP:
        raise WireError("not_tcp", f"ip protocol {ip.proto}")
    src_ip = ip.src
    dst_ip = ip.dst
    tcp_bytes = ip.payload

    tcp = TcpHeader.new_checked(tcp_bytes)
    if verify_checksums and tcp_checksum(src_ip, dst_ip, tcp_bytes) != 0:
        raise WireError("bad_checksum", "tcp")
    options = parse_options(tcp.options)

    sport, dport, seq, ack, flags, window, urgent = _TCP_FIELDS.unpack_from(tcp.buf)
    seg = TcpSegment(
        src_ip=src_ip,
        dst_ip=dst_ip,
        src_port=sport,
        dst_port=dport,
        seq=seq,
        ack=ack,
        flags=flags,
        window=window,
        urgent=urgent,
        options=options,
        payload=tcp.payload,
        ecn=ip.ecn,
    )
    return ParsedFrame(eth.dst, eth.src, seg, ip.ttl, ip.ident)


def frame_len(seg: TcpSegment) -> int:
    """Length of the frame `build_frame` writes for `seg` (no Ethernet padding)."""
    return _HDRS + tcp_header_len(seg) + len(byte_view(seg.payload))


def build_frame(
    seg: TcpSegment,
    eth_src: bytes,
    eth_dst: bytes,
    out: bytearray | memoryview | None = None,
    ttl: int = 64,
    ip_id: int = 0,
    df: bool = True,
    fill_checksums: bool = True,
) -> int | bytes:
    """Write `seg` as an Ethernet/IPv4/TCP frame.

    Into `out` (from offset 0; returns the frame length) or, if `out` is None, into new
    bytes (returned). With fill_checksums=False both checksum fields stay zero for the
    transmit path to fill in. Raises ValueError if the frame does not fit `out` or a
    field is out of range.
    """
    payload = byte_view(seg.payload)
    thlen = tcp_header_len(seg)
    tcp_len = thlen + len(payload)
    if IPV4_MIN_HLEN + tcp_len > IPV4_MAX_TOTAL:
        raise ValueError(f"segment of {tcp_len} bytes exceeds the IPv4 maximum")
    total = _HDRS + tcp_len
    if out is None:
        mv = memoryview(bytearray(total))
    else:
        mv = byte_view(out)
        if mv.readonly:
            raise ValueError("output buffer is read-only")
        if len(mv) < total:
            raise ValueError(f"frame of {total} bytes does not fit a {len(mv)}-byte buffer")

    emit_ethernet(mv, 0, eth_dst, eth_src, ETH_P_IP)
    emit_ipv4(
        mv,
        ETH_HLEN,
        src=seg.src_ip,
        dst=seg.dst_ip,
        proto=IPPROTO_TCP,
        payload_len=tcp_len,
        ttl=ttl,
        ident=ip_id,
        df=df,
        ecn=seg.ecn,
        fill_checksum=fill_checksums,
    )
    emit_tcp_header(seg, mv, _HDRS)
    mv[_HDRS + thlen : total] = payload
    if fill_checksums:
        csum = internet_checksum(
            mv[_HDRS:total], pseudo_header_sum(seg.src_ip, seg.dst_ip, IPPROTO_TCP, tcp_len)
        )
        mv[_HDRS + 16] = csum >> 8
        mv[_HDRS + 17] = csum & 0xFF
    if out is None:
        return bytes(mv)
    return total
