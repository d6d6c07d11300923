"""A multi-queue interface: one AF_XDP socket per rx queue, one engine for all.

The bed's veths have two queues each and XPS sends from CPU i on queue i; a veth delivers
what its peer sent on tx queue i to rx queue i. Kernel clients pinned to each CPU in turn
therefore arrive on both rx queues, and every byte must come back from pystack's echo.
This test found the stuck tx ring (Datapath.send, XskSocket.flush): a kick refused while
the peer's queue was stopped left frames in the ring with nothing to send them.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from collections.abc import Iterator

import pytest

from pystack.apps import Echo
from tests.helpers import running_host

PORT = 7


@pytest.fixture
def bed2() -> Iterator[object]:
    from pystack.testbed import Testbed

    b = Testbed.create(queues=2)
    try:
        yield b
    finally:
        b.destroy()


def _xdp_redirects(bed: object) -> dict[int, int]:
    out = bed.run("stack", ["ethtool", "-S", bed.stack.ifname]).stdout  # type: ignore[attr-defined]
    counts = {}
    for line in out.splitlines():
        name, _, value = line.strip().partition(":")
        if name.startswith("rx_queue_") and name.endswith("_xdp_redirect"):
            counts[int(name.split("_")[2])] = int(value)
    return counts


def _echo_from_cpu(bed: object, cpu: int, payload: bytes, out: dict[int, bytes]) -> None:
    """Connect and echo with this thread on `cpu` (so XPS puts the flow on its queue)."""
    os.sched_setaffinity(0, {cpu})  # this thread only
    s = bed.socket("peer", socket.AF_INET, socket.SOCK_STREAM)  # type: ignore[attr-defined]
    try:
        s.settimeout(20)
        s.connect((bed.stack.ip, PORT))  # type: ignore[attr-defined]
        got = bytearray()

        def reader() -> None:
            while chunk := s.recv(65536):
                got.extend(chunk)

        t = threading.Thread(target=reader)
        t.start()
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        t.join(30)
        out[cpu] = bytes(got)
    finally:
        s.close()


def test_two_rx_queues_serve_flows_on_both(bed2, program):
    cpus = sorted(os.sched_getaffinity(0))[:2]
    assert len(cpus) == 2, "this test needs two CPUs: XPS maps each to its own queue"
    with running_host(bed2, program, port=PORT, app=Echo) as h:
        assert h.dp.queues == 2
        before = _xdp_redirects(bed2)
        payloads = {cpu: os.urandom(2_000_000) for cpu in cpus}
        results: dict[int, bytes] = {}
        threads = [threading.Thread(target=_echo_from_cpu, args=(bed2, cpu, p, results))
                   for cpu, p in payloads.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        after = _xdp_redirects(bed2)
    for cpu, p in payloads.items():
        assert hashlib.sha256(results.get(cpu, b"")).digest() == hashlib.sha256(p).digest(), \
            f"echo from CPU {cpu} came back wrong ({len(results.get(cpu, b''))} bytes)"
    # Each flow starts on its CPU's queue; its later segments may leave from the CPU that
    # handles its ACKs (softirq), so the split is uneven, but both queues carry hundreds.
    for q in (cpus[0] % 2, cpus[1] % 2):
        assert after.get(q, 0) - before.get(q, 0) > 100, (q, before, after)


def test_queues_argument_is_checked(bed2, program):
    from pystack.io.xsk import XskError

    with pytest.raises(XskError, match="has 2 rx queues; cannot take 3"):
        with running_host(bed2, program, queues=3):
            pass
    with running_host(bed2, program, queues=1) as h:
        assert h.dp.queues == 1
