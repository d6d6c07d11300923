"""The per-destination TCP metrics cache (Linux tcp_metrics; tcp_no_metrics_save):
saved at close, read when the next connection between the same addresses is
established, bounded and aged."""

import pytest

from pystack.cc.base import TCP_INFINITE_SSTHRESH
from pystack.sim import LinkConfig, SimNetwork, StreamApp, accept_into
from pystack.tcp.connection import Connection
from pystack.tcp.engine import TcpEngine
from pystack.tcp.metrics_cache import TCP_METRICS_TIMEOUT, MetricsCache
from pystack.tcp.settings import Settings
from pystack.tcp.state import TcpState
from pystack.tcp.testing import (
    LOCAL_IP,
    LOCAL_ISN,
    LOCAL_PORT,
    REMOTE_IP,
    REMOTE_ISN,
    REMOTE_PORT,
    Harness,
)
from pystack.wire.segment import ACK, FIN, SYN, FourTuple, TcpOptions

MSS = TcpOptions(mss=1460)


def open_client(h: Harness, port: int, rtt: float) -> Connection:
    """Active open from local port ``port``; the SYN-ACK comes ``rtt`` later."""
    c = h.engine.connect(LOCAL_IP, REMOTE_IP, REMOTE_PORT, local_port=port)
    h.expect(flags="S", seq=LOCAL_ISN)
    h.advance(rtt)
    h.send(SYN | ACK, REMOTE_ISN, LOCAL_ISN + 1, options=MSS, dst_port=port)
    h.expect(flags="A")
    assert c.state == TcpState.ESTABLISHED
    return c


def close_client(h: Harness, c: Connection, rtt: float) -> None:
    """Active close into TIME-WAIT; the peer's FIN+ACK comes ``rtt`` after our FIN."""
    port = c.local_port
    c.close()
    h.expect(flags="FA")
    h.advance(rtt)
    h.send(FIN | ACK, REMOTE_ISN + 1, LOCAL_ISN + 2, dst_port=port)
    h.expect(flags="A")
    assert c.state == TcpState.TIME_WAIT


def client_round(h: Harness, port: int, rtt: float) -> Connection:
    c = open_client(h, port, rtt)
    close_client(h, c, rtt)
    return c


def entry(h: Harness):
    return h.engine.tcp_metrics.get(LOCAL_IP, REMOTE_IP, h.now)


# =====================================================================================
# Saving at close
# =====================================================================================
def test_time_wait_saves_rtt_rttvar_and_cwnd() -> None:
    h = Harness()
    assert entry(h) is None
    c = client_round(h, 1000, 0.1)
    tm = entry(h)
    assert tm is not None
    srtt, rttvar = c.rtt.srtt, c.rtt.rttvar
    assert srtt == pytest.approx(0.1)
    # First save: the RTT itself; the variance is the larger of |cached - srtt| and RTTVAR.
    assert tm.rtt == pytest.approx(srtt)
    assert tm.rttvar == pytest.approx(max(srtt, rttvar))
    # Still in the initial slow start: cwnd is kept, ssthresh is not (nothing cached yet).
    assert tm.cwnd == c.ccs.snd_cwnd and tm.ssthresh == 0
    assert tm.stamp == pytest.approx(h.now)


def test_larger_rtt_replaces_smaller_one_is_averaged_in() -> None:
    h = Harness()
    client_round(h, 1000, 0.1)
    client_round(h, 1001, 0.4)
    assert entry(h).rtt == pytest.approx(0.4)  # larger: taken as it is
    c = client_round(h, 1002, 0.08)
    # Smaller: cached - (cached - srtt) / 8 (overestimating is the safe side).
    assert entry(h).rtt == pytest.approx(0.4 - (0.4 - c.rtt.srtt) / 8)


