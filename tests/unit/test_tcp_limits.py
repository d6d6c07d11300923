"""Stack-wide limits and hooks: tcp_max_orphans, tcp_max_tw_buckets, TCP_NOTSENT_LOWAT /
tcp_notsent_lowat, tcp_retries1 (Linux tcp_check_oom, tcp_time_wait, tcp_stream_memory_free,
tcp_write_timeout)."""

import errno

import pytest

from pystack.tcp.state import TcpState
from pystack.tcp.testing import LOCAL_ISN, REMOTE_ISN, REMOTE_PORT, Harness
from pystack.wire.segment import ACK, FIN, SYN, TcpOptions

L = LOCAL_ISN + 1
R = REMOTE_ISN + 1
MSS = TcpOptions(mss=1460)


def _accept(h: Harness, port: int):
    """Another connection from the peer, from source port ``port``."""
    lst = h.engine.listeners.get((0, 80)) or h.listen()
    h.send(SYN, REMOTE_ISN, options=MSS, src_port=port)
    h.expect(flags="SA", ack=R)
    h.send(ACK, R, L, src_port=port)
    c = lst.accept()
    assert c is not None
    return c


# ---------------------------------------------------------------------------------------
# tcp_max_orphans
# ---------------------------------------------------------------------------------------
def test_orphans_are_counted_until_they_reach_time_wait_or_closed() -> None:
    h = Harness()
    a = _accept(h, REMOTE_PORT)
    b = _accept(h, REMOTE_PORT + 1)
    eng = h.engine
    assert eng.orphan_count == 0
    a.close()
    b.close()
    h.recv()
    assert eng.orphan_count == 2  # FIN-WAIT-1, no user
    h.send(FIN | ACK, R, L + 1)  # a: FIN-WAIT-1 -> TIME-WAIT
    h.expect(flags="A", ack=R + 1)
    assert a.state == TcpState.TIME_WAIT
    assert (eng.orphan_count, eng.tw_count) == (1, 1)
    h.send(ACK, R, L + 1, src_port=REMOTE_PORT + 1)  # b: FIN-WAIT-2, still an orphan
    assert b.state == TcpState.FIN_WAIT_2 and eng.orphan_count == 1
    h.advance(60.1)  # b's tcp_fin_timeout and a's TIME-WAIT are over
    assert a.state == b.state == TcpState.CLOSED
    assert (eng.orphan_count, eng.tw_count) == (0, 0)


def test_close_beyond_max_orphans_resets() -> None:
    h = Harness(tcp_max_orphans=1)
    a = _accept(h, REMOTE_PORT)
    b = _accept(h, REMOTE_PORT + 1)
    a.close()
    h.expect(flags="FA", seq=L, ack=R)  # the first orphan is allowed
    b.close()  # two orphans > 1: Linux tcp_close -> tcp_check_oom -> RST
    h.expect(flags="RA", seq=L, ack=R, dst_port=REMOTE_PORT + 1)
    assert b.state == TcpState.CLOSED and a.state == TcpState.FIN_WAIT_1
    assert h.engine.mib["TCPAbortOnMemory"] == 1
    assert h.engine.orphan_count == 1
    assert b.four_tuple not in h.engine.connections


def test_zero_max_orphans_resets_a_close_from_close_wait() -> None:
    h = Harness(tcp_max_orphans=0)
    c = h.established_server(options=MSS)
    h.send(FIN | ACK, R, L)  # peer closes first: CLOSE-WAIT
    h.expect(flags="A", ack=R + 1)
    c.close()  # LAST-ACK would be an orphan: reset instead
    h.expect(flags="RA", seq=L, ack=R + 1)
    assert h.engine.mib["TCPAbortOnMemory"] == 1
    assert h.engine.orphan_count == 0


