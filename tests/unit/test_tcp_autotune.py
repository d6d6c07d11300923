"""Receive buffer and window sizing: tcp_adv_win_scale, tcp_app_win (Linux
tcp_init_buffer_space), tcp_workaround_signed_windows, window growth (tcp_grow_window),
the receiver's RTT estimate and receive-buffer autotuning (tcp_moderate_rcvbuf,
Linux tcp_rcv_space_adjust), and coalesced (GRO-style) segments."""

from __future__ import annotations

import pytest

from pystack.tcp.connection import Connection
from pystack.tcp.state import (
    IPPROTO_TCP,
    SO_RCVBUF,
    SOL_SOCKET,
    TCP_QUICKACK,
    TCP_WINDOW_CLAMP,
)
from pystack.tcp.testing import LOCAL_ISN, REMOTE_ISN, Harness
from pystack.wire.segment import ACK, SYN, TcpOptions

L = LOCAL_ISN + 1
R = REMOTE_ISN + 1
SEG = 1448  # 1460 less the timestamp option


# ----------------------------------------------------------------------------------------
# tcp_adv_win_scale, tcp_app_win, tcp_workaround_signed_windows
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("scale", "window"), [(1, 8760), (2, 14600), (-2, 4380)])
def test_adv_win_scale_splits_the_buffer(scale: int, window: int) -> None:
    """SO_RCVBUF 10000 -> a 20000-byte buffer; the window part is 20000 - 20000/2^scale
    (scale > 0) or 20000/2^-scale, rounded down to whole MSS in the SYN-ACK."""
    h = Harness(tcp_adv_win_scale=scale)
    lst = h.listen()
    lst.set_option("SO_RCVBUF", 10000)
    h.send(SYN, REMOTE_ISN, options=TcpOptions(mss=1460))
    h.expect(flags="SA", window=window)


def _read_all(c: Connection) -> int:
    n = 0
    while c.readable:
        n += len(c.recv(1 << 20))
    return n


@pytest.mark.parametrize(("app_win", "clamp", "window"), [
    (31, 16384 - 1460, 14600),  # default: one segment kept for the application
    (2, 16384 - 4096, 11680),  # a quarter of the window kept
    (0, 16384, 16060),  # nothing kept: the clamp is the whole window part
])
def test_app_win_reserves_part_of_the_window(app_win: int, clamp: int, window: int) -> None:
    h = Harness(tcp_app_win=app_win)
    lst = h.listen()
    lst.set_option("SO_RCVBUF", 16384)  # 32768 bytes, 16384 of them window
    h.send(SYN, REMOTE_ISN, options=TcpOptions(mss=1460))
    h.expect(flags="SA", window=16060)  # the SYN-ACK is not affected (11 segments)
    h.send(ACK, R, L)
    c = lst.accept()
    assert c is not None
    assert c.getsockopt(IPPROTO_TCP, TCP_WINDOW_CLAMP) == clamp
    for i in range(11):
        h.send(ACK, R + i * 1460, L, payload=bytes(1460))
    h.recv()
    assert _read_all(c) == 16060
    # Reading everything opens the window to what the clamp allows, in whole segments.
    h.expect(flags="A", ack=R + 16060, window=window)


def test_signed_windows_workaround_caps_windows_at_32767() -> None:
    h = Harness(tcp_workaround_signed_windows=1)
    lst = h.listen()
    h.send(SYN, REMOTE_ISN, options=TcpOptions(mss=1460))
    h.expect(flags="SA", window=32767)
    h.send(ACK, R, L)
    c = lst.accept()
    assert c is not None
    h.send(ACK, R, L, payload=bytes(100))
    h.expect(flags="A", ack=R + 100, window=32767)
    assert _read_all(c) == 100
    h.send(ACK, R + 100, L, payload=bytes(1460))
    h.expect(flags="A", ack=R + 1560, window=32767)