def test_last_ack_saves_and_a_passive_open_reads() -> None:
    h = Harness()
    lst = h.listen()
    h.send(SYN, REMOTE_ISN, options=MSS)
    h.expect(flags="SA")
    h.advance(0.05)
    h.send(ACK, REMOTE_ISN + 1, LOCAL_ISN + 1)
    c = lst.accept()
    assert c is not None and c.rtt.srtt == pytest.approx(0.05)
    h.send(FIN | ACK, REMOTE_ISN + 1, LOCAL_ISN + 1)
    h.expect(flags="A")
    c.close()
    h.expect(flags="FA")
    assert c.state == TcpState.LAST_ACK and entry(h) is None
    h.advance(0.05)
    h.send(ACK, REMOTE_ISN + 2, LOCAL_ISN + 2)
    assert c.state == TcpState.CLOSED
    assert entry(h).rtt == pytest.approx(0.05)
    # A new passive open from the same address: its handshake sample is 0 here, the
    # cached 50 ms sets the first RTO: 50 ms + max(100 ms, rto_min 200 ms).
    h.send(SYN, REMOTE_ISN, options=MSS, src_port=REMOTE_PORT + 1)
    h.expect(flags="SA")
    h.send(ACK, REMOTE_ISN + 1, LOCAL_ISN + 1, src_port=REMOTE_PORT + 1)
    c2 = lst.accept()
    assert c2 is not None and c2.rtt.srtt == 0.0
    assert c2.rtt.rto == pytest.approx(0.25)


def test_time_wait_overflow_still_saves() -> None:
    # Linux tcp_time_wait updates the metrics whether or not a bucket was available.
    h = Harness(tcp_max_tw_buckets="0")
    c = open_client(h, 1000, 0.1)
    c.close()
    h.expect(flags="FA")
    h.advance(0.1)
    h.send(FIN | ACK, REMOTE_ISN + 1, LOCAL_ISN + 2, dst_port=1000)
    h.expect(flags="A")
    assert c.state == TcpState.CLOSED and h.engine.mib["TCPTimeWaitOverflow"] == 1
    assert entry(h).rtt == pytest.approx(c.rtt.srtt)


def test_reset_connections_save_nothing() -> None:
    h = Harness()
    c = open_client(h, 1000, 0.1)
    c.abort()
    h.expect(flags="RA")
    assert entry(h) is None


def test_orphan_fin_wait_2_saves_once() -> None:
    h = Harness()
    c = open_client(h, 1000, 0.1)
    c.close()
    h.expect(flags="FA")
    h.advance(0.2)
    h.send(ACK, REMOTE_ISN + 1, LOCAL_ISN + 2, dst_port=1000)
    assert c.state == TcpState.FIN_WAIT_2
    tm = entry(h)
    assert tm is not None and tm.rtt == pytest.approx(c.rtt.srtt)
    first = (tm.rtt, tm.rttvar, tm.cwnd, tm.stamp)
    h.advance(1.0)
    h.send(FIN | ACK, REMOTE_ISN + 1, LOCAL_ISN + 2, dst_port=1000)
    h.expect(flags="A")
    assert c.state == TcpState.TIME_WAIT
    # Linux saved when the orphan became a FIN-WAIT-2 bucket; TIME-WAIT adds nothing.
    assert (tm.rtt, tm.rttvar, tm.cwnd, tm.stamp) == first


# =====================================================================================
# Initialising the next connection
# =====================================================================================
def test_next_connection_gets_its_first_rto_from_the_cache() -> None:
    h = Harness()
    client_round(h, 1000, 0.1)
    c2 = open_client(h, 1001, 0.01)
    # The estimator keeps the handshake's sample; only the RTO is seeded from the cache:
    # 100 ms + max(2 x 100 ms, 200 ms) = 300 ms (200 ms without the cache).
    assert c2.rtt.srtt == pytest.approx(0.01)
    assert c2.rtt.rto == pytest.approx(0.3)
    c2.send(b"x" * 100)
    h.expect(len=100)
    h.advance(0.29)
    h.expect_none()
    h.advance(0.02)
    h.expect(len=100, seq=LOCAL_ISN + 1)  # the retransmission, at 300 ms


def test_without_cache_the_rto_follows_the_handshake_sample() -> None:
    h = Harness()
    c = open_client(h, 1000, 0.01)
    assert c.rtt.rto == pytest.approx(0.2)


