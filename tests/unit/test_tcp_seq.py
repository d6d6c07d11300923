"""Sequence arithmetic modulo 2**32 (RFC 9293 §3.4)."""

from hypothesis import given, settings
from hypothesis import strategies as st

from pystack.tcp import seq as sq

u32 = st.integers(0, 2**32 - 1)
delta = st.integers(1, 2**31 - 1)


def test_wraparound_basics() -> None:
    assert sq.lt(0xFFFFFFFF, 0)
    assert sq.gt(0, 0xFFFFFFFF)
    assert sq.add(0xFFFFFFFF, 2) == 1
    assert sq.sub(1, 0xFFFFFFFF) == 2
    assert sq.sub(0xFFFFFFFF, 1) == -2
    assert sq.le(5, 5) and sq.ge(5, 5) and not sq.lt(5, 5) and not sq.gt(5, 5)
    assert sq.in_window(0, 0xFFFFFFF0, 0x20)
    assert not sq.in_window(0x10, 0xFFFFFFF0, 0x20)
    assert not sq.in_window(5, 5, 0)
    assert sq.seq_max(0xFFFFFFFF, 3) == 3 and sq.seq_min(0xFFFFFFFF, 3) == 0xFFFFFFFF


@settings(max_examples=200)
@given(a=u32, d=delta)
def test_ordering_is_consistent(a: int, d: int) -> None:
    b = sq.add(a, d)
    assert sq.lt(a, b) and sq.le(a, b) and sq.gt(b, a) and sq.ge(b, a)
    assert not sq.lt(b, a) and not sq.gt(a, b)
    assert sq.sub(b, a) == d and sq.sub(a, b) == -d
    assert sq.in_window(b, a, d + 1) and not sq.in_window(b, a, d)
