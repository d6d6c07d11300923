"""Bulk transfer, one flow, both directions, pystack vs the kernel on the same veth bed:

  rx  a kernel sender in the peer namespace streams for SECONDS to
        pystack  the discard app on an owned port (XDP -> AF_XDP -> engine), and to
        kernel   a kernel socket reading to EOF on another port of the same address;
  tx  a kernel socket in the peer namespace reads to EOF what is streamed for SECONDS by
        pystack  a pystack client (engine -> AF_XDP tx), and by
        kernel   a kernel client in the stack namespace.

TSO/GSO and checksum offload are off on both veths (MTU-sized frames, the fair baseline
for AF_XDP). Each side of each direction streams RUNS x SECONDS (3 x 10 s: 30 s, the
median run reported), pystack and kernel in turn. Time runs from connect to the
receiver's close (EOF seen by the sender), so it includes the handshake and the close.
Then, for reference, the kernel alone on a second bed with the veths' default offloads
(TSO/GSO and checksum offload on: 64 KB segments cross the pair), same runs, both ways.
`--profile DIR` runs each pystack process under py-spy and leaves collapsed stacks
(DIR/bulk-rx.txt, DIR/bulk-tx.txt)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from pystack.testbed import Testbed

PYSTACK_PORT = 5001
KERNEL_PORT = 5002
SINK_PORT = 5003
SECONDS = 10.0
RUNS = 3
CHUNK = 1 << 20


def _send_for(bed: Testbed, port: int, seconds: float) -> float:
    """Stream to bed.stack.ip:port for `seconds`, then FIN; bits/s until the receiver's FIN."""
    c = bed.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
    c.settimeout(120)
    buf = b"\x5a" * CHUNK
    t = time.monotonic()
    end = t + seconds
    c.connect((bed.stack.ip, port))
    sent = 0
    while time.monotonic() < end:
        sent += c.send(buf)
    c.shutdown(socket.SHUT_WR)
    assert c.recv(1) == b"", "receiver sent data"
    dt = time.monotonic() - t
    c.close()
    return sent * 8 / dt


KERNEL_SINK = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(); print("ready", flush=True)
while True:
    c, _ = s.accept()
    n = 0
    while b := c.recv(1 << 20):
        n += len(b)
    c.close()
    print(n, flush=True)
"""

# pystack discard server; "ready" once SIGTERM stops it cleanly (the loop's handlers are in).
PYSTACK_SINK = """
import sys
from pystack.apps import Discard
from pystack.host import Host
h = Host(sys.argv[1])
h.serve(int(sys.argv[2]), Discard)
h.run_forever(on_ready=lambda: print("ready", flush=True))
h.close()
"""

# One pystack client: connect, write for SECONDS, FIN, wait for the receiver's FIN.
PYSTACK_SOURCE = """
import json, sys, time
from pystack.host import Host
iface, peer, port, secs = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
buf = memoryview(b"\\x5a" * (1 << 20))
h = Host(iface)
st = {"sent": 0, "end": 0.0, "fin": False}
def on_event(conn, kind):
    while not st["fin"] and kind in ("connected", "writable", "drained"):
        if time.monotonic() >= deadline:
            st["fin"] = True
            conn.shutdown_write()
            break
        n = conn.send(buf)
        if n <= 0:
            return
        st["sent"] += n
    if kind == "readable" or kind == "closed":
        try:
            done = kind == "closed" or conn.recv(1 << 16) == b""
        except (BlockingIOError, OSError):
            done = kind == "closed"
        if done and not st["end"]:
            st["end"] = time.monotonic()
            h.stop()
t0 = time.monotonic()
deadline = t0 + secs
c = h.connect(peer, port)
c.on_event = on_event
h.run_forever()
print(json.dumps({"seconds": st["end"] - t0, "sent": st["sent"]}), flush=True)
h.close()
"""

KERNEL_SOURCE = """
import json, socket, sys, time
peer, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
buf = memoryview(b"\\x5a" * (1 << 20))
c = socket.socket()
t0 = time.monotonic()
c.connect((peer, port))
sent = 0
while time.monotonic() < t0 + secs:
    sent += c.send(buf)
