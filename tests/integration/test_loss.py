"""Loss recovery against the Linux kernel on the veth bed, with the tc BPF loss injector
(pystack/faults.py; there is no netem) dropping 1 % and 5 % at random or chosen segments.

Both directions, separately:
  pystack sends   pystack -> kernel server in the peer namespace; frames are dropped on
                  the peer veth's ingress (AF_XDP transmit skips the stack veth's tc egress)
  pystack receives kernel client in the peer namespace -> pystack; dropped on the peer
                  veth's egress
Every transfer ends with a SHA-256 match and within a generous deadline; the sender's
retransmission counters (pystack's engine.mib, the kernel's /proc/net/snmp and netstat in
the peer namespace) must account for every frame the injector dropped.

Sizes: the issue asks for 100 MB SHA-256 runs; those run where the kernel sends (seconds).
pystack's sending side at 5 % loss spends most of its time in retransmission timeouts
today, so its random-loss runs are a few MB.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from pystack.apps.base import App
from pystack.faults import Bottleneck, LossInjector, LossProgram, LossStats, tcp_ext
from pystack.host import Host
from pystack.sim.apps import StreamApp
from tests.helpers import wait_for

if TYPE_CHECKING:  # imported by name, pytest would try to collect the class Testbed
    from pystack.testbed import Testbed

MB = 1_000_000
PORT = 9000  # the kernel's server (pystack sends)
SINK_PORT = 9001  # pystack's hashing sink (pystack receives)
DEADLINE = 120.0  # seconds for the bigger runs; generous: the CI machine is shared
SHORT = 60.0  # for the 1 MB runs


@pytest.fixture(scope="module")
def loss_program() -> Iterator[LossProgram]:
    prog = LossProgram()  # compile once for the module (bcc takes seconds)
    yield prog
    prog.close()


class Sha256Sink(App):
    """Hashes everything received; after the peer's FIN, sends the hex digest and closes."""

    name = "sha256"
    __slots__ = ("h", "n")

    def __init__(self, conn) -> None:
        self.h = hashlib.sha256()
        self.n = 0
        super().__init__(conn)

    def pump(self) -> None:
        while not self.done:
            try:
                data = self.conn.recv(1 << 20)
            except BlockingIOError:
                return
            if not data:
                self.conn.send(f"{self.n} {self.h.hexdigest()}".encode())
                self.close()
                return
            self.h.update(data)
            self.n += len(data)


def mib(host: Host) -> dict[str, int]:
    return host.call(lambda: dict(host.engine.mib))


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def pystack_sends(bed: Testbed, host: Host, data: bytes, deadline: float = DEADLINE) -> float:
    """pystack streams data to a kernel server in the peer namespace; asserts the SHA-256
    there; returns the seconds it took."""
    srv = bed.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
    srv.bind((bed.peer.ip, PORT))
    srv.listen()
    seen: dict[str, object] = {}

    def server() -> None:
        s, _ = srv.accept()
        s.settimeout(deadline)
        h = hashlib.sha256()
        n = 0
        while chunk := s.recv(1 << 20):  # until pystack's FIN
            h.update(chunk)
            n += len(chunk)
        seen["got"] = (n, h.hexdigest())
        s.close()

    t = threading.Thread(target=server, daemon=True)
    t.start()
    t0 = time.monotonic()
    app = host.call(lambda: StreamApp(host.connect(bed.peer.ip, PORT), data))
    wait_for(lambda: host.call(lambda: app.done), deadline, "pystack's transfer to finish",
             interval=0.05)
    t.join(timeout=30)
    srv.close()
    assert app.error == 0, f"pystack's connection failed: errno {app.error}"
    assert seen.get("got") == (len(data), hashlib.sha256(data).hexdigest())
    return time.monotonic() - t0


def kernel_sends(bed: Testbed, host: Host, data: bytes, deadline: float = DEADLINE) -> float:
    """A kernel client in the peer namespace streams data to pystack's hashing sink; the
    digest it sends back must match. Returns the seconds it took."""
    host.call(lambda: host.serve(SINK_PORT, Sha256Sink))
    c = bed.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
    c.settimeout(deadline)  # per blocking call
    t0 = time.monotonic()
    c.connect((bed.stack.ip, SINK_PORT))
    c.sendall(data)
    c.shutdown(socket.SHUT_WR)
    got = b""
    while chunk := c.recv(4096):
        got += chunk
    c.close()
    assert got.decode() == f"{len(data)} {hashlib.sha256(data).hexdigest()}"
    return time.monotonic() - t0


