"""tcp_mem: engine-wide buffer accounting in pages, memory-pressure mode and the hard
limit (Linux __sk_mem_raise_allocated, tcp_try_rmem_schedule, tcp_prune_ofo_queue,
tcp_data_queue's drops, sk_stream_moderate_sndbuf)."""

from __future__ import annotations

import gc
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pystack.sim import LinkConfig, SimNetwork, StreamApp, accept_into
from pystack.tcp.buffers import MemAccount
from pystack.tcp.connection import Connection
from pystack.tcp.engine import TcpEngine
from pystack.tcp.settings import Settings
from pystack.tcp.testing import LOCAL_ISN, REMOTE_ISN, Harness
from pystack.wire.segment import ACK, TcpOptions

L = LOCAL_ISN + 1
R = REMOTE_ISN + 1
MSS = TcpOptions(mss=1460)
A = 0xC6120001
B = 0xC6120002


def _mem(h: Harness) -> MemAccount:
    acct = h.engine.tcp_memory
    assert isinstance(acct, MemAccount)
    return acct


def _data(h: Harness, off: int, n: int = 1460) -> None:
    h.send(ACK, R + off, L, payload=bytes(n))


def test_tcp_mem_setting_parses_like_linux() -> None:
    s = Settings()
    low, press, high = s.tcp_mem
    assert 0 < low < press < high  # sized from memory, Linux's 3/4, 1, 3/2 proportions
    s.set("net.ipv4.tcp_mem", "10 20 30")
    assert s.tcp_mem == (10, 20, 30)
    with pytest.raises(ValueError, match="tcp_mem"):
        s.set("tcp_mem", "10 20")


def test_pages_follow_the_bytes_held_and_return_to_zero() -> None:
    h = Harness()
    c = h.established_server(options=MSS)
    _data(h, 1460)  # out of order: held, one page
    h.recv()
    assert _mem(h).pages == 1
    _data(h, 0, 1460)
    _data(h, 2920, 4000)  # 6920 bytes in order: two pages
    h.recv()
    assert _mem(h).pages == 2 and c.readable == 6920
    c.recv(6000)
    assert _mem(h).pages == 1
    c.recv(6000)
    assert _mem(h).pages == 0
    c.send(bytes(5000))  # the send queue counts too, until acknowledged
    h.recv()
    assert _mem(h).pages == 2
    h.send(ACK, R + 6920, L + 5000)
    assert _mem(h).pages == 0


def test_freed_connections_give_their_pages_back() -> None:
    h = Harness()
    c = h.established_server(options=MSS)
    c.send(bytes(9000))
    _data(h, 0, 3000)
    h.recv()
    assert _mem(h).pages == 3 + 1
    c.abort()  # the send queue goes at once
    h.expect(flags="RA")
    assert _mem(h).pages == 1
    # The receive queue (unread data) goes with the connection object: once the user
    # and the engine (whose timer heap lets go of a closed connection lazily) drop it.
    del c
    h.events.clear()
    assert h.engine.next_deadline() is None
    gc.collect()
    assert _mem(h).pages == 0


def test_pressure_mode_caps_the_window_at_four_segments() -> None:
    """Above tcp_mem[1] the engine is under memory pressure until it is below tcp_mem[0]:
    a receive window that is half used is cut to 4 * advmss (tcp_adjust_rcv_ssthresh)."""
    h = Harness(tcp_mem="2 3 1000")
    c = h.established_server(options=MSS)
    for i in range(30):  # 43800 bytes unread: 11 pages
        _data(h, i * 1460)
    h.recv()
    assert _mem(h).pressure and h.engine.mib["TCPMemoryPressures"] == 1
    c.recv(30000)  # 13800 left: 4 pages, still above tcp_mem[0]
    assert _mem(h).pressure
    for i in range(30, 44):  # the rest of the 64240 window
        _data(h, i * 1460)
    acks = h.recv()
    assert c.tcp_info()["rcv_ssthresh"] == 4 * 1460
    assert acks[-1].ack == R + 44 * 1460 and acks[-1].window == 4 * 1460
    c.recv(1 << 20)  # all read: 0 pages, below tcp_mem[0]: pressure is over
    assert not _mem(h).pressure


def test_same_traffic_without_pressure_keeps_the_window() -> None:
    h = Harness()
    c = h.established_server(options=MSS)
    for i in range(30):
        _data(h, i * 1460)
    h.recv()
    c.recv(30000)
    for i in range(30, 44):
        _data(h, i * 1460)
    acks = h.recv()
    assert acks[-1].window == (65536 - 34240) // 1460 * 1460
    assert not _mem(h).pressure and h.engine.mib["TCPMemoryPressures"] == 0


def test_over_the_hard_limit_out_of_order_data_is_dropped_then_pruned() -> None:
    h = Harness(tcp_mem="1 1 2")  # two pages (8 KiB) for the whole engine
    c = h.established_server(options=MSS)
    mib = h.engine.mib
    for k in (1, 4, 6, 8, 10):  # five out-of-order segments, 7300 bytes: two pages
        _data(h, k * 1460)
    h.recv()
    assert _mem(h).pages == 2 and _mem(h).pressure
    _data(h, 12 * 1460)  # a third page is over tcp_mem[2]: dropped
    h.recv()
    assert (mib["TCPOFODrop"], mib["PruneCalled"], mib["OfoPruned"]) == (1, 1, 0)
    assert c._rcvbuf is not None and len(c._rcvbuf.ooo) == 5
    # In-order data wins: the out-of-order queue is pruned from the top, an eighth of
    # the receive buffer at a time (here: all of it), until there is room.
    _data(h, 0)
    seg = h.recv()[-1]
    assert (mib["PruneCalled"], mib["OfoPruned"]) == (2, 1)
    assert c.readable == 1460 and not c._rcvbuf.ooo and seg.ack == R + 1460
    assert _mem(h).pages == 1 and not _mem(h).pressure


