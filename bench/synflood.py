"""A SYN flood against a listener with SYN cookies always on, pystack vs the kernel.

Same veth bed, same generator, one run, two phases (on two beds, below):
  pystack  a Host (net.ipv4.tcp_syncookies=2) serves PORT: XDP answers every SYN with a
           cookie SYN-ACK by XDP_TX; the ACKs of legitimate clients reach Python.
  kernel   pystack gone (its XDP link dies with it), a kernel listener on PORT in the stack
           namespace with the namespace's net.ipv4.tcp_syncookies=2.
The generator is a peer-side AF_XDP socket pinned to one CPU, sending Linux-like SYNs (MSS,
SACK, timestamps, window scale) from FLOOD_SRCS addresses nobody owns and random ports, as
fast as it can for DURATION seconds: every UMEM frame is written once with its own SYN,
then the frames are sent over and over. SYNs delivered: what the generator sent less
what the peer veth dropped because the stack veth's rx ring was full (drops past the ring,
in XDP or the kernel's backlog, count against the receiver). The peer's kernel drops the
SYN-ACKs to those addresses and counts them (Ip InAddrErrors): SYN-ACKs received.
Meanwhile a kernel client in the peer namespace, on the other CPUs, connects, reads the
byte the server's application sends on accept, and resets, in a loop (handshakes/s during
the flood); the listener's process CPU time is read from /proc/<pid>/stat. The kernel
answers SYNs in softirq, outside any process: the machine-wide softirq+system CPU
(/proc/stat, in CPUs) is reported for both. Figures are provisional on a shared 2-CPU VM.

Queues. With XDP attached a veth receives into one 256-slot ring per rx queue, filled by
whoever sends; the generator keeps it full, so on a one-queue bed the legitimate client's
packets mostly find no room (without XDP the kernel queues each sending CPU's packets on
that CPU's own backlog instead). The main bed therefore has one rx queue per CPU with XPS
(CPU i sends on queue i, as multi-queue NIC drivers set up), pystack serves every queue
(pystack/iface/datapath.py), and the generator owns its CPU's queue; the one-queue run is
reported too, for reference.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import time

from pystack.testbed import Testbed
from pystack.wire.segment import ip_to_int

PORT = 7070
FLOOD_SRCS = [f"198.18.0.{i}" for i in range(100, 251)]
DURATION = 5.0
QUEUES = min(len(os.sched_getaffinity(0)), 8)  # rx queues of the main bed: one per CPU
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _mac(s: str) -> bytes:
    return bytes.fromhex(s.replace(":", ""))


# ---- roles, each its own process inside one namespace ----
def role_gen(args: argparse.Namespace) -> None:
    """AF_XDP SYN generator: distinct SYNs written once into every frame, then resent."""
    from pystack.io.xsk import XskSocket
    from pystack.wire.frame import build_frame
    from pystack.wire.segment import SYN, TcpOptions, TcpSegment

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1:
        # One CPU for the generator (and the softirq work its sends trigger: the veth
        # pair's NAPI and the XDP program run there), the rest for everyone else.
        os.sched_setaffinity(0, {cpus[-1]})
    # The tx queue XPS gives this CPU (Testbed queues): the stack veth's rx queue too.
    queue = cpus[-1] % max(1, args.queues)
    rnd = random.Random(args.seed)
    src_mac, dst_mac = _mac(args.src_mac), _mac(args.dst_mac)
    dst = ip_to_int(args.dst_ip)
    srcs = [ip_to_int(s) for s in FLOOD_SRCS]
    frames = 4096
    with XskSocket(args.iface, queue, frames=frames, frame_size=2048, ring_size=2048,
                   batch=64) as x:
        descs, k = x.alloc(frames)
        flen = 0
        for i in range(k):
            seg = TcpSegment(rnd.choice(srcs), dst, rnd.randrange(1024, 65536), args.port,
                             rnd.getrandbits(32), 0, SYN, 64240,
                             options=TcpOptions(mss=1460, sack_permitted=True,
                                                timestamp=(rnd.getrandbits(32), 0),
                                                wscale=7))
            flen = build_frame(seg, src_mac, dst_mac, out=x.buffer(descs[i]))
            descs[i].len = flen
        x.release(descs, k)  # back to the free list, contents kept
        print("ready", flush=True)
        sent = 0
        start = time.monotonic()
        end = start + args.duration
        while time.monotonic() < end:
            d, n = x.alloc(64)
            if n == 0:
                x.complete()
                continue
            for i in range(n):
                d[i].len = flen
            q = x.transmit(d, n, checksum=False)
            if q < n:
                x.release(d + q, n - q)
            sent += q
        print(json.dumps({"sent": sent, "seconds": time.monotonic() - start}), flush=True)


def role_clients(args: argparse.Namespace) -> None:
    """Legitimate kernel clients: connect, read the byte the server's application sends
    once it has accepted (so a handshake counts only when both ends completed it), reset,
    repeat; 1 s timeout for each step. Off the generator's CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1:
        os.sched_setaffinity(0, set(cpus[:-1]))
    addr = (args.dst_ip, args.port)
    linger = struct.pack("ii", 1, 0)
    ok = fail = 0
    print("ready", flush=True)
    start = time.monotonic()
    end = start + args.duration
    while time.monotonic() < end:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex(addr)
        if err == 115:  # EINPROGRESS
            _, w, _ = select.select([], [s], [], 1.0)
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if w else 110
        if err == 0:
            r, _, _ = select.select([s], [], [], 1.0)
            try:
                err = 0 if r and s.recv(1) == b"x" else 110
            except OSError as e:
                err = e.errno or 104
        if err == 0:
            ok += 1
        else:
            fail += 1
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        s.close()
    print(json.dumps({"ok": ok, "fail": fail, "seconds": time.monotonic() - start}),
          flush=True)


