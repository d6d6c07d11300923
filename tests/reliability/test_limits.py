"""Resource limits of a pystack process (tests/reliability/stackproc.py) on the veth bed:
past each cap new work is refused and counted, an established connection keeps streaming
(a kernel client through the echo on port 7, SHA-256 checked), and the process's memory
stays bounded (VmRSS measured before and after, reported).

Caps pystack has, with Linux's names: the accept queue (listen backlog, somaxconn), the
SYN queue (the backlog; tcp_max_syn_backlog without cookies), pending Fast Open requests
(TCP_FASTOPEN's queue length), buffer memory for the whole engine (tcp_mem) and per
connection (tcp_rmem/tcp_wmem, SO_RCVBUF/SO_SNDBUF), orphans (tcp_max_orphans),
TIME-WAIT buckets (tcp_max_tw_buckets) and, pystack's own (Linux bounds connections by
memory and file descriptors), the connections the engine holds (pystack.max_connections,
at most the XDP program's flow table); the last test also measures what each costs.

Half-open requests come from addresses of 198.18.0.0/24 that nothing owns (FLOOD): the
peer namespace drops pystack's SYN-ACKs to them (not its addresses, no forwarding), so
they stay half-open, as a SYN flood's do."""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.helpers import wait_for
from tests.reliability.support import (
    SYN,
    Injector,
    PeerStream,
    StackProcess,
    report,
)

if TYPE_CHECKING:  # imported by name, pytest would try to collect the class
    from pystack.testbed import Testbed

ECHO, HOLD, SINK, TFO, SYNQ = 7, 8, 9, 10, 11
BACKLOG = 4
TFO_QLEN = 4
FLOOD = "198.18.0.{}"  # .100 - .250: owned by nobody

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def lbed(program) -> Iterator[Testbed]:
    from pystack.testbed import Testbed

    b = Testbed.create()
    try:
        b.run("peer", ["sysctl", "-qw", "net.ipv4.ip_forward=0"])
        b.run("peer", ["sysctl", "-qw", "net.ipv4.tcp_fastopen=5"])  # client, no cookie
        yield b
    finally:
        b.destroy()


@pytest.fixture(scope="module")
def stack(lbed) -> Iterator[StackProcess]:
    s = StackProcess(lbed, "--listen", f"{ECHO}:echo", "--listen", f"{HOLD}:hold:{BACKLOG}",
                     "--listen", f"{SINK}:sink", "--listen", f"{TFO}:echo:128:{TFO_QLEN}",
                     "--listen", f"{SYNQ}:hold:{BACKLOG}",
                     "--sysctl", "net.ipv4.tcp_syncookies=0",
                     "--sysctl", "net.ipv4.tcp_fastopen=515")  # 0x203: no cookie needed
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def inj(lbed) -> Iterator[Injector]:
    i = Injector(lbed)
    try:
        yield i
    finally:
        i.close()


def mib_delta(a: dict, b: dict, *names: str) -> dict[str, int]:
    return {n: b["mib"].get(n, 0) - a["mib"].get(n, 0) for n in names}


def finish(stream: PeerStream) -> int:
    sent, echoed, same = stream.stop()
    assert not stream.errors and same and echoed == sent, \
        f"the established stream broke: {stream.errors} sent {sent} echoed {echoed}"
    return sent


def flood_syns(inj: Injector, port: int, n: int, seed: int, payload: bytes = b"") -> None:
    rnd = random.Random(seed)
    for _ in range(n):
        inj.send(inj.tcp(rnd.randrange(1024, 65536), port, rnd.randrange(1 << 32), 0, SYN,
                         window=64240, options=b"\x02\x04\x05\xb4", payload=payload,
                         src=FLOOD.format(rnd.randrange(100, 251))))


