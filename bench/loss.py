"""Goodput under random loss (0 %, 1 %, 5 %), pystack vs the kernel, same veth bed, one run.

  tx  a sender in the stack namespace streams to a kernel sink in the peer namespace:
        pystack  a pystack client, cubic (engine -> AF_XDP tx)
        kernel   a kernel client, cubic
      loss on the peer veth's ingress; goodput = bytes the sink read in the window.
  rx  a kernel client (cubic) in the peer namespace streams to the stack side:
        pystack  the discard app on an owned port (XDP -> AF_XDP -> engine)
        kernel   a kernel socket reading to EOF on another port
      loss on the peer veth's egress; goodput = the sender's tcpi_bytes_acked over the
      window (the same sender for both receivers).

Loss is the tc BPF injector of pystack/faults.py: each data segment of the measured flow
(by port) is dropped with probability p (bpf_get_prandom_u32); handshakes and pure ACKs
are spared so a lost SYN's 1 s timer does not dominate a short run. Each flow sends for
WARMUP + WINDOW seconds; goodput is measured over WINDOW after WARMUP. TSO/GSO and
checksum offload are off on both veths (MTU-sized frames, as in bench/bulk.py).
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from bench.bulk import PYSTACK_SINK
from pystack.faults import LossInjector, LossProgram
from pystack.testbed import Testbed

RATES = (0.0, 0.01, 0.05)
WARMUP = 2.0
WINDOW = 8.0
TX_SINK_PORT = 5101  # + run number: each tx run gets a fresh port
RX_PYSTACK_PORT = 5201
RX_KERNEL_PORT = 5202
TCP_INFO_BYTES_ACKED = 120  # offsetof(struct tcp_info, tcpi_bytes_acked)

PYSTACK_SOURCE = """
import sys, time
from pystack.host import Host
iface, peer, port, secs = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
buf = memoryview(b"\\x5a" * 65536)
h = Host(iface)
end = time.monotonic() + secs
def pump(conn, kind=""):
    try:
        while time.monotonic() < end and conn.send(buf) > 0:
            pass
    except OSError:
        pass
c = h.connect(peer, port, options={"TCP_CONGESTION": "cubic"})
c.on_event = pump
pump(c)
h.run_forever(on_ready=lambda: print("ready", flush=True))
h.close()
"""

KERNEL_SOURCE = """
import socket, sys, time
c = socket.socket()
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"cubic")
c.connect((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
end, buf = time.monotonic() + float(sys.argv[3]), b"\\x5a" * 65536
while time.monotonic() < end:
    c.sendall(buf)
c.close()
"""

KERNEL_SINK = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(); print("ready", flush=True)
while True:
    c, _ = s.accept()
    try:
        while c.recv(1 << 20):
            pass
    except OSError:
        pass
    c.close()
"""



def _ready(p: subprocess.Popen[str]) -> None:
    assert p.stdout is not None
    line = p.stdout.readline()
    if not line.startswith("ready"):
        raise RuntimeError(f"process did not start (rc={p.poll()}): {line!r}")


def _stop(p: subprocess.Popen[str]) -> None:
    """SIGTERM the process group (a pystack host detaches cleanly), then reap it."""
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGTERM)
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)


def _window(sample: Callable[[], int]) -> float:
    """Bits per second of a byte counter over WINDOW, after WARMUP."""
    time.sleep(WARMUP)
    a, t = sample(), time.monotonic()
    time.sleep(WINDOW)
    return (sample() - a) * 8 / (time.monotonic() - t)


def _tx(bed: Testbed, argv: list[str], port: int) -> float:
    """One tx run: a sender process in the stack namespace, a sink thread on the peer."""
    ls = bed.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
    ls.bind((bed.peer.ip, port))
    ls.listen()
    got = [0]
    stop = threading.Event()

    def sink() -> None:
        ls.settimeout(30)
        c, _ = ls.accept()
        c.settimeout(0.2)
        while not stop.is_set():
            try:
                d = c.recv(1 << 20)
            except TimeoutError:
                continue
            except OSError:  # the sender was stopped mid-stream
                break
            if not d:
                break
            got[0] += len(d)
        c.close()

    t = threading.Thread(target=sink, daemon=True)
    t.start()
    p = bed.spawn("stack", [*argv, bed.peer.ip, str(port), str(WARMUP + WINDOW + 5)],
                  stdout=subprocess.PIPE, text=True)
    try:
        _ready(p)
        return _window(lambda: got[0])
    finally:
        stop.set()
        _stop(p)
        t.join(10)
        ls.close()


