"""The Internet checksum (RFC 1071) and the TCP pseudo-header sum (RFC 9293 §3.1).

IPv4 addresses are host-order ints. The one's-complement sum is computed with one
big-integer conversion: since 2**16 == 1 (mod 0xFFFF), reading the whole buffer as one
big-endian integer and reducing it mod 0xFFFF gives the end-around-carry sum of its
16-bit words (RFC 1071 §2(B): the sum is independent of grouping).
"""

from __future__ import annotations

from pystack.wire.view import Buffer

IPPROTO_TCP = 6


def ones_sum(data: Buffer, initial: int = 0) -> int:
    """The folded 16-bit one's-complement sum of `data` plus the partial sum `initial`.

    An odd trailing byte is padded with a zero byte on the right (RFC 1071 §4.1).
    """
    n = data.nbytes if isinstance(data, memoryview) else len(data)
    s = int.from_bytes(data, "big")
    if n & 1:
        s <<= 8
    s += initial
    if s == 0:
        return 0
    # Folding a positive sum never yields 0, so 0 (mod 0xFFFF) folds to 0xFFFF.
    return s % 0xFFFF or 0xFFFF


def internet_checksum(data: Buffer, initial: int = 0) -> int:
    """RFC 1071: the one's complement of the one's-complement sum of `data` and `initial`.

    Over data that includes a correct checksum field the result is 0.
    """
    return ~ones_sum(data, initial) & 0xFFFF


def pseudo_header_sum(src_ip: int, dst_ip: int, proto: int, length: int) -> int:
    """Unfolded sum of the IPv4 pseudo header (RFC 9293 §3.1): addresses, zero+PTCL, length."""
    return (src_ip >> 16) + (src_ip & 0xFFFF) + (dst_ip >> 16) + (dst_ip & 0xFFFF) + proto + length


def tcp_checksum(src_ip: int, dst_ip: int, tcp_bytes: Buffer) -> int:
    """The TCP checksum of header+options+payload (RFC 9293 §3.1).

    To compute one, pass bytes with the checksum field zeroed; to verify, pass the
    received bytes: the result is 0 when the checksum is right.
    """
    n = tcp_bytes.nbytes if isinstance(tcp_bytes, memoryview) else len(tcp_bytes)
    return internet_checksum(tcp_bytes, pseudo_header_sum(src_ip, dst_ip, IPPROTO_TCP, n))
