"""Fairness at a shared bottleneck: pystack's cubic flow and a Linux cubic flow.

    stack ns: pystack (AF_XDP, port 6001 owned flow) ──┐
              kernel TCP client (not owned, XDP_PASS) ─┼─ veth ─► peer ns ingress
                                                       │          └ mirred ► ifb: tbf RATE
    peer ns:  one kernel sink process, ports 6001 and 6002, counts bytes per flow

Both flows start together and send for WARMUP + MEASURE seconds; the sink measures each
flow's goodput over MEASURE after WARMUP (slow start excluded). Jain's fairness index
J = (x1 + x2)^2 / (2 (x1^2 + x2^2)) is 1 for an even split and 0.5 when one flow gets
everything. It is printed (run pytest with -s to see it) and recorded as a junit property;
the assertion is deliberately loose (both flows progress, the shaper holds), since the
machine is shared and pystack's data path costs CPU time the kernel's does not.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from pystack.faults import Bottleneck
from tests.helpers import read_line

RATE_MBIT = 100  # pystack alone does ~0.5 Gbit/s: both flows can fill this
WARMUP = 3.0
MEASURE = 15.0
PYSTACK_PORT = 6001
KERNEL_PORT = 6002

SINK = r"""
import json, socket, sys, threading, time
ip, warm, meas = sys.argv[1], float(sys.argv[3]), float(sys.argv[4])
ports = [int(p) for p in sys.argv[2].split(",")]
got = {p: 0 for p in ports}
def serve(ls, port):
    c, _ = ls.accept()
    while d := c.recv(1 << 20):
        got[port] += len(d)
    c.close()
threads = []
for p in ports:
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((ip, p))
    ls.listen()
    threads.append(threading.Thread(target=serve, args=(ls, p), daemon=True))
    threads[-1].start()
print("ready", flush=True)
sys.stdin.readline()
time.sleep(warm)
a, t0 = dict(got), time.monotonic()
time.sleep(meas)
b, dt = dict(got), time.monotonic() - t0
print(json.dumps({str(p): (b[p] - a[p]) * 8 / dt for p in ports}), flush=True)
for t in threads:
    t.join(60)
"""

KERNEL_SENDER = r"""
import socket, sys, time
c = socket.socket()
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"cubic")
c.connect((sys.argv[1], int(sys.argv[2])))
end, buf = time.monotonic() + float(sys.argv[3]), b"k" * 65536
while time.monotonic() < end:
    c.sendall(buf)
c.close()
"""


class Blast:
    """Keeps pystack's send buffer full until `until`, then shuts the write side down."""

    def __init__(self, conn, until: float) -> None:
        self.conn = conn
        self.until = until
        self.buf = memoryview(b"p" * 65536)
        self.sent = 0
        self.shut = False
        conn.on_event = lambda _c, _kind: self.pump()
        self.pump()

    def pump(self) -> None:
        if self.shut or self.conn.error:
            return
        while time.monotonic() < self.until:
            n = self.conn.send(self.buf)
            self.sent += n
            if n == 0:
                return  # "writable" comes back when ACKs free the buffer
        self.shut = True
        self.conn.shutdown_write()


def jain(xs: list[float]) -> float:
    return sum(xs) ** 2 / (len(xs) * sum(x * x for x in xs))


def test_pystack_cubic_and_kernel_cubic_share_a_tbf_bottleneck(bed, host, record_property):
    with Bottleneck(bed, "peer", "ingress", rate_mbit=RATE_MBIT) as bn:
        sink = bed.spawn("peer", [sys.executable, "-c", SINK, bed.peer.ip,
                                  f"{PYSTACK_PORT},{KERNEL_PORT}", str(WARMUP), str(MEASURE)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert read_line(sink).startswith("ready")
        assert sink.stdin is not None
        before = host.call(lambda: dict(host.engine.mib))
        duration = WARMUP + MEASURE + 1.0
        sink.stdin.write("go\n")
        sink.stdin.flush()
        kernel = bed.spawn("stack", [sys.executable, "-c", KERNEL_SENDER, bed.peer.ip,
                                     str(KERNEL_PORT), str(duration)])
        app = host.call(lambda: Blast(
            host.connect(bed.peer.ip, PYSTACK_PORT, options={"TCP_CONGESTION": "cubic"}),
            time.monotonic() + duration))
        rates = json.loads(read_line(sink, timeout=duration + 30))
        assert kernel.wait(timeout=30) == 0
        after = host.call(lambda: dict(host.engine.mib))
        info = host.call(lambda: app.conn.tcp_info())
        queue = bn.stats()
    ps, kr = rates[str(PYSTACK_PORT)], rates[str(KERNEL_PORT)]
    j = jain([ps, kr])
    retrans = after["RetransSegs"] - before["RetransSegs"]
    print(f"\nfairness at a {RATE_MBIT} Mbit/s tbf over {MEASURE:.0f} s: pystack cubic "
          f"{ps / 1e6:.1f} Mbit/s, kernel cubic {kr / 1e6:.1f} Mbit/s, Jain's index "
          f"J = {j:.3f}; pystack RetransSegs {retrans}, cwnd {info['cwnd']}, "
          f"rtt {info['rtt']} ms; tbf {queue}")
    record_property("jain_index", round(j, 3))
    record_property("pystack_mbit_s", round(ps / 1e6, 1))
    record_property("kernel_mbit_s", round(kr / 1e6, 1))
    assert info["cc"] == "cubic"
    total = ps + kr
    # Both flows got a share of the link, and the shaper, not the hosts, set the pace.
    assert ps > 0.05 * total and kr > 0.05 * total, f"a flow starved: J = {j:.3f}"
    assert total <= 1.1 * RATE_MBIT * 1e6
    assert queue["sent_bytes"] > 0
