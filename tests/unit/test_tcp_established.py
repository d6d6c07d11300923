"""ESTABLISHED state: data both ways, ACK rules, RFC 5961, resets."""

import errno

import pytest

from pystack.tcp.state import IPPROTO_TCP, TCP_QUICKACK, TcpState
from pystack.tcp.testing import LOCAL_ISN, REMOTE_ISN, Harness
from pystack.wire.segment import ACK, FIN, PSH, RST, SYN, TcpOptions

L = LOCAL_ISN + 1
R = REMOTE_ISN + 1
MSS = TcpOptions(mss=1460)


def test_send_data_and_ack() -> None:
    h = Harness()
    c = h.established_client()
    assert c.send(b"hello") == 5
    h.expect(flags="PA", seq=L, ack=R, window=64240, payload=b"hello")
    assert c.outq == 5
    h.send(ACK, R, L + 5)
    h.expect_none()
    assert c.snd_una == L + 5 and c.outq == 0
    assert c.bytes_acked == 6  # SYN + 5


def test_segmentation_by_mss() -> None:
    h = Harness()
    c = h.established_client()
    c.send(bytes(3000))
    segs = h.recv()
    assert [(s.seq, len(s.payload), s.flags) for s in segs] == [
        (L, 1460, ACK),
        (L + 1460, 1460, ACK),
        (L + 2920, 80, ACK | PSH),
    ]


def test_first_data_acked_immediately_in_quickack_mode() -> None:
    h = Harness()
    c = h.established_server(options=MSS)
    h.send(ACK | PSH, R, L, payload=b"abc")
    # tcp_app_win (tcp_init_buffer_space) keeps one MSS of the 65536-byte window for the
    # application, so the clamp is below 64240: the offered window is what is left of it.
    h.expect(flags="A", seq=L, ack=R + 3, window=64240 - 3)
    assert c.readable == 3
    assert c.recv(2) == b"ab"
    assert c.recv(10) == b"c"
    with pytest.raises(BlockingIOError):
        c.recv(10)


def test_delayed_ack_40ms_when_not_quick() -> None:
    h = Harness()
    c = h.established_server(options=MSS)
    c.setsockopt(IPPROTO_TCP, TCP_QUICKACK, 0)
    h.send(ACK, R, L, payload=b"x" * 100)
    h.expect_none()
    h.advance(0.039)
    h.expect_none()
    h.advance(0.001)
    h.expect(flags="A", ack=R + 100)
    assert h.engine.mib["DelayedACKs"] == 1


def test_every_second_full_segment_acked_at_once() -> None:
    h = Harness()
    c = h.established_server(options=MSS)
    c.setsockopt(IPPROTO_TCP, TCP_QUICKACK, 0)
    h.send(ACK, R, L, payload=bytes(1460))
    h.expect_none()
    c.recv(5000)
    h.send(ACK, R + 1460, L, payload=bytes(1460))
    h.expect(flags="A", ack=R + 2920)
    c.recv(5000)
    h.send(ACK, R + 2920, L, payload=bytes(1460))
    h.expect_none()
    h.send(ACK, R + 4380, L, payload=bytes(1460))
    h.expect(flags="A", ack=R + 5840)


def test_quickack_setsockopt_flushes_pending_ack() -> None:
    h = Harness()
    c = h.established_server(options=MSS)
    c.setsockopt(IPPROTO_TCP, TCP_QUICKACK, 0)
    h.send(ACK, R, L, payload=b"x")
    h.expect_none()
    c.setsockopt(IPPROTO_TCP, TCP_QUICKACK, 1)
    h.expect(flags="A", ack=R + 1)


def test_batch_of_segments_is_acked_once() -> None:
    h = Harness()
    h.established_server(options=MSS)
    for i in range(4):
        h.send(ACK, R + 100 * i, L, payload=bytes(100))
    h.expect(flags="A", ack=R + 400)