def role_pystack(args: argparse.Namespace) -> None:
    from pystack.host import Host

    def hello(conn: object) -> None:  # one byte, then FIN: the client sees it accepted
        conn.send(b"x")  # type: ignore[attr-defined]
        conn.close()  # type: ignore[attr-defined]

    with Host(args.iface, sysctls=["net.ipv4.tcp_syncookies=2"]) as h:
        h.serve(args.port, hello)
        ready = f"ready pid={os.getpid()}"
        h.run_forever(on_ready=lambda: print(ready, flush=True))  # until SIGTERM
        print(json.dumps({"mib": h.mib()}), flush=True)


def role_kernel(args: argparse.Namespace) -> None:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((args.dst_ip, args.port))
    s.listen(4096)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"ready pid={os.getpid()}", flush=True)
    while True:
        c, _ = s.accept()
        c.send(b"x")
        c.close()


# ---- orchestration ----
def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def _machine_cpu() -> tuple[float, float]:
    """(softirq + system jiffies, all jiffies) summed over CPUs."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return float(v[2] + v[5] + v[6]), float(sum(v[:8]))


def _in_addr_errors(bed: Testbed) -> int:
    lines = [ln.split() for ln in bed.run("peer", ["cat", "/proc/net/snmp"]).stdout.splitlines()
             if ln.startswith("Ip:")]
    return int(dict(zip(lines[0], lines[1], strict=True))["InAddrErrors"])


def _tx_dropped(bed: Testbed) -> int:
    """Frames the peer veth could not hand to the stack veth (its rx ring was full)."""
    path = f"/sys/class/net/{bed.peer.ifname}/statistics/tx_dropped"
    return int(bed.run("peer", ["cat", path]).stdout)


def _netstat(bed: Testbed, side: str) -> dict[str, int]:
    out = bed.run(side, ["cat", "/proc/net/netstat"]).stdout.splitlines()
    rows = [ln.split() for ln in out if ln.startswith("TcpExt:")]
    return {k: int(v) for k, v in zip(rows[0][1:], rows[1][1:], strict=True)}


def _json(p: subprocess.Popen[str], timeout: float = 60) -> dict[str, object]:
    out, _ = p.communicate(timeout=timeout)
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"role failed (rc={p.returncode}): {out!r}")
    return json.loads(lines[-1])


def _ready(p: subprocess.Popen[str]) -> str:
    assert p.stdout is not None
    r, _, _ = select.select([p.stdout], [], [], 60)
    line = p.stdout.readline() if r else ""
    if not line.startswith("ready"):
        raise RuntimeError(f"role did not start (rc={p.poll()}): {line!r}")
    return line


def _phase(bed: Testbed, server_role: str, duration: float, queues: int = 1
           ) -> dict[str, float]:
    me = [sys.executable, "-m", "bench.synflood"]
    common = ["--port", str(PORT), "--dst-ip", bed.stack.ip, "--duration", str(duration)]
    server = bed.spawn("stack", me + [server_role, "--iface", bed.stack.ifname] + common,
                       stdout=subprocess.PIPE, text=True)
    pid = int(_ready(server).split("pid=")[1])
    # One quiet handshake first: the client's ARP entry and the listener are warm.
    clients = bed.spawn("peer", me + ["clients"] + common[:-1] + ["0.2"],
                        stdout=subprocess.PIPE, text=True)
    _json(clients)
    # Frame counters from before the first SYN (the generator floods as soon as it is
    # ready, before the clients are): every SYN it counts as sent falls inside.
    acks0, nst0, drop0 = _in_addr_errors(bed), _netstat(bed, "stack"), _tx_dropped(bed)
    gen = bed.spawn("peer", me + ["gen", "--iface", bed.peer.ifname, "--queues", str(queues),
                                  "--src-mac", bed.peer.mac,
                                  "--dst-mac", bed.stack.mac] + common[:-1] + [str(duration)],
                    stdout=subprocess.PIPE, text=True)
    _ready(gen)
    clients = bed.spawn("peer", me + ["clients"] + common, stdout=subprocess.PIPE, text=True)
    _ready(clients)
    cpu0, (busy0, all0) = _cpu_seconds(pid), _machine_cpu()
    g = _json(gen)
    c = _json(clients)
    cpu1, (busy1, all1), acks1 = _cpu_seconds(pid), _machine_cpu(), _in_addr_errors(bed)
    nst1, drop1 = _netstat(bed, "stack"), _tx_dropped(bed)
    server.send_signal(signal.SIGTERM)
    if server_role == "pystack":
        srv = _json(server)
    else:
        server.wait(timeout=10)
        srv = {}
    secs = float(g["seconds"])  # type: ignore[arg-type]
    r = {
        "offered_pps": float(g["sent"]) / secs,  # type: ignore[arg-type]
        "syn_pps": (float(g["sent"]) - (drop1 - drop0)) / secs,  # type: ignore[arg-type]
        "synack_pps": (acks1 - acks0) / secs,
        "handshakes_ps": float(c["ok"]) / float(c["seconds"]),  # type: ignore[arg-type]
        "handshake_fails": float(c["fail"]),  # type: ignore[arg-type]
        "server_cpu": (cpu1 - cpu0) / secs,
        "machine_sys_softirq": (busy1 - busy0) / max(all1 - all0, 1.0) * os.cpu_count(),  # type: ignore[operator]
        "kernel_cookies_sent": float(nst1.get("SyncookiesSent", 0) - nst0.get("SyncookiesSent",
                                                                               0)),
    }
    if srv:
        m = srv["mib"]
        r["pystack_cookies_sent"] = float(m["SyncookiesSent"])  # type: ignore[index]
    return r


def _neighbours(bed: Testbed) -> None:
    """The kernel's SYN-ACKs to flood addresses must leave too: static ARP entries."""
    cmds = "".join(f"neigh replace {a} lladdr {bed.peer.mac} dev {bed.stack.ifname} "
                   f"nud permanent\n" for a in FLOOD_SRCS)
    bed.run("stack", ["ip", "-batch", "-"], input=cmds)


