"""TCP option parsing and emission (RFC 9293 §3.2, RFC 7323, RFC 2018, RFC 7413)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pystack.wire import (
    TcpOptions,
    WireError,
    emit_options,
    encode_options,
    options_len,
    parse_options,
)
from tests.unit.test_wire_support import FAST, options


@pytest.mark.parametrize(
    ("opts", "wire"),
    [
        (TcpOptions(), ""),
        # A Linux SYN: MSS, SACKOK TS, NOP WS (tcp_options_write).
        (
            TcpOptions(mss=1460, sack_permitted=True, timestamp=(1000, 0), wscale=7),
            "020405b4 0402 080a000003e800000000 01030307",
        ),
        # Without SACK the TS option is led by NOP NOP.
        (
            TcpOptions(mss=1460, timestamp=(1000, 0), wscale=7),
            "020405b4 0101 080a000003e800000000 01030307",
        ),
        # SACK permitted without timestamps: NOP NOP SACKOK.
        (TcpOptions(mss=536, sack_permitted=True), "02040218 01010402"),
        (TcpOptions(wscale=14), "0103030e"),
        # Data segment: NOP NOP TS, NOP NOP SACK.
        (
            TcpOptions(timestamp=(1, 2), sack_blocks=[(10, 20), (30, 40)]),
            "0101080a 00000001 00000002 01010512 0000000a 00000014 0000001e 00000028",
        ),
        # Fast Open: request, 4-, 8- and 16-byte cookies, padded with NOP NOP.
        (TcpOptions(fastopen_cookie=b""), "22020101"),
        (TcpOptions(fastopen_cookie=b"abcd"), "2206 61626364 0101"),
        (TcpOptions(fastopen_cookie=b"abcdefgh"), "220a 6162636465666768 0101"),
        (TcpOptions(fastopen_cookie=bytes(16)), "2212" + "00" * 16 + "0101"),
        (TcpOptions(fastopen_cookie=b"abcdef"), "2208 616263646566"),
    ],
    ids=[
        "none",
        "linux-syn",
        "syn-no-sack",
        "sackok-no-ts",
        "wscale",
        "ts-sack",
        "tfo-request",
        "tfo-4",
        "tfo-8",
        "tfo-16",
        "tfo-6",
    ],
)
def test_emit_layout(opts: TcpOptions, wire: str) -> None:
    want = bytes.fromhex(wire)
    assert encode_options(opts) == want
    assert options_len(opts) == len(want)
    assert len(want) % 4 == 0
    assert parse_options(want) == opts


def test_full_syn_with_cookie_fits_40() -> None:
    opts = TcpOptions(
        mss=1460, sack_permitted=True, timestamp=(1, 2), wscale=7, fastopen_cookie=bytes(16)
    )
    assert options_len(opts) == 40
    assert parse_options(encode_options(opts)) == opts


@pytest.mark.parametrize(
    "opts",
    [
        TcpOptions(timestamp=(1, 2), sack_blocks=[(1, 2)] * 4),  # 12 + 36 = 48
        TcpOptions(sack_blocks=[(1, 2)] * 5),
        TcpOptions(fastopen_cookie=b"abc"),
        TcpOptions(fastopen_cookie=b"ab"),
        TcpOptions(fastopen_cookie=bytes(18)),
        TcpOptions(mss=70000),
        TcpOptions(mss=-1),
        TcpOptions(wscale=256),
    ],
)
def test_emit_rejects(opts: TcpOptions) -> None:
    with pytest.raises(ValueError):
        encode_options(opts)


def test_emit_into_buffer_and_too_small() -> None:
    opts = TcpOptions(mss=1460, wscale=7)
    buf = bytearray(10)
    assert emit_options(opts, buf, 2) == 8
    assert buf == bytes.fromhex("0000 020405b4 01030307")
    with pytest.raises(ValueError):
        emit_options(opts, bytearray(7), 0)


@pytest.mark.parametrize(
    ("wire", "want"),
    [
        ("01010101", TcpOptions()),
        ("00ffffff", TcpOptions()),  # EOL: the rest is padding, not parsed
        ("020405b4 00 0204", TcpOptions(mss=1460)),
        ("63 04 aabb 020405b4", TcpOptions(mss=1460)),  # unknown kind 99 skipped
        ("fe 02 020405b4", TcpOptions(mss=1460)),  # unknown, minimal length 2
        ("0402", TcpOptions(sack_permitted=True)),
        ("0303ff", TcpOptions(wscale=255)),  # raw value; clamping is the engine's job
        ("050a 00000001 00000002", TcpOptions(sack_blocks=[(1, 2)])),
        ("0522" + "00000001" * 8, TcpOptions(sack_blocks=[(1, 1)] * 4)),
        ("080a ffffffff 00000001", TcpOptions(timestamp=(0xFFFFFFFF, 1))),
        # Pre-RFC experimental Fast Open (ExID 0xF989), as Linux accepts.
        ("fe0c f989 0102030405060708", TcpOptions(fastopen_cookie=bytes(range(1, 9)))),
        ("fe04 f989", TcpOptions(fastopen_cookie=b"")),
        ("fe05 f989 01", TcpOptions()),  # malformed experimental: ignored
        ("fe06 1234 0102", TcpOptions()),  # other ExID: skipped
        ("2206 01020304 fe0c f989 0102030405060708", TcpOptions(fastopen_cookie=b"\1\2\3\4")),
        ("020405b4 02040218", TcpOptions(mss=536)),  # the later one wins
    ],
)
def test_parse(wire: str, want: TcpOptions) -> None:
    assert parse_options(bytes.fromhex(wire)) == want


@pytest.mark.parametrize(
    "wire",
    [
        "02",  # kind with no length byte
        "0101 02",
        "0200",  # length 0 would never advance
        "0201",  # length 1 would never advance
        "6300",  # unknown kind, length 0
        "6301",
        "6305 0000",  # runs past the end
        "0205 05b4",
        "020405",  # MSS truncated by the end of the options
        "0203 05",  # MSS length 3
        "0205 05b400",
        "0302",  # window scale length 2
        "0304 0700",
        "0403 00",  # SACK-permitted length 3
        "0503 00",  # SACK length 3
        "0502",  # SACK with no blocks
        "050b" + "00" * 9,
        "052a" + "00" * 40,  # 5 blocks
        "0809" + "00" * 7,  # timestamps length 9
        "080b" + "00" * 9,
        "2203 00",  # Fast Open: odd, too short, too long
        "2204 0000",
        "2205 000000",
        "2207" + "00" * 5,
        "2214" + "00" * 18,
    ],
)
def test_parse_rejects(wire: str) -> None:
    with pytest.raises(WireError) as e:
        parse_options(bytes.fromhex(wire))
    assert e.value.reason == "bad_option"


def test_parse_accepts_memoryview_slice() -> None:
    raw = b"\xff\xff" + encode_options(TcpOptions(mss=9000))
    assert parse_options(memoryview(raw)[2:]) == TcpOptions(mss=9000)


@FAST
@given(options)
def test_round_trip(opts: TcpOptions) -> None:
    wire = encode_options(opts)
    assert len(wire) == options_len(opts) <= 40
    assert len(wire) % 4 == 0
    assert parse_options(wire) == opts


@FAST
@given(st.binary(max_size=40))
def test_parse_arbitrary_bytes(raw: bytes) -> None:
    """Arbitrary option bytes parse or raise WireError; what parses re-encodes stably."""
    try:
        opts = parse_options(raw)
    except WireError as e:
        assert e.reason == "bad_option"
        return
    if options_len(opts) <= 40:
        assert parse_options(encode_options(opts)) == opts