c.shutdown(socket.SHUT_WR)
assert c.recv(1) == b""
print(json.dumps({"seconds": time.monotonic() - t0, "sent": sent}), flush=True)
"""


def _py(profile: str | None, name: str) -> list[str]:
    if profile is None:
        return [sys.executable]
    spy = str(Path(sys.executable).with_name("py-spy"))
    return [spy, "record", "--nonblocking", "-r", "250", "-f", "raw", "-o",
            f"{profile}/bulk-{name}.txt", "--", sys.executable]


def _source(bed: Testbed, argv: list[str]) -> float:
    """Run a stack-side sender; its bits/s."""
    p = bed.spawn("stack", argv, stdout=subprocess.PIPE, text=True)
    out, _ = p.communicate(timeout=300)
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"sender failed (rc={p.returncode}): {out!r}")
    r = json.loads(lines[-1])
    if not r["sent"] or not r["seconds"]:
        raise RuntimeError(f"sender sent nothing: {r}")
    return float(r["sent"]) * 8 / float(r["seconds"])


def _ready(p: subprocess.Popen[str]) -> None:
    assert p.stdout is not None
    line = p.stdout.readline()
    while line.startswith("py-spy") or line == "\n":
        line = p.stdout.readline()
    assert line.startswith("ready"), f"process did not start: {line!r}"


def run(seconds: float = SECONDS, runs: int = RUNS, profile: str | None = None,
        only: str | None = None) -> dict[str, object]:
    rx_p: list[float] = []
    rx_k: list[float] = []
    tx_p: list[float] = []
    tx_k: list[float] = []
    with Testbed.create() as bed:
        bed.run("stack", ["ethtool", "-K", bed.stack.ifname, "tx", "off", "tso", "off",
                          "gso", "off"])
        # rx: kernel sender -> pystack discard / kernel sink on the stack side.
        sink = bed.spawn("stack", _py(profile, "rx") + ["-c", PYSTACK_SINK, bed.stack.ifname,
                                                          str(PYSTACK_PORT)],
                         stdout=subprocess.PIPE, text=True)
        _ready(sink)
        ksink = bed.spawn("stack", [sys.executable, "-c", KERNEL_SINK, bed.stack.ip,
                                    str(KERNEL_PORT)], stdout=subprocess.PIPE, text=True)
        _ready(ksink)
        for _ in range(runs if only != "tx" else 0):
            rx_k.append(_send_for(bed, KERNEL_PORT, seconds))
            rx_p.append(_send_for(bed, PYSTACK_PORT, seconds))
        os.killpg(sink.pid, signal.SIGINT)  # the host detaches, a profiler writes its file
        sink.wait(30)
        # tx: pystack client / kernel client on the stack side -> kernel sink on the peer.
        psink = bed.spawn("peer", [sys.executable, "-c", KERNEL_SINK, bed.peer.ip,
                                   str(SINK_PORT)], stdout=subprocess.PIPE, text=True)
        _ready(psink)
        for i in range(runs if only != "rx" else 0):
            tx_k.append(_source(bed, [sys.executable, "-c", KERNEL_SOURCE, bed.peer.ip,
                                      str(SINK_PORT), str(seconds)]))
            prof = _py(profile, "tx" if i == 0 else f"tx{i}")
            tx_p.append(_source(bed, prof + ["-c", PYSTACK_SOURCE, bed.stack.ifname,
                                             bed.peer.ip, str(SINK_PORT), str(seconds)]))
    rx_d, tx_d = _kernel_defaults(seconds, runs, only) if profile is None else ([], [])
    out: dict[str, object] = {
        "name": "bulk",
        "conditions": f"one flow, {runs} x {seconds:.0f} s per side and direction (median), "
                      "veth, TSO/GSO/tx-csum off on both veths, AF_XDP copy mode; kernel "
                      "defaults: a second bed, offloads on, kernel only",
    }
    for d, p, k, kd in (("rx", rx_p, rx_k, rx_d), ("tx", tx_p, tx_k, tx_d)):
        if p:
            pm, km = statistics.median(p), statistics.median(k)
            out |= {f"{d}_pystack_mbit_s": round(pm / 1e6), f"{d}_kernel_mbit_s": round(km / 1e6),
                    f"{d}_ratio": round(pm / km, 3)}
            if kd:
                kdm = statistics.median(kd)
                out |= {f"{d}_kernel_defaults_mbit_s": round(kdm / 1e6),
                        f"{d}_ratio_vs_kernel_defaults": round(pm / kdm, 3)}
    out["target_ratio"] = 0.45
    return out


def _kernel_defaults(seconds: float, runs: int, only: str | None
                     ) -> tuple[list[float], list[float]]:
    """The kernel both ways on a bed with the veths' default offloads (TSO/GSO on)."""
    rx: list[float] = []
    tx: list[float] = []
    with Testbed.create(peer_offload=True, stub=False) as bed:  # no XDP: no veth copies
        ksink = bed.spawn("stack", [sys.executable, "-c", KERNEL_SINK, bed.stack.ip,
                                    str(KERNEL_PORT)], stdout=subprocess.PIPE, text=True)
        _ready(ksink)
        psink = bed.spawn("peer", [sys.executable, "-c", KERNEL_SINK, bed.peer.ip,
                                   str(SINK_PORT)], stdout=subprocess.PIPE, text=True)
        _ready(psink)
        for _ in range(runs):
            if only != "tx":
                rx.append(_send_for(bed, KERNEL_PORT, seconds))
            if only != "rx":
                tx.append(_source(bed, [sys.executable, "-c", KERNEL_SOURCE, bed.peer.ip,
                                        str(SINK_PORT), str(seconds)]))
    return rx, tx


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bulk")
    ap.add_argument("seconds", nargs="?", type=float, default=SECONDS,
                    help=f"per run (default {SECONDS:.0f})")
    ap.add_argument("--runs", type=int, default=RUNS)
    ap.add_argument("--profile", metavar="DIR", help="run pystack under py-spy, stacks to DIR")
    ap.add_argument("--only", choices=["rx", "tx"], help="one direction only")
    args = ap.parse_args(argv)
    print(json.dumps(run(args.seconds, args.runs, args.profile, args.only), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