def test_over_the_hard_limit_in_order_data_waits_for_the_reader() -> None:
    h = Harness(tcp_mem="1 1 2")
    c = h.established_server(options=MSS)
    for k in range(5):  # 7300 bytes in order, unread: two pages
        _data(h, k * 1460)
    h.recv()
    assert _mem(h).pages == 2
    _data(h, 5 * 1460)
    h.expect(flags="A", ack=R + 5 * 1460)  # dropped (TCPRcvQDrop) and ACKed at once
    assert h.engine.mib["TCPRcvQDrop"] == 1 and c.readable == 7300
    assert c.recv(1 << 20) == bytes(7300)
    _data(h, 5 * 1460)  # the retransmission fits now
    h.recv()
    assert c.readable == 1460 and h.engine.mib["TCPRcvQDrop"] == 1


def test_an_empty_receive_queue_always_takes_in_order_data() -> None:
    """sk_forced_mem_schedule: with nothing queued the segment is taken over the limit."""
    h = Harness(tcp_mem="0 0 0")
    c = h.established_server(options=MSS)
    _data(h, 0, 1000)
    h.recv()
    assert c.readable == 1000 and _mem(h).pages == 1


def test_send_buffer_shrinks_over_the_hard_limit_and_grows_again() -> None:
    h = Harness(tcp_mem="1 1 2")
    c = h.established_client()
    assert c.writable == 2 * 10 * 1460  # tcp_sndbuf_expand: 2 x cwnd x MSS
    assert c.send(bytes(8192)) == 8192  # two pages
    h.recv()
    # A third page would be over tcp_mem[2]: no room, and the buffer is moderated to
    # half of what is queued (at least SOCK_MIN_SNDBUF).
    assert c.writable == 0
    assert c.sndbuf_size == 4608 and _mem(h).pressure
    assert c._out_of_memory() is False  # 8192 queued > 4608, but not over tcp_mem[2]
    assert c.send(b"x") == 0
    h.send(ACK, R, L + 8192)
    assert _mem(h).pages == 0 and not _mem(h).pressure
    assert (c, "writable") in h.events
    cwnd = c.tcp_info()["cwnd"]
    assert cwnd > 10 and c.writable == 2 * cwnd * 1460  # below tcp_mem[0]: expands again


def test_no_send_buffer_growth_under_pressure() -> None:
    h = Harness(tcp_mem="0 0 100")
    c = h.established_client()
    c.send(bytes(1000))
    assert c.writable > 0  # within tcp_mem[2]
    assert _mem(h).pressure
    assert c.sndbuf_size == 16384  # tcp_wmem[1]: not expanded to 2 x cwnd x MSS


def _server(h: Harness, port: int) -> Connection:
    from pystack.wire.segment import SYN

    h.send(SYN, REMOTE_ISN, options=MSS, src_port=port)
    h.recv()
    h.send(ACK, R, L, src_port=port)
    (c,) = [x for x in h.engine.connections.values() if x.remote_port == port]
    return c


def test_pressure_is_engine_wide() -> None:
    """One connection's unread data puts every connection under pressure."""
    h = Harness(tcp_mem="1 2 1000")
    h.listen()
    a = _server(h, 40000)
    b = _server(h, 40001)
    h.send(ACK, R, L, payload=bytes(12000), src_port=40000)  # three pages on a
    h.recv()
    assert a.readable == 12000 and _mem(h).pressure
    for i in range(30):  # b is half full: its window is cut too
        h.send(ACK, R + i * 1460, L, payload=bytes(1460), src_port=40001)
    h.recv()
    assert b.tcp_info()["rcv_ssthresh"] == 4 * 1460


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), drop=st.floats(0, 0.1), reorder=st.floats(0, 0.3))
def test_streams_survive_a_tight_tcp_mem(seed: int, drop: float, reorder: float) -> None:
    """Both directions at once through 8 pages per engine, over a lossy reordering link:
    out-of-order data is dropped or pruned, senders are held back, and still every byte
    arrives exactly and the accounting returns to zero."""
    link = LinkConfig(delay=0.005, jitter=0.002, drop=drop, reorder=reorder,
                      reorder_delay=0.01)
    net = SimNetwork(seed=seed, default=link)
    s = Settings(tcp_mem="2 4 8")
    a, b = TcpEngine(s, secret=bytes(16)), TcpEngine(s, secret=bytes(range(16)))
    net.add_host(A, a)
    net.add_host(B, b)
    rng = random.Random(seed)
    up, down = rng.randbytes(150_000), rng.randbytes(150_000)
    servers = accept_into(b.listen(0, 80), down)
    client = StreamApp(a.connect(A, B, 80), up)
    assert net.run(until=3000, stop=lambda: client.done and servers and servers[0].done)
    assert bytes(servers[0].received) == up and bytes(client.received) == down
    net.run(until=net.now + 3000, stop=lambda: not a.connections and not b.connections)
    for eng in (a, b):
        assert eng.tcp_memory.pages == 0
