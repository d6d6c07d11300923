"""1-byte request/response latency over one connection (netperf TCP_RR), pystack vs kernel.

Same veth bed, same client, one run. The client (bench/common.py's C tool, peer
namespace, TCP_NODELAY) keeps one connection and loops: send 1 byte, read the 1-byte
echo; each round trip is timed with CLOCK_MONOTONIC into a 100 ns histogram. Servers
(both TCP_NODELAY, both echo):
  pystack  a Host on the stack veth (XDP -> AF_XDP -> engine), bench/common.py's echo app;
  kernel   the C tool's epoll echo server in the stack namespace, pystack detached.
Each side runs WARMUP + DURATION seconds; latencies inside the DURATION window count.
Reported: p50/p90/p99/p99.9 and mean in microseconds, round trips per second, and the
ratios pystack/kernel (issue 7's target: p99 <= 2x the kernel's). The kernel client's
own share of each round trip is in both figures alike. Provisional on a shared 2-CPU VM.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.common import (
    KERNEL_PORT,
    PYSTACK_PORT,
    compile_tool,
    last_json,
    ratio,
    start_server,
    timed_main,
)
from pystack.testbed import Testbed

WARMUP = 1.0
DURATION = 10.0
FIGURES = ("p50_us", "p90_us", "p99_us", "p999_us", "mean_us")


def _measure(bed: Testbed, exe: Path, kind: str, warmup: float,
             duration: float) -> dict[str, float]:
    srv = start_server(bed, kind, exe)
    port = KERNEL_PORT if kind == "kernel" else PYSTACK_PORT
    try:
        t_from = time.monotonic() + 0.2 + warmup
        t_to = t_from + duration
        out = bed.run("peer", [str(exe), "rr", bed.stack.ip, str(port), f"{t_from:.6f}",
                               f"{t_to:.6f}"], timeout=warmup + duration + 60)
    finally:
        srv.stop()
    r = last_json(out.stdout, "rr client")
    res = {k: float(r[k]) for k in FIGURES}  # type: ignore[arg-type]
    res["rps"] = float(r["n"]) / float(r["seconds"])  # type: ignore[arg-type]
    print(f"rr: {kind}: p50 {res['p50_us']:.1f} us, p99 {res['p99_us']:.1f} us",
          file=sys.stderr, flush=True)
    return res


def run(runs: int = 1, warmup: float = WARMUP, duration: float = DURATION) -> dict[str, object]:
    k: list[dict[str, float]] = []
    p: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as d, Testbed.create() as bed:
        exe = compile_tool(Path(d))
        for _ in range(runs):  # alternate, so that background load hits both alike
            k.append(_measure(bed, exe, "kernel", warmup, duration))
            p.append(_measure(bed, exe, "pystack", warmup, duration))
    km = {f: statistics.median(r[f] for r in k) for f in k[0]}
    pm = {f: statistics.median(r[f] for r in p) for f in p[0]}
    out: dict[str, object] = {
        "name": "rr",
        "conditions": f"veth pair in namespaces, AF_XDP copy mode; one connection, 1-byte "
                      f"request/response, TCP_NODELAY both ends, C client in the peer "
                      f"namespace, C epoll echo server for the kernel; {duration:.0f}s "
                      f"after {warmup:.0f}s warm-up, median of {runs}; provisional (shared "
                      f"2-CPU VM)",
    }
    for f in FIGURES:
        out[f"pystack_{f}"] = round(pm[f], 1)
        out[f"kernel_{f}"] = round(km[f], 1)
    out["pystack_rps"] = round(pm["rps"])
    out["kernel_rps"] = round(km["rps"])
    out["ratio_p50"] = ratio(pm["p50_us"], km["p50_us"], 2)
    out["ratio_p99"] = ratio(pm["p99_us"], km["p99_us"], 2)
    out["ratio_rps"] = ratio(pm["rps"], km["rps"])
    r99 = out["ratio_p99"]
    out["rows"] = [
        {"condition": "p50 latency, us (lower is better)", "pystack": out["pystack_p50_us"],
         "kernel": out["kernel_p50_us"], "ratio": out["ratio_p50"], "target": "",
         "met": None},
        {"condition": "p99 latency, us (lower is better)", "pystack": out["pystack_p99_us"],
         "kernel": out["kernel_p99_us"], "ratio": r99, "target": "<= 2.0",
         "met": r99 <= 2.0 if isinstance(r99, float) else None},
        {"condition": "round trips/s", "pystack": out["pystack_rps"],
         "kernel": out["kernel_rps"], "ratio": out["ratio_rps"], "target": "", "met": None},
    ]
    return out


def main(argv: list[str] | None = None) -> int:
    return timed_main("python -m bench.rr", run, WARMUP, DURATION, argv)


if __name__ == "__main__":
    sys.exit(main())
