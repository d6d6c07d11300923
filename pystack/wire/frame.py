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
from pystack.wire.segment import ACK, CWR, FIN, PSH, TcpOptions, TcpSegment
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


# ---- segmentation offload in Python: the fallback of pystack.io.batch (C) ----
# Same rules as xsk.c (ps_rx_parse, tx_build_one); tests/unit/test_wire_c_batch.py checks
# that both give the same segments and the same frames.

GRO_DATA = 1
GRO_ACKS = 2
GRO_MAX_SEGS = 64
GRO_FLOW_SLOTS = 1024  # flows one batch can merge (xsk.c FLOW_SLOTS)
META_CSUM_OK = 0x0001  # pystack.xdp.abi.META_CSUM_OK
_MASK = 0xFFFFFFFF


@dataclass(slots=True)
class RxFrame:
    """A parsed received frame with what the XDP program said about it (META_* flags)."""

    segment: TcpSegment
    eth_src: bytes
    meta: int


class _Run:
    __slots__ = ("frame", "pieces", "total", "first_len", "last_len", "segs", "dupack")

    def __init__(self, frame: RxFrame, dupack: bool = False) -> None:
        self.frame = frame
        n = len(frame.segment.payload)
        self.pieces = [frame.segment.payload]
        self.total = self.first_len = self.last_len = n
        self.segs = 1
        self.dupack = dupack  # a pure ACK repeating the flow's previous ACK in the batch


def _pure_ack(s: TcpSegment) -> bool:
    return not s.payload and s.flags == ACK


def _only_ts(o: TcpOptions) -> bool:
    return (o.mss is None and o.wscale is None and not o.sack_permitted and not o.sack_blocks
            and o.fastopen_cookie is None)


def _merge_data(r: _Run, s: TcpSegment) -> bool:
    """Linux tcp_gro_receive, stricter: s continues r's in-order run of full-sized data
    (ACK; PSH only on the last one, which ends the run; a shorter one ends it too), with the
    same ack, window, urgent field, ECN bits and options (so the same TSval)."""
    p = r.frame.segment
    n = len(s.payload)
    return (bool(r.total) and bool(n) and p.flags == ACK and s.flags in (ACK, ACK | PSH)
            and r.segs < GRO_MAX_SEGS and r.last_len == r.first_len and n <= r.first_len
            and s.seq == (p.seq + r.total) & _MASK and s.ack == p.ack and s.window == p.window
            and s.urgent == p.urgent and s.ecn == p.ecn and s.options == p.options)


def _merge_ack(r: _Run, s: TcpSegment) -> bool:
    """Pure ACKs that only advance: never two with the same ack (duplicate ACKs drive fast
    retransmit, RFC 5681 §3.2) nor one that repeated the ACK before it with a later one;
    never with SACK or options but timestamps. The window may change: the latest ACK's is
    what the sender keeps, as processing each advancing ACK would leave it (RFC 9293
    §3.10.7.4); a receiver that autotunes changes it on most ACKs of a bulk flow."""
    p = r.frame.segment
    return (_pure_ack(p) and _pure_ack(s) and not r.dupack
            and _only_ts(p.options) and _only_ts(s.options)
            and (p.options.timestamp is None) == (s.options.timestamp is None)
            and s.seq == p.seq and 0 < (s.ack - p.ack) & _MASK < 0x80000000
            and s.urgent == p.urgent and s.ecn == p.ecn
            and r.segs < GRO_MAX_SEGS)


def coalesce(frames: list[RxFrame], mode: int = GRO_DATA | GRO_ACKS) -> list[RxFrame]:
    """GRO over one received batch: a run of one flow's in-order data becomes one segment
    (payload joined, gso_size = the first frame's payload, gso_segs = frames) and a run of
    pure ACKs that only advance becomes the latest one (gso_segs = ACKs). A merged segment
    takes the place of its first frame; only frames marked just META_CSUM_OK merge."""
    runs: list[_Run] = []
    last: dict[tuple[int, int, int, int], int] = {}
    for f in frames:
        s = f.segment
        key = (s.src_ip, s.dst_ip, s.src_port, s.dst_port)
        j = last.get(key) if mode else None
        if j is not None and f.meta == META_CSUM_OK and runs[j].frame.meta == META_CSUM_OK:
            r = runs[j]
            if mode & GRO_DATA and _merge_data(r, s):
                r.pieces.append(s.payload)
                r.total += len(s.payload)
                r.last_len = len(s.payload)
                r.segs += 1
                r.frame.segment.flags = s.flags
                continue
            if mode & GRO_ACKS and _merge_ack(r, s):
                r.frame = f
                r.segs += 1
                continue
        dup = False
        if j is not None:
            p = runs[j].frame.segment
            dup = _pure_ack(p) and _pure_ack(s) and p.ack == s.ack
        if mode and (key in last or len(last) < GRO_FLOW_SLOTS):
            last[key] = len(runs)
        runs.append(_Run(f, dup))
    out = []
    for r in runs:
        seg = r.frame.segment
        if r.segs > 1:
            seg.gso_segs = r.segs
            if r.total:
                seg.payload = b"".join(r.pieces)
                seg.gso_size = r.first_len
        out.append(r.frame)
    return out


def split_segment(seg: TcpSegment) -> list[TcpSegment]:
    """TSO: a segment whose payload is longer than gso_size > 0 as gso_size-byte segments
    (seq advanced; PSH and FIN on the last only, CWR on the first only, as Linux's
    tcp_gso_segment). Otherwise [seg]."""
    size = seg.gso_size
    payload = byte_view(seg.payload)
    n = len(payload)
    if not size or n <= size:
        return [seg]
    out = []
    for off in range(0, n, size):
        flags = seg.flags
        if off + size < n:
            flags &= ~(PSH | FIN)
        if off:
            flags &= ~CWR
        out.append(TcpSegment(seg.src_ip, seg.dst_ip, seg.src_port, seg.dst_port,
                              (seg.seq + off) & _MASK, seg.ack, flags, seg.window, seg.urgent,
                              seg.options, payload[off : off + size], seg.ecn))
    return out