def test_rto_falls_back_to_3s_without_any_rtt() -> None:
    # RFC 6298 §5.7, Linux tcp_init_metrics: no handshake sample and nothing cached.
    h = Harness()
    c = h.engine.connect(LOCAL_IP, REMOTE_IP, REMOTE_PORT, local_port=1000)
    h.expect(flags="S")
    h.advance(1.0)
    h.expect(flags="S")  # retransmitted SYN: the handshake gives no sample (Karn)
    h.send(SYN | ACK, REMOTE_ISN, LOCAL_ISN + 1, options=MSS, dst_port=1000)
    h.expect(flags="A")
    assert c.rtt.srtt is None and c.rtt.rto == pytest.approx(3.0)
    c.send(b"y" * 10)
    h.expect(len=10)
    h.advance(2.99)
    h.expect_none()
    h.advance(0.02)
    h.expect(len=10)


def test_cached_ssthresh_needs_tcp_no_ssthresh_metrics_save_0() -> None:
    for flag, want in ((1, 0), (0, 20)):
        h = Harness(tcp_no_ssthresh_metrics_save=str(flag))
        c = open_client(h, 1000, 0.1)
        c.ccs.snd_ssthresh, c.ccs.snd_cwnd = 20, 30  # congestion avoidance, Open
        close_client(h, c, 0.1)
        tm = entry(h)
        assert tm.ssthresh == want
        assert tm.cwnd == (0 + c.ccs.snd_cwnd) >> 1
        c2 = open_client(h, 1001, 0.1)
        assert c2.ccs.snd_ssthresh == (want or TCP_INFINITE_SSTHRESH)


def test_reordering_is_saved_after_loss_and_restored() -> None:
    h = Harness()
    c = open_client(h, 1000, 0.1)
    c.ccs.snd_ssthresh, c.ccs.snd_cwnd = 20, 5  # slow start after a loss
    c._reordering = 7
    close_client(h, c, 0.1)
    tm = entry(h)
    assert tm.reordering == 7
    assert tm.cwnd == 20 >> 1  # (cached + ssthresh) / 2: cwnd itself means little here
    c2 = open_client(h, 1001, 0.1)
    assert c2._reordering == 7
    c3 = h.engine.connect(LOCAL_IP, REMOTE_IP + 1, REMOTE_PORT)  # another destination
    assert c3._reordering == h.engine.settings.tcp_reordering


def test_tcp_no_metrics_save_stops_saving_but_not_reading() -> None:
    h = Harness(tcp_no_metrics_save="1")
    client_round(h, 1000, 0.1)
    assert len(h.engine.tcp_metrics) == 0
    h.engine.settings.tcp_no_metrics_save = 0
    client_round(h, 1001, 0.1)
    tm = entry(h)
    before = (tm.rtt, tm.rttvar, tm.cwnd, tm.stamp)
    h.engine.settings.tcp_no_metrics_save = 1
    client_round(h, 1002, 0.5)
    assert (tm.rtt, tm.rttvar, tm.cwnd, tm.stamp) == before
    c = open_client(h, 1003, 0.01)
    assert c.rtt.rto == pytest.approx(0.3)  # still read: 100 ms cached


# =====================================================================================
# Bounds: timeouts reset the cached RTT, entries age out, the table is bounded
# =====================================================================================
def _conn(eng: TcpEngine, remote_ip: int, rtt: float | None) -> Connection:
    c = Connection(eng, FourTuple(LOCAL_IP, LOCAL_PORT, remote_ip, REMOTE_PORT))
    if rtt is not None:
        c.rtt.sample(rtt)
    return c


def test_backed_off_or_unsampled_connection_resets_cached_rtt_only() -> None:
    eng = TcpEngine(Settings())
    cache = eng.tcp_metrics
    cache.save(_conn(eng, REMOTE_IP, 0.1), 1.0)
    tm = cache.get(LOCAL_IP, REMOTE_IP, 1.0)
    tm.cwnd = 12
    c = _conn(eng, REMOTE_IP, 0.3)
    c.rtt.on_timeout()
    cache.save(c, 2.0)
    assert tm.rtt == 0.0 and tm.rttvar == pytest.approx(0.1) and tm.cwnd == 12
    assert tm.stamp == 1.0  # not an update
    cache.save(_conn(eng, REMOTE_IP + 1, None), 2.0)  # no sample: creates nothing
    assert cache.get(LOCAL_IP, REMOTE_IP + 1, 2.0) is None