def test_half_closed_fin_wait_2_is_not_reset_on_close() -> None:
    # Linux turns an orphaned FIN-WAIT-2 (tcp_fin_timeout <= 60 s) into a TIME-WAIT bucket
    # instead of checking the orphan limit.
    h = Harness(tcp_max_orphans=0)
    c = h.established_server(options=MSS)
    c.shutdown_write()
    h.expect(flags="FA")
    h.send(ACK, R, L + 1)
    assert c.state == TcpState.FIN_WAIT_2
    c.close()
    h.expect_none()
    assert c.state == TcpState.FIN_WAIT_2
    assert h.engine.mib["TCPAbortOnMemory"] == 0


def test_retransmitting_orphan_dropped_when_over_the_limit() -> None:
    # Linux tcp_write_timeout -> tcp_out_of_resources: checked at every RTO of an orphan.
    h = Harness()
    c = h.established_server(options=MSS)
    c.send(b"data")
    c.close()
    h.expect(flags="FPA", seq=L, payload=b"data")
    h.advance(0.2)
    h.expect(flags="FPA", seq=L)
    h.engine.settings.tcp_max_orphans = 0
    h.advance(0.4)  # sent 0.4 s ago (< 60 s): reset
    h.expect(flags="RA", seq=L + 5, ack=R)
    assert c.state == TcpState.CLOSED
    assert h.engine.mib["TCPAbortOnMemory"] == 1
    assert h.engine.orphan_count == 0 and not h.engine.connections


def test_probing_orphan_limit_doubles_after_four_silent_minutes() -> None:
    # tcp_out_of_resources: the orphan count is doubled for a connection that sent nothing
    # for 2 * TCP_RTO_MAX; a closed window still earns the peer a RST.
    h = Harness(tcp_max_orphans=1, tcp_orphan_retries=15)
    c = h.established_server(window=0, options=MSS)
    c.send(b"x")
    c.close()
    h.expect_none()
    h.advance(324.5)  # zero-window probes at 0.2, 0.6 ... 102.2, 204.6 (1 orphan <= 1)
    assert [round(t, 6) for t, _ in h.sent_at][-2:] == [102.2, 204.6]
    assert c.state == TcpState.FIN_WAIT_1
    h.recv()
    h.advance(0.1)  # 324.6: silent for > 240 s, so 1 << 1 > 1
    h.expect(flags="RA", seq=L, ack=R)
    assert c.state == TcpState.CLOSED
    assert h.engine.mib["TCPAbortOnMemory"] == 1


# ---------------------------------------------------------------------------------------
# tcp_max_tw_buckets
# ---------------------------------------------------------------------------------------
def test_time_wait_overflow_closes_at_once_after_acking_the_fin() -> None:
    h = Harness(tcp_max_tw_buckets=0)
    c = h.established_server(options=MSS)
    c.close()
    h.expect(flags="FA")
    h.send(FIN | ACK, R, L + 1)
    h.expect(flags="A", seq=L + 1, ack=R + 1)  # the peer's FIN is still acknowledged
    assert c.state == TcpState.CLOSED
    assert not h.engine.connections
    mib = h.engine.mib
    assert mib["TCPTimeWaitOverflow"] == 1 and mib["TW"] == 0
    assert h.engine.tw_count == 0
    h.send(FIN | ACK, R, L + 1)  # a retransmitted FIN now finds no connection
    h.expect(flags="R", seq=L + 1)


def test_time_wait_cap_counts_live_buckets() -> None:
    h = Harness(tcp_max_tw_buckets=1)
    a = _accept(h, REMOTE_PORT)
    b = _accept(h, REMOTE_PORT + 1)
    a.close()
    b.close()
    h.recv()
    h.send(FIN | ACK, R, L + 1)
    h.send(FIN | ACK, R, L + 1, src_port=REMOTE_PORT + 1)
    assert len(h.recv()) == 2  # both FINs acknowledged
    assert a.state == TcpState.TIME_WAIT and b.state == TcpState.CLOSED
    assert h.engine.mib["TCPTimeWaitOverflow"] == 1
    h.advance(60.1)
    assert h.engine.tw_count == 0
    c = _accept(h, REMOTE_PORT + 2)  # the bucket is free again
    c.close()
    h.recv()
    h.send(FIN | ACK, R, L + 1, src_port=REMOTE_PORT + 2)
    h.recv()
    assert c.state == TcpState.TIME_WAIT and h.engine.tw_count == 1