def report(what: str, seconds: float, size: int, stats: LossStats, counters: dict) -> None:
    print(f"\n{what}: {size / MB:.0f} MB in {seconds:.1f} s "
          f"({size * 8 / seconds / 1e6:.1f} Mbit/s), {stats}, {counters}")


# ---- random loss ---------------------------------------------------------------------

# (rate, bytes): pystack's sender times out often under loss today (see the module doc).
PYSTACK_SENDS = [(0.01, 8 * MB), (0.05, 2 * MB)]


@pytest.mark.parametrize(("rate", "size"), PYSTACK_SENDS, ids=["1pct", "5pct"])
def test_random_loss_pystack_sends(bed, host, loss_program, rate, size):
    data = os.urandom(size)
    before = mib(host)
    with LossInjector(bed, "peer", "ingress", program=loss_program, rate=rate, port=PORT,
                      data_only=True) as loss:
        took = pystack_sends(bed, host, data)
        st = loss.stats()
    d = delta(mib(host), before)
    report(f"pystack sends, {rate:.0%} loss", took, size, st, d)
    # Random drops at the expected order of magnitude: the injector works as configured.
    assert st.data >= size // 1460
    assert 0.3 * rate * st.data < st.drop_random < 2 * rate * st.data
    # Each dropped data segment was sent again at least once, by fast retransmit or RTO.
    assert d["RetransSegs"] >= st.drop_random
    recoveries = sum(d.get(k, 0) for k in ("TCPRenoRecovery", "TCPSackRecovery",
                                            "TCPTimeouts", "TCPLossProbes"))
    assert recoveries >= 1


@pytest.mark.parametrize("rate", [0.01, 0.05], ids=["1pct", "5pct"])
def test_random_loss_pystack_receives_100mb(bed, host, loss_program, rate):
    size = 100 * MB
    data = os.urandom(size)
    snmp0, ext0, before = bed.snmp("peer"), tcp_ext(bed, "peer"), mib(host)
    with LossInjector(bed, "peer", "egress", program=loss_program, rate=rate,
                      port=SINK_PORT, data_only=True) as loss:
        took = kernel_sends(bed, host, data)
        st = loss.stats()
    ksnmp = delta(bed.snmp("peer"), snmp0)
    kext = delta(tcp_ext(bed, "peer"), ext0)
    d = delta(mib(host), before)
    report(f"kernel sends, {rate:.0%} loss", took, size, st, {"kernel": ksnmp, "ext": kext,
                                                                "pystack": d})
    assert 0.5 * rate * st.data < st.drop_random < 2 * rate * st.data
    assert ksnmp["RetransSegs"] >= st.drop_random
    assert kext.get("TCPSackRecovery", 0) + kext.get("TCPRenoRecovery", 0) >= 1
    assert d["TCPOFOQueue"] >= 1  # pystack queued what arrived after the holes


# ---- chosen segments -------------------------------------------------------------------

# name: (injector settings, drops expected as (drop_nth, drop_seq, drop_rtx))
PATTERNS = {
    "one_segment": ({"nth": 20}, (1, 0, 0)),
    "burst_of_3": ({"nth": 20, "count": 3}, (3, 0, 0)),
    "its_retransmission": ({"nth": 20, "rtx": 1}, (1, 0, 1)),
    # Two segments starting in a 2-MSS range, 20 MSS into the stream (a retransmission
    # starting there would count too: at most seq_max drops in all).
    "seq_range": ({"seq": (20 * 1448, 22 * 1448), "seq_max": 2}, (0, 2, 0)),
}
SMALL = 1 * MB


@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_chosen_segments_pystack_sends(bed, host, loss_program, pattern):
    cfg, expect = PATTERNS[pattern]
    n_drop, n_rtx = expect[0] + expect[1], expect[2]
    data = os.urandom(SMALL)
    before = mib(host)
    with LossInjector(bed, "peer", "ingress", program=loss_program, port=PORT,
                      **cfg) as loss:
        took = pystack_sends(bed, host, data, SHORT)
        st = loss.stats()
    d = delta(mib(host), before)
    report(f"pystack sends, drop {pattern}", took, SMALL, st, d)
    assert (st.drop_nth, st.drop_seq, st.drop_rtx, st.drop_random) == (*expect, 0)
    # The last dropped segment's first byte went out again: once per dropped retransmission
    # plus the one that got through.
    assert st.rtx_seen >= n_rtx + 1
    assert d["RetransSegs"] >= n_drop + n_rtx


