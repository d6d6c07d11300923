"""Bulk transfer, one flow: a kernel sender in the peer namespace streams SIZE bytes to
  pystack  the discard app on an owned port (XDP -> AF_XDP -> engine), and to
  kernel   a kernel socket reading to EOF on another port of the same address,
on the same veth bed in the same run, with TSO/GSO and checksum offload off on the peer
(MTU-sized frames, the fair baseline for AF_XDP). Time runs from connect to the receiver's
close (EOF seen by the sender), so it includes the handshake and the close."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

from pystack.testbed import Testbed

PYSTACK_PORT = 5001
KERNEL_PORT = 5002
SIZE = 200_000_000
CHUNK = 1 << 20


def _send(bed: Testbed, port: int, size: int) -> float:
    c = bed.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
    c.settimeout(120)
    buf = b"\x5a" * CHUNK
    t = time.monotonic()
    c.connect((bed.stack.ip, port))
    left = size
    while left > 0:
        n = c.send(buf[: min(left, CHUNK)])
        left -= n
    c.shutdown(socket.SHUT_WR)
    assert c.recv(1) == b"", "receiver sent data"
    dt = time.monotonic() - t
    c.close()
    return size * 8 / dt


KERNEL_SINK = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(); print("ready", flush=True)
c, _ = s.accept()
while c.recv(1 << 20):
    pass
c.close()
"""

PYSTACK_SINK = """
import sys
from pystack.apps import Discard
from pystack.host import Host
h = Host(sys.argv[1])
h.serve(int(sys.argv[2]), Discard)
print("ready", flush=True)
h.run_forever()
h.close()
"""


def run(size: int = SIZE) -> dict[str, object]:
    with Testbed.create() as bed:
        sink = bed.spawn("stack", [sys.executable, "-c", PYSTACK_SINK, bed.stack.ifname,
                                   str(PYSTACK_PORT)], stdout=subprocess.PIPE, text=True)
        assert sink.stdout is not None and sink.stdout.readline().startswith("ready")
        ksink = bed.spawn("stack", [sys.executable, "-c", KERNEL_SINK, bed.stack.ip,
                                    str(KERNEL_PORT)], stdout=subprocess.PIPE, text=True)
        assert ksink.stdout is not None and ksink.stdout.readline().startswith("ready")
        kernel = _send(bed, KERNEL_PORT, size)
        pystack = _send(bed, PYSTACK_PORT, size)
    return {
        "name": "bulk",
        "conditions": f"one flow, kernel sender -> receiver, {size / 1e6:.0f} MB, veth, "
                      "TSO/GSO/tx-csum off on the sender's veth, AF_XDP copy mode",
        "pystack_mbit_s": round(pystack / 1e6),
        "kernel_mbit_s": round(kernel / 1e6),
        "ratio": round(pystack / kernel, 3),
        "target_ratio": 0.45,
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else SIZE), indent=2))