def test_closing_to_time_wait_overflow_sends_nothing() -> None:
    h = Harness(tcp_max_tw_buckets=0)
    c = h.established_server(options=MSS)
    c.close()
    h.expect(flags="FA")
    h.send(FIN | ACK, R, L)  # simultaneous close
    h.expect(flags="A", ack=R + 1)
    assert c.state == TcpState.CLOSING
    h.send(ACK, R + 1, L + 1)
    h.expect_none()
    assert c.state == TcpState.CLOSED
    assert h.engine.mib["TCPTimeWaitOverflow"] == 1


# ---------------------------------------------------------------------------------------
# TCP_NOTSENT_LOWAT / tcp_notsent_lowat
# ---------------------------------------------------------------------------------------
def test_notsent_lowat_option_defaults_to_zero_meaning_the_sysctl() -> None:
    h = Harness()
    c = h.established_client()
    assert c.get_option("TCP_NOTSENT_LOWAT") == 0  # Linux getsockopt: tp->notsent_lowat
    assert c._notsent_lowat() == 0xFFFFFFFF
    c.set_option("TCP_NOTSENT_LOWAT", 16384)
    assert c.get_option("TCP_NOTSENT_LOWAT") == 16384
    c.set_option("TCP_NOTSENT_LOWAT", -1)
    assert c.get_option("TCP_NOTSENT_LOWAT") == 0xFFFFFFFF  # kept as a u32
    c.set_option("TCP_NOTSENT_LOWAT", 0)
    h.engine.settings.tcp_notsent_lowat = 5000
    assert c._notsent_lowat() == 5000


def test_send_fills_unsent_up_to_the_mark_in_whole_segments() -> None:
    h = Harness()
    c = h.established_client(window=2920)
    c.set_option("TCP_NOTSENT_LOWAT", 3000)
    assert c.writable == 4380  # ceil(3000 / 1460) segments
    assert c.send(bytes(10000)) == 4380
    assert c.unsent == 4380 and c.writable == 0
    assert [len(s.payload) for s in h.recv()] == [1460, 1460]  # the peer's window
    assert c.unsent == 1460 and c.writable == 2920
    assert c.send(bytes(5000)) == 2920
    assert c.writable == 0


def test_writer_woken_when_unsent_drops_below_half_the_mark() -> None:
    # Linux wakes writers with (notsent << 1) < lowat (tcp_stream_memory_free, wake=1).
    h = Harness()
    c = h.established_client(window=2920)
    c.set_option("TCP_NOTSENT_LOWAT", 6000)
    assert c.send(bytes(10000)) == 7300
    h.events.clear()
    assert len(h.recv()) == 2
    assert c.unsent == 4380 and c.writable == 2920
    assert h.events == []  # 2 * 4380 >= 6000
    h.send(ACK, R, L + 2920, 2920)
    assert len(h.recv()) == 2
    assert c.unsent == 1460
    assert h.events == [(c, "writable")]  # 2 * 1460 < 6000


def test_sysctl_notsent_lowat_applies_without_the_option() -> None:
    h = Harness(tcp_notsent_lowat=1)
    c = h.established_client()
    assert c.send(bytes(5000)) == 1460  # one segment: unsent 0 < 1
    assert c.writable == 0
    h.recv()
    assert c.writable == 1460


def test_raising_the_mark_wakes_the_writer() -> None:
    h = Harness()
    c = h.established_client(window=0)
    c.set_option("TCP_NOTSENT_LOWAT", 1000)
    assert c.send(bytes(3000)) == 1460
    h.events.clear()
    c.set_option("TCP_NOTSENT_LOWAT", 100000)
    assert h.events == []  # events are delivered with the engine's next flush
    h.recv()
    assert h.events == [(c, "writable")]
    assert c.writable == 29200 - 1460  # now the send buffer (2 * cwnd * MSS) is the limit


