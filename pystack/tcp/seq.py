"""Sequence-number arithmetic modulo 2**32 (RFC 9293 §3.4, RFC 1982 serial arithmetic).

Every comparison of sequence or acknowledgment numbers in the engine goes through these
helpers: ``a`` is "less than" ``b`` when ``b`` lies within 2**31 ahead of ``a``.
"""

from __future__ import annotations

MOD = 1 << 32
MASK = MOD - 1
HALF = 1 << 31


def add(a: int, n: int) -> int:
    """``a + n`` modulo 2**32."""
    return (a + n) & MASK


def sub(a: int, b: int) -> int:
    """The signed distance ``a - b`` in the range [-2**31, 2**31)."""
    d = (a - b) & MASK
    return d - MOD if d >= HALF else d


def lt(a: int, b: int) -> bool:
    """``a < b`` in sequence space."""
    return ((a - b) & MASK) >= HALF


def le(a: int, b: int) -> bool:
    """``a <= b`` in sequence space."""
    return a == b or ((a - b) & MASK) >= HALF


def gt(a: int, b: int) -> bool:
    """``a > b`` in sequence space."""
    return ((b - a) & MASK) >= HALF


def ge(a: int, b: int) -> bool:
    """``a >= b`` in sequence space."""
    return a == b or ((b - a) & MASK) >= HALF


def in_window(x: int, start: int, size: int) -> bool:
    """``start <= x < start + size`` in sequence space (``size`` >= 0)."""
    return ((x - start) & MASK) < size


def seq_max(a: int, b: int) -> int:
    """The later of two sequence numbers."""
    return b if lt(a, b) else a


def seq_min(a: int, b: int) -> int:
    """The earlier of two sequence numbers."""
    return a if lt(a, b) else b