def _bed(queues: int, duration: float) -> tuple[dict[str, float], dict[str, float]]:
    with Testbed.create(queues=queues) as bed:
        bed.run("peer", ["sysctl", "-qw", "net.ipv4.ip_forward=0"])
        bed.run("stack", ["sysctl", "-qw", "net.ipv4.tcp_syncookies=2"])
        _neighbours(bed)
        return _phase(bed, "pystack", duration, queues), _phase(bed, "kernel", duration, queues)


def _side(prefix: str, r: dict[str, float]) -> dict[str, object]:
    return {
        f"{prefix}_syn_offered_pps": round(r["offered_pps"]),
        f"{prefix}_syn_pps": round(r["syn_pps"]),
        f"{prefix}_synack_pps": round(r["synack_pps"]),
        f"{prefix}_synack_per_syn": round(r["synack_pps"] / r["syn_pps"], 3),
        f"{prefix}_handshakes_ps": round(r["handshakes_ps"]),
        f"{prefix}_handshake_timeouts": int(r["handshake_fails"]),
        f"{prefix}_server_process_cpus": round(r["server_cpu"], 3),
        f"{prefix}_machine_sys_softirq_cpus": round(r["machine_sys_softirq"], 2),
    }


def run(duration: float = DURATION, queues: int = QUEUES) -> dict[str, object]:
    """The flood on a bed with `queues` rx queues (the target figures), then on a bed with
    one (reference: the flood and the legitimate client share one veth ring)."""
    out: dict[str, object] = {
        "name": "synflood",
        "conditions": f"veth pair in namespaces, {queues} rx queues (XPS: CPU i sends on "
                      f"queue i), tcp_syncookies=2, peer-side AF_XDP SYN generator at full "
                      f"rate on its own CPU ({len(FLOOD_SRCS)} source addresses, 4096 "
                      f"distinct SYNs), {duration:.0f}s per side, one kernel client "
                      f"connect+RST loop on the other CPUs; then the same with one rx queue; "
                      f"provisional (shared 2-CPU VM)",
        "queues": queues,
    }
    for tag, q in (("", queues), ("one_queue_", 1)):
        if tag and queues == 1:
            break
        ps, k = _bed(q, duration)
        out.update(_side(f"{tag}pystack", ps))
        out.update(_side(f"{tag}kernel", k))
        for key in ("synack_pps", "handshakes_ps", "machine_sys_softirq"):
            out[f"{tag}ratio_{key}"] = round(ps[key] / k[key], 2) if k[key] else float("inf")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.synflood")
    ap.add_argument("role", nargs="?", choices=["gen", "clients", "pystack", "kernel"])
    ap.add_argument("--iface")
    ap.add_argument("--port", type=int, default=PORT)
    ap.add_argument("--dst-ip", default="198.18.0.1")
    ap.add_argument("--src-mac", default="")
    ap.add_argument("--dst-mac", default="")
    ap.add_argument("--duration", type=float, default=DURATION)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--queues", type=int, default=0,
                    help="rx queues (default: one per CPU); the gen role's bed's count")
    args = ap.parse_args(argv)
    if args.role is None:
        print(json.dumps(run(args.duration, args.queues or QUEUES), indent=2))
        return 0
    {"gen": role_gen, "clients": role_clients, "pystack": role_pystack,
     "kernel": role_kernel}[args.role](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
