"""The SYN cookie's layout and its Python mirror (pystack.xdp.syncookie), without a kernel:
SipHash-2-4 against the reference vectors, the cookie's fields, the check's time window
and key rotation, the timestamp option bits, and the metadata word the control plane
decodes. The XDP program is held to the same mirror bit for bit by
tests/integration/test_syncookie_xdp.py."""

from __future__ import annotations

import re

import pytest

from pystack.xdp import abi
from pystack.xdp.program import bpf_dir
from pystack.xdp.syncookie import (
    check_cookie,
    cookie_hash,
    make_cookie,
    mss_index,
    siphash24,
    time_counter,
    ts_options,
)

HEADER = (bpf_dir() / "pystack_xdp.h").read_text()
KEY_A = bytes(range(16))
KEY_B = bytes(range(16, 32))
KEY_C = bytes(range(32, 48))
CLIENT, SERVER = "198.18.0.2", "198.18.0.1"
FLOW = (CLIENT, SERVER, 40000, 7777)


def define(name: str) -> int:
    m = re.search(rf"#define {name}\s+(0x[0-9a-fA-F]+|\d+)u?\b", HEADER)
    assert m, f"{name} is not defined in pystack_xdp.h"
    return int(m.group(1), 0)


# Reference implementation's vectors: key 00..0f, message 00..(n-1).
@pytest.mark.parametrize("n, want", [
    (0, 0x726FDB47DD0E0E31), (1, 0x74F839C593DC67FD), (2, 0x0D6C8009D9A94F5A),
    (3, 0x85676696D7FB7E2D), (8, 0x93F5F5799A932462), (15, 0xA129CA6149BE45E5),
])
def test_siphash24_reference_vectors(n: int, want: int):
    assert siphash24(KEY_A, bytes(range(n))) == want


def test_siphash_needs_a_16_byte_key():
    with pytest.raises(ValueError):
        siphash24(b"short", b"")


@pytest.mark.parametrize("mss, idx", [
    (None, 0), (0, 0), (535, 0), (536, 0), (1299, 0), (1300, 1), (1439, 1), (1440, 2),
    (1459, 2), (1460, 3), (9000, 3), (65535, 3),
])
def test_mss_index_is_the_largest_table_entry_not_above_the_mss(mss: int | None, idx: int):
    assert mss_index(mss) == idx
    assert abi.MSSTAB[idx] <= max(mss or 536, 536)


def test_cookie_fields():
    for count in (0, 1, 2, 3, 4, 0x3FFFFFF):
        for mss in (536, 1300, 1440, 1460):
            c = make_cookie(KEY_A, *FLOW, isn=123456, count=count, mss=mss)
            assert c & 3 == abi.MSSTAB.index(mss)
            assert (c >> abi.SYNCOOKIE_MSS_BITS) & 3 == count & 3
            assert c & ~0xF == cookie_hash(KEY_A, *FLOW, 123456, count, c & 3)
            assert 0 <= c < 2**32


def test_cookie_depends_on_every_input():
    base = make_cookie(KEY_A, *FLOW, isn=99, count=10, mss=1460)
    variants = [
        make_cookie(KEY_B, *FLOW, isn=99, count=10, mss=1460),
        make_cookie(KEY_A, "198.18.0.3", SERVER, 40000, 7777, isn=99, count=10, mss=1460),
        make_cookie(KEY_A, CLIENT, "198.18.0.4", 40000, 7777, isn=99, count=10, mss=1460),
        make_cookie(KEY_A, CLIENT, SERVER, 40001, 7777, isn=99, count=10, mss=1460),
        make_cookie(KEY_A, CLIENT, SERVER, 40000, 7778, isn=99, count=10, mss=1460),
        make_cookie(KEY_A, *FLOW, isn=100, count=10, mss=1460),
        make_cookie(KEY_A, *FLOW, isn=99, count=14, mss=1460),  # same low count bits
    ]
    for v in variants:
        assert v >> 4 != base >> 4
    # The MSS index is authenticated: the same hash with another index does not check.
    forged = (base & ~3) | 0
    assert check_cookie([KEY_A], *FLOW, 99, forged, count_now=10) is None