def test_out_of_order_then_fill() -> None:
    h = Harness()
    c = h.established_server(options=MSS)
    h.send(ACK, R + 10, L, payload=b"B" * 10)
    h.expect(flags="A", ack=R)
    assert c.readable == 0
    h.send(ACK, R + 30, L, payload=b"D" * 10)
    h.expect(flags="A", ack=R)
    h.send(ACK, R, L, payload=b"A" * 10)
    h.expect(flags="A", ack=R + 20)
    h.send(ACK, R + 20, L, payload=b"C" * 10)
    h.expect(flags="A", ack=R + 40)
    assert c.recv(100) == b"A" * 10 + b"B" * 10 + b"C" * 10 + b"D" * 10


def test_overlapping_retransmission_is_trimmed() -> None:
    h = Harness()
    c = h.established_server(options=MSS)
    h.send(ACK, R, L, payload=b"abcdef")
    h.expect(flags="A", ack=R + 6)
    h.send(ACK, R + 3, L, payload=b"defghi")
    h.expect(flags="A", ack=R + 9)
    assert c.recv(100) == b"abcdefghi"


def test_duplicate_segment_acked_immediately() -> None:
    h = Harness()
    h.established_server(options=MSS)
    h.send(ACK, R, L, payload=b"abc")
    h.expect(flags="A", ack=R + 3)
    h.send(ACK, R, L, payload=b"abc")
    h.expect(flags="A", ack=R + 3)


def test_segment_beyond_window_gets_ack_and_is_dropped() -> None:
    h = Harness()
    c = h.established_server(options=MSS)
    h.send(ACK, R + 70000, L, payload=b"zz")
    h.expect(flags="A", seq=L, ack=R)
    assert c.readable == 0


def test_data_trimmed_to_window() -> None:
    h = Harness()
    c = h.established_server(options=MSS)
    wnd = c.rcv_wnd
    h.send(ACK, R, L, payload=bytes(wnd + 100))
    h.expect(flags="A", ack=R + wnd, window=0)
    assert c.readable == wnd


def test_ack_of_unsent_data_is_acked_and_dropped() -> None:
    h = Harness()
    c = h.established_server(options=MSS)
    h.send(ACK, R, L + 100, payload=b"data")
    h.expect(flags="A", seq=L, ack=R)
    assert c.readable == 0
    assert c.snd_una == L
    assert h.engine.mib["TCPAckUnsentData"] == 1


def test_old_duplicate_ack_ignored_but_data_accepted() -> None:
    h = Harness()
    c = h.established_server(options=MSS)
    c.send(b"x" * 10)
    h.expect(flags="PA")
    h.send(ACK, R, L + 10)
    h.send(ACK, R, L + 5, payload=b"hey")
    h.expect(flags="A", ack=R + 3)
    assert c.snd_una == L + 10
    assert c.recv(10) == b"hey"


def test_rst_with_exact_seq_resets() -> None:
    h = Harness()
    c = h.established_server(options=MSS)
    h.events.clear()
    h.send(RST, R)
    h.expect_none()
    assert c.state == TcpState.CLOSED
    assert c.error == errno.ECONNRESET
    assert h.engine.mib["EstabResets"] == 1
    assert h.engine.mib["CurrEstab"] == 0
    assert (c, "closed") in h.events
    with pytest.raises(ConnectionResetError):
        c.recv(10)
    assert c.recv(10) == b""
    with pytest.raises(ConnectionResetError):
        c.send(b"x")


def test_rst_in_window_gets_challenge_ack_rate_limited() -> None:
    h = Harness()
    c = h.established_server(options=MSS)
    h.send(RST, R + 10)
    h.expect(flags="A", seq=L, ack=R)
    assert c.state == TcpState.ESTABLISHED
    assert h.engine.mib["TCPChallengeACK"] == 1
    h.send(RST, R + 11)
    h.expect_none()  # tcp_invalid_ratelimit: one per 500 ms
    h.advance(0.5)
    h.send(RST, R + 12)
    h.expect(flags="A")


