"""Faults: the control plane killed mid-transfer and restarted, the peer vanishing, full
and empty AF_XDP rings. Complements tests/integration/test_datapath.py (SIGKILL of an
idle data path: the port back to the kernel within 1 s)."""

from __future__ import annotations

import errno
import functools
import hashlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from pystack.faults import LossInjector
from pystack.host import Host
from pystack.iface.datapath import Datapath
from pystack.sim.apps import StreamApp
from tests.helpers import connect_error, read_line, wait_for
from tests.reliability.stackproc import SOURCE_BYTES, Source, source_pattern
from tests.reliability.support import (
    ECHO_PORT,
    ROOT,
    PeerStream,
    StackProcess,
    report,
    running_host,
    tcb,
)

pytestmark = pytest.mark.timeout(180)
MB = 1_000_000


def attach(bed) -> subprocess.Popen[str]:
    """`pystackctl attach IFACE --port 7 --app echo` on the stack side (the product's own
    control plane; it compiles its XDP program: seconds)."""
    p = bed.spawn("stack", [sys.executable, "-m", "ctl.main", "attach", bed.stack.ifname,
                            "--port", str(ECHO_PORT), "--app", "echo"],
                  stdout=subprocess.PIPE, text=True, cwd=ROOT)
    line = read_line(p, 90)
    assert line.startswith("pystack: attached"), f"attach failed: {line!r} rc={p.poll()}"
    return p


def prog_exists(bed, prog_id: int) -> bool:
    r = bed.run("stack", ["bpftool", "prog", "show", "id", str(prog_id)], check=False)
    return r.returncode == 0


def kernel_serves(bed) -> bool:
    c = bed.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
    try:
        return connect_error(c, (bed.stack.ip, ECHO_PORT), timeout=1) == 0
    finally:
        c.close()


def echo_ok(bed, size: int = MB) -> bool:
    s = PeerStream(bed, ECHO_PORT, rate=50e6)
    try:
        wait_for(lambda: s.received >= size, 30, "an echo")
        sent, echoed, same = s.stop()
        return same and echoed == sent and not s.errors
    finally:
        s.close()


