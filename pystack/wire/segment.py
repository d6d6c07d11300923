"""Value types shared by the wire format and the TCP engine.

`TcpSegment` is what the engine consumes and produces: a parsed TCP segment with its
addresses, independent of any frame or ring. The wire layer turns frames into
segments (parse) and segments into frames (emit); the engine never sees bytes of headers.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import NamedTuple

# TCP flags (RFC 9293 §3.1, RFC 3168 §6.1 for ECE/CWR).
FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40
CWR = 0x80


def ip_to_int(addr: str | int) -> int:
    """A dotted-quad IPv4 address as the int segments carry (ints pass through);
    OSError for anything else."""
    return addr if isinstance(addr, int) else int.from_bytes(socket.inet_aton(addr), "big")


def ip_to_str(addr: int) -> str:
    """An int IPv4 address as a dotted quad."""
    return socket.inet_ntoa(addr.to_bytes(4, "big"))


class FourTuple(NamedTuple):
    """A connection's addresses as seen from the local side (IPv4 as host-order ints)."""

    local_ip: int
    local_port: int
    remote_ip: int
    remote_port: int


@dataclass(slots=True)
class TcpOptions:
    """Parsed TCP options. None / empty means the option is absent."""

    mss: int | None = None  # kind 2, RFC 9293 §3.7.1
    wscale: int | None = None  # kind 3, RFC 7323 §2 (shift count, clamp to 14 on use)
    sack_permitted: bool = False  # kind 4, RFC 2018
    sack_blocks: list[tuple[int, int]] = field(default_factory=list)  # kind 5, (left, right)
    timestamp: tuple[int, int] | None = None  # kind 8, RFC 7323 §3 (TSval, TSecr)
    fastopen_cookie: bytes | None = None  # kind 34, RFC 7413 §4.1.1; b"" = cookie request


@dataclass(slots=True)
class TcpSegment:
    """One TCP segment with its IPv4 addresses. Sequence numbers are modulo 2**32."""

    src_ip: int
    dst_ip: int
    src_port: int
    dst_port: int
    seq: int
    ack: int
    flags: int
    window: int  # the raw 16-bit field; scaling is the engine's business
    urgent: int = 0
    options: TcpOptions = field(default_factory=TcpOptions)
    payload: bytes | memoryview = b""
    ecn: int = 0  # the IP header's 2 ECN bits (RFC 3168 §5)
    # The XDP program's SYN-cookie word when it validated this ACK's cookie
    # (META_COOKIE_OK; decode with pystack.xdp.abi.decode_cookie_info), else 0.
    syncookie: int = 0
    # Segmentation offload (pystack.io.batch, pystack.wire.frame.coalesce/split_segment).
    # Received: gso_segs frames were merged into this segment (GRO), each of gso_size
    # payload bytes but the last (gso_size 0: not merged). To send: a payload longer than
    # gso_size > 0 leaves as frames of gso_size bytes (TSO); gso_segs is how many.
    gso_size: int = 0
    gso_segs: int = 1

    @property
    def seg_len(self) -> int:
        """SEG.LEN of RFC 9293 §3.4: payload plus one for SYN and one for FIN."""
        return len(self.payload) + (1 if self.flags & SYN else 0) + (1 if self.flags & FIN else 0)

    def tuple_at_receiver(self) -> FourTuple:
        """The connection's four-tuple as the receiver of this segment names it."""
        return FourTuple(self.dst_ip, self.dst_port, self.src_ip, self.src_port)
