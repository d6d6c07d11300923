"""A pystack host in its own process, for the tests that measure the stack process itself
(RSS, UMEM frames) or kill it. Like `pystackctl attach`, plus what the tests need:

    python -m tests.reliability.stackproc IFACE --listen PORT:APP[:BACKLOG[:TFO_QLEN]] ...
        [--sysctl NAME=VALUE ...] [--frames N] [--ring N] [--batch N]

APP is echo, discard, sink (accepts, never reads: its receive buffers fill), source (sends
SOURCE_BYTES and closes: pystack as the sender) or hold (never accepts: the accept queue
fills). The data path's UMEM size, ring size and batch can be
made small (--frames, --ring, --batch) to provoke full rings.

It serves the control socket of pystack/control.py (`pystackctl stats`, `sysctl -w` work)
with two more verbs: "probe" (the process's RSS, the AF_XDP socket's frame accounting
(XskStats, and whether its frame accounting checks out), the data path's counters, how
often segments waited for tx ring room, the engine's MIB and tcp_mem pages, connections by
state and each listener's queues) and "abort" {"port": P} (reset every connection on P).
Prints `ready PID` once serving; SIGTERM detaches.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from dataclasses import asdict
from typing import Any

from pystack import host as host_mod
from pystack.apps import APPS, serve
from pystack.apps.base import App
from pystack.control import ControlServer
from pystack.host import Host
from pystack.iface.datapath import Datapath


class Sink(App):
    """Accepts and never reads: the peer's data piles up in pystack's receive buffer."""

    name = "sink"
    __slots__ = ()

    def pump(self) -> None:
        if self.conn.error:
            self.abort("error")


SOURCE_BYTES = 8 * 1024 * 1024
SOURCE_CHUNK = 1 << 20


def source_pattern() -> bytes:
    """What the source app sends, repeated: the tests compute the same bytes."""
    import random

    return random.Random(7).randbytes(SOURCE_CHUNK)


class Source(App):
    """Sends SOURCE_BYTES (source_pattern repeated), then closes: pystack is the sender."""

    name = "source"
    __slots__ = ("sent", "chunk")

    def __init__(self, conn: Any) -> None:
        self.sent = 0
        self.chunk = memoryview(source_pattern())
        super().__init__(conn)

    def pump(self) -> None:
        c = self.conn
        try:
            while self.sent < SOURCE_BYTES:
                i = self.sent % SOURCE_CHUNK
                n = c.send(self.chunk[i:])
                if n == 0:
                    return
                self.sent += n
        except OSError:
            self.abort("error")
            return
        self.close()


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


class TxWatch:
    """Counts the loop turns that left segments waiting for tx ring room (the data path's
    tx_backlog; DatapathStats counts only what overflows the backlog)."""

    def __init__(self, h: Host) -> None:
        self.events = 0
        self.peak = 0
        dp = h.dp
        send = dp.send

        def watched(segments: Any) -> int:
            n = send(segments)
            b = dp.tx_backlog
            if b:
                self.events += 1
                self.peak = max(self.peak, b)
            return n

        dp.send = watched  # type: ignore[method-assign]


def xsk_consistent(h: Host) -> bool:
    try:
        if h.dp.xsk is not None:
            h.dp.xsk.check()
    except AssertionError:
        return False
    return True


def probe(h: Host, tx: TxWatch) -> dict[str, Any]:
    eng = h.engine
    mem = getattr(eng, "tcp_memory", None)
    xsk = h.dp.xsk
    st = asdict(h.dp.stats)
    return {
        "rss_kib": rss_kib(),
        "xsk": asdict(xsk.stats()) if xsk is not None else {},
        "dp": st,
        "tx_backlog": h.dp.tx_backlog,
        "tx_backlog_events": tx.events,
        "tx_backlog_peak": tx.peak,
        "xsk_consistent": xsk_consistent(h),
        "mib": h.mib(),
        "mem_pages": mem.pages if mem is not None else 0,
        "mem_pressure": bool(mem.pressure) if mem is not None else False,
        "connections": len(eng.connections),
        "states": eng.state_counts(),
        "listeners": {str(lst.port): {"accept_queue": lst.pending, "backlog": lst.backlog}
                      for lst in eng.listeners.values()},
    }


def abort_port(h: Host, port: int) -> int:
    """Reset every connection on local `port` (what the apps would do on close(2) with
    unread data); returns how many."""
    conns = [c for c in h.engine.connections.values() if c.four_tuple.local_port == port]
    for c in conns:
        c.abort()
    return len(conns)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.reliability.stackproc")
    ap.add_argument("iface")
    ap.add_argument("--listen", action="append", default=[], metavar="PORT:APP[:BL[:TFO]]")
    ap.add_argument("--sysctl", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--frames", type=int, default=0)
    ap.add_argument("--ring", type=int, default=0)
    ap.add_argument("--batch", type=int, default=0)
    args = ap.parse_args(argv)
    sizes = {k: v for k, v in (("frames", args.frames), ("ring_size", args.ring),
                               ("batch", args.batch)) if v}
    if sizes:  # Host makes its Datapath itself and takes no sizes: give them here
        host_mod.Datapath = functools.partial(Datapath, **sizes)  # type: ignore[misc]
    with Host(args.iface, sysctls=args.sysctl) as h:
        for spec in args.listen:
            port_s, app, *rest = spec.split(":")
            port = int(port_s)
            backlog = int(rest[0]) if rest else 128
            if app == "hold":
                h.engine.listen(0, port, backlog)
                h.dp.own_port(port)
                lst = h.engine.listeners[(0, port)]
            else:
                factory = {"sink": Sink, "source": Source}.get(app) or APPS[app]
                lst = h.engine.listen(0, port, backlog)
                h.dp.own_port(port)
                serve(lst, factory)
            if len(rest) > 1:
                lst.set_option("TCP_FASTOPEN", int(rest[1]))
        control = ControlServer(h, app="reliability", ports=[])
        tx = TxWatch(h)
        control.verbs["probe"] = lambda req: probe(h, tx)
        control.verbs["abort"] = lambda req: abort_port(h, int(req["port"]))
        try:
            print(f"ready {os.getpid()}", flush=True)
            h.run_forever()
        finally:
            control.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