def test_accept_queue_cap(lbed, stack):
    """20 kernel clients to a listener that never accepts (backlog 4): Linux admits
    backlog + 1 to the accept queue; the others' SYNs are dropped and counted."""
    stream = PeerStream(lbed, ECHO)
    clients: list[socket.socket] = []
    try:
        p0 = stack.probe()
        for _ in range(20):
            c = lbed.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
            c.setblocking(False)
            c.connect_ex((lbed.stack.ip, HOLD))
            clients.append(c)
        wait_for(lambda: stack.probe()["listeners"][str(HOLD)]["accept_queue"] == BACKLOG + 1,
                 10, "the accept queue to fill")
        p1 = wait_for(lambda: (p := stack.probe())["mib"]["ListenDrops"]
                      - p0["mib"]["ListenDrops"] >= 20 - BACKLOG - 1 and p, 10,
                      "the other SYNs to be dropped")
        sent = finish(stream)
    finally:
        stream.close()
        for c in clients:
            c.close()
    d = mib_delta(p0, p1, "ListenDrops", "ListenOverflows", "TCPReqQFullDrop", "PassiveOpens")
    q = p1["listeners"][str(HOLD)]["accept_queue"]
    report("limits accept_queue", clients=20, backlog=BACKLOG, accept_queue=q, **d,
           rss_kib=(p0["rss_kib"], p1["rss_kib"]), echo_stream_bytes=sent)
    assert q == BACKLOG + 1 and d["ListenDrops"] >= 20 - BACKLOG - 1


def test_syn_queue_cap_under_a_syn_flood(lbed, stack, inj):
    """500 spoofed SYNs, no cookies (tcp_syncookies=0): the listener keeps backlog + 1
    requests, drops the rest (TCPReqQFullDrop, ListenDrops), memory does not grow."""
    n = 500
    stream = PeerStream(lbed, ECHO)
    try:
        p0 = stack.probe()
        flood_syns(inj, SYNQ, n, seed=1)
        p1 = wait_for(lambda: (p := stack.probe())["mib"]["TCPReqQFullDrop"]
                      - p0["mib"]["TCPReqQFullDrop"] >= n - BACKLOG - 1 and p, 20,
                      "the flood to be judged")
        sent = finish(stream)
    finally:
        stream.close()
    d = mib_delta(p0, p1, "TCPReqQFullDrop", "ListenDrops", "PassiveOpens")
    half_open = p1["states"].get("SYN_RECEIVED", 0) - p0["states"].get("SYN_RECEIVED", 0)
    rss = p1["rss_kib"] - p0["rss_kib"]
    report("limits syn_queue", syns=n, backlog=BACKLOG, half_open_kept=half_open, **d,
           rss_growth_kib=rss, echo_stream_bytes=sent)
    assert half_open == BACKLOG + 1
    # ListenDrops also counts the accept-queue test's clients still knocking on port 8.
    assert d["TCPReqQFullDrop"] == n - BACKLOG - 1 and d["ListenDrops"] >= n - BACKLOG - 1
    assert rss < 8 * 1024, f"RSS grew {rss} KiB for {BACKLOG + 1} requests"


def test_fastopen_pending_cap(lbed, stack, inj):
    """TCP_FASTOPEN queue length 4, tcp_fastopen 0x203 (no cookie needed): spoofed SYNs
    with data that never complete their handshake. The first 4 become Fast Open children
    (data accepted), the rest are counted TCPFastOpenListenOverflow and fall back to a
    plain handshake (data ignored); a real kernel client with Fast Open still connects,
    and its data arrives after the handshake."""
    n = 20
    stream = PeerStream(lbed, ECHO)
    try:
        p0 = stack.probe()
        flood_syns(inj, TFO, n, seed=2, payload=b"fast open data" * 4)
        p1 = wait_for(lambda: (p := stack.probe())["mib"]["TCPFastOpenListenOverflow"]
                      - p0["mib"]["TCPFastOpenListenOverflow"] >= n - TFO_QLEN and p, 20,
                      "the Fast Open SYNs to be judged")
        c = lbed.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
        c.settimeout(10)
        c.sendto(b"hello over fast open", socket.MSG_FASTOPEN, (lbed.stack.ip, TFO))
        got = b""
        while len(got) < 20:
            got += c.recv(100)
        c.close()
        p2 = stack.probe()
        sent = finish(stream)
    finally:
        stream.close()
    d = mib_delta(p0, p1, "TCPFastOpenPassive", "TCPFastOpenListenOverflow", "PassiveOpens")
    d2 = mib_delta(p1, p2, "TCPFastOpenListenOverflow", "PassiveOpens")
    report("limits fastopen_pending", syns_with_data=n, tfo_qlen=TFO_QLEN, **d,
           kernel_client_overflow=d2["TCPFastOpenListenOverflow"], kernel_client_echo=got,
           rss_kib=(p0["rss_kib"], p2["rss_kib"]), echo_stream_bytes=sent)
    assert d["TCPFastOpenPassive"] == TFO_QLEN
    assert d["TCPFastOpenListenOverflow"] == n - TFO_QLEN
    assert got == b"hello over fast open"
    assert d2["TCPFastOpenListenOverflow"] == 1, "the queue should still be full"


