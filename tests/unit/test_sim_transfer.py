"""Two engines over the simulated link: transfers, closes, resets, timeouts, keepalive."""

import errno
import random

from pystack.sim import LinkConfig, SimNetwork, StreamApp, accept_into
from pystack.tcp.engine import TcpEngine
from pystack.tcp.settings import Settings
from pystack.tcp.state import TcpState

A = 0xC6120001
B = 0xC6120002


def _pair(seed: int = 1, link: LinkConfig | None = None, **sysctls):
    net = SimNetwork(seed=seed, default=link or LinkConfig(delay=0.005))
    s = Settings(**sysctls)
    a = TcpEngine(s, secret=b"a" * 16)
    b = TcpEngine(s, secret=b"b" * 16)
    net.add_host(A, a)
    net.add_host(B, b)
    return net, a, b


def _data(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def test_transfer_both_ways_and_clean_close() -> None:
    net, a, b = _pair()
    up, down = _data(300_000, 1), _data(200_000, 2)
    apps = accept_into(b.listen(0, 80), down)
    client = StreamApp(a.connect(A, B, 80), up)
    assert net.run(until=60, stop=lambda: client.done and apps and apps[0].done)
    server = apps[0]
    assert server.received == up
    assert client.received == down
    net.run_for(1)
    done = {TcpState.TIME_WAIT, TcpState.CLOSED}
    assert client.conn.state in done and server.conn.state in done
    assert client.conn.error == 0 and server.conn.error == 0
    net.run_for(61)
    assert not a.connections and not b.connections
    assert a.mib["CurrEstab"] == 0 and b.mib["CurrEstab"] == 0
    assert a.mib["ActiveOpens"] == 1 and b.mib["PassiveOpens"] == 1


def test_half_close_data_keeps_flowing_the_other_way() -> None:
    net, a, b = _pair()
    lst = b.listen(0, 80)
    c = a.connect(A, B, 80)
    net.run(until=1, stop=lambda: lst.pending == 1)
    s = lst.accept()
    c.shutdown_write()
    net.run_for(0.1)
    assert s.recv(10) == b""
    assert c.state == TcpState.FIN_WAIT_2 and s.state == TcpState.CLOSE_WAIT
    payload = _data(50_000, 3)
    srv = StreamApp(s, payload)
    cli = StreamApp(c)
    assert net.run(until=10, stop=lambda: cli.eof)
    assert cli.received == payload
    net.run_for(0.1)
    assert srv.conn.state == TcpState.CLOSED
    assert c.state == TcpState.TIME_WAIT


def test_abort_sends_rst_and_peer_sees_econnreset() -> None:
    net, a, b = _pair()
    lst = b.listen(0, 80)
    c = a.connect(A, B, 80)
    net.run(until=1, stop=lambda: lst.pending == 1)
    s = lst.accept()
    events: list[str] = []
    s.on_event = lambda conn, kind: events.append(kind)
    c.abort()
    net.run_for(0.1)
    assert s.state == TcpState.CLOSED
    assert s.error == errno.ECONNRESET
    assert "closed" in events
    assert a.mib["OutRsts"] == 1 and b.mib["EstabResets"] == 1


def test_connect_to_closed_port_is_refused() -> None:
    net, a, b = _pair()
    c = a.connect(A, B, 81)
    net.run_for(1)
    assert c.state == TcpState.CLOSED and c.error == errno.ECONNREFUSED
    assert b.mib["OutRsts"] == 1 and a.mib["AttemptFails"] == 1


def test_connect_to_silent_host_times_out_after_syn_retries() -> None:
    net, a, b = _pair(link=LinkConfig(delay=0.005, drop=1.0))
    c = a.connect(A, B, 80)
    net.run(until=126.9)
    assert c.state == TcpState.SYN_SENT
    net.run(until=127.1)
    assert c.error == errno.ETIMEDOUT
    assert a.mib["RetransSegs"] == 6


def test_established_connection_times_out_when_the_link_dies() -> None:
    net, a, b = _pair()
    lst = b.listen(0, 80)
    c = a.connect(A, B, 80)
    net.run(until=1, stop=lambda: lst.pending == 1)
    lst.accept()
    net.default = LinkConfig(delay=0.005, drop=1.0)
    start = net.now
    c.send(b"into the void")
    assert net.run(until=start + 2000, stop=lambda: c.state == TcpState.CLOSED)
    assert c.error == errno.ETIMEDOUT
    assert 900 < net.now - start < 930  # tcp_retries2 = 15 -> ~924.6 s with RTO 200 ms
    assert a.mib["RetransSegs"] == 15


def test_keepalive_probes_answered_keep_connection() -> None:
    net, a, b = _pair()
    lst = b.listen(0, 80)
    c = a.connect(A, B, 80, options={"SO_KEEPALIVE": 1, "TCP_KEEPIDLE": 10,
                                      "TCP_KEEPINTVL": 5, "TCP_KEEPCNT": 3})
    net.run(until=1, stop=lambda: lst.pending == 1)
    lst.accept()
    tr = net.capture()
    net.run_for(35)
    probes = [(round(t, 3), s) for t, s in tr if s.src_ip == A]
    assert len(probes) == 3  # every 10 s of idleness (each answer restarts the idle time)
    assert all(s.seq == c.snd_una - 1 and not s.payload for _, s in probes)
    assert c.state == TcpState.ESTABLISHED
    assert a.mib["TCPKeepAlive"] == 3


def test_keepalive_gives_up_after_keepcnt_probes() -> None:
    net, a, b = _pair()
    lst = b.listen(0, 80)
    c = a.connect(A, B, 80, options={"SO_KEEPALIVE": 1, "TCP_KEEPIDLE": 10,
                                      "TCP_KEEPINTVL": 5, "TCP_KEEPCNT": 3})
    net.run(until=1, stop=lambda: lst.pending == 1)
    lst.accept()
    t0 = net.now
    net.default = LinkConfig(delay=0.005, drop=1.0)
    assert net.run(until=t0 + 100, stop=lambda: c.state == TcpState.CLOSED)
    assert c.error == errno.ETIMEDOUT
    assert 24.9 < net.now - t0 < 25.1  # idle 10 s + 3 probes 5 s apart
    assert a.mib["TCPKeepAlive"] == 3
    assert a.mib["OutRsts"] == 1


def test_keepalive_default_times_are_linux() -> None:
    net, a, b = _pair()
    lst = b.listen(0, 80)
    c = a.connect(A, B, 80, options={"SO_KEEPALIVE": 1})
    net.run(until=1, stop=lambda: lst.pending == 1)
    assert c.get_option("TCP_KEEPIDLE") == 7200
    assert c.get_option("TCP_KEEPINTVL") == 75
    assert c.get_option("TCP_KEEPCNT") == 9
    t0 = net.now
    net.default = LinkConfig(delay=0.005, drop=1.0)
    assert net.run(until=t0 + 9000, stop=lambda: c.state == TcpState.CLOSED)
    assert abs(net.now - t0 - (7200 + 9 * 75)) < 1


def test_lossy_link_still_delivers() -> None:
    net, a, b = _pair(seed=7, link=LinkConfig(delay=0.01, drop=0.05, reorder=0.05,
                                              duplicate=0.02, corrupt=0.02))
    up = _data(200_000, 9)
    apps = accept_into(b.listen(0, 80), b"")
    client = StreamApp(a.connect(A, B, 80), up)
    assert net.run(until=300, stop=lambda: client.done and apps and apps[0].done)
    assert apps[0].received == up
    assert a.mib["RetransSegs"] > 0
    assert net.stats["corrupted"] > 0


def test_many_connections_one_listener() -> None:
    net, a, b = _pair()
    apps = accept_into(b.listen(0, 80, 64), b"pong")
    clients = [StreamApp(a.connect(A, B, 80), b"ping%d" % i) for i in range(20)]
    assert net.run(until=10, stop=lambda: all(c.done for c in clients))
    assert sorted(bytes(s.received) for s in apps) == sorted(b"ping%d" % i for i in range(20))
    assert all(c.received == b"pong" for c in clients)
    assert len({c.conn.local_port for c in clients}) == 20
