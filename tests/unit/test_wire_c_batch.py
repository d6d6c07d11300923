"""The C batch path (pystack.io.batch over xsk.c) against the Python reference
(pystack.wire.frame): the same segments from the same frames, GRO merges included, and the
same bytes on the wire from the same segments, TSO splits included."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from pystack.io._xsk import ffi, lib

from pystack.io.batch import E_UNVERIFIED, GRO_ACKS, GRO_ALL, GRO_DATA, REASON, RxParser, TxPacker
from pystack.wire import ACK, CWR, ECE, FIN, PSH, RST, SYN, URG, TcpOptions, TcpSegment, WireError
from pystack.wire.frame import RxFrame, build_frame, coalesce, parse_frame, split_segment
from pystack.xdp.abi import META_COOKIE_OK, META_CSUM_OK
from tests.unit.test_wire_support import (
    FAST,
    IP_A,
    IP_B,
    MAC_A,
    MAC_B,
    build,
    data_segment,
    segments,
    syn_segment,
    u16,
    u32,
    with_raw_options,
)

SLOT = 4096  # bytes per frame in the test "UMEM"


# ---- helpers: one batch through C, and through Python ----
def c_rx(frames: list[bytes], metas: list[int], cookies: list[int] | None = None,
         mode: int = GRO_ALL) -> tuple[list[TcpSegment], list[bytes], list[str]]:
    n = len(frames)
    area = bytearray(SLOT * max(n, 1))
    descs = ffi.new("struct ps_desc[]", max(n, 1))
    for i, f in enumerate(frames):
        assert len(f) <= SLOT
        area[i * SLOT : i * SLOT + len(f)] = f
        descs[i].addr = i * SLOT
        descs[i].len = len(f)
        descs[i].flags = metas[i]
        descs[i].syncookie = cookies[i] if cookies else 0
    segs, macs, errors = RxParser(max(n, 1)).parse(ffi.from_buffer("uint8_t[]", area), descs, n,
                                                   mode)
    return segs, macs, ["unverified" if e == E_UNVERIFIED else REASON[e] for e in errors]


def py_rx(frames: list[bytes], metas: list[int], cookies: list[int] | None = None,
          mode: int = GRO_ALL) -> tuple[list[TcpSegment], list[bytes], list[str]]:
    rx: list[RxFrame] = []
    errors: list[str] = []
    for i, f in enumerate(frames):
        if not metas[i] & META_CSUM_OK:
            errors.append("unverified")
            continue
        try:
            p = parse_frame(f, verify_checksums=False)
        except WireError as e:
            errors.append(e.reason)
            continue
        p.segment.payload = bytes(p.segment.payload)
        if metas[i] & META_COOKIE_OK and cookies:
            p.segment.syncookie = cookies[i]
        rx.append(RxFrame(p.segment, p.eth_src, metas[i]))
    merged = coalesce(rx, mode)
    return [m.segment for m in merged], [m.eth_src for m in merged], errors


def same_rx(frames: list[bytes], metas: list[int] | None = None,
            cookies: list[int] | None = None, mode: int = GRO_ALL) -> list[TcpSegment]:
    metas = metas if metas is not None else [META_CSUM_OK] * len(frames)
    c = c_rx(frames, metas, cookies, mode)
    p = py_rx(frames, metas, cookies, mode)
    assert c[2] == p[2], "refused frames differ"
    assert c[1] == p[1], "source MACs differ"
    assert len(c[0]) == len(p[0])
    for a, b in zip(c[0], p[0], strict=True):
        assert a == b
        assert isinstance(a.payload, bytes) and isinstance(b.payload, bytes)
    return c[0]


def c_tx(segs: list[TcpSegment], ndesc: int = 256) -> tuple[list[bytes], list[int]]:
    packer = TxPacker(max(len(segs), 1))
    bad = packer.pack(segs, [MAC_B] * len(segs))
    k = len(segs) - len(bad)
    area = bytearray(SLOT * ndesc)
    descs = ffi.new("struct ps_desc[]", ndesc)
    for i in range(ndesc):
        descs[i].addr = i * SLOT
    nf = lib.ps_build_frames(ffi.from_buffer("uint8_t[]", area), SLOT, packer.segs, k, MAC_A,
                             descs, ndesc)
    packer.release()
    errors = [packer.segs[i].error for i in range(k)]
    return [bytes(area[i * SLOT : i * SLOT + descs[i].len]) for i in range(nf)], errors


def py_tx(segs: list[TcpSegment]) -> list[bytes]:
    out = []
    for seg in segs:
        for piece in split_segment(seg):
            frame = build_frame(piece, MAC_A, MAC_B)
            assert isinstance(frame, bytes)
            out.append(frame)
    return out


# ---- receive: one frame at a time, every reason ----
@FAST
@given(segments)
def test_any_segment_parses_the_same(seg: TcpSegment) -> None:
    same_rx([bytes(build(seg))], mode=0)


@FAST
@given(st.binary(max_size=200), st.sampled_from([META_CSUM_OK, 0, META_CSUM_OK | 2]))
def test_arbitrary_bytes_same_segment_or_same_reason(raw: bytes, meta: int) -> None:
    same_rx([raw], [meta], [0x1234], mode=0)
    same_rx([MAC_B + MAC_A + b"\x08\x00" + raw], [meta], mode=0)


@FAST
@given(st.binary(max_size=44), st.binary(max_size=30))
def test_arbitrary_options_same_result(opts: bytes, payload: bytes) -> None:
    same_rx([bytes(with_raw_options(opts, payload))], mode=0)


def test_each_reason_is_the_python_reason() -> None:
    good = build(data_segment())
    cases = {
        "truncated": bytes(good[:10]),
        "not_ipv4": bytes(good[:12]) + b"\x86\xdd" + bytes(good[14:]),
        "bad_ihl": bytes(good[:14]) + b"\x44" + bytes(good[15:]),
        "bad_total_length": bytes(good[:16]) + b"\xff\xff" + bytes(good[18:]),
        "fragment": bytes(good[:20]) + b"\x20" + bytes(good[21:]),
        "not_tcp": bytes(good[:23]) + b"\x11" + bytes(good[24:]),
        "bad_doff": bytes(good[:46]) + b"\x40" + bytes(good[47:]),
        "bad_option": bytes(with_raw_options(b"\x02\x05\x05\xb4\x00\x00\x00\x00")),
    }
    for reason, frame in cases.items():
        c = c_rx([frame], [META_CSUM_OK])
        assert c[2] == [reason] and c[2] == py_rx([frame], [META_CSUM_OK])[2]
    assert c_rx([bytes(good)], [0])[2] == ["unverified"]


def test_syn_options_and_cookie_word_reach_the_segment() -> None:
    segs = same_rx([bytes(build(syn_segment(b"data")))], [META_CSUM_OK | META_COOKIE_OK],
                   [0xABCD1234])
    s = segs[0]
    assert s.options == syn_segment().options and s.payload == b"data"
    assert s.syncookie == 0xABCD1234 and s.gso_segs == 1 and s.gso_size == 0


# ---- receive: GRO ----
def flow(seq: int, n: int, flags: int = ACK, ack: int = 1000, window: int = 500,
         ts: tuple[int, int] | None = (10, 20), sack: list[tuple[int, int]] | None = None,
         sport: int = 40000, fill: int = 0x61) -> bytes:
    opts = TcpOptions(timestamp=ts, sack_blocks=sack or [])
    seg = TcpSegment(IP_B, IP_A, sport, 80, seq & 0xFFFFFFFF, ack, flags, window, 0, opts,
                     bytes([fill + (seq // 100) % 20]) * n)
    return bytes(build(seg))


def test_in_order_full_segments_become_one_with_one_copy_of_the_payload() -> None:
    frames = [flow(1000 + 100 * i, 100) for i in range(10)] + [flow(2000, 40, ACK | PSH)]
    segs = same_rx(frames)
    assert len(segs) == 1
    s = segs[0]
    assert (s.seq, len(s.payload), s.gso_size, s.gso_segs, s.flags) == (1000, 1040, 100, 11,
                                                                         ACK | PSH)
    assert s.payload == b"".join(parse_frame(f).segment.payload for f in frames)


def test_gro_stops_at_push_short_segment_gap_and_changed_fields() -> None:
    cases = [
        [flow(0, 100, ACK | PSH), flow(100, 100)],  # PSH ends the run
        [flow(0, 60), flow(60, 100)],  # a short segment ends it
        [flow(0, 100), flow(100, 40), flow(140, 40)],
        [flow(0, 100), flow(200, 100)],  # a hole
        [flow(0, 100), flow(100, 100, ack=2000)],  # another ack
        [flow(0, 100), flow(100, 100, window=7)],  # another window
        [flow(0, 100), flow(100, 100, ts=(11, 20))],  # another TSval
        [flow(0, 100), flow(100, 100, ACK | FIN)],  # FIN is never merged
        [flow(0, 100), flow(100, 100, ACK | ECE)],
        [flow(0, 100), flow(100, 101)],  # longer than the first
    ]
    for frames in cases:
        assert len(same_rx(frames)) == 2, [parse_frame(f).segment for f in frames]


def test_flows_merge_apart_and_keep_their_own_order() -> None:
    a = [flow(100 * i, 100, sport=1) for i in range(4)]
    b = [flow(5000 + 100 * i, 100, sport=2) for i in range(4)]
    mixed = [x for pair in zip(a, b, strict=True) for x in pair]
    segs = same_rx(mixed)
    assert [(s.src_port, s.seq, s.gso_segs) for s in segs] == [(1, 0, 4), (2, 5000, 4)]


def test_duplicate_acks_are_never_merged_and_sack_acks_are_kept() -> None:
    dup = [flow(1, 0, ack=5000) for _ in range(4)]
    assert [s.gso_segs for s in same_rx(dup)] == [1, 1, 1, 1]
    sacked = [flow(1, 0, ack=5000 + i, sack=[(9000, 9100 + i)]) for i in range(3)]
    assert len(same_rx(sacked)) == 3
    # A duplicate is not folded into an ACK that advances after it either.
    dup_then_new = [flow(1, 0, ack=10), flow(1, 0, ack=10), flow(1, 0, ack=20), flow(1, 0, ack=30)]
    assert [(s.ack, s.gso_segs) for s in same_rx(dup_then_new)] == [(10, 1), (10, 1), (30, 2)]


def test_advancing_pure_acks_become_the_latest() -> None:
    acks = [flow(1, 0, ack=5000 + 1448 * i, ts=(10 + i, 20 + i)) for i in range(6)]
    segs = same_rx(acks)
    assert len(segs) == 1
    s = segs[0]
    assert (s.ack, s.options.timestamp, s.gso_segs, s.gso_size) == (5000 + 1448 * 5, (15, 25),
                                                                    6, 0)
    # Across a window change (an autotuning receiver's ACKs): the latest window stays.
    (w,) = same_rx([flow(1, 0, ack=10, window=7), flow(1, 0, ack=20, window=9)])
    assert (w.ack, w.window, w.gso_segs) == (20, 9, 2)
    # ... but not across a duplicate, or an ACK that goes back.
    assert len(same_rx([flow(1, 0, ack=10), flow(1, 0, ack=20), flow(1, 0, ack=20)])) == 2
    assert len(same_rx([flow(1, 0, ack=20), flow(1, 0, ack=10)])) == 2


def test_modes_and_cookie_frames() -> None:
    data = [flow(100 * i, 100) for i in range(3)]
    acks = [flow(1, 0, ack=10 * (i + 1)) for i in range(3)]
    assert len(same_rx(data + acks, mode=GRO_DATA)) == 4
    assert len(same_rx(data + acks, mode=GRO_ACKS)) == 4
    assert len(same_rx(data + acks, mode=0)) == 6
    cookie = [META_CSUM_OK | META_COOKIE_OK] + [META_CSUM_OK] * 2
    assert len(same_rx(acks, cookie, [7, 0, 0])) == 2


def _mostly(common: object, *rare: object) -> st.SearchStrategy[object]:
    return st.sampled_from([common] * 6 + list(rare))


batch_frames = st.lists(
    st.tuples(
        _mostly(0, 1, 2),  # flow
        _mostly(0, 1, -1, 3),  # seq step (x100) from the flow's next seq
        st.sampled_from([0, 0, 0, 100, 100, 100, 40, 101]),  # payload length
        _mostly(ACK, ACK | PSH, ACK | FIN, SYN, RST | ACK, ACK | ECE, ACK | URG, ACK | CWR),
        st.sampled_from([1000, 1000, 1000, 1100, 1200]),  # ack
        _mostly(500, 600),  # window
        _mostly((10, 20), (11, 20), None),  # timestamps
        _mostly(None, [(3000, 3100)]),  # SACK
        _mostly(META_CSUM_OK, 0, META_CSUM_OK | META_COOKIE_OK),
    ),
    min_size=8,
    max_size=64,
)


@FAST
@given(batch_frames, st.sampled_from([GRO_ALL, GRO_DATA, GRO_ACKS, 0]), st.booleans())
def test_random_batches_merge_the_same(events: list[tuple], mode: int, bad: bool) -> None:
    nxt = [0, 0, 0]
    frames: list[bytes] = []
    metas: list[int] = []
    for fl, step, n, flags, ack, window, ts, sack, meta in events:
        seq = nxt[fl] + 100 * step
        frames.append(flow(seq, n, flags, ack, window, ts, sack, sport=fl + 1))
        metas.append(meta)
        nxt[fl] = seq + n
    if bad and frames:
        frames[len(frames) // 2] = frames[len(frames) // 2][:30]
    cookies = list(range(len(frames)))
    segs = same_rx(frames, metas, cookies, mode)
    refused = c_rx(frames, metas, cookies, mode)[2]
    assert sum(s.gso_segs for s in segs) + len(refused) == len(frames)


# ---- transmit ----
@FAST
@given(segments)
def test_any_segment_builds_the_same_frame(seg: TcpSegment) -> None:
    frames, errors = c_tx([seg])
    assert errors == [0]
    assert frames == py_tx([seg])


@FAST
@given(st.lists(segments, max_size=4), st.lists(st.integers(1, 1460), min_size=4, max_size=4),
       st.lists(st.binary(max_size=6000), min_size=4, max_size=4))
def test_tso_splits_the_same(segs: list[TcpSegment], sizes: list[int],
                             payloads: list[bytes]) -> None:
    for seg, size, payload in zip(segs, sizes, payloads, strict=False):
        seg.gso_size = size
        seg.payload = payload
    frames, errors = c_tx(segs)
    assert errors == [0] * len(segs)
    assert frames == py_tx(segs)


def test_tso_sequence_and_flags() -> None:
    seg = TcpSegment(IP_A, IP_B, 80, 40000, 0xFFFFFF00, 77, ACK | PSH | FIN | CWR, 100,
                     options=TcpOptions(timestamp=(1, 2)), payload=bytes(range(256)) * 10,
                     gso_size=1000)
    frames, _ = c_tx([seg])
    parsed = [parse_frame(f).segment for f in frames]
    assert [p.seq for p in parsed] == [0xFFFFFF00, (0xFFFFFF00 + 1000) & 0xFFFFFFFF,
                                       (0xFFFFFF00 + 2000) & 0xFFFFFFFF]
    assert [p.flags for p in parsed] == [ACK | CWR, ACK, ACK | PSH | FIN]
    assert b"".join(bytes(p.payload) for p in parsed) == seg.payload
    assert all(p.options.timestamp == (1, 2) for p in parsed)


def test_too_big_and_out_of_range_segments_are_refused() -> None:
    big = TcpSegment(IP_A, IP_B, 1, 2, 3, 4, ACK, 5, payload=b"x" * SLOT)
    frames, errors = c_tx([big])
    assert frames == [] and errors == [lib.PS_E_TOO_BIG]
    bad_port = TcpSegment(IP_A, IP_B, 70000, 2, 3, 4, ACK, 5)
    assert TxPacker(1).pack([bad_port], [MAC_B]) == [0]


def test_frames_that_do_not_fit_the_descriptors_are_left_out_whole() -> None:
    seg = TcpSegment(IP_A, IP_B, 1, 2, 3, 4, ACK, 5, payload=b"y" * 3000, gso_size=1000)
    small = TcpSegment(IP_A, IP_B, 1, 2, 3, 4, ACK, 5, payload=b"z")
    frames, _ = c_tx([seg, small], ndesc=2)
    assert len(frames) == 1 and parse_frame(frames[0]).segment.payload == b"z"


@FAST
@given(u32, u16)
def test_round_trip_through_both_paths(seq: int, window: int) -> None:
    seg = TcpSegment(IP_A, IP_B, 5, 6, seq, 9, ACK, window,
                     options=TcpOptions(timestamp=(seq, 3)), payload=b"q" * 3000, gso_size=1448)
    frames, _ = c_tx([seg])
    back = same_rx(frames)
    assert len(back) == 1 and back[0].payload == seg.payload and back[0].gso_segs == 3
