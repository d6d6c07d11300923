"""Memory per idle established connection at N (10k) connections, pystack vs the kernel.

Same veth bed, same clients, one run. A holder process in the peer namespace opens N
kernel TCP connections to the stack side in batches (non-blocking connects, BATCH at a
time), sends nothing, and keeps them open until told to reset them all (SO_LINGER 0).
  pystack  a Host on the stack veth whose app keeps every accepted connection and does
           nothing (bench/memory.py role "pystack"). Measured: the growth of the engine
           process's anonymous RSS (RssAnon, after gc.collect()) from before the first
           connection to N established, per connection; in a second pystack run, with
           tracemalloc on, the bytes Python allocated per connection and where (file:line),
           and a field-by-field breakdown of one connection (sys.getsizeof).
  kernel   a kernel server in the stack namespace (Python accept loop that keeps the
           sockets; no epoll). Measured: the growth of the kernel's slab caches that hold
           sockets (TCP, sock_inode_cache, filp, dentry, ...; /proc/slabinfo active objects x
           object size, and /proc/meminfo Slab) while the N connections are set up. The
           clients' own sockets grow the same caches in both runs, so the kernel server's
           share is (kernel-run growth - pystack-run growth) / N.
Idle connections hold no data, so no buffers are counted on either side ("buffers
excluded"): pystack makes its buffers lazily, the kernel's idle sockets hold no skbs.
Issue 7's target: <= 2 KiB per connection (the kernel: about 3.6 KiB of slab per socket).
The slab figures are machine-wide: other work on the machine adds noise (provisional).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from bench.common import Server, ready
from pystack.testbed import Testbed

PORT = 6100
CONNS = 10_000
BATCH = 250
SOCKET_CACHES = ("TCP", "sock_inode_cache", "filp", "dentry", "eventpoll_epi",
                 "request_sock_TCP", "tw_sock_TCP", "skbuff_head_cache", "ep_head",
                 "kmalloc-64", "kmalloc-128", "kmalloc-192", "kmalloc-256", "kmalloc-512",
                 "kmalloc-1k", "kmalloc-cg-64", "kmalloc-cg-128", "kmalloc-cg-192",
                 "kmalloc-cg-256", "kmalloc-cg-512", "kmalloc-cg-1k")


# ---- roles, each its own process ----
def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _commands(handlers: dict[str, Callable[[], dict[str, object]]]) -> None:
    """Answer stdin commands with one JSON line each (on a daemon thread)."""

    def loop() -> None:
        for line in sys.stdin:
            fn = handlers.get(line.strip())
            if fn is not None:
                try:
                    print(json.dumps(fn()), flush=True)
                except Exception as e:  # reported, the role keeps running
                    print(json.dumps({"error": repr(e)}), flush=True)

    threading.Thread(target=loop, daemon=True).start()


def _rss_anon_kb() -> int:
    """RssAnon after glibc gave its free heap pages back (malloc_trim): otherwise memory
    freed at start-up (bcc's compile of the XDP program) is reused by objects too big for
    pymalloc without growing RSS, and the growth understates what connections cost."""
    import ctypes

    ctypes.CDLL(None).malloc_trim(0)
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


def role_pystack(args: argparse.Namespace) -> None:
    import tracemalloc

    from pystack.host import Host

    kept = 0

    def keep(conn: object) -> None:  # the app: the engine keeps the connection, idle
        nonlocal kept
        kept += 1

    with Host(args.iface) as h:
        h.serve(args.port, keep, backlog=4096)
        eng = h.engine
        base: list[object] = []

        def measure() -> dict[str, object]:
            gc.collect()
            r: dict[str, object] = {"rss_anon_kb": _rss_anon_kb(), "conns": len(eng.connections),
                                    "estab": eng.mib["CurrEstab"], "accepted": kept}
            if tracemalloc.is_tracing():
                r["traced"] = tracemalloc.get_traced_memory()[0]
            return r

        def baseline() -> dict[str, object]:
            if args.trace:
                tracemalloc.start(1)
                base[:] = [tracemalloc.take_snapshot()]
            return measure()

        def top() -> dict[str, object]:
            gc.collect()
            snap = tracemalloc.take_snapshot()
            n = max(1, len(eng.connections))
            flt = [tracemalloc.Filter(False, tracemalloc.__file__)]
            diff = snap.filter_traces(flt).compare_to(
                base[0].filter_traces(flt), "lineno")  # type: ignore[attr-defined]
            lines = [{"where": _where(str(s.traceback)), "bytes": round(s.size_diff / n, 1),
                      "blocks": round(s.count_diff / n, 2)} for s in diff
                     if abs(s.size_diff) / n >= 4]
            return {"traced_per_conn": round(sum(s.size_diff for s in diff) / n, 1),
                    "lines": lines[:25]}

        _commands({"measure": lambda: h.call(measure, 60), "baseline": lambda: h.call(
            baseline, 60), "top": lambda: h.call(top, 120),
            "breakdown": lambda: h.call(lambda: breakdown(h), 60)})
        h.run_forever(on_ready=lambda: print("ready", flush=True))  # until SIGTERM


def _where(tb: str) -> str:
    for prefix in (os.getcwd() + "/", sys.prefix + "/"):
        tb = tb.replace(prefix, "")
    return tb


def breakdown(h: object) -> dict[str, object]:
    """Where one idle established connection's bytes are: its own object, the objects
    only it refers to (ints beyond the small-int cache, floats, tuples, helper objects,
    deduplicated), and its share of the engine's and host's per-connection tables."""
    from pystack.tcp.state import TcpState

    eng = h.engine  # type: ignore[attr-defined]
    conns = [c for c in eng.connections.values() if c.state == TcpState.ESTABLISHED]
    if not conns:
        return {"error": "no established connection"}
    c = conns[len(conns) // 2]
    seen: set[int] = set()
    parts: dict[str, int] = {"Connection object (slots)": sys.getsizeof(c)}

    def own(o: object) -> int:
        """Size of o and what it holds, counting shared objects (None, bools, small ints,
        interned names, classes, functions, enums, anything with over 100 references) as
        free."""
        if o is None or isinstance(o, bool | type) or id(o) in seen or callable(o):
            return 0
        if sys.getrefcount(o) > 100:
            return 0  # held by many connections: a shared constant (a setting, a default)
        if isinstance(o, int) and -5 <= o <= 256:
            return 0
        if isinstance(o, str) and sys.intern(o) is o:
            return 0
        import enum

        if isinstance(o, enum.Enum):
            return 0
        seen.add(id(o))
        n = sys.getsizeof(o)
        if isinstance(o, tuple | list):
            n += sum(own(v) for v in o)
        elif isinstance(o, dict):
            n += sum(own(k) + own(v) for k, v in o.items())
        for cls in type(o).__mro__:
            for name in getattr(cls, "__slots__", ()):
                if name != "__weakref__" and hasattr(o, name):
                    n += own(getattr(o, name))
        return n

    scalars = 0
    for cls in type(c).__mro__:
        for name in getattr(cls, "__slots__", ()):
            if name in ("__weakref__", "engine", "listener", "on_event") or not hasattr(c, name):
                continue  # shared objects (the engine, the listener, the app's callback)
            v = getattr(c, name)
            size = own(v)
            if not size:
                continue
            if isinstance(v, int | float):
                scalars += size
            else:
                parts[f"{name} ({type(v).__name__})"] = size
    parts["ints > 256 and floats held by slots"] = scalars
    n = len(eng.connections)
    parts["engine.connections dict, per entry"] = round(sys.getsizeof(eng.connections) / n)
    flows = getattr(h, "_flows", None)
    if flows is not None:
        parts["host._flows set, per entry"] = round(sys.getsizeof(flows) / max(1, len(flows)))
    parts["engine timer heap, per connection"] = round(sys.getsizeof(eng._heap) / n)
    slots = sum(len(getattr(k, "__slots__", ())) for k in type(c).__mro__)
    return {"slots": slots, "parts": parts, "total": sum(parts.values()),
            "state": c.state.name, "rcvbuf": c._rcvbuf is not None,
            "sndbuf": c._sndbuf is not None, "timers_armed": c._sched is not None}


def role_kernel(args: argparse.Namespace) -> None:
    _raise_nofile()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((args.ip, args.port))
    s.listen(4096)
    kept: list[socket.socket] = []
    _commands({"measure": lambda: {"accepted": len(kept)}})
    print("ready", flush=True)
    while True:
        kept.append(s.accept()[0])


def role_holder(args: argparse.Namespace) -> None:
    """N connections in batches; then wait for "close" on stdin and reset them all."""
    _raise_nofile()
    socks: list[socket.socket] = []
    fails = 0
    sel = selectors.DefaultSelector()
    t0 = time.monotonic()
    left = args.conns
    while left > 0:
        batch = []
        for _ in range(min(args.batch, left)):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex((args.ip, args.port))
            sel.register(s, selectors.EVENT_WRITE)
            batch.append(s)
        pending = len(batch)
        deadline = time.monotonic() + 10
        while pending and time.monotonic() < deadline:
            for key, _ in sel.select(1.0):
                s = key.fileobj  # type: ignore[assignment]
                sel.unregister(s)
                pending -= 1
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    socks.append(s)
                else:
                    fails += 1
                    s.close()
        for key in list(sel.get_map().values()):
            sel.unregister(key.fileobj)
            key.fileobj.close()  # type: ignore[union-attr]
            fails += 1
        left -= len(batch)
    print(f"ready {len(socks)} {fails} {time.monotonic() - t0:.2f}", flush=True)
    while sys.stdin.readline().strip() not in ("close", ""):
        pass
    linger = struct.pack("ii", 1, 0)
    for s in socks:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        s.close()
    print(json.dumps({"closed": len(socks)}), flush=True)


# ---- orchestration ----
def slab() -> dict[str, int]:
    """Bytes in the socket-related slab caches (active objects x object size) and the
    kernel's whole slab (/proc/meminfo Slab), machine-wide."""
    out: dict[str, int] = {}
    with open("/proc/slabinfo") as f:
        for line in f:
            p = line.split()
            if p and p[0] in SOCKET_CACHES:
                out[p[0]] = int(p[1]) * int(p[3])
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Slab:"):
                out["Slab (meminfo)"] = int(line.split()[1]) * 1024
    return out


def _spawn(bed: Testbed, side: str, argv: list[str], what: str) -> tuple[Server, str]:
    p = bed.spawn(side, [sys.executable, "-m", "bench.memory", *argv], stdin=subprocess.PIPE,
                  stdout=subprocess.PIPE, text=True)
    r = Server(p, what)
    try:
        line = ready(p, timeout=600)
    except BaseException:
        r.stop()
        raise
    return r, line


def _wait(role: Server, key: str, want: int, timeout: float = 120) -> dict[str, object]:
    end = time.monotonic() + timeout
    while True:
        m = role.ask("measure", timeout=60)
        if int(m[key]) >= want or time.monotonic() > end:  # type: ignore[call-overload]
            return m
        time.sleep(0.5)


def _close(holder: Server) -> None:
    """Reset the holder's connections (SO_LINGER 0: nothing lingers into the next phase)."""
    holder.ask("close", timeout=60)
    holder.stop()


def _settle() -> None:
    """Let sockets reset by the previous phase leave the slab (RCU-deferred frees)."""
    time.sleep(2.0)


def _phase(bed: Testbed, kind: str, conns: int, batch: int, trace: bool = False
           ) -> dict[str, object]:
    common = ["--ip", bed.stack.ip, "--port", str(PORT)]
    if kind == "pystack":
        argv = ["pystack", "--iface", bed.stack.ifname, "--port", str(PORT)]
        server, _ = _spawn(bed, "stack", argv + (["--trace"] if trace else []),
                           "pystack server")
        key = "estab"
    else:
        server, _ = _spawn(bed, "stack", ["kernel", *common], "kernel server")
        key = "accepted"
    holder = None
    try:
        # A few connections first: code paths, caches and the peer's ARP entry are warm.
        warm, _ = _spawn(bed, "peer", ["holder", *common, "--conns", "20"], "warm-up holder")
        _wait(server, key, 20)
        _close(warm)
        _settle()
        before = server.ask("baseline" if kind == "pystack" else "measure", timeout=60)
        s0 = slab()
        holder, line = _spawn(bed, "peer", ["holder", *common, "--conns", str(conns),
                                            "--batch", str(batch)], "holder")
        _, ok, fails, secs = line.split()
        after = _wait(server, key, int(ok) + int(before[key]))  # type: ignore[call-overload]
        s1 = slab()
        res: dict[str, object] = {"ok": int(ok), "fails": int(fails), "setup_s": float(secs),
                                  "before": before, "after": after,
                                  "slab": {k: s1.get(k, 0) - s0.get(k, 0) for k in s1}}
        if kind == "pystack" and trace:
            res["top"] = server.ask("top", timeout=120)
        if kind == "pystack":
            res["breakdown"] = server.ask("breakdown", timeout=60)
        return res
    finally:
        if holder is not None:
            _close(holder)
        server.stop()
        _settle()


def run(conns: int = CONNS, batch: int = BATCH) -> dict[str, object]:
    with Testbed.create() as bed:
        p = _phase(bed, "pystack", conns, batch)
        k = _phase(bed, "kernel", conns, batch)
        t = _phase(bed, "pystack", conns, batch, trace=True)
    n_p = int(p["after"]["estab"]) - int(p["before"]["estab"])  # type: ignore[index]
    n_k = int(k["after"]["accepted"]) - int(k["before"]["accepted"])  # type: ignore[index]
    n_t = int(t["after"]["estab"]) - int(t["before"]["estab"])  # type: ignore[index]
    rss = (int(p["after"]["rss_anon_kb"]) - int(p["before"]["rss_anon_kb"])  # type: ignore[index]
           ) * 1024 / max(1, n_p)
    traced = (int(t["after"]["traced"]) - int(t["before"]["traced"])  # type: ignore[index]
              ) / max(1, n_t)
    ks: dict[str, int] = k["slab"]  # type: ignore[assignment]
    ps: dict[str, int] = p["slab"]  # type: ignore[assignment]
    caches = {c: round((ks.get(c, 0) - ps.get(c, 0)) / max(1, n_k)) for c in SOCKET_CACHES
              if ks.get(c, 0) or ps.get(c, 0)}
    socket_caches = ("TCP", "sock_inode_cache", "filp", "dentry")
    kernel_sock = sum(caches.get(c, 0) for c in socket_caches)
    kernel_all = sum(caches.values())
    kernel_meminfo = (ks["Slab (meminfo)"] - ps["Slab (meminfo)"]) / max(1, n_k)
    client_sock = sum(ps.get(c, 0) for c in socket_caches) / max(1, n_p)
    r = round(rss / kernel_sock, 3) if kernel_sock > 0 else None
    return {
        "name": "memory",
        "conditions": f"{conns} idle established connections from kernel clients in the peer "
                      f"namespace (batches of {batch}), no data exchanged; pystack: engine "
                      f"process RssAnon growth after gc.collect() (and tracemalloc in a "
                      f"second run); kernel: socket slab caches' growth (active objects x "
                      f"size) of a Python accept-and-keep server, the clients' share "
                      f"subtracted; machine-wide slab figures, provisional (shared VM)",
        "pystack_connections": n_p,
        "kernel_connections": n_k,
        "connect_failures": int(p["fails"]) + int(k["fails"]) + int(t["fails"]),  # type: ignore[call-overload]
        "pystack_rss_bytes_per_conn": round(rss),
        "pystack_tracemalloc_bytes_per_conn": round(traced),
        "kernel_slab_bytes_per_socket": kernel_sock,
        "kernel_slab_bytes_per_socket_all_caches": kernel_all,
        "kernel_meminfo_slab_bytes_per_socket": round(kernel_meminfo),
        "kernel_slab_by_cache": caches,
        "client_socket_slab_bytes_per_socket": round(client_sock),
        "ratio": r,
        "target_bytes": 2048,
        "pystack_setup_s": p["setup_s"],
        "kernel_setup_s": k["setup_s"],
        "pystack_tracemalloc_top": t["top"]["lines"],  # type: ignore[index]
        "pystack_breakdown": p["breakdown"],
        "rows": [
            {"condition": "bytes per idle connection (lower is better), pystack RSS vs "
                          "kernel socket slab", "pystack": round(rss),
             "kernel": kernel_sock, "ratio": r, "target": "<= 2048 B",
             "met": rss <= 2048},
            {"condition": "pystack Python allocations (tracemalloc) per connection",
             "pystack": round(traced), "kernel": kernel_sock,
             "ratio": round(traced / kernel_sock, 3) if kernel_sock > 0 else None,
             "target": "<= 2048 B", "met": traced <= 2048},
        ],
    }


def pure_python(conns: int = 4000) -> dict[str, object]:
    """No privileges: the same idle connections between two engines on the simulated
    link; the listener side's tracemalloc bytes per connection, by file:line."""
    import tracemalloc

    from pystack.sim import SimNetwork
    from pystack.tcp.engine import TcpEngine

    a_ip, b_ip = 0xC6120001, 0xC6120002
    net = SimNetwork(seed=1)
    a, b = TcpEngine(), TcpEngine()
    net.add_host(a_ip, a)
    net.add_host(b_ip, b)
    ports = range(80, 80 + max(1, -(-conns // 4000)))  # the client's port range is ~4.5k
    for port in ports:
        lst = b.listen(0, port, backlog=4096)
        lst.on_event = lambda ls, _k: [None for _ in iter(ls.accept, None)]  # type: ignore[misc]
    for port in ports:
        a.connect(a_ip, b_ip, port)
    net.run_for(1)
    gc.collect()
    tracemalloc.start(1)
    s0 = tracemalloc.take_snapshot()
    for i in range(conns):
        a.connect(a_ip, b_ip, ports[i % len(ports)])
    net.run_for(1)
    a.connections.clear()  # the client side's objects go away: only the listener's remain
    a._heap.clear()
    a._dirty.clear()
    gc.collect()
    flt = [tracemalloc.Filter(False, tracemalloc.__file__)]
    diff = tracemalloc.take_snapshot().filter_traces(flt).compare_to(s0.filter_traces(flt),
                                                                      "lineno")
    tracemalloc.stop()
    n = len(b.connections) - len(ports)
    return {"conns": n, "bytes_per_conn": round(sum(s.size_diff for s in diff) / n, 1),
            "lines": [{"where": _where(str(s.traceback)), "bytes": round(s.size_diff / n, 1),
                       "blocks": round(s.count_diff / n, 2)} for s in diff
                      if abs(s.size_diff) / n >= 4][:25]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.memory")
    ap.add_argument("role", nargs="?", choices=["pystack", "kernel", "holder", "python"],
                    help="python: the unprivileged simulated-link measure only")
    ap.add_argument("--iface")
    ap.add_argument("--ip", default="198.18.0.1")
    ap.add_argument("--port", type=int, default=PORT)
    ap.add_argument("--conns", type=int, default=CONNS)
    ap.add_argument("--batch", type=int, default=BATCH)
    ap.add_argument("--trace", action="store_true", help="pystack role: tracemalloc on")
    args = ap.parse_args(argv)
    if args.role is None:
        print(json.dumps(run(args.conns, args.batch), indent=2))
    elif args.role == "python":
        print(json.dumps(pure_python(min(args.conns, 20000)), indent=2))
    else:
        {"pystack": role_pystack, "kernel": role_kernel, "holder": role_holder}[args.role](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
