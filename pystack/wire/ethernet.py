"""Ethernet II frames (IEEE 802.3 with an EtherType; RFC 894 for IPv4 over Ethernet)."""

from __future__ import annotations

import struct

from pystack.wire.errors import WireError
from pystack.wire.view import Buffer, byte_view

ETH_HLEN = 14
ETH_ALEN = 6
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD

_HDR = struct.Struct(">6s6sH")


class EthernetFrame:
    """A view over an Ethernet II frame. Call `check_len` (or use `new_checked`) before
    the accessors; after it they cannot fail."""

    __slots__ = ("buf",)

    def __init__(self, buf: Buffer) -> None:
        self.buf = byte_view(buf)

    @classmethod
    def new_checked(cls, buf: Buffer) -> EthernetFrame:
        frame = cls(buf)
        frame.check_len()
        return frame

    def check_len(self) -> None:
        if len(self.buf) < ETH_HLEN:
            raise WireError("truncated", f"ethernet: {len(self.buf)} < {ETH_HLEN} bytes")

    @property
    def dst(self) -> bytes:
        return bytes(self.buf[0:6])

    @property
    def src(self) -> bytes:
        return bytes(self.buf[6:12])

    @property
    def ethertype(self) -> int:
        return int.from_bytes(self.buf[12:14], "big")

    @property
    def payload(self) -> memoryview:
        return self.buf[ETH_HLEN:]


def emit_ethernet(buf: Buffer, offset: int, dst: bytes, src: bytes, ethertype: int) -> int:
    """Write a 14-byte Ethernet II header at `offset` of writable `buf`; return 14."""
    if len(dst) != ETH_ALEN or len(src) != ETH_ALEN:
        raise ValueError("MAC addresses must be 6 bytes")
    if not 0 <= ethertype <= 0xFFFF:
        raise ValueError(f"bad ethertype {ethertype:#x}")
    _HDR.pack_into(buf, offset, bytes(dst), bytes(src), ethertype)
    return ETH_HLEN