def test_tcp_mem_bounds_buffer_memory(lbed, stack):
    """tcp_mem = 64 96 128 pages (256/384/512 KiB) for the engine; 8 kernel clients push
    2 MB each into an app that never reads. The engine enters memory pressure and refuses
    what it cannot hold (counted; under pressure each connection gets at most its share of
    tcp_mem[2]), the pages it holds stay near tcp_mem[2] and the RSS with them; once the
    sink resets those connections the memory comes back, and the echo stream that ran
    beside them completes intact. (It may stall while the engine is over tcp_mem[2]:
    test_send_makes_progress_over_tcp_mem_limit.)"""
    n, size = 8, 2_000_000
    default_tcp_mem = stack.sysctl("net.ipv4.tcp_mem")
    stack.sysctl("net.ipv4.tcp_mem", "64 96 128")
    stream = PeerStream(lbed, ECHO)
    clients: list[socket.socket] = []
    try:
        p0 = stack.probe()

        def push(c: socket.socket) -> None:
            try:
                c.sendall(b"\x5a" * size)
            except OSError:
                pass  # reset at the end of the test while still blocked

        for _ in range(n):
            c = lbed.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
            c.settimeout(30)
            c.connect((lbed.stack.ip, SINK))
            clients.append(c)
            threading.Thread(target=push, args=(c,), daemon=True).start()
        def refusing(p: dict) -> bool:
            d = mib_delta(p0, p, "TCPMemoryPressures", "PruneCalled", "TCPRcvQDrop")
            return d["TCPMemoryPressures"] > 0 and d["PruneCalled"] + d["TCPRcvQDrop"] > 0

        p1 = wait_for(lambda: refusing(p := stack.probe()) and p, 20,
                      "memory pressure and refused data")
        # Sample for a second while the senders push against the limit.
        echoed0 = stream.received
        samples = []
        t_end = time.monotonic() + 1.0
        while time.monotonic() < t_end:
            samples.append(stack.probe()["mem_pages"])
        p2 = stack.probe()
        echoed_at_limit = stream.received - echoed0
        # The sink resets its connections (the clients' own RSTs would fall outside the
        # zero window and be dropped, RFC 5961 §3.2, as Linux does): memory comes back.
        assert stack.request("abort", port=SINK) == n
        p3 = wait_for(lambda: (p := stack.probe())["mem_pages"] < 32 and p, 10,
                      "the memory to come back")
        stack.sysctl("net.ipv4.tcp_mem", default_tcp_mem)
        sent = finish(stream)
    finally:
        stream.close()
        for c in clients:
            c.close()
        stack.sysctl("net.ipv4.tcp_mem", default_tcp_mem)
    d = mib_delta(p0, p2, "TCPMemoryPressures", "PruneCalled", "TCPRcvQDrop", "TCPOFODrop")
    peak = max([p1["mem_pages"], *samples])
    rss = p2["rss_kib"] - p0["rss_kib"]
    report("limits tcp_mem", clients=n, bytes_each=size, tcp_mem="64 96 128",
           mem_pages_peak=peak, mem_pages_after_reset=p3["mem_pages"], **d,
           rss_growth_kib=rss, echo_bytes_while_at_limit_1s=echoed_at_limit,
           echo_stream_bytes=sent)
    assert d["TCPMemoryPressures"] >= 1
    assert d["PruneCalled"] + d["TCPRcvQDrop"] > 0, "nothing was refused"
    # Each connection may go past the limit by what is forced in to make progress (Linux
    # sk_forced_mem_schedule: a segment when nothing is queued): a few pages each.
    assert peak <= 128 + n * 4, f"the engine held {peak} pages with tcp_mem[2] = 128"
    assert rss < 16 * 1024, f"RSS grew {rss} KiB holding {peak} pages"


