"""Connect / request / response / close (netperf TCP_CRR), pystack vs the kernel.

Same veth bed, same load generator, one run. A transaction: the client connects, sends a
1-byte request, reads the 1-byte response and closes; the server echoes and closes after
the client's FIN (as netperf's TCP_CRR server: the TIME-WAIT stays with the client).

  client   bench/common.py's C tool in the peer namespace: THREADS blocking clients in a
           tight loop (1 = serial, 8 = concurrent); the peer has net.ipv4.tcp_tw_reuse=1
           and ip_local_port_range 1024-65000 so its TIME-WAIT sockets never run out of
           ports.
  pystack  a Host on the stack veth (XDP -> AF_XDP -> engine) whose app echoes and
           closes on EOF (bench/common.py, a dozen lines: the stack, not an app, is
           measured).
  kernel   the C tool's single-threaded epoll echo server in the stack namespace, with
           pystack detached (no XDP program on the stack veth); both set TCP_NODELAY.
Fast Open (RFC 7413): the client sends its request with sendto(MSG_FASTOPEN) (the peer's
net.ipv4.tcp_fastopen=1; its first connection fetches the cookie) against a pystack
listener with net.ipv4.tcp_fastopen=3 and TCP_FASTOPEN=QLEN; compared with the kernel
server without Fast Open (issue 7: "with Fast Open beat the kernel without it"). The kernel
server with Fast Open (the stack namespace's tcp_fastopen=3, TCP_FASTOPEN=QLEN) is
reported too, for reference.
SYN cookies: both servers again with net.ipv4.tcp_syncookies=2 (every SYN answered with a
cookie). pystack's XDP program then sends the SYN-ACK itself (XDP_TX) and the control plane
first hears of a connection at its cookie ACK; the kernel answers from its own stack.
pystack.xdp_synack=1: pystack again with Linux's default tcp_syncookies=1, its XDP program
answering SYNs and keeping each request for the control plane's SYN-ACK retransmission
(pystack/tcp/xdpsyn.py), against the kernel's default run.

Each measurement runs WARMUP + DURATION seconds; both client and server count the
transactions that complete inside the same DURATION window (CLOCK_MONOTONIC is shared by
namespaces). Reported: transactions/s seen by the client and connections/s closed by the
server, and the ratios pystack/kernel. Figures from a shared 2-CPU VM are provisional.
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
    Server,
    compile_tool,
    last_json,
    ratio,
    start_server,
    sysctl,
    timed_main,
)
from pystack.testbed import Testbed

FASTOPEN_QLEN = 1024
CONCURRENCY = (1, 8)
WARMUP = 1.0
DURATION = 5.0
RUNS = 3  # measurements per server and concurrency; the median is reported


# ---- orchestration ----
def _measure(bed: Testbed, exe: Path, srv: Server, port: int, threads: int, fastopen: bool,
             warmup: float, duration: float) -> dict[str, float]:
    t_from = time.monotonic() + 0.2 + warmup
    t_to = t_from + duration
    srv.window(t_from, t_to)
    out = bed.run("peer", [str(exe), "crr", bed.stack.ip, str(port), str(threads),
                           f"{t_from:.6f}", f"{t_to:.6f}", str(int(fastopen))],
                  timeout=warmup + duration + 60)
    c = last_json(out.stdout, "crr client")
    s = srv.report()
    secs = float(c["seconds"])  # type: ignore[arg-type]
    return {"client_cps": float(c["conns"]) / secs,  # type: ignore[arg-type]
            "server_cps": float(s["conns"]) / secs,  # type: ignore[arg-type]
            "fails": float(c["fails"]),  # type: ignore[arg-type]
            "mean_us": float(c["mean_us"])}  # type: ignore[arg-type]


def _series(bed: Testbed, exe: Path, kind: str, fastopen: bool, runs: int, warmup: float,
            duration: float, cookies: bool = False,
            xdp_synack: bool = False) -> dict[int, dict[str, float]]:
    """One server (kind, with or without Fast Open; with cookies, tcp_syncookies=2: every
    SYN answered with a cookie, by pystack's XDP program or the kernel) through every
    concurrency; medians."""
    if kind == "kernel":
        sysctl(bed, "stack", f"net.ipv4.tcp_fastopen={3 if fastopen else 1}",
               f"net.ipv4.tcp_syncookies={2 if cookies else 1}")
    own = (["net.ipv4.tcp_syncookies=2"] if cookies else []) + (
        ["pystack.xdp_synack=1"] if xdp_synack else [])
    srv = start_server(bed, kind, exe, FASTOPEN_QLEN if fastopen else 0, own)
    port = KERNEL_PORT if kind == "kernel" else PYSTACK_PORT
    try:
        if fastopen:  # the client's first Fast Open connection fetches the cookie
            _measure(bed, exe, srv, port, 1, True, 0.0, 0.3)
        out = {}
        for n in CONCURRENCY:
            rs = [_measure(bed, exe, srv, port, n, fastopen, warmup, duration)
                  for _ in range(runs)]
            out[n] = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
            print(f"crr: {kind}{' fastopen' if fastopen else ''}"
                  f"{' syncookies=2' if cookies else ''}"
                  f"{' xdp_synack' if xdp_synack else ''} x{n}: "
                  f"{out[n]['client_cps']:.0f}/s", file=sys.stderr, flush=True)
        if kind == "pystack":
            mib = srv.report().get("mib", {})
            out[0] = {k: float(v) for k, v in mib.items()  # type: ignore[union-attr]
                      if k.startswith("TCPFastOpen") or k in ("AttemptFails", "EstabResets",
                                                               "RetransSegs", "OutRsts")}
    finally:
        srv.stop()
    return out


def run(runs: int = RUNS, warmup: float = WARMUP, duration: float = DURATION) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as d, Testbed.create() as bed:
        exe = compile_tool(Path(d))
        sysctl(bed, "peer", "net.ipv4.tcp_tw_reuse=1", "net.ipv4.ip_local_port_range=1024 65000",
               "net.ipv4.tcp_fastopen=1")
        k = _series(bed, exe, "kernel", False, runs, warmup, duration)
        p = _series(bed, exe, "pystack", False, runs, warmup, duration)
        pf = _series(bed, exe, "pystack", True, runs, warmup, duration)
        kf = _series(bed, exe, "kernel", True, runs, warmup, duration)
        # Both with tcp_syncookies=2: pystack's SYN-ACKs leave from XDP (XDP_TX), the
        # handshake's state is made from the cookie ACK.
        pc = _series(bed, exe, "pystack", False, runs, warmup, duration, cookies=True)
        kc = _series(bed, exe, "kernel", False, runs, warmup, duration, cookies=True)
        # pystack.xdp_synack=1 (Linux semantics kept), against the kernel's default run.
        px = _series(bed, exe, "pystack", False, runs, warmup, duration, xdp_synack=True)
    out: dict[str, object] = {
        "name": "crr",
        "conditions": f"veth pair in namespaces, AF_XDP copy mode; C client in the peer "
                      f"namespace (blocking, 1 and 8 threads), C epoll echo server for the "
                      f"kernel; 1-byte request/response, client closes first; "
                      f"{duration:.0f}s after {warmup:.0f}s warm-up, median of {runs}; "
                      f"Fast Open: client MSG_FASTOPEN, server TCP_FASTOPEN={FASTOPEN_QLEN}; "
                      f"syncookies rows: both servers with net.ipv4.tcp_syncookies=2; "
                      f"xdp_synack rows: pystack.xdp_synack=1 vs the kernel's default; "
                      f"provisional (shared 2-CPU VM)",
    }
    for n in CONCURRENCY:
        tag = "serial" if n == 1 else f"c{n}"
        out |= {
            f"{tag}_pystack_cps": round(p[n]["client_cps"]),
            f"{tag}_kernel_cps": round(k[n]["client_cps"]),
            f"{tag}_ratio": ratio(p[n]["client_cps"], k[n]["client_cps"]),
            f"{tag}_pystack_server_cps": round(p[n]["server_cps"]),
            f"{tag}_kernel_server_cps": round(k[n]["server_cps"]),
            f"{tag}_pystack_mean_us": round(p[n]["mean_us"], 1),
            f"{tag}_kernel_mean_us": round(k[n]["mean_us"], 1),
            f"{tag}_fastopen_pystack_cps": round(pf[n]["client_cps"]),
            f"{tag}_fastopen_pystack_server_cps": round(pf[n]["server_cps"]),
            f"{tag}_fastopen_ratio_vs_kernel_plain": ratio(pf[n]["client_cps"],
                                                           k[n]["client_cps"]),
            f"{tag}_fastopen_kernel_cps": round(kf[n]["client_cps"]),
            f"{tag}_fastopen_ratio_vs_kernel_fastopen": ratio(pf[n]["client_cps"],
                                                              kf[n]["client_cps"]),
            f"{tag}_syncookies_pystack_cps": round(pc[n]["client_cps"]),
            f"{tag}_syncookies_kernel_cps": round(kc[n]["client_cps"]),
            f"{tag}_syncookies_ratio": ratio(pc[n]["client_cps"], kc[n]["client_cps"]),
            f"{tag}_xdp_synack_pystack_cps": round(px[n]["client_cps"]),
            f"{tag}_xdp_synack_ratio": ratio(px[n]["client_cps"], k[n]["client_cps"]),
            f"{tag}_client_fails": int(p[n]["fails"] + k[n]["fails"] + pf[n]["fails"]
                                       + kf[n]["fails"] + pc[n]["fails"] + kc[n]["fails"]
                                       + px[n]["fails"]),
        }
    out["pystack_fastopen_mib"] = {k: int(v) for k, v in pf.get(0, {}).items()}
    out["rows"] = [
        {"condition": "serial, transactions/s", "pystack": out["serial_pystack_cps"],
         "kernel": out["serial_kernel_cps"], "ratio": out["serial_ratio"], "target": ">= 0.9",
         "met": _met(out["serial_ratio"], 0.9)},
        {"condition": "8 concurrent, transactions/s", "pystack": out["c8_pystack_cps"],
         "kernel": out["c8_kernel_cps"], "ratio": out["c8_ratio"], "target": "",
         "met": None},
        {"condition": "serial, pystack Fast Open vs kernel without",
         "pystack": out["serial_fastopen_pystack_cps"], "kernel": out["serial_kernel_cps"],
         "ratio": out["serial_fastopen_ratio_vs_kernel_plain"], "target": "> 1.0",
         "met": _met(out["serial_fastopen_ratio_vs_kernel_plain"], 1.0, strict=True)},
        {"condition": "8 concurrent, pystack Fast Open vs kernel without",
         "pystack": out["c8_fastopen_pystack_cps"], "kernel": out["c8_kernel_cps"],
         "ratio": out["c8_fastopen_ratio_vs_kernel_plain"], "target": "> 1.0",
         "met": _met(out["c8_fastopen_ratio_vs_kernel_plain"], 1.0, strict=True)},
        {"condition": "serial, both with Fast Open (reference)",
         "pystack": out["serial_fastopen_pystack_cps"],
         "kernel": out["serial_fastopen_kernel_cps"],
         "ratio": out["serial_fastopen_ratio_vs_kernel_fastopen"], "target": "", "met": None},
        {"condition": "serial, both with tcp_syncookies=2 (pystack: SYN-ACK from XDP)",
         "pystack": out["serial_syncookies_pystack_cps"],
         "kernel": out["serial_syncookies_kernel_cps"],
         "ratio": out["serial_syncookies_ratio"], "target": "", "met": None},
        {"condition": "8 concurrent, both with tcp_syncookies=2",
         "pystack": out["c8_syncookies_pystack_cps"],
         "kernel": out["c8_syncookies_kernel_cps"],
         "ratio": out["c8_syncookies_ratio"], "target": "", "met": None},
        {"condition": "serial, pystack.xdp_synack=1 (SYN-ACK from XDP, request kept) vs "
                      "the kernel's default",
         "pystack": out["serial_xdp_synack_pystack_cps"], "kernel": out["serial_kernel_cps"],
         "ratio": out["serial_xdp_synack_ratio"], "target": "", "met": None},
        {"condition": "8 concurrent, pystack.xdp_synack=1 vs the kernel's default",
         "pystack": out["c8_xdp_synack_pystack_cps"], "kernel": out["c8_kernel_cps"],
         "ratio": out["c8_xdp_synack_ratio"], "target": "", "met": None},
    ]
    return out


def _met(r: object, target: float, strict: bool = False) -> bool | None:
    if not isinstance(r, float | int):
        return None
    return r > target if strict else r >= target


def main(argv: list[str] | None = None) -> int:
    return timed_main("python -m bench.crr", run, WARMUP, DURATION, argv, RUNS)


if __name__ == "__main__":
    sys.exit(main())
