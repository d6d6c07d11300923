"""IPv4 headers (RFC 791 §3.1). Addresses are host-order ints."""

from __future__ import annotations

import struct

from pystack.wire.checksum import internet_checksum
from pystack.wire.errors import WireError
from pystack.wire.view import Buffer, byte_view

IPV4_MIN_HLEN = 20
IPV4_MAX_TOTAL = 0xFFFF
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMP = 1

# Flags and fragment offset share the 16-bit word at offset 6 (RFC 791 §3.1).
IP_DF = 0x4000
IP_MF = 0x2000
IP_OFFMASK = 0x1FFF

# version/ihl, tos, total length, id, flags/frag, ttl, proto, checksum, src, dst
_HDR = struct.Struct(">BBHHHBBHII")


class Ipv4Packet:
    """A view over an IPv4 packet. `check_len` (or `new_checked`) validates every length
    the accessors rely on; after it they cannot fail."""

    __slots__ = ("buf",)

    def __init__(self, buf: Buffer) -> None:
        self.buf = byte_view(buf)

    @classmethod
    def new_checked(cls, buf: Buffer) -> Ipv4Packet:
        pkt = cls(buf)
        pkt.check_len()
        return pkt

    def check_header_len(self) -> None:
        """The fixed header is present, the version is 4 and IHL fits in the buffer."""
        n = len(self.buf)
        if n < IPV4_MIN_HLEN:
            raise WireError("truncated", f"ipv4: {n} < {IPV4_MIN_HLEN} bytes")
        if self.version != 4:
            raise WireError("not_ipv4", f"ip version {self.version}")
        # IHL counts 32-bit words; the minimum header is 5 words (RFC 791 §3.1).
        ihl = self.ihl
        if ihl < 5:
            raise WireError("bad_ihl", f"ihl {ihl} < 5")
        if ihl * 4 > n:
            raise WireError("bad_ihl", f"ihl {ihl} runs past the {n}-byte buffer")

    def check_total_length(self) -> None:
        """Total Length covers the header and lies within the buffer (RFC 791 §3.1);
        bytes past it (Ethernet padding) are ignored."""
        total = self.total_length
        if total < self.header_len:
            raise WireError("bad_total_length", f"total length {total} < header length")
        if total > len(self.buf):
            raise WireError("bad_total_length", f"total length {total} > {len(self.buf)} bytes")

    def check_len(self) -> None:
        self.check_header_len()
        self.check_total_length()

    def verify_checksum(self) -> bool:
        """The header checksum is right (RFC 791 §3.1, computed as in RFC 1071)."""
        return internet_checksum(self.buf[: self.header_len]) == 0

    @property
    def version(self) -> int:
        return self.buf[0] >> 4

    @property
    def ihl(self) -> int:
        return self.buf[0] & 0x0F

    @property
    def header_len(self) -> int:
        return (self.buf[0] & 0x0F) * 4

    @property
    def dscp(self) -> int:
        return self.buf[1] >> 2

    @property
    def ecn(self) -> int:
        # The two low bits of the former TOS octet (RFC 3168 §5).
        return self.buf[1] & 0x03

    @property
    def total_length(self) -> int:
        return int.from_bytes(self.buf[2:4], "big")

    @property
    def ident(self) -> int:
        return int.from_bytes(self.buf[4:6], "big")

    @property
    def dont_frag(self) -> bool:
        return bool(self.buf[6] & 0x40)

    @property
    def more_frags(self) -> bool:
        return bool(self.buf[6] & 0x20)

    @property
    def frag_offset(self) -> int:
        """In 8-byte units, as on the wire."""
        return int.from_bytes(self.buf[6:8], "big") & IP_OFFMASK

    @property
    def is_fragment(self) -> bool:
        """MF set or a non-zero offset: part of a fragmented datagram (RFC 791 §2.3)."""
        return bool(int.from_bytes(self.buf[6:8], "big") & (IP_MF | IP_OFFMASK))

    @property
    def ttl(self) -> int:
        return self.buf[8]

    @property
    def proto(self) -> int:
        return self.buf[9]

    @property
    def checksum(self) -> int:
        return int.from_bytes(self.buf[10:12], "big")

    @property
    def src(self) -> int:
        return int.from_bytes(self.buf[12:16], "big")

    @property
    def dst(self) -> int:
        return int.from_bytes(self.buf[16:20], "big")

    @property
    def payload(self) -> memoryview:
        """The bytes between the header and Total Length (needs `check_len`)."""
        return self.buf[self.header_len : self.total_length]


def emit_ipv4(
    buf: Buffer,
    offset: int,
    *,
    src: int,
    dst: int,
    proto: int,
    payload_len: int,
    ttl: int = 64,
    ident: int = 0,
    df: bool = True,
    dscp: int = 0,
    ecn: int = 0,
    fill_checksum: bool = True,
) -> int:
    """Write a 20-byte IPv4 header (no options) at `offset` of writable `buf`; return 20.

    With fill_checksum=False the checksum field is left zero.
    """
    total = IPV4_MIN_HLEN + payload_len
    if payload_len < 0 or total > IPV4_MAX_TOTAL:
        raise ValueError(f"IPv4 total length {total} out of range")
    tos = ((dscp & 0x3F) << 2) | (ecn & 0x03)
    _HDR.pack_into(
        buf,
        offset,
        0x45,
        tos,
        total,
        ident & 0xFFFF,
        IP_DF if df else 0,
        ttl & 0xFF,
        proto & 0xFF,
        0,
        src & 0xFFFFFFFF,
        dst & 0xFFFFFFFF,
    )
    if fill_checksum:
        mv = byte_view(buf)
        csum = internet_checksum(mv[offset : offset + IPV4_MIN_HLEN])
        mv[offset + 10] = csum >> 8
        mv[offset + 11] = csum & 0xFF
    return IPV4_MIN_HLEN
