"""XDP tax: what pystack's XDP program costs the kernel's own TCP on a port pystack does
not own. One flow, a kernel sender in the peer namespace streams for SECONDS to a kernel
socket on the stack side, with pystack's data path (XDP program + AF_XDP socket, another
port owned) attached to the stack's veth, with a two-instruction XDP_PASS program instead,
and with nothing, in turn on the same bed; median of RUNS each. Every frame of the flow
goes through the program's parse and its owned-port lookup, then XDP_PASS. Offloads as in
the other benchmarks (TSO/GSO/tx-csum off on the sender's veth).

On a veth, any native XDP program costs the kernel a copy of every frame the peer's TCP
sends (its skbs are clones, so veth_xdp_rcv_skb re-builds each one with XDP headroom):
`ratio_vs_xdp_pass` separates what pystack's program adds from that."""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys

from pystack.io._xsk import lib

from bench.bulk import KERNEL_SINK, _ready, _send_for
from pystack.iface.datapath import Datapath
from pystack.testbed import Testbed

PORT = 5010  # the kernel's: never owned
OWNED = 5011  # owned by pystack while attached, so the port table is not empty
SECONDS = 4.0  # per flow: a 200 MB flow took ~0.3 s and its ratio swung 0.82-1.03
RUNS = 3


def run(seconds: float = SECONDS, runs: int = RUNS) -> dict[str, object]:
    attached: list[float] = []
    stub: list[float] = []
    detached: list[float] = []
    with Testbed.create() as bed:
        sink = bed.spawn("stack", [sys.executable, "-c", KERNEL_SINK, bed.stack.ip, str(PORT)],
                         stdout=subprocess.PIPE, text=True)
        _ready(sink)
        _send_for(bed, PORT, 0.2)  # warm up: ARP, socket buffers
        pass_prog = lib.ps_xdp_pass_prog()
        if pass_prog < 0:
            raise OSError(-pass_prog, "cannot load an XDP_PASS program")
        with bed.enter("stack"):
            dp = Datapath(bed.stack.ifname)
        try:
            dp.own_port(OWNED)
            ifindex = dp.ifindex
            for _ in range(runs):
                assert bed.xdp_prog_id("stack"), "pystack's program is not attached"
                attached.append(_send_for(bed, PORT, seconds))
                dp.program.detach(ifindex)
                with bed.enter("stack"):
                    link = lib.ps_xdp_link_create(pass_prog, socket.if_nametoindex(
                        bed.stack.ifname), 0)
                if link < 0:
                    raise OSError(-link, "cannot attach the XDP_PASS program")
                stub.append(_send_for(bed, PORT, seconds))
                os.close(link)
                assert not bed.xdp_prog_id("stack"), "a program is still attached"
                detached.append(_send_for(bed, PORT, seconds))
                with bed.enter("stack"):
                    dp.program.attach(bed.stack.ifname, dp.mode)
            passed = dp.program.actions()["pass"]
        finally:
            dp.close()
            os.close(pass_prog)
    a, p, d = (statistics.median(v) for v in (attached, stub, detached))
    return {
        "name": "xdp_tax",
        "conditions": f"one kernel flow to a port pystack does not own, {seconds:.0f} s, "
                      f"median of {runs} each, in turn; veth, TSO/GSO/tx-csum off on the "
                      "sender's veth; attached = pystack's XDP program + AF_XDP socket",
        "attached_mbit_s": round(a / 1e6),
        "xdp_pass_mbit_s": round(p / 1e6),
        "detached_mbit_s": round(d / 1e6),
        "ratio": round(a / d, 3),
        "ratio_vs_xdp_pass": round(a / p, 3),
        "frames_passed_by_xdp": passed,
        "target_ratio": 0.95,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.xdp_tax")
    ap.add_argument("seconds", nargs="?", type=float, default=SECONDS)
    ap.add_argument("--runs", type=int, default=RUNS)
    args = ap.parse_args(argv)
    print(json.dumps(run(args.seconds, args.runs), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
