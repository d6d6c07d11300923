"""`pystackctl demo` (the README's first command) runs as a user runs it and says OK."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_and_exits_0_within_a_minute():
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "ctl.main", "demo"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    took = time.monotonic() - t
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "demo OK" in out.splitlines()[-1]
    assert "SHA-256 matches the file" in out
    assert "three requests, one TCP connection" in out
    assert "ESTAB" in out and "rtt:" in out  # pystackctl ss -ti output
    assert "pystack_tcp_passive_opens_total" in out
    assert "Fast Open:" in out
    assert "pystack: detached from" in out
    assert "none; port 80 is the kernel's again" in out
    assert took < 60, f"the demo took {took:.0f}s"