def _rx(bed: Testbed, port: int) -> float:
    """One rx run: a kernel client in the peer namespace, its bytes_acked over the window."""
    c = bed.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"cubic")
    c.settimeout(30)
    c.connect((bed.stack.ip, port))
    stop = threading.Event()

    def source() -> None:
        buf = b"\x5a" * 65536
        try:
            while not stop.is_set():
                c.sendall(buf)
        except OSError:
            pass

    def acked() -> int:
        info = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
        return int(struct.unpack_from("=Q", info, TCP_INFO_BYTES_ACKED)[0])

    t = threading.Thread(target=source, daemon=True)
    t.start()
    try:
        return _window(acked)
    finally:
        stop.set()
        c.shutdown(socket.SHUT_RDWR)
        t.join(10)
        c.close()


def _key(rate: float) -> str:
    return f"{round(rate * 100)}pct"


def run(rates: tuple[float, ...] = RATES) -> dict[str, object]:
    out: dict[str, object] = {}
    drops: dict[str, int] = {}
    prog = LossProgram()
    try:
        with Testbed.create() as bed:
            bed.run("stack", ["ethtool", "-K", bed.stack.ifname, "tx", "off", "tso", "off",
                              "gso", "off"])
            # tx: pystack / kernel client in the stack namespace -> kernel sink on the peer
            with LossInjector(bed, "peer", "ingress", program=prog) as loss:
                for i, rate in enumerate(rates):
                    res = {}
                    for j, (who, argv) in enumerate((
                            ("pystack", ["-c", PYSTACK_SOURCE, bed.stack.ifname]),
                            ("kernel", ["-c", KERNEL_SOURCE]))):
                        port = TX_SINK_PORT + 2 * i + j
                        loss.configure(rate=rate, port=port, data_only=True)
                        res[who] = _tx(bed, [sys.executable, *argv], port)
                        drops[f"tx_{_key(rate)}_{who}"] = loss.stats().drop_random
                    _record(out, "tx", rate, res)
            # rx: kernel client on the peer -> pystack discard / kernel sink, stack side
            sinks = [bed.spawn("stack", [sys.executable, "-c", PYSTACK_SINK, bed.stack.ifname,
                                         str(RX_PYSTACK_PORT)], stdout=subprocess.PIPE,
                               text=True),
                     bed.spawn("stack", [sys.executable, "-c", KERNEL_SINK, bed.stack.ip,
                                         str(RX_KERNEL_PORT)], stdout=subprocess.PIPE,
                               text=True)]
            for s in sinks:
                _ready(s)
            with LossInjector(bed, "peer", "egress", program=prog) as loss:
                for rate in rates:
                    res = {}
                    for who, port in (("pystack", RX_PYSTACK_PORT), ("kernel", RX_KERNEL_PORT)):
                        loss.configure(rate=rate, port=port, data_only=True)
                        res[who] = _rx(bed, port)
                        drops[f"rx_{_key(rate)}_{who}"] = loss.stats().drop_random
                    _record(out, "rx", rate, res)
            for s in sinks:
                _stop(s)
    finally:
        prog.close()
    return {
        "name": "loss",
        "conditions": f"one cubic flow at a time, random loss of data segments "
                      f"(tc BPF injector), goodput over {WINDOW:.0f} s after {WARMUP:.0f} s, "
                      "veth, TSO/GSO/tx-csum off, AF_XDP copy mode; frames dropped: "
                      + ", ".join(f"{k} {v}" for k, v in drops.items()),
        **out,
    }


def _record(out: dict[str, object], direction: str, rate: float,
            res: dict[str, float]) -> None:
    k = f"{direction}_{_key(rate)}"
    out[f"{k}_pystack_mbit_s"] = round(res["pystack"] / 1e6, 1)
    out[f"{k}_kernel_mbit_s"] = round(res["kernel"] / 1e6, 1)
    out[f"{k}_ratio"] = round(res["pystack"] / res["kernel"], 3) if res["kernel"] else None


if __name__ == "__main__":
    import json

    from pystack.testbed import sigterm_as_interrupt

    sigterm_as_interrupt()
    print(json.dumps(run(), indent=2))