def test_entries_age_out_after_an_hour() -> None:
    h = Harness()
    client_round(h, 1000, 0.1)
    saved = h.now
    h.advance_to(saved + TCP_METRICS_TIMEOUT)
    assert entry(h) is not None
    h.advance_to(saved + TCP_METRICS_TIMEOUT + 1)
    c = open_client(h, 1001, 0.01)
    assert c.rtt.rto == pytest.approx(0.2)  # the stale entry was not used
    assert len(h.engine.tcp_metrics) == 0


def test_table_is_bounded_least_recently_updated_goes_first() -> None:
    eng = TcpEngine(Settings())
    cache = MetricsCache(eng.settings, limit=3)
    a, b, c, d = (REMOTE_IP + i for i in range(4))
    for t, ip in enumerate((a, b, c)):
        cache.save(_conn(eng, ip, 0.1), float(t))
    cache.save(_conn(eng, a, 0.2), 3.0)  # a updated: b is now the oldest
    cache.save(_conn(eng, d, 0.1), 4.0)
    assert len(cache) == 3
    assert cache.get(LOCAL_IP, b, 4.0) is None
    assert all(cache.get(LOCAL_IP, ip, 4.0) is not None for ip in (a, c, d))
    cache.flush(c)
    assert cache.get(LOCAL_IP, c, 4.0) is None and len(cache) == 2
    cache.flush()
    assert len(cache) == 0
    with pytest.raises(ValueError, match="positive"):
        MetricsCache(eng.settings, limit=0)


def test_keyed_by_local_and_remote_address() -> None:
    eng = TcpEngine(Settings())
    cache = eng.tcp_metrics
    c = Connection(eng, FourTuple(LOCAL_IP + 1, LOCAL_PORT, REMOTE_IP, REMOTE_PORT))
    c.rtt.sample(0.1)
    cache.save(c, 0.0)
    assert cache.get(LOCAL_IP + 1, REMOTE_IP, 0.0) is not None
    assert cache.get(LOCAL_IP, REMOTE_IP, 0.0) is None


# =====================================================================================
# Two engines on the simulated link
# =====================================================================================
A = 0xC6120001
B = 0xC6120002


def test_sim_both_ends_save_and_the_next_connection_starts_from_them() -> None:
    net = SimNetwork(seed=3, default=LinkConfig(delay=0.05))  # 100 ms RTT
    s = Settings()
    a = TcpEngine(s, secret=b"a" * 16)
    b = TcpEngine(s.copy(), secret=b"b" * 16)
    net.add_host(A, a)
    net.add_host(B, b)
    data = bytes(range(256)) * 200
    apps = accept_into(b.listen(0, 80), b"")
    client = StreamApp(a.connect(A, B, 80), data)
    assert net.run(until=30, stop=lambda: client.done and bool(apps) and apps[0].done)
    net.run_for(1)
    ta = a.tcp_metrics.get(A, B, net.now)
    tb = b.tcp_metrics.get(B, A, net.now)
    assert ta is not None and tb is not None
    assert 0.1 <= ta.rtt < 0.2 and 0.1 <= tb.rtt < 0.2
    # Now a fast path: the new connection's handshake measures ~10 ms, but its first
    # RTO comes from the cached ~100 ms.
    net.set_link(A, B, LinkConfig(delay=0.005))
    c2 = a.connect(A, B, 80)
    assert net.run(until=net.now + 5, stop=lambda: c2.state == TcpState.ESTABLISHED)
    assert c2.rtt.srtt == pytest.approx(0.01, abs=0.002)
    assert c2.rtt.rto == pytest.approx(ta.rtt + max(2 * ta.rtt, 0.2))