def test_sigkill_mid_transfer_then_restart(bed):
    """SIGKILL while a kernel client streams through pystack's echo: within 1 s the XDP
    program is gone from the interface (and unloaded), the kernel serves the port (a
    kernel listener on the same port answers) and the cut connection is reset by the
    kernel; nothing is left (no program, no control socket). A new control plane then
    attaches and serves again, and detaches cleanly on SIGTERM."""
    srv = bed.socket("stack", socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((bed.stack.ip, ECHO_PORT))
    srv.listen(16)
    p = attach(bed)
    prog_id = bed.xdp_prog_id("stack")
    assert prog_id != 0
    stream = PeerStream(bed, ECHO_PORT, rate=50e6)
    try:
        wait_for(lambda: stream.received >= 4 * MB, 30, "the transfer to get going")
        echoed_before = stream.received
        t0 = time.monotonic()
        p.kill()
        wait_for(lambda: bed.xdp_prog_id("stack") == 0, 1.0, "the XDP program to go")
        t_detached = time.monotonic() - t0
        wait_for(lambda: kernel_serves(bed), 1.0, "the kernel to serve the port")
        t_kernel = time.monotonic() - t0
        p.wait(5)
        wait_for(lambda: stream.errors, 10, "the cut connection to be reset")
        unloaded = wait_for(lambda: not prog_exists(bed, prog_id), 1.0, "the program unloaded")
        status = bed.run("stack", [sys.executable, "-m", "ctl.main", "status"], check=False,
                         cwd=ROOT)
    finally:
        stream.close()
    srv.close()
    report("fault sigkill_mid_transfer", echoed_before_kill=echoed_before,
           xdp_detached_s=round(t_detached, 3), kernel_serves_s=round(t_kernel, 3),
           client_saw=stream.errors[:1], program_unloaded=unloaded,
           status_after=status.stdout.strip() or status.stderr.strip())
    assert any("ConnectionReset" in e or "BrokenPipe" in e for e in stream.errors)
    assert status.returncode != 0, "a stack still answers on the interface"

    # Restarted: serves again, then a clean detach.
    t0 = time.monotonic()
    p2 = attach(bed)
    t_attach = time.monotonic() - t0
    try:
        ok = echo_ok(bed)
    finally:
        p2.terminate()
        rc = p2.wait(10)
    report("fault restart", attach_s=round(t_attach, 1), echo_1mb_sha256_match=ok,
           sigterm_exit=rc, xdp_after_detach=bed.xdp_prog_id("stack"))
    assert ok and rc == 0 and bed.xdp_prog_id("stack") == 0


@pytest.fixture
def host(bed, program) -> Iterator[Host]:
    with running_host(bed, program, "net.ipv4.tcp_retries2=3") as h:
        yield h


def test_peer_vanishes_tcp_retries2(bed, host, loss_program):
    """The peer stops answering in the middle of an echo (everything pystack sends is
    dropped on the peer's ingress, as a firewall would): with tcp_retries2 = 3 pystack
    gives up after 15 x RTO_MIN (Linux retrans_timed_out: 3 s) of retransmitting and the
    connection fails with ETIMEDOUT, counted as TCPAbortOnTimeout."""
    stream = PeerStream(bed, ECHO_PORT)
    try:
        wait_for(lambda: stream.received >= 256 * 1024, 30, "the echo to get going")
        conn = host.call(lambda: next(c for c in host.engine.connections.values()
                                      if c.four_tuple.remote_port == stream.local_port))
        m0 = host.call(lambda: dict(host.engine.mib))
        with LossInjector(bed, "peer", "ingress", program=loss_program, rate=1.0,
                          port=ECHO_PORT) as loss:
            t0 = time.monotonic()
            wait_for(lambda: host.call(lambda: conn.error) != 0, 20, "pystack to give up")
            took = time.monotonic() - t0
            dropped = loss.stats().dropped
        err = host.call(lambda: conn.error)
        m1 = host.call(lambda: dict(host.engine.mib))
    finally:
        stream.close()
    d = {k: m1[k] - m0.get(k, 0) for k in ("TCPTimeouts", "TCPAbortOnTimeout", "RetransSegs")}
    report("fault peer_vanishes_tcp_retries2", tcp_retries2=3, gave_up_after_s=round(took, 2),
           error=errno.errorcode.get(err, err), frames_dropped=dropped, **d)
    assert err == errno.ETIMEDOUT
    assert 2.5 <= took <= 8.0, f"gave up after {took:.2f} s (Linux: 3 s + the last RTO)"
    assert d["TCPTimeouts"] >= 3  # TCPAbortOnTimeout: test_timeout_abort_is_counted
    assert tcb(host, stream.local_port) is None


def test_peer_vanishes_tcp_user_timeout(bed, host):
    """pystack sends to a kernel server with TCP_USER_TIMEOUT = 1000 ms; the peer's veth
    goes down mid-transfer: the connection fails with ETIMEDOUT about 1 s after the last
    acknowledgment (RFC 5482; Linux tcp_write_timeout with icsk_user_timeout)."""
    srv = bed.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
    srv.bind((bed.peer.ip, 9000))
    srv.listen()
    data = b"\x42" * (64 * MB)
    app = host.call(lambda: StreamApp(host.connect(bed.peer.ip, 9000,
                                                   options={"TCP_USER_TIMEOUT": 1000}), data))
    s, _ = srv.accept()
    s.settimeout(10)
    got = 0
    while got < 2 * MB:
        got += len(s.recv(1 << 20))
    t0 = time.monotonic()
    bed.run("peer", ["ip", "link", "set", bed.peer.ifname, "down"])
    try:
        wait_for(lambda: host.call(lambda: app.error) != 0, 15, "pystack to give up")
        took = time.monotonic() - t0
        mib = host.call(lambda: dict(host.engine.mib))
    finally:
        bed.run("peer", ["ip", "link", "set", bed.peer.ifname, "up"])
        s.close()
        srv.close()
    err = host.call(lambda: app.error)
    report("fault peer_vanishes_user_timeout", user_timeout_ms=1000,
           gave_up_after_s=round(took, 2), error=errno.errorcode.get(err, err),
           bytes_before=got, TCPAbortOnTimeout=mib["TCPAbortOnTimeout"])
    assert err == errno.ETIMEDOUT
    assert 0.9 <= took <= 4.0, f"gave up after {took:.2f} s with a 1 s user timeout"


def small_rings(monkeypatch: pytest.MonkeyPatch, **sizes: int) -> None:
    """Host makes its Datapath itself and takes no sizes: give them here."""
    import pystack.host

    monkeypatch.setattr(pystack.host, "Datapath", functools.partial(Datapath, **sizes))


def receive_all(c: socket.socket) -> tuple[int, str]:
    h = hashlib.sha256()
    n = 0
    while chunk := c.recv(1 << 20):
        h.update(chunk)
        n += len(chunk)
    return n, h.hexdigest()


def test_small_rings_fill_and_drain(bed):
    """A UMEM of 128 frames with 64-entry rings (a stack process of its own: the pystack
    loop must not share a GIL with the test's client threads). pystack sends 8 MB to a
    kernel client at full speed (source app): the tx ring fills and segments wait for room
    (counted by watching the data path's tx_backlog: DatapathStats counts only what
    overflows it); a kernel client streams 2 MB through the echo at full speed: the fill
    ring runs dry (XDP_STATISTICS rx_fill_ring_empty_descs, rx_dropped). Every byte
    arrives, and afterwards every frame is accounted for, on the free list or the fill
    ring."""
    frames, ring = 128, 64
    sp = StackProcess(bed, "--listen", "9:source", "--listen", f"{ECHO_PORT}:echo",
                      "--frames", str(frames), "--ring", str(ring), "--batch", "16")
    try:
        p0 = sp.probe()
        c = bed.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
        c.settimeout(30)
        c.connect((bed.stack.ip, 9))
        t0 = time.monotonic()
        n, digest = receive_all(c)
        source_s = time.monotonic() - t0
        c.close()
        p1 = sp.probe()
        stream = PeerStream(bed, ECHO_PORT, rate=1e9)
        try:
            t0 = time.monotonic()
            wait_for(lambda: stream.received >= 2 * MB, 60, "2 MB to come back")
            sent, echoed, same = stream.stop()
            echo_s = time.monotonic() - t0
        finally:
            stream.close()
        p2 = wait_for(lambda: (p := sp.probe())["xsk"]["app"] + p["xsk"]["tx"] == 0 and p,
                      10, "the frames to come home")
    finally:
        sp.stop()
    want = hashlib.sha256(source_pattern() * (SOURCE_BYTES // len(source_pattern())))
    x0, x1, x2 = p0["xsk"], p1["xsk"], p2["xsk"]
    report("fault small_rings", frames=frames, ring=ring,
           source_bytes=n, source_sha256_match=digest == want.hexdigest(),
           source_s=round(source_s, 2), tx_waits=p1["tx_backlog_events"],
           tx_backlog_peak=p1["tx_backlog_peak"],
           echo_bytes=sent, echo_sha256_match=same, echo_s=round(echo_s, 2),
           fill_ring_empty=x2["fill_ring_empty"] - x1["fill_ring_empty"],
           rx_dropped=x2["rx_dropped"] - x1["rx_dropped"],
           retrans=p2["mib"]["RetransSegs"] - p0["mib"]["RetransSegs"],
           frames_free_fill=(x2["free"], x2["fill"]), accounting_ok=p2["xsk_consistent"])
    assert n == SOURCE_BYTES and digest == want.hexdigest()
    assert same and echoed == sent and not stream.errors
    assert p1["tx_backlog_events"] > 0, "the tx ring never filled"
    assert x2["fill_ring_empty"] > x1["fill_ring_empty"], "the fill ring never ran dry"
    assert p2["xsk_consistent"] and x2["free"] + x2["fill"] == frames
    assert x0["frames"] == frames


def test_ring_smaller_than_a_tso_segment(bed, program, monkeypatch):
    """32-entry rings: pystack sends 8 MB (source app) to a kernel client."""
    small_rings(monkeypatch, frames=4096, ring_size=32, batch=16)
    with running_host(bed, program, port=0) as h:
        h.call(lambda: h.serve(9, Source))
        c = bed.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
        c.settimeout(3)
        c.connect((bed.stack.ip, 9))
        got = 0
        try:
            while chunk := c.recv(1 << 20):
                got += len(chunk)
        except TimeoutError:
            pass
        finally:
            c.close()
        backlog = h.call(lambda: h.dp.tx_backlog)
    report("fault ring_smaller_than_tso", ring=32, tso_segs=44, bytes=got,
           stuck_segments=backlog)
    assert got == SOURCE_BYTES, f"stalled after {got} bytes, {backlog} segments stuck"


def test_timeout_abort_is_counted():
    """Engine-level reproducer (pystack.tcp.testing): a connection whose data is never
    acknowledged fails with ETIMEDOUT after tcp_retries2; TCPAbortOnTimeout must count it."""
    from pystack.tcp.testing import Harness

    h = Harness(tcp_retries2=3)
    c = h.established_client()
    c.send(b"x" * 1000)
    h.advance(0.0)
    for _ in range(100):
        if c.error:
            break
        h.advance(1.0)
    report("fault abort_on_timeout_counter", error=errno.errorcode.get(c.error, c.error),
           TCPAbortOnTimeout=h.engine.mib["TCPAbortOnTimeout"],
           TCPTimeouts=h.engine.mib["TCPTimeouts"])
    assert c.error == errno.ETIMEDOUT
    assert h.engine.mib["TCPAbortOnTimeout"] == 1
