"""Flow control: persist timer, SWS avoidance, Nagle, TCP_NODELAY, TCP_CORK, windows."""

import errno

from pystack.tcp.state import TcpState
from pystack.tcp.testing import LOCAL_ISN, REMOTE_ISN, Harness
from pystack.wire.segment import ACK, TcpOptions

L = LOCAL_ISN + 1
R = REMOTE_ISN + 1


def test_zero_window_probe_with_backoff_then_window_opens() -> None:
    h = Harness()
    c = h.established_client(window=0)
    c.send(b"hello")
    h.expect_none()
    h.advance(0.2)
    h.expect(flags="A", seq=L - 1, len=0)  # Linux probe: SND.UNA - 1, no data
    h.advance(0.39)
    h.expect_none()
    h.advance(0.01)
    h.expect(flags="A", seq=L - 1)
    h.send(ACK, R, L, 1000)  # the probe's answer opens the window
    h.expect(flags="PA", seq=L, payload=b"hello")


def test_persist_never_gives_up_while_answered() -> None:
    h = Harness(tcp_retries2=2)
    c = h.established_client(window=0)
    c.send(b"x")
    for _ in range(20):
        h.expect_none()
        h.advance_to(h.engine.next_deadline())
        h.expect(flags="A", seq=L - 1)
        h.send(ACK, R, L, 0)
    assert c.state == TcpState.ESTABLISHED
    assert h.now > 10


def test_persist_gives_up_after_retries2_unanswered_probes() -> None:
    h = Harness(tcp_retries2=3)
    c = h.established_client(window=0)
    c.send(b"x")
    h.advance(1000)
    assert len(h.sent_at) == 3
    assert c.error == errno.ETIMEDOUT


def test_persist_with_user_timeout() -> None:
    h = Harness()
    c = h.established_client(window=0)
    c.set_option("TCP_USER_TIMEOUT", 2000)
    c.send(b"x")
    for _ in range(10):
        h.advance(0.5)
        h.send(ACK, R, L, 0)
    assert c.error == errno.ETIMEDOUT


def test_sender_sws_small_window_waits_then_probe_sends_what_fits() -> None:
    h = Harness()
    c = h.established_client(window=65535)
    c.send(bytes(2000))
    h.recv()
    h.send(ACK, R, L + 2000, 0)
    c.send(bytes(3000))
    h.expect_none()
    h.send(ACK, R, L + 2000, 500)  # usable window far below one MSS
    h.expect_none()
    h.advance(0.2)
    h.expect(flags="A", seq=L + 2000, len=500)


def test_nagle_holds_small_segment_while_small_one_unacked() -> None:
    h = Harness()
    c = h.established_client()
    c.send(b"a" * 10)
    h.expect(payload=b"a" * 10)
    c.send(b"b" * 10)
    h.expect_none()
    c.send(b"c" * 10)
    h.expect_none()
    h.send(ACK, R, L + 10)
    h.expect(seq=L + 10, payload=b"b" * 10 + b"c" * 10)


def test_nagle_does_not_hold_full_segments() -> None:
    h = Harness()
    c = h.established_client()
    c.send(b"a" * 10)
    h.recv()
    c.send(bytes(1460 + 10))
    segs = h.recv()
    assert [len(s.payload) for s in segs] == [1460]


def test_nodelay_sends_immediately() -> None:
    h = Harness()
    c = h.established_client()
    c.set_option("TCP_NODELAY", 1)
    c.send(b"a")
    c2 = h.recv()
    c.send(b"b")
    h.expect(payload=b"b")
    assert c2[0].payload == b"a"


def test_setting_nodelay_flushes_held_data() -> None:
    h = Harness()
    c = h.established_client()
    c.send(b"a")
    h.recv()
    c.send(b"b")
    h.expect_none()
    c.set_option("TCP_NODELAY", 1)
    h.expect(payload=b"b")


def test_cork_holds_partial_until_200ms() -> None:
    h = Harness()
    c = h.established_client()
    c.set_option("TCP_CORK", 1)
    c.send(b"header")
    h.expect_none()
    c.send(b"body")
    h.advance(0.199)
    h.expect_none()
    h.advance(0.001)
    h.expect(payload=b"headerbody")


def test_cork_sends_full_segments_and_uncork_flushes() -> None:
    h = Harness()
    c = h.established_client()
    c.set_option("TCP_CORK", 1)
    c.send(bytes(1500))
    segs = h.recv()
    assert [len(s.payload) for s in segs] == [1460]
    c.set_option("TCP_CORK", 0)
    h.expect(len=40)


def test_cork_fin_pushes() -> None:
    h = Harness()
    c = h.established_client()
    c.set_option("TCP_CORK", 1)
    c.send(b"tail")
    c.shutdown_write()
    h.expect(flags="FPA", payload=b"tail")


def test_cwnd_limits_initial_flight_to_10_segments() -> None:
    h = Harness()
    c = h.established_client()
    c.send(bytes(1460 * 20))
    assert len(h.recv()) == 10
    h.send(ACK, R, L + 1460 * 2)
    assert len(h.recv()) == 4  # slow start: +2 cwnd, 2 acked -> 4 new


def test_receiver_sws_avoidance_zero_window_until_mss_free() -> None:
    h = Harness()
    c = h.established_server(options=TcpOptions(mss=1460))
    wnd = c.rcv_wnd
    sent = 0
    while sent < wnd:
        n = min(1460, wnd - sent)
        h.send(ACK, R + sent, L, payload=bytes(n))
        sent += n
    last = h.recv()[-1]
    assert last.window == 0 and last.ack == R + wnd
    c.recv(100)
    h.expect_none()  # 100 bytes free: not worth announcing
    c.recv(wnd)
    seg = h.expect(flags="A", ack=R + wnd)
    assert seg.window >= 60000


def test_small_receive_buffer() -> None:
    h = Harness()
    lst = h.listen()
    lst.set_option("SO_RCVBUF", 4096)
    assert lst.get_option("SO_RCVBUF") == 8192
    from pystack.wire.segment import SYN

    h.send(SYN, REMOTE_ISN, options=TcpOptions(mss=1460))
    seg = h.expect(flags="SA")
    assert seg.window == 2920  # win_from_space(8192) = 4096 rounded down to MSS multiples