def test_send_makes_progress_over_tcp_mem_limit():
    """Linux guarantees progress over tcp_mem[2]: tcp_sendmsg forces the first skb of a
    socket whose write and retransmit queues are empty (tcp_stream_alloc_skb with
    force_schedule, sk_forced_mem_schedule), as pystack's receive side already does for
    in-order data. Engine-level reproducer (pystack.tcp.testing, no I/O): 7 connections
    hold 7 pages with tcp_mem[2] = 4, an 8th with nothing queued cannot send a byte."""
    from pystack.tcp.testing import Harness
    from pystack.wire.segment import ACK as A
    from pystack.wire.segment import SYN as S

    h = Harness(tcp_mem="2 3 4")
    lst = h.listen()
    conns = []
    for port in range(50000, 50008):
        h.send(S, 1000, src_port=port)
        syn_ack = h.recv_one()
        h.send(A, 1001, syn_ack.seq + 1, src_port=port)
        c = lst.accept()
        assert c is not None
        conns.append(c)
    h.recv()
    for c in conns[:7]:
        for i in range(3):
            h.send(A, 1001 + 1000 * i, c.snd_nxt, payload=b"a" * 1000,
                   src_port=c.four_tuple.remote_port)
    h.recv()
    pages = h.engine.tcp_memory.pages
    report("limits tcp_mem_forward_progress", pages=pages, tcp_mem_high=4,
           idle_connection_can_send=conns[7].send(b"x" * 100))
    assert pages > 4
    assert conns[7].outq == 100, "a connection with nothing queued could not send"


def test_connection_cap(lbed, stack):
    """pystack.max_connections (connections the engine holds, any state): 300 idle kernel
    connections to the echo all work (what each costs in RSS is measured); with the cap
    then set to the number held, 5 more clients' SYNs are dropped and counted
    (ConnectionLimitDrops, ListenDrops) while an established stream keeps going; when one
    connection closes, a waiting client gets its slot (its SYN retransmission)."""
    n, extra = 300, 5
    stream = PeerStream(lbed, ECHO)
    socks: list[socket.socket] = []
    waiting: list[socket.socket] = []
    try:
        p0 = stack.probe()
        for _ in range(n):
            c = lbed.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
            c.settimeout(10)
            c.connect((lbed.stack.ip, ECHO))
            socks.append(c)
        for i, c in enumerate(socks):
            c.sendall(i.to_bytes(2, "big"))
        for i, c in enumerate(socks):
            assert c.recv(2) == i.to_bytes(2, "big")
        p1 = stack.probe()
        cap = p1["connections"]
        stack.sysctl("pystack.max_connections", cap)
        for _ in range(extra):
            c = lbed.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
            c.setblocking(False)
            c.connect_ex((lbed.stack.ip, ECHO))
            waiting.append(c)
        p2 = wait_for(lambda: (p := stack.probe())["mib"]["ConnectionLimitDrops"]
                      - p1["mib"]["ConnectionLimitDrops"] >= extra and p, 10,
                      "the SYNs over the cap to be dropped")
        over = [c for c in waiting if _connected(c)]
        socks.pop().close()  # a slot frees once pystack's side has closed too
        wait_for(lambda: any(_connected(c) for c in waiting), 15,
                 "a waiting client to connect into the freed slot")
        sent = finish(stream)
    finally:
        stack.sysctl("pystack.max_connections", 65536)
        stream.close()
        for c in socks + waiting:
            c.close()
    est = p1["states"].get("ESTABLISHED", 0) - p0["states"].get("ESTABLISHED", 0)
    per_conn = (p1["rss_kib"] - p0["rss_kib"]) * 1024 // n
    d = mib_delta(p1, p2, "ConnectionLimitDrops", "ListenDrops")
    report("limits connections", cap=cap, established=n, engine_established_delta=est,
           over_cap_clients=extra, connected_over_cap=len(over), **d,
           rss_bytes_per_connection=per_conn, rss_kib=(p0["rss_kib"], p1["rss_kib"]),
           echo_stream_bytes=sent)
    assert est == n
    assert not over, "a client connected past the cap"
    assert d["ListenDrops"] >= extra
    assert per_conn < 64 * 1024, f"{per_conn} bytes of RSS per idle connection"


def _connected(c: socket.socket) -> bool:
    try:
        c.getpeername()
    except OSError:
        return False
    return c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
