"""Coverage-guided fuzzing (atheris, libFuzzer) of the wire parser, differential against the
C batch parser and the C checksum code. Run by test_fuzz_wire.py as

    python -m tests.reliability.fuzz_wire -runs=N -seed=S -max_len=1600 CORPUS_DIR

Each input is one Ethernet frame. What must hold (anything else raises, and libFuzzer
reports the input as a crash):

* pystack.wire.parse_frame returns a segment or raises WireError with a reason of REASONS,
  with and without checksum verification;
* the C batch parser (pystack.io.batch.RxParser, what the data path runs) gives the same
  segment or refuses the frame for the same reason, alone and as a batch of two copies
  (GRO merging) against pystack.wire.frame.coalesce;
* the C checksum check (ps_csum_verify) agrees with the Python one on every frame the
  parser accepts;
* a parsed segment built again (build_frame) parses to the same segment.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from pystack.wire import REASONS, WireError
    from pystack.wire.frame import RxFrame, build_frame, coalesce, parse_frame
    from pystack.wire.segment import TcpSegment

# C code: not instrumented, compared with the Python parser instead.
from pystack.io._xsk import ffi  # noqa: E402

from pystack.io.batch import GRO_ALL, REASON, RxParser  # noqa: E402
from pystack.io.xsk import csum_ok  # noqa: E402
from pystack.xdp.abi import META_CSUM_OK  # noqa: E402

SLOT = 4096
MAX_FRAME = 1600
_parser = RxParser(2)
_area = bytearray(SLOT * 2)
_descs = ffi.new("struct ps_desc[]", 2)
_cbuf = ffi.from_buffer("uint8_t[]", _area)


def c_parse(frames: list[bytes], mode: int) -> tuple[list[TcpSegment], list[str]]:
    for i, f in enumerate(frames):
        _area[i * SLOT : i * SLOT + len(f)] = f
        _descs[i].addr = i * SLOT
        _descs[i].len = len(f)
        _descs[i].flags = META_CSUM_OK
        _descs[i].syncookie = 0
    segs, _macs, errors = _parser.parse(_cbuf, _descs, len(frames), mode)
    return segs, [REASON[e] for e in errors]


def py_parse(frames: list[bytes], mode: int) -> tuple[list[TcpSegment], list[str]]:
    rx: list[RxFrame] = []
    errors: list[str] = []
    for f in frames:
        try:
            p = parse_frame(f, verify_checksums=False)
        except WireError as e:
            errors.append(e.reason)
            continue
        p.segment.payload = bytes(p.segment.payload)
        rx.append(RxFrame(p.segment, p.eth_src, META_CSUM_OK))
    return [r.segment for r in coalesce(rx, mode)], errors


def check(data: bytes) -> None:
    frame = data[:MAX_FRAME]
    # 1. the Python parser: a segment or WireError, nothing else
    try:
        parsed = parse_frame(frame, verify_checksums=False)
    except WireError as e:
        assert e.reason in REASONS, e.reason
        parsed = None
    verified = True
    try:
        parse_frame(frame, verify_checksums=True)
    except WireError as e:
        assert e.reason in REASONS, e.reason
        verified = False
    # 2. the C batch parser agrees, alone and with GRO over two copies
    for frames, mode in (([frame], 0), ([frame, frame], GRO_ALL)):
        c_segs, c_err = c_parse(frames, mode)
        p_segs, p_err = py_parse(frames, mode)
        assert c_err == p_err, f"refusals differ: C {c_err} Python {p_err}"
        assert c_segs == p_segs, f"segments differ:\nC  {c_segs}\nPy {p_segs}"
    if parsed is None:
        return
    # 3. the C checksum check agrees with the Python one
    assert csum_ok(frame) == verified, f"checksums: C {csum_ok(frame)} Python {verified}"
    # 4. build it again: the same segment
    seg = parsed.segment
    seg.payload = bytes(seg.payload)
    try:
        again = build_frame(seg, parsed.eth_src, parsed.eth_dst)
    except ValueError:
        return  # a segment the builder refuses (say, options it cannot encode): fine
    assert parse_frame(again, verify_checksums=True).segment == seg, "rebuilt frame differs"


def main() -> None:
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