def test_check_accepts_the_current_and_previous_period_only():
    c = make_cookie(KEY_A, *FLOW, isn=7, count=100, mss=1440)
    assert check_cookie([KEY_A], *FLOW, 7, c, count_now=100) == 1440
    assert check_cookie([KEY_A], *FLOW, 7, c, count_now=101) == 1440
    assert check_cookie([KEY_A], *FLOW, 7, c, count_now=102) is None
    assert check_cookie([KEY_A], *FLOW, 7, c, count_now=99) is None  # from the future
    assert check_cookie([KEY_A], *FLOW, 7, c, count_now=104) is None  # low bits wrap
    assert check_cookie([KEY_A], *FLOW, 8, c, count_now=100) is None
    assert check_cookie([KEY_A], *FLOW, 7, c ^ 0x100, count_now=100) is None


def test_key_rotation_keeps_one_previous_key():
    c = make_cookie(KEY_A, *FLOW, isn=5, count=3, mss=1460)
    assert check_cookie([KEY_A], *FLOW, 5, c, count_now=3) == 1460
    assert check_cookie([KEY_B, KEY_A], *FLOW, 5, c, count_now=3) == 1460  # one rotation
    assert check_cookie([KEY_C, KEY_B], *FLOW, 5, c, count_now=3) is None  # two


def test_time_counter_is_64_second_periods_of_the_monotonic_clock():
    assert time_counter(0) == 0
    assert time_counter(63_999_999_999) == 0
    assert time_counter(64_000_000_000) == 1
    assert time_counter(128 * 10**9) == 2


def test_timestamp_option_bits_follow_linux():
    # cookie_init_timestamp(): wscale (0xf = none) | SACK 0x10 | ECN 0x20
    assert ts_options(None, False, False) == 0xF
    assert ts_options(7, True, False) == 0x17
    assert ts_options(0, False, True) == 0x20
    assert ts_options(14, True, True) == 0x3E


def test_cookie_info_decoding():
    word = 1460 | (7 << 16) | abi.SC_INFO_SACK | abi.SC_INFO_TS | (9 << 24)
    info = abi.decode_cookie_info(word)
    assert (info.mss, info.snd_wscale, info.rcv_wscale) == (1460, 7, 9)
    assert info.sack_permitted and info.timestamps and not info.ecn and info.wscale_ok
    info = abi.decode_cookie_info(536 | (abi.SC_WSCALE_NONE << 16) | abi.SC_INFO_ECN)
    assert info.mss == 536 and info.snd_wscale is None and not info.wscale_ok
    assert info.ecn and not info.sack_permitted and not info.timestamps


def test_header_and_python_agree():
    assert define("META_COOKIE_OK") == abi.META_COOKIE_OK
    assert abi.DROP_REASONS[define("DROP_SYNCOOKIE")] == "syncookie_failed"
    assert define("SYNCOOKIE_COUNTERS") == len(abi.SYNCOOKIE_COUNTERS)
    for name, idx in (("SYNCOOKIE_SENT", 0), ("SYNCOOKIE_RECV", 1), ("SYNCOOKIE_FAILED", 2),
                      ("SYNACK_XDP", 3)):
        assert define(name) == idx
    assert abi.SYNCOOKIE_COUNTERS == ("SyncookiesSent", "SyncookiesRecv", "SyncookiesFailed",
                                      "XdpSynAcks")
    for name in ("SYNACK_REQ_MAX", "REQ_SACK", "REQ_ECN"):
        assert define(name) == getattr(abi, name), name
    for name in ("SYNCOOKIE_PERIOD_SHIFT", "SYNCOOKIE_VALID_SEC", "SYNCOOKIE_MSS_BITS",
                 "SYNCOOKIE_COUNT_BITS", "SYNCOOKIE_HASH_SHIFT", "SC_CFG_TIMESTAMPS",
                 "SC_CFG_SACK", "SC_CFG_WSCALE", "SC_CFG_ECN", "SC_INFO_MSS_MASK",
                 "SC_INFO_WSCALE_SHIFT", "SC_INFO_SACK", "SC_INFO_TS", "SC_INFO_ECN",
                 "SC_INFO_OUR_WS_SHIFT", "SC_WSCALE_NONE"):
        assert define(name) == getattr(abi, name), name
    assert abi.SYNCOOKIE_HASH_SHIFT == abi.SYNCOOKIE_MSS_BITS + abi.SYNCOOKIE_COUNT_BITS
    assert abi.SYNCOOKIE_VALID_SEC == 2 << abi.SYNCOOKIE_PERIOD_SHIFT
    msstab = re.search(r"msstab \{([0-9, ]+)\}", HEADER)
    assert msstab and tuple(int(x) for x in msstab.group(1).split(",")) == abi.MSSTAB
