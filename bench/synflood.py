"""A SYN flood against a listener with SYN cookies always on, pystack vs the kernel.

Same veth bed, same generator, one run, two phases:
  pystack  a Host (net.ipv4.tcp_syncookies=2) serves PORT: XDP answers every SYN with a
           cookie SYN-ACK by XDP_TX; the ACKs of legitimate clients reach Python.
  kernel   pystack gone (its XDP link dies with it), a kernel listener on PORT in the stack
           namespace with the namespace's net.ipv4.tcp_syncookies=2.
The generator is a peer-side AF_XDP socket pinned to one CPU, sending Linux-like SYNs (MSS,
SACK, timestamps, window scale) from FLOOD_SRCS addresses nobody owns and random ports, as
fast as it can for DURATION seconds: every UMEM frame is written once with its own SYN,
then the frames are sent over and over. SYNs delivered: frames the stack veth received
(the generator's "offered" count includes what the peer veth dropped). The peer's kernel
drops the SYN-ACKs to those addresses and counts them (Ip InAddrErrors): SYN-ACKs
received. Meanwhile a kernel client in the peer namespace connects, reads the byte the
server's application sends on accept, and resets, in a loop (handshakes/s during the
flood); the listener's process CPU time is read from /proc/<pid>/stat. The kernel answers
SYNs in softirq, outside any process: the machine-wide softirq+system CPU (/proc/stat, in
CPUs) is reported for both. Figures are provisional on a shared 2-CPU VM.
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
    rnd = random.Random(args.seed)
    src_mac, dst_mac = _mac(args.src_mac), _mac(args.dst_mac)
    dst = ip_to_int(args.dst_ip)
    srcs = [ip_to_int(s) for s in FLOOD_SRCS]
    frames = 4096
    with XskSocket(args.iface, frames=frames, frame_size=2048, ring_size=2048, batch=64) as x:
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
    repeat; 1 s timeout for each step."""
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


def _rx_packets(bed: Testbed) -> int:
    """Frames the stack side's veth received: the SYNs that made it across."""
    path = f"/sys/class/net/{bed.stack.ifname}/statistics/rx_packets"
    return int(bed.run("stack", ["cat", path]).stdout)


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


def _phase(bed: Testbed, server_role: str, duration: float) -> dict[str, float]:
    me = [sys.executable, "-m", "bench.synflood"]
    common = ["--port", str(PORT), "--dst-ip", bed.stack.ip, "--duration", str(duration)]
    server = bed.spawn("stack", me + [server_role, "--iface", bed.stack.ifname] + common,
                       stdout=subprocess.PIPE, text=True)
    pid = int(_ready(server).split("pid=")[1])
    # One quiet handshake first: the client's ARP entry and the listener are warm.
    clients = bed.spawn("peer", me + ["clients"] + common[:-1] + ["0.2"],
                        stdout=subprocess.PIPE, text=True)
    _json(clients)
    gen = bed.spawn("peer", me + ["gen", "--iface", bed.peer.ifname, "--src-mac", bed.peer.mac,
                                  "--dst-mac", bed.stack.mac] + common[:-1] + [str(duration)],
                    stdout=subprocess.PIPE, text=True)
    _ready(gen)
    clients = bed.spawn("peer", me + ["clients"] + common, stdout=subprocess.PIPE, text=True)
    _ready(clients)
    cpu0, (busy0, all0), acks0 = _cpu_seconds(pid), _machine_cpu(), _in_addr_errors(bed)
    nst0, rx0 = _netstat(bed, "stack"), _rx_packets(bed)
    g = _json(gen)
    c = _json(clients)
    cpu1, (busy1, all1), acks1 = _cpu_seconds(pid), _machine_cpu(), _in_addr_errors(bed)
    nst1, rx1 = _netstat(bed, "stack"), _rx_packets(bed)
    server.send_signal(signal.SIGTERM)
    if server_role == "pystack":
        srv = _json(server)
    else:
        server.wait(timeout=10)
        srv = {}
    secs = float(g["seconds"])  # type: ignore[arg-type]
    r = {
        "offered_pps": float(g["sent"]) / secs,  # type: ignore[arg-type]
        "syn_pps": (rx1 - rx0) / secs,
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


def run(duration: float = DURATION) -> dict[str, object]:
    with Testbed.create() as bed:
        bed.run("peer", ["sysctl", "-qw", "net.ipv4.ip_forward=0"])
        bed.run("stack", ["sysctl", "-qw", "net.ipv4.tcp_syncookies=2"])
        _neighbours(bed)
        ps = _phase(bed, "pystack", duration)
        k = _phase(bed, "kernel", duration)

    def ratio(key: str) -> float:
        return round(ps[key] / k[key], 2) if k[key] else float("inf")

    return {
        "name": "synflood",
        "conditions": f"veth pair in namespaces, tcp_syncookies=2, peer-side AF_XDP SYN "
                      f"generator at full rate ({len(FLOOD_SRCS)} source addresses, 4096 "
                      f"distinct SYNs), {duration:.0f}s per side, one kernel client "
                      f"connect+RST loop; provisional (shared 2-CPU VM)",
        "pystack_syn_offered_pps": round(ps["offered_pps"]),
        "pystack_syn_pps": round(ps["syn_pps"]),
        "pystack_synack_pps": round(ps["synack_pps"]),
        "pystack_synack_per_syn": round(ps["synack_pps"] / ps["syn_pps"], 3),
        "pystack_handshakes_ps": round(ps["handshakes_ps"]),
        "pystack_handshake_timeouts": int(ps["handshake_fails"]),
        "pystack_control_plane_cpus": round(ps["server_cpu"], 3),
        "pystack_machine_sys_softirq_cpus": round(ps["machine_sys_softirq"], 2),
        "kernel_syn_offered_pps": round(k["offered_pps"]),
        "kernel_syn_pps": round(k["syn_pps"]),
        "kernel_synack_pps": round(k["synack_pps"]),
        "kernel_synack_per_syn": round(k["synack_pps"] / k["syn_pps"], 3),
        "kernel_handshakes_ps": round(k["handshakes_ps"]),
        "kernel_handshake_timeouts": int(k["handshake_fails"]),
        "kernel_listener_process_cpus": round(k["server_cpu"], 3),
        "kernel_machine_sys_softirq_cpus": round(k["machine_sys_softirq"], 2),
        "ratio_synack_pps": ratio("synack_pps"),
        "ratio_handshakes_ps": ratio("handshakes_ps"),
        "ratio_machine_sys_softirq": ratio("machine_sys_softirq"),
    }


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
    args = ap.parse_args(argv)
    if args.role is None:
        print(json.dumps(run(args.duration), indent=2))
        return 0
    {"gen": role_gen, "clients": role_clients, "pystack": role_pystack,
     "kernel": role_kernel}[args.role](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
