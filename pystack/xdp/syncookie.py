"""The SYN cookie of bpf/xdp_ingress.c, in Python: the same SipHash-2-4, layout and
timestamp encoding (bpf/pystack_xdp.h documents them). The XDP program makes and checks
cookies itself; this mirror lets tests check its output bit for bit, and lets anything
without the XDP program (a simulation, a tool) make or read the same cookies."""

from __future__ import annotations

import socket
import struct

from pystack.xdp import abi

_M64 = (1 << 64) - 1


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _M64


def siphash24(key: bytes, msg: bytes) -> int:
    """SipHash-2-4 (Aumasson and Bernstein, 2012) of msg under a 16-byte key."""
    if len(key) != 16:
        raise ValueError("SipHash takes a 16-byte key")
    k0, k1 = struct.unpack("<QQ", key)
    v = [0x736F6D6570736575 ^ k0, 0x646F72616E646F6D ^ k1,
         0x6C7967656E657261 ^ k0, 0x7465646279746573 ^ k1]

    def rounds(n: int) -> None:
        v0, v1, v2, v3 = v
        for _ in range(n):
            v0 = (v0 + v1) & _M64
            v1 = _rotl(v1, 13) ^ v0
            v0 = _rotl(v0, 32)
            v2 = (v2 + v3) & _M64
            v3 = _rotl(v3, 16) ^ v2
            v0 = (v0 + v3) & _M64
            v3 = _rotl(v3, 21) ^ v0
            v2 = (v2 + v1) & _M64
            v1 = _rotl(v1, 17) ^ v2
            v2 = _rotl(v2, 32)
        v[:] = [v0, v1, v2, v3]

    n = len(msg)
    tail = n - n % 8
    blocks = [int.from_bytes(msg[i:i + 8], "little") for i in range(0, tail, 8)]
    blocks.append(int.from_bytes(msg[tail:], "little") | ((n & 0xFF) << 56))
    for m in blocks:
        v[3] ^= m
        rounds(2)
        v[0] ^= m
    v[2] ^= 0xFF
    rounds(4)
    return v[0] ^ v[1] ^ v[2] ^ v[3]


def _ip_bytes(addr: str | int) -> bytes:
    return socket.inet_aton(addr) if isinstance(addr, str) else addr.to_bytes(4, "big")


def time_counter(monotonic_ns: int) -> int:
    """The cookie's time counter for a CLOCK_MONOTONIC time (bpf_ktime_get_ns)."""
    return (monotonic_ns // 1_000_000_000) >> abi.SYNCOOKIE_PERIOD_SHIFT


def mss_index(mss: int | None) -> int:
    """The largest msstab entry <= mss (index 0 below it, or without an MSS option)."""
    mss = 536 if mss is None else mss
    idx = 0
    for i, m in enumerate(abi.MSSTAB):
        if mss >= m:
            idx = i
    return idx


def cookie_hash(key: bytes, saddr: str | int, daddr: str | int, sport: int, dport: int,
                isn: int, count: int, mssind: int) -> int:
    """Bits 31..4 of the cookie. saddr/sport: the client; daddr/dport: the listener."""
    msg = (_ip_bytes(saddr) + _ip_bytes(daddr) + struct.pack("!HHI", sport, dport, isn)
           + struct.pack("<II", count & 0xFFFFFFFF, mssind))
    return ((siphash24(key, msg) >> 36) << abi.SYNCOOKIE_HASH_SHIFT) & 0xFFFFFFFF


def make_cookie(key: bytes, saddr: str | int, daddr: str | int, sport: int, dport: int,
                isn: int, count: int, mss: int | None) -> int:
    """The cookie (our ISN) for a SYN with client ISN `isn` at time counter `count`."""
    idx = mss_index(mss)
    return (cookie_hash(key, saddr, daddr, sport, dport, isn, count, idx)
            | ((count & 3) << abi.SYNCOOKIE_MSS_BITS) | idx)


def check_cookie(keys: list[bytes], saddr: str | int, daddr: str | int, sport: int,
                 dport: int, isn: int, cookie: int, count_now: int) -> int | None:
    """The MSS a cookie encodes if it checks under any of keys at count_now, else None."""
    age = (count_now - (cookie >> abi.SYNCOOKIE_MSS_BITS)) & 3
    if age > 1:
        return None
    idx = cookie & 3
    want = cookie & ~((1 << abi.SYNCOOKIE_HASH_SHIFT) - 1) & 0xFFFFFFFF
    for k in keys:
        if cookie_hash(k, saddr, daddr, sport, dport, isn, count_now - age, idx) == want:
            return abi.MSSTAB[idx]
    return None


def ts_options(snd_wscale: int | None, sack: bool, ecn: bool) -> int:
    """The 6 low bits of a cookie SYN-ACK's TSval (Linux's cookie_init_timestamp)."""
    opt = abi.SC_WSCALE_NONE if snd_wscale is None else snd_wscale
    return opt | (0x10 if sack else 0) | (0x20 if ecn else 0)