def test_listener_children_inherit_notsent_lowat() -> None:
    h = Harness()
    lst = h.listen()
    lst.set_option("TCP_NOTSENT_LOWAT", 2000)
    c = _accept(h, REMOTE_PORT)
    assert c.get_option("TCP_NOTSENT_LOWAT") == 2000
    assert lst is h.engine.listeners[(0, 80)]


# ---------------------------------------------------------------------------------------
# tcp_retries1
# ---------------------------------------------------------------------------------------
def test_retries1_negative_advice_after_linux_time() -> None:
    # tcp_model_timeout(3, 200 ms) = 3.0 s of retransmitting: the 4th RTO (after 3
    # retransmissions) and every later one give negative advice.
    h = Harness()
    advice: list[tuple[float, object]] = []
    h.engine.on_retries1 = lambda t: advice.append((h.now, t))
    c = h.established_client()
    c.send(b"abc")
    h.recv()
    h.advance(2.9)
    assert [round(t, 6) for t, _ in h.sent_at] == [0.2, 0.6, 1.4]
    assert advice == [] and h.engine.mib["NegativeAdvice"] == 0
    h.advance(3.5)
    assert [round(t, 6) for t, _ in advice] == [3.0, 6.2]
    assert advice[0][1] == c.four_tuple
    assert h.engine.mib["NegativeAdvice"] == 2
    assert c.state == TcpState.ESTABLISHED


def test_retries1_zero_advises_from_the_second_timeout() -> None:
    h = Harness(tcp_retries1=0)
    c = h.established_client()
    c.send(b"abc")
    h.recv()
    h.advance(0.3)
    assert h.engine.mib["NegativeAdvice"] == 0  # first RTO: nothing retransmitted before
    h.advance(0.31)
    assert h.engine.mib["NegativeAdvice"] == 1
    h.send(ACK, R, L + 3)
    h.advance(10)
    assert h.engine.mib["NegativeAdvice"] == 1
    assert c.outq == 0


def test_retries1_without_callback_only_counts() -> None:
    h = Harness(tcp_retries1=1)
    c = h.established_client()
    c.send(b"abc")
    h.recv()
    h.advance(0.61)  # model_timeout(1) = 0.6 s: the second RTO, at 0.6 s
    assert h.engine.mib["NegativeAdvice"] == 1
    assert c.state == TcpState.ESTABLISHED


# ---------------------------------------------------------------------------------------
# pystack.max_connections (pystack's own: the XDP flow table bounds the connections)
# ---------------------------------------------------------------------------------------
def test_syn_over_max_connections_is_dropped_and_counted() -> None:
    h = Harness(max_connections=2)
    _accept(h, REMOTE_PORT)
    _accept(h, REMOTE_PORT + 1)
    h.send(SYN, REMOTE_ISN, options=MSS, src_port=REMOTE_PORT + 2)
    assert h.recv() == []  # no SYN-ACK, no RST: the client retries
    mib = h.engine.mib
    assert (mib["ConnectionLimitDrops"], mib["ListenDrops"]) == (1, 1)
    assert len(h.engine.connections) == 2


def test_a_closed_connection_frees_its_slot() -> None:
    h = Harness(max_connections=1)
    a = _accept(h, REMOTE_PORT)
    a.abort()
    h.expect(flags="RA")
    assert not h.engine.connections
    _accept(h, REMOTE_PORT + 1)  # the retried SYN gets in
    assert h.engine.mib["ConnectionLimitDrops"] == 0


def test_active_open_over_max_connections_fails_with_eagain() -> None:
    h = Harness(max_connections=1)
    _accept(h, REMOTE_PORT + 1)
    with pytest.raises(OSError) as e:
        h.connect()
    assert e.value.errno == errno.EAGAIN
    mib = h.engine.mib
    # ListenDrops is a listener's counter (Linux): a refused active open is not one.
    assert (mib["ConnectionLimitDrops"], mib["ListenDrops"]) == (1, 0)