@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_chosen_segments_pystack_receives(bed, host, loss_program, pattern):
    cfg, expect = PATTERNS[pattern]
    n_drop, n_rtx = expect[0] + expect[1], expect[2]
    data = os.urandom(SMALL)
    snmp0, ext0, before = bed.snmp("peer"), tcp_ext(bed, "peer"), mib(host)
    with LossInjector(bed, "peer", "egress", program=loss_program, port=SINK_PORT,
                      **cfg) as loss:
        took = kernel_sends(bed, host, data, SHORT)
        st = loss.stats()
    ksnmp = delta(bed.snmp("peer"), snmp0)
    kext = delta(tcp_ext(bed, "peer"), ext0)
    d = delta(mib(host), before)
    report(f"kernel sends, drop {pattern}", took, SMALL, st, {"kernel": ksnmp, "ext": kext,
                                                              "pystack": d})
    assert (st.drop_nth, st.drop_seq, st.drop_rtx, st.drop_random) == (*expect, 0)
    assert st.rtx_seen >= n_rtx + 1
    assert ksnmp["RetransSegs"] >= n_drop + n_rtx
    assert d["TCPOFOQueue"] >= 1
    if n_rtx:
        # Linux finds a lost retransmission by RACK/SACK (TCPLostRetransmit) or by its RTO.
        assert kext.get("TCPLostRetransmit", 0) + kext.get("TCPTimeouts", 0) >= 1


# ---- a tbf bottleneck --------------------------------------------------------------------


def test_pystack_sends_through_tbf_bottleneck(bed, host):
    """20 Mbit/s with a short queue: tail drops are the only loss."""
    size = 8 * MB
    data = os.urandom(size)
    before = mib(host)
    with Bottleneck(bed, "peer", "ingress", rate_mbit=20, limit=48 * 1024) as bn:
        took = pystack_sends(bed, host, data)
        q = bn.stats()
    d = delta(mib(host), before)
    report("pystack sends through 20 Mbit/s tbf", took, size, LossStats(), {"tbf": q, **d})
    assert q["sent_bytes"] >= size  # all of it went through the shaper
    # Shaped: no faster than the rate allows, burst included (the bucket starts full).
    assert took >= (size - bn.burst) * 8 / 20e6
    # The queue overflowed and pystack repaired it (a dropped SYN or pure ACK needs none).
    assert q["dropped"] >= 1
    assert d["RetransSegs"] >= q["dropped"] - 2


# ---- the fault helpers themselves ----------------------------------------------------------


def test_faults_are_removed_on_close_and_on_failure(bed, loss_program):
    def state() -> tuple[str, str, str]:
        dev = bed.peer.ifname
        return (bed.run("peer", ["tc", "qdisc", "show", "dev", dev]).stdout,
                bed.run("peer", ["ip", "-br", "link"]).stdout,
                bed.run("peer", ["ip", "-d", "link", "show", dev]).stdout)

    before = state()
    free = loss_program.free_slots
    with (LossInjector(bed, "peer", "egress", program=loss_program, rate=0.5),
          LossInjector(bed, "peer", "ingress", program=loss_program, nth=3),
          Bottleneck(bed, "peer", "ingress", rate_mbit=10) as ingress,
          Bottleneck(bed, "peer", "egress", rate_mbit=20)):
        qdiscs, links, detail = state()
        assert "clsact" in qdiscs and "tbf" in qdiscs and ingress.ifb in links
        assert "gso_max_segs 1 " in detail
    assert state() == before
    with pytest.raises(RuntimeError, match="boom"), \
            LossInjector(bed, "peer", "egress", program=loss_program):
        raise RuntimeError("boom")
    assert state() == before
    with pytest.raises(ValueError, match="rate"):
        LossInjector(bed, "peer", "ingress", program=loss_program, rate=2.0)
    with pytest.raises(ValueError, match="hook"):
        Bottleneck(bed, "peer", "sideways", rate_mbit=10)
    assert state() == before
    assert loss_program.free_slots == free, "a program slot leaked"
