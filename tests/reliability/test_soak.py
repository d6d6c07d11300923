"""Soak: connection churn plus bulk transfers through pystack's echo (a stack process of its
own) under 1 % random loss in both directions (pystack/faults.py LossInjector), for
PYSTACK_SOAK_SECONDS (60 by default, the CI bound; set it higher for a longer run).

Every byte is verified (each churn connection compares its echo byte for byte, each bulk
stream compares SHA-256 of both directions). The stack process is sampled once a second
(VmRSS, UMEM frames held by the application or in flight = XskStats app + tx,
connections, tcp_mem pages): the last third of the run must not have grown over the
first third, and once the load stops every connection and every frame must come back."""

from __future__ import annotations

import os
import random
import socket
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from pystack.faults import LossInjector
from tests.helpers import wait_for
from tests.reliability.support import ECHO_PORT, PeerStream, StackProcess, report

SOAK = float(os.environ.get("PYSTACK_SOAK_SECONDS", "60"))
LOSS = 0.01
CHURNERS = 3
BULKS = 2
BULK_SECONDS = 8.0  # each bulk stream runs this long, then the next starts

pytestmark = pytest.mark.timeout(int(SOAK) + 180)


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    connections: int = 0
    bytes_verified: int = 0
    bulk_streams: int = 0
    failures: list[str] = field(default_factory=list)

    def add(self, **kw: int) -> None:
        with self.lock:
            for k, v in kw.items():
                setattr(self, k, getattr(self, k) + v)

    def fail(self, what: str) -> None:
        with self.lock:
            self.failures.append(what)


def churn(bed, tally: Tally, until: float, seed: int) -> None:
    """Connect, send 1 B - 32 KiB, half-close, read the echo to EOF, compare, close."""
    rnd = random.Random(seed)
    while time.monotonic() < until:
        data = rnd.randbytes(rnd.randrange(1, 32 * 1024))
        c = bed.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
        c.settimeout(30)
        try:
            c.connect((bed.stack.ip, ECHO_PORT))
            c.sendall(data)
            c.shutdown(socket.SHUT_WR)
            got = bytearray()
            while chunk := c.recv(65536):
                got += chunk
            if got != data:
                tally.fail(f"churn: echo of {len(data)} bytes came back as {len(got)} "
                           "different bytes")
            else:
                tally.add(connections=1, bytes_verified=2 * len(data))
        except OSError as e:
            tally.fail(f"churn: {e!r}")
        finally:
            c.close()


def bulk(bed, tally: Tally, until: float) -> None:
    """Back-to-back echo streams of BULK_SECONDS each, SHA-256 of both directions."""
    while time.monotonic() < until - 1:
        s = PeerStream(bed, ECHO_PORT, rate=20e6)
        try:
            t_end = min(until, time.monotonic() + BULK_SECONDS)
            while time.monotonic() < t_end and not s.errors:
                time.sleep(0.1)  # the stream runs on its own threads
            sent, echoed, same = s.stop(timeout=60)
            if s.errors or not same or echoed != sent:
                tally.fail(f"bulk: sent {sent} echoed {echoed} match {same} {s.errors}")
            else:
                tally.add(bulk_streams=1, connections=1, bytes_verified=2 * sent)
        except AssertionError as e:
            tally.fail(f"bulk: {e}")
        finally:
            s.close()


def thirds(xs: list[float], f: Callable[[list[float]], float]) -> tuple[float, float]:
    k = max(len(xs) // 3, 1)
    return f(xs[:k]), f(xs[-k:])


def test_soak_churn_and_bulk_under_loss(bed, loss_program):
    sp = StackProcess(bed, "--listen", f"{ECHO_PORT}:echo")
    samples: list[dict] = []
    tally = Tally()
    try:
        # Attached before any connection: the kernel's sockets then take the egress
        # injector's gso_max_segs of 1 (one segment per skb: losses are per segment).
        with LossInjector(bed, "peer", "egress", program=loss_program, rate=LOSS,
                          port=ECHO_PORT) as to_pystack, \
                LossInjector(bed, "peer", "ingress", program=loss_program, rate=LOSS,
                             port=ECHO_PORT) as from_pystack:
            t0 = time.monotonic()
            until = t0 + SOAK
            workers = [threading.Thread(target=churn, args=(bed, tally, until, i), daemon=True)
                       for i in range(CHURNERS)]
            workers += [threading.Thread(target=bulk, args=(bed, tally, until), daemon=True)
                        for _ in range(BULKS)]
            for w in workers:
                w.start()
            while time.monotonic() < until:
                p = sp.probe()
                samples.append({"t": time.monotonic() - t0, "rss": p["rss_kib"],
                                "frames": p["xsk"]["app"] + p["xsk"]["tx"],
                                "conns": p["connections"], "pages": p["mem_pages"]})
                time.sleep(1.0)  # sampling interval
            for w in workers:
                w.join(timeout=90)
            assert not any(w.is_alive() for w in workers), "a worker did not finish"
            dropped = (to_pystack.stats().dropped, from_pystack.stats().dropped)
        end = wait_for(lambda: (p := sp.probe())["connections"] == 0
                       and p["xsk"]["app"] + p["xsk"]["tx"] == 0 and p, 60,
                       "every connection and frame to come back")
    finally:
        sp.stop()
    rss = [s["rss"] for s in samples]
    frames = [s["frames"] for s in samples]
    rss_first, rss_last = thirds(rss, statistics.mean)
    fr_first, fr_last = thirds(frames, statistics.mean)
    mib = end["mib"]
    report("soak", seconds=SOAK, loss=LOSS, churners=CHURNERS, bulk_streams=tally.bulk_streams,
           connections=tally.connections, bytes_verified=tally.bytes_verified,
           failures=len(tally.failures), frames_dropped_to_from_pystack=dropped,
           rss_kib_first_last_third=(round(rss_first), round(rss_last)),
           rss_kib_min_max=(min(rss), max(rss)),
           umem_in_use_first_last_third=(round(fr_first, 1), round(fr_last, 1)),
           peak_connections=max(s["conns"] for s in samples),
           retrans_segs=mib["RetransSegs"], tcp_timeouts=mib["TCPTimeouts"],
           estab_resets=mib["EstabResets"], end_rss_kib=end["rss_kib"],
           end_mem_pages=end["mem_pages"], samples=len(samples))
    assert not tally.failures, tally.failures[:5]
    assert tally.connections >= 20 and tally.bulk_streams >= 1
    assert dropped[0] > 0 and dropped[1] > 0, "the loss injectors dropped nothing"
    assert rss_last - rss_first <= max(4096, 0.02 * rss_first), \
        f"RSS grew from {rss_first:.0f} to {rss_last:.0f} KiB"
    assert fr_last <= fr_first + 16, f"UMEM frames in use grew {fr_first:.1f} -> {fr_last:.1f}"
    assert end["xsk_consistent"] and end["mem_pages"] <= 2
