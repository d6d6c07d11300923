"""`pystackctl demo`: a veth bed, pystack attached on one side, kernel clients on the other.

pystack serves echo on port 7 of the stack side's address while the stack-side kernel keeps
serving HTTP on port 8081 of the same address. A kernel client (the peer namespace's TCP)
talks to pystack's echo, 10 MB are echoed and checked, then curl and ping show the kernel's
own services untouched. Counters from the XDP program and the engine close the show.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
import time

from pystack.apps import Echo
from pystack.host import Host
from pystack.testbed import Testbed, sigterm_as_interrupt

ECHO = 7
KERNEL = 8081
SIZE = 10_000_000


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
            host = Host(bed.stack.ifname)
        with host:
            host.serve(ECHO, Echo)
            host.start()
            kernel_http = bed.spawn("stack", [sys.executable, "-m", "http.server", str(KERNEL),
                                              "--bind", bed.stack.ip],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            say(f"attached: pystack serves echo on {bed.stack.ip}:{ECHO}; "
                f"the kernel serves http on :{KERNEL}\n")
            ok = _echo_client(bed, host)
            ok = _kernel_services(bed) and ok
            mib = host.call(lambda: dict(host.engine.mib))
            host.stop()
            kernel_http.terminate()
            say("\nXDP actions:  " + _fmt(host.dp.program.actions()))
            say("XDP drops:    " + _fmt(host.dp.program.drops()))
            say("TCP (pystack): " + _fmt({k: v for k, v in mib.items() if k in (
                "PassiveOpens", "CurrEstab", "InSegs", "OutSegs", "RetransSegs", "OutRsts",
                "EstabResets")}))
    say(f"\ntorn down (namespaces, veth, XDP). {time.monotonic() - t0:.1f}s. "
        + ("demo OK" if ok else "demo FAILED"))
    return 0 if ok else 1


def _echo_client(bed: Testbed, host: Host) -> bool:
    c = bed.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
    c.settimeout(20)
    t = time.monotonic()
    c.connect((bed.stack.ip, ECHO))
    say(f"kernel client connected to pystack in {(time.monotonic() - t) * 1e3:.2f} ms "
        f"(from {c.getsockname()[0]}:{c.getsockname()[1]})")
    c.sendall(b"hello, pystack\n")
    reply = c.recv(100)
    say(f"  sent 'hello, pystack', echoed back: {reply!r}")
    info = host.call(lambda: next(iter(host.engine.connections.values())).tcp_info())
    keys = ("state", "rtt", "rto", "mss", "cwnd", "wscale", "options")
    say("  pystack's side (ss -ti): " + "  ".join(f"{k}:{info.get(k)}" for k in keys))
    data = os.urandom(SIZE)
    got = bytearray()
    t = time.monotonic()
    writer = threading.Thread(target=lambda: (c.sendall(data), c.shutdown(socket.SHUT_WR)))
    writer.start()
    while chunk := c.recv(1 << 20):
        got += chunk
    writer.join()
    dt = time.monotonic() - t
    c.close()
    same = hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    say(f"  echoed {SIZE / 1e6:.0f} MB in {dt:.2f}s ({SIZE * 8 / dt / 1e6:.0f} Mbit/s each way), "
        f"SHA-256 {'matches' if same else 'DIFFERS'}; pystack closed after its echo")
    return reply == b"hello, pystack\n" and same


def _kernel_services(bed: Testbed) -> bool:
    r = bed.run("peer", ["curl", "-sS", "--max-time", "5", "--retry", "20",
                         "--retry-connrefused", "--retry-delay", "0",
                         f"http://{bed.stack.ip}:{KERNEL}/"], check=False)
    say(f"\n$ curl http://{bed.stack.ip}:{KERNEL}/   (port left to the kernel)")
    say(f"  curl exit {r.returncode}, {len(r.stdout)} bytes of directory listing")
    ping = bed.run("peer", ["ping", "-c", "1", "-W", "2", bed.stack.ip], check=False)
    say(f"$ ping {bed.stack.ip}: {'ok' if ping.returncode == 0 else 'FAILED'} (ICMP and ARP "
        "stay with the kernel)")
    return r.returncode == 0 and ping.returncode == 0


def _fmt(d: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items() if v) or "none"
