"""Coverage-guided fuzzing of the wire parser with atheris (libFuzzer), differential against
the C batch parser and C checksums (tests/reliability/fuzz_wire.py says what must hold).

libFuzzer ends its process when the run is over, so the fuzzer runs as a child process:
a bounded number of inputs (PYSTACK_FUZZ_RUNS, default below) from a fixed seed, starting
from a corpus of valid frames. Complements tests/unit/test_wire_fuzz.py (hypothesis) and
tests/integration/test_xdp_program.py (the XDP program under BPF_PROG_TEST_RUN)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pystack.wire.frame import build_frame
from pystack.wire.segment import ACK, FIN, PSH, RST, SYN, URG, TcpOptions, TcpSegment
from tests.reliability.support import report

RUNS = int(os.environ.get("PYSTACK_FUZZ_RUNS", "100000"))
SEED = 5961
ROOT = Path(__file__).resolve().parents[2]
MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")

pytestmark = pytest.mark.timeout(300)


def seeds() -> list[bytes]:
    """Valid frames covering every option kind, flags, payload sizes, IP options and
    Ethernet padding: the fuzzer mutates from there."""

    def seg(flags: int, opts: TcpOptions | None = None, payload: bytes = b"",
            urgent: int = 0) -> TcpSegment:
        return TcpSegment(0xC6120002, 0xC6120001, 40000, 7, 0xFFFFFF00, 0x10, flags, 512,
                          urgent=urgent, options=opts or TcpOptions(), payload=payload)

    frames = [build_frame(s, MAC_B, MAC_A) for s in (
        seg(SYN, TcpOptions(mss=1460, sack_permitted=True, wscale=7, timestamp=(1, 0))),
        seg(SYN, TcpOptions(mss=1460, fastopen_cookie=b"\x01" * 8)),
        seg(SYN, TcpOptions(fastopen_cookie=b"")),
        seg(SYN | ACK, TcpOptions(mss=536, wscale=14, timestamp=(5, 1))),
        seg(ACK, TcpOptions(timestamp=(7, 8), sack_blocks=[(1, 2), (3, 4), (5, 6)])),
        seg(ACK | PSH, TcpOptions(timestamp=(9, 10)), payload=bytes(range(256)) * 4),
        seg(ACK | URG, payload=b"!", urgent=1),
        seg(FIN | ACK),
        seg(RST),
    )]
    frames = [bytes(f) for f in frames]
    # IP options (IHL 6: one NOP word) and Ethernet padding after the IP packet
    f = bytearray(frames[-1])
    f[14] = 0x46
    f[16:18] = (int.from_bytes(f[16:18], "big") + 4).to_bytes(2, "big")
    frames.append(bytes(f[:34] + b"\x01\x01\x01\x00" + f[34:]))
    frames.append(frames[-2] + b"\x00" * 6)
    return frames


def test_wire_parser_under_coverage_guided_fuzzing(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, f in enumerate(seeds()):
        (corpus / f"seed{i}").write_bytes(f)
    n_seeds = len(seeds())
    t0 = time.monotonic()
    p = subprocess.run(
        [sys.executable, "-m", "tests.reliability.fuzz_wire", f"-runs={RUNS}", f"-seed={SEED}",
         "-max_len=1600", "-len_control=0", "-print_final_stats=1",
         f"-artifact_prefix={tmp_path}/", str(corpus)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
        text=True, timeout=280)
    secs = time.monotonic() - t0
    err = p.stderr
    done = re.search(r"#(\d+)\s+DONE\s+cov: (\d+) ft: (\d+) corp: (\d+)/(\d+)b", err)
    crashes = sorted(x.name for x in tmp_path.iterdir() if x.name.startswith("crash-"))
    report("fuzz atheris wire parser", runs=RUNS, seed=SEED, seeds=n_seeds,
           coverage_edges=done.group(2) if done else None,
           features=done.group(3) if done else None,
           corpus_end=done.group(4) if done else None, crashes=len(crashes),
           seconds=round(secs, 1), exit_code=p.returncode)
    tail = "\n".join(err.splitlines()[-40:])
    assert p.returncode == 0 and not crashes, f"fuzzer found a failing input:\n{tail}"
    assert done and int(done.group(1)) == RUNS, f"the fuzzer did not finish its runs:\n{tail}"
    assert int(done.group(4)) > n_seeds, "coverage guidance found nothing new"
