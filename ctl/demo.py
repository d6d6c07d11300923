"""`pystackctl demo`: a veth bed, pystack attached on one side, kernel clients on the other.

Data-path stage: pystack owns port 8080 and answers every connection itself (as a closed
port does, RFC 9293 §3.10.7.1) while the stack-side kernel keeps serving port 8081 on the
same address. The demo shows that the answer on 8080 came from Python (the stack-side
kernel sent nothing), that 8081 and ICMP still reach the kernel, and the XDP counters.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

from pystack.iface.datapath import Datapath
from pystack.stack import RefuseAll, Stack
from pystack.testbed import Testbed, sigterm_as_interrupt

OWNED = 8080
KERNEL = 8081


def say(msg: str) -> None:
    print(msg, flush=True)


def run_demo() -> int:
    t0 = time.monotonic()
    sigterm_as_interrupt()
    say("pystack demo: building a veth pair between two network namespaces")
    with Testbed.create() as bed:
        say(f"  stack side {bed.stack.netns} {bed.stack.ifname} {bed.stack.ip}")
        say(f"  peer side  {bed.peer.netns} {bed.peer.ifname} {bed.peer.ip}")
        say("compiling and attaching the XDP program (bcc), opening the AF_XDP socket")
        with bed.enter("stack"):
            dp = Datapath(bed.stack.ifname)
        with dp:
            dp.own_port(OWNED)
            handler = RefuseAll()
            stack = Stack(dp, handler)
            loop = threading.Thread(target=_loop, args=(stack,), daemon=True)
            loop.start()
            kernel_http = bed.spawn("stack", [sys.executable, "-m", "http.server", str(KERNEL),
                                              "--bind", bed.stack.ip],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            say(f"attached: pystack owns {bed.stack.ip}:{OWNED}; the kernel serves :{KERNEL}")
            before = bed.snmp("stack")["OutRsts"]
            r = _curl(bed, OWNED)
            after = bed.snmp("stack")["OutRsts"]
            say(f"\n$ curl http://{bed.stack.ip}:{OWNED}/   (port owned by pystack)")
            say(f"  curl exit {r.returncode}: {r.stderr.strip().splitlines()[-1:]}")
            say(f"  RSTs sent by pystack: {handler.out_rsts}; by the stack-side kernel: "
                f"{after - before}")
            ok = r.returncode == 7 and handler.out_rsts >= 1 and after == before
            r = _curl(bed, KERNEL, wait_for_server=True)
            say(f"\n$ curl http://{bed.stack.ip}:{KERNEL}/   (port left to the kernel)")
            say(f"  curl exit {r.returncode}, {len(r.stdout)} bytes of directory listing")
            ok = ok and r.returncode == 0
            ping = bed.run("peer", ["ping", "-c", "1", "-W", "2", bed.stack.ip], check=False)
            say(f"\n$ ping {bed.stack.ip}: {'ok' if ping.returncode == 0 else 'FAILED'}")
            ok = ok and ping.returncode == 0
            stack.stop()
            loop.join(timeout=5)
            kernel_http.terminate()
            say("\nXDP actions: " + _fmt(dp.program.actions()))
            say("XDP drops:   " + _fmt(dp.program.drops()))
            say(f"AF_XDP: {dp.stats.rx_frames} frames to Python, {dp.stats.tx_frames} sent")
    say(f"\ntorn down (namespaces, veth, XDP). {time.monotonic() - t0:.1f}s. "
        + ("demo OK" if ok else "demo FAILED"))
    return 0 if ok else 1


def _loop(stack: Stack) -> None:
    while not stack._stopping:
        stack.step(0.05)


def _curl(bed: Testbed, port: int, wait_for_server: bool = False) -> subprocess.CompletedProcess:
    args = ["curl", "-sS", "--max-time", "5", f"http://{bed.stack.ip}:{port}/"]
    if wait_for_server:  # the kernel's http.server may still be starting: curl retries
        args[1:1] = ["--retry", "20", "--retry-connrefused", "--retry-delay", "0"]
    return bed.run("peer", args, check=False)


def _fmt(d: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items() if v) or "none"