def test_rst_out_of_window_dropped_silently() -> None:
    h = Harness()
    c = h.established_server(options=MSS)
    h.send(RST, R + 100000)
    h.send(RST, R - 1)
    h.expect_none()
    assert c.state == TcpState.ESTABLISHED


def test_global_challenge_ack_limit() -> None:
    h = Harness(tcp_challenge_ack_limit=1, tcp_invalid_ratelimit=0)
    h.established_server(options=MSS)
    h.send(RST, R + 10)
    h.expect(flags="A")
    h.send(RST, R + 10)
    h.expect_none()


def test_syn_in_established_gets_challenge_ack() -> None:
    h = Harness()
    c = h.established_server(options=MSS)
    h.send(SYN, R + 5)
    h.expect(flags="A", seq=L, ack=R)
    h.advance(1)
    h.send(SYN, REMOTE_ISN - 1000)  # out of window: challenge ACK as well
    h.expect(flags="A", seq=L, ack=R)
    assert c.state == TcpState.ESTABLISHED
    assert h.engine.mib["TCPSYNChallenge"] == 2


def test_too_old_ack_gets_challenge_ack() -> None:
    h = Harness()
    c = h.established_server(window=1000, options=MSS)
    h.send(ACK, R, L - 5000)
    h.expect(flags="A", seq=L, ack=R)
    assert c.state == TcpState.ESTABLISHED
    assert h.engine.mib["TCPChallengeACK"] == 1


def test_fin_moves_to_close_wait_and_reads_eof_after_data() -> None:
    h = Harness()
    c = h.established_server(options=MSS)
    h.send(ACK | FIN, R, L, payload=b"bye")
    h.expect(flags="A", ack=R + 4)
    assert c.state == TcpState.CLOSE_WAIT
    assert c.recv(10) == b"bye"
    assert c.recv(10) == b""
    assert c.at_eof


def test_out_of_order_fin_processed_when_gap_fills() -> None:
    h = Harness()
    c = h.established_server(options=MSS)
    h.send(ACK | FIN, R + 3, L, payload=b"def")
    h.expect(flags="A", ack=R)
    assert c.state == TcpState.ESTABLISHED
    h.send(ACK, R, L, payload=b"abc")
    h.expect(flags="A", ack=R + 7)
    assert c.state == TcpState.CLOSE_WAIT
    assert c.recv(10) == b"abcdef"


def test_window_update_from_peer_and_wl1_wl2() -> None:
    h = Harness()
    c = h.established_client(window=100)
    c.send(bytes(300))
    h.expect(seq=L, len=100)
    h.send(ACK, R, L + 100, 300)
    h.expect(seq=L + 100, len=200)
    # an older segment (lower seq) cannot shrink the window back
    h.send(ACK, R - 1, L + 300, 0)
    assert c.snd_wnd == 300 or c.snd_wnd == 0


def test_receive_window_shrinks_with_buffered_data_then_update_on_read() -> None:
    h = Harness()
    c = h.established_server(options=MSS)
    for i in range(30):
        h.send(ACK, R + 1460 * i, L, payload=bytes(1460))
    seg = h.recv()[-1]
    assert seg.ack == R + 1460 * 30
    assert seg.window < 64240
    assert c.readable == 1460 * 30
    c.recv(1460 * 30)
    seg = h.expect(flags="A", ack=R + 1460 * 30)
    assert seg.window >= 60000


def test_send_buffer_limit_and_writable_event() -> None:
    h = Harness()
    c = h.established_client(window=65535)
    n = c.send(bytes(1_000_000))
    assert n == c.outq and 16384 <= n < 1_000_000
    assert c.writable == 0
    assert c.send(b"more") == 0
    segs = h.recv()
    h.events.clear()
    h.send(ACK, R, segs[-1].seq + len(segs[-1].payload))
    assert (c, "writable") in h.events
    assert c.writable > 0