def test_signed_windows_workaround_spares_scaled_windows() -> None:
    """Only the first window and unscaled windows are capped (Linux: a peer sending a
    window scale option reads the field as unsigned)."""
    h = Harness(plain=False, tcp_timestamps=0, tcp_sack=0, tcp_workaround_signed_windows=1)
    lst = h.listen()
    h.send(SYN, REMOTE_ISN, options=TcpOptions(mss=1460, wscale=7))
    h.expect(flags="SA", window=32767, wscale=7)
    h.send(ACK, R, L, 502)
    assert lst.accept() is not None
    h.send(ACK, R, L, 502, payload=bytes(100))
    # The right edge of the 32767 window is kept (never shrink), rounded up to 128.
    h.expect(flags="A", ack=R + 100, window=(32767 - 100 + 127) // 128)


# ----------------------------------------------------------------------------------------
# Window growth, receiver RTT, autotuning
# ----------------------------------------------------------------------------------------
class Peer:
    """The sending side: flights of full segments whose TSecr echoes our TSval of
    ``echo_ms`` (tcp_timestamps=2: our TSval is the millisecond clock)."""

    def __init__(self, h: Harness) -> None:
        self.h = h
        self.seq = R
        self.tsval = 200

    def flight(self, n: int, echo_ms: int) -> list:
        out = []
        for _ in range(n):
            self.h.send(ACK, self.seq, L, 502, payload=bytes(SEG),
                        options=TcpOptions(timestamp=(self.tsval, echo_ms)))
            self.seq += SEG
            out += self.h.recv()
        self.tsval += 1
        return out


def _tuned_server(**sysctls: object) -> tuple[Harness, Connection, Peer]:
    h = Harness(plain=False, tcp_timestamps=2, tcp_sack=0, **sysctls)
    lst = h.listen()
    h.send(SYN, REMOTE_ISN, options=TcpOptions(mss=1460, wscale=7, timestamp=(100, 0)))
    h.expect(flags="SA", window=65160)
    h.now = 0.010
    h.send(ACK, R, L, 502, options=TcpOptions(timestamp=(101, 0)))
    c = lst.accept()
    assert c is not None
    return h, c, Peer(h)


def _two_rtts(h: Harness, c: Connection, p: Peer) -> None:
    """10 segments at t=10 ms (no RTT sample: TSecr 0), then 20 at t=20 ms echoing our
    TSval of t=10 ms: a 10 ms receiver RTT; the application reads after each flight."""
    p.flight(10, 0)
    assert _read_all(c) == 10 * SEG
    h.advance(0.010)
    p.flight(20, 10)
    assert _read_all(c) == 20 * SEG


def test_autotuning_grows_the_receive_buffer_once_per_rtt() -> None:
    h, c, p = _tuned_server()
    assert c.tcp_info()["rcv_space"] == 14600  # min(rcv_ssthresh, rcv_wnd, 10 * advmss)
    assert c.getsockopt(IPPROTO_TCP, TCP_WINDOW_CLAMP) == 65536 - 1460
    _two_rtts(h, c, p)
    info = c.tcp_info()
    assert info["rcv_rtt"] == 10.0
    # 43440 bytes read in one RTT (> 14600): rcvwin = 2 * 43440 + 16 * 1460 = 110240,
    # plus twice its growth 110240 * (43440 - 14600) // 14600 = 217761 -> 545762;
    # the buffer is space_from_win(545762) = 1091524 (tcp_adv_win_scale 1).
    assert info["rcv_space"] == 43440
    assert c.getsockopt(SOL_SOCKET, SO_RCVBUF) == 1091524
    assert c.getsockopt(IPPROTO_TCP, TCP_WINDOW_CLAMP) == 545762
    assert info["skmem"]["rb"] == 1091524
    # From now on each full segment opens rcv_ssthresh by 2 * advmss (Linux
    # tcp_grow_window) and is ACKed at once; the window goes past 64 KiB.
    h.advance(0.010)
    h.recv()
    ssthresh = c._rcv_ssthresh
    acks = p.flight(4, 20)
    assert c._rcv_ssthresh == ssthresh + 4 * 2920
    assert [a.window for a in acks] == [
        (ssthresh + 2920 * k + 127) // 128 for k in (1, 2, 3, 4)
    ]
    assert acks[-1].window << 7 > 65535


def test_autotuning_measures_once_per_rtt_only() -> None:
    h, c, p = _tuned_server()
    _two_rtts(h, c, p)
    before = c.getsockopt(SOL_SOCKET, SO_RCVBUF)
    h.advance(0.005)  # half an RTT later: no new measurement, whatever is read
    p.flight(40, 20)
    _read_all(c)
    assert c.getsockopt(SOL_SOCKET, SO_RCVBUF) == before
    assert c.tcp_info()["rcv_space"] == 43440


def test_autotuning_stops_at_tcp_rmem_max() -> None:
    h, c, p = _tuned_server(tcp_rmem="4096 131072 262144")
    _two_rtts(h, c, p)
    assert c.getsockopt(SOL_SOCKET, SO_RCVBUF) == 262144
    assert c.getsockopt(IPPROTO_TCP, TCP_WINDOW_CLAMP) == 131072


def test_moderate_rcvbuf_0_keeps_the_buffer() -> None:
    h, c, p = _tuned_server(tcp_moderate_rcvbuf=0)
    _two_rtts(h, c, p)
    assert c.tcp_info()["rcv_space"] == 43440  # still measured, as on Linux
    assert c.getsockopt(SOL_SOCKET, SO_RCVBUF) == 131072
    assert c.getsockopt(IPPROTO_TCP, TCP_WINDOW_CLAMP) == 65536 - 1460


def test_so_rcvbuf_locks_the_buffer() -> None:
    h = Harness(plain=False, tcp_timestamps=2, tcp_sack=0)
    lst = h.listen()
    lst.set_option("SO_RCVBUF", 65536)  # the same 131072 bytes, but locked
    h.send(SYN, REMOTE_ISN, options=TcpOptions(mss=1460, wscale=7, timestamp=(100, 0)))
    h.expect(flags="SA", window=65160)
    h.now = 0.010
    h.send(ACK, R, L, 502, options=TcpOptions(timestamp=(101, 0)))
    c = lst.accept()
    assert c is not None
    _two_rtts(h, c, Peer(h))
    assert c.getsockopt(SOL_SOCKET, SO_RCVBUF) == 131072


def test_user_window_clamp_still_bounds_an_autotuned_window() -> None:
    h, c, p = _tuned_server()
    c.setsockopt(IPPROTO_TCP, TCP_WINDOW_CLAMP, 100000)
    _two_rtts(h, c, p)
    assert c.getsockopt(SOL_SOCKET, SO_RCVBUF) == 1091524
    assert c.getsockopt(IPPROTO_TCP, TCP_WINDOW_CLAMP) == 100000


def test_receiver_rtt_without_timestamps_is_the_time_a_window_takes() -> None:
    """Linux tcp_rcv_rtt_measure: from the first data, the time until RCV.NXT passes the
    right edge of the window advertised then (a minimum over such samples)."""
    h = Harness(plain=False, tcp_timestamps=0, tcp_sack=0)
    lst = h.listen()
    h.send(SYN, REMOTE_ISN, options=TcpOptions(mss=1460, wscale=7))
    h.expect(flags="SA", window=64240)
    h.send(ACK, R, L, 502)
    c = lst.accept()
    assert c is not None
    h.now = 1.0
    h.send(ACK, R, L, 502, payload=bytes(1460))  # the measurement starts
    h.recv()
    edge = c.rcv_nxt + c.rcv_wnd - 1460  # rcv_wnd was advertised with this ACK
    seq = R + 1460
    h.now = 1.025
    while seq < edge + 1460:
        h.send(ACK, seq, L, 502, payload=bytes(1460))
        seq += 1460
        h.recv()
        _read_all(c)
    assert c.tcp_info()["rcv_rtt"] == 25.0


# ----------------------------------------------------------------------------------------
# Coalesced segments (GRO, or a peer sending more than one MSS at once)
# ----------------------------------------------------------------------------------------
def test_coalesced_segment_is_acked_at_once_and_does_not_inflate_rcv_mss() -> None:
    h = Harness()
    c = h.established_server(options=TcpOptions(mss=1460))
    c.setsockopt(IPPROTO_TCP, TCP_QUICKACK, 0)  # no quick ACKs: delayed-ACK rules only
    h.send(ACK, R, L, payload=bytes(1460))
    h.expect_none()  # one full segment: the ACK is delayed
    h.advance(0.2)
    h.recv()
    c.setsockopt(IPPROTO_TCP, TCP_QUICKACK, 0)
    h.send(ACK, R + 1460, L, payload=bytes(3 * 1460))
    # Three segments' worth at once: more than one full segment unacknowledged -> ACK now.
    h.expect(flags="A", ack=R + 4 * 1460)
    assert c.tcp_info()["rcvmss"] == 1460


def test_gro_segment_counts_with_its_gso_size() -> None:
    """A GRO-merged segment (gso_size set by the data path) measures rcv_mss by its
    frames, as Linux's tcp_measure_rcv_mss uses gso_size, and grows the window by twice
    its whole length (tcp_grow_window's 2 * skb->len)."""
    h = Harness(plain=False, tcp_timestamps=0, tcp_sack=0)
    lst = h.listen()
    lst.set_option("SO_RCVBUF", 262144)  # 524288 bytes: room for the window to grow
    h.send(SYN, REMOTE_ISN, options=TcpOptions(mss=1460, wscale=7))
    h.expect(flags="SA", window=65535)
    h.send(ACK, R, L, 502)
    c = lst.accept()
    assert c is not None and c.tcp_info()["rcvmss"] == 536
    ssthresh = c._rcv_ssthresh
    seg = h.seg(ACK, R, L, 502, payload=bytes(4 * 1000))
    seg.gso_size, seg.gso_segs = 1000, 4
    h.engine.input(seg, h.now)
    h.expect(flags="A", ack=R + 4000)
    assert c.tcp_info()["rcvmss"] == 1000
    assert c._rcv_ssthresh == ssthresh + 8000
