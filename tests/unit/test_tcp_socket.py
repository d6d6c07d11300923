"""Socket options, tcp_info, events, engine API, TCP_DEFER_ACCEPT, keepalive segments."""

import errno

import pytest

from pystack.tcp.engine import TcpEngine
from pystack.tcp.state import (
    IPPROTO_TCP,
    SO_RCVBUF,
    SO_SNDBUF,
    SOL_SOCKET,
    TCP_CONGESTION,
    TCP_DEFER_ACCEPT,
    TCP_KEEPIDLE,
    TCP_MAXSEG,
    TCP_WINDOW_CLAMP,
    TcpState,
)
from pystack.tcp.testing import LOCAL_ISN, REMOTE_ISN, Harness
from pystack.wire.segment import ACK, SYN, TcpOptions

L = LOCAL_ISN + 1
R = REMOTE_ISN + 1


def test_buffer_sizes_double_like_linux() -> None:
    h = Harness()
    c = h.connect()
    assert c.getsockopt(SOL_SOCKET, SO_RCVBUF) == 131072
    assert c.getsockopt(SOL_SOCKET, SO_SNDBUF) == 16384
    c.setsockopt(SOL_SOCKET, SO_RCVBUF, 10000)
    assert c.getsockopt(SOL_SOCKET, SO_RCVBUF) == 20000
    c.setsockopt(SOL_SOCKET, SO_SNDBUF, 1)
    assert c.getsockopt(SOL_SOCKET, SO_SNDBUF) == 4608  # SOCK_MIN_SNDBUF
    c.setsockopt(SOL_SOCKET, SO_RCVBUF, 10**9)
    assert c.getsockopt(SOL_SOCKET, SO_RCVBUF) == 2 * 212992  # rmem_max


def test_option_validation_errors() -> None:
    h = Harness()
    c = h.connect()
    with pytest.raises(OSError) as ei:
        c.setsockopt(IPPROTO_TCP, TCP_MAXSEG, 10)
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(OSError) as ei:
        c.setsockopt(IPPROTO_TCP, TCP_KEEPIDLE, 0)
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(OSError) as ei:
        c.setsockopt(IPPROTO_TCP, TCP_CONGESTION, "nope")
    assert ei.value.errno == errno.ENOENT
    with pytest.raises(OSError) as ei:
        c.setsockopt(IPPROTO_TCP, 999, 1)
    assert ei.value.errno == errno.ENOPROTOOPT
    with pytest.raises(OSError):
        c.set_option("TCP_BOGUS", 1)
    with pytest.raises(OSError):
        h.engine.connect(1, 2, 3, options={"TCP_BOGUS": 1})


def test_options_round_trip_and_defaults() -> None:
    h = Harness()
    c = h.connect()
    assert c.get_option("TCP_NODELAY") == 0
    assert c.get_option("TCP_SYNCNT") == 6
    assert c.get_option("TCP_LINGER2") == 60
    assert c.get_option("TCP_USER_TIMEOUT") == 0
    assert c.get_option("TCP_CONGESTION") == "cubic"
    assert c.get_option("SO_KEEPALIVE") == 0
    c.set_option("TCP_CONGESTION", "reno")
    c.set_option("TCP_KEEPIDLE", 30)
    c.set_option("TCP_LINGER2", 10**6)
    assert c.get_option("TCP_LINGER2") == 120
    c.set_option("TCP_DEFER_ACCEPT", 5)
    assert c.get_option("TCP_DEFER_ACCEPT") == 7  # rounded up to retransmission times
    c.setsockopt(IPPROTO_TCP, TCP_WINDOW_CLAMP, 100)
    assert c.getsockopt(IPPROTO_TCP, TCP_WINDOW_CLAMP) == 1152
    assert c._opts is not None and len(c._opts) == 5  # only overrides are stored


def test_congestion_control_choice_applies() -> None:
    h = Harness()
    c = h.connect(options={"TCP_CONGESTION": "reno"})
    h.recv()
    h.send(SYN | ACK, REMOTE_ISN, L, 65535, options=TcpOptions(mss=1460))
    assert c.cc.name == "reno"
    assert c.tcp_info()["cc"] == "reno"


def test_listener_options_are_inherited() -> None:
    h = Harness()
    lst = h.listen()
    lst.set_option("TCP_NODELAY", 1)
    lst.set_option("SO_KEEPALIVE", 1)
    lst.set_option("TCP_KEEPIDLE", 42)
    h.send(SYN, REMOTE_ISN, options=TcpOptions(mss=1460))
    h.recv()
    h.send(ACK, R, L)
    c = lst.accept()
    assert c.get_option("TCP_NODELAY") == 1
    assert c.get_option("TCP_KEEPIDLE") == 42
    assert c.next_deadline() == pytest.approx(42.0)


def test_tcp_info_fields() -> None:
    h = Harness()
    c = h.established_client()
    c.send(b"x" * 10)
    h.recv()
    h.now = 0.05
    h.send(ACK, R, L + 10, payload=b"yy")
    info = c.tcp_info()
    for key in ("state", "rtt", "rttvar", "rto", "mss", "cwnd", "ssthresh", "bytes_acked",
                "bytes_received", "segs_in", "segs_out", "retrans", "wscale", "options"):
        assert key in info
    assert info["state"] == "ESTAB"
    assert info["bytes_acked"] == 11 and info["bytes_received"] == 2
    assert info["rtt"] == pytest.approx(6.25)  # srtt after samples 0 ms and 50 ms
    assert info["cwnd"] == 10 and info["mss"] == 1460  # not cwnd-limited: no growth
    assert info["segs_out"] == 3 and info["segs_in"] == 2


def test_tcp_info_ss_timing_and_memory_fields() -> None:
    h = Harness()
    c = h.established_client()
    c.send(b"x" * 10)
    h.recv()
    h.now = 0.05
    h.send(ACK, R, L + 10, payload=b"yy")
    h.recv()
    h.now = 0.08
    h.engine.poll(h.now)
    info = c.tcp_info()
    # ms since the last data sent, data received and ACK received (ss lastsnd/rcv/ack)
    assert (info["lastsnd"], info["lastrcv"], info["lastack"]) == (80, 30, 30)
    assert info["minrtt"] == 50.0
    assert info["delivered"] == 1 and info["total_retrans"] == 0
    assert info["reordering"] == 3
    # rcv_space: the autotuning measure, 10 * advmss until bulk data arrives
    assert info["rcv_space"] == 14600 and info["rcv_rtt"] == 0
    # ss -m: 2 bytes unread, the default receive buffer; nothing unacknowledged; the
    # send buffer grew to 2 x cwnd x MSS (tcp_sndbuf_expand)
    assert info["skmem"] == {"r": 2, "rb": 131072, "t": 0, "tb": 29200}


def test_sizes_siocinq_siocoutq() -> None:
    h = Harness()
    c = h.established_client(window=100)
    c.send(bytes(150))
    assert c.outq == 150 and c.unsent == 150
    h.recv()
    assert c.unsent == 50
    h.send(ACK, R, L + 100, 100, payload=b"abc")
    assert c.outq == 50 and c.readable == 3


def test_events_connected_readable_closed() -> None:
    h = Harness()
    c = h.established_client()
    h.send(ACK, R, L, payload=b"hi")
    h.send(0x04, R + 2)
    kinds = [k for o, k in h.events if o is c]
    assert kinds[:2] == ["connected", "writable"]
    assert "readable" in kinds and kinds[-1] == "closed"


def test_defer_accept_waits_for_data() -> None:
    h = Harness()
    lst = h.listen()
    lst.setsockopt(IPPROTO_TCP, TCP_DEFER_ACCEPT, 3)
    h.send(SYN, REMOTE_ISN, options=TcpOptions(mss=1460))
    h.expect(flags="SA")
    h.send(ACK, R, L)
    assert lst.pending == 0
    assert h.engine.mib["TCPDeferAcceptDrop"] == 1
    h.send(ACK, R, L, payload=b"GET /")
    h.expect(flags="A", ack=R + 5)
    c = lst.accept()
    assert c is not None and c.recv(10) == b"GET /"


def test_defer_accept_acked_request_not_resent_then_expires() -> None:
    h = Harness()
    lst = h.listen()
    lst.setsockopt(IPPROTO_TCP, TCP_DEFER_ACCEPT, 1)  # one retransmission's worth
    h.send(SYN, REMOTE_ISN, options=TcpOptions(mss=1460))
    h.expect(flags="SA")
    h.send(ACK, R, L)
    h.advance(100)
    assert lst.pending == 0
    assert not h.engine.connections


def test_keepalive_probe_segments_exact() -> None:
    h = Harness()
    c = h.established_client()
    c.set_option("TCP_KEEPIDLE", 10)
    c.set_option("TCP_KEEPINTVL", 2)
    c.set_option("TCP_KEEPCNT", 2)
    c.set_option("SO_KEEPALIVE", 1)
    h.advance(9.99)
    h.expect_none()
    h.advance(0.01)
    h.expect(flags="A", seq=L - 1, ack=R, len=0)
    h.advance(2)
    h.expect(flags="A", seq=L - 1)
    h.advance(2)
    h.expect(flags="RA", seq=L, ack=R)
    assert c.state == TcpState.CLOSED and c.error == errno.ETIMEDOUT


def test_engine_state_counts_and_deadline() -> None:
    h = Harness()
    h.listen()
    h.send(SYN, REMOTE_ISN)
    assert h.engine.next_deadline() == 0.0  # output pending
    h.recv()
    assert h.engine.next_deadline() == pytest.approx(1.0)  # SYN-ACK timer
    assert h.engine.state_counts() == {"SYN_RECEIVED": 1, "LISTEN": 1}


def test_isn_is_keyed_and_clock_driven() -> None:
    from pystack.wire.segment import FourTuple

    e = TcpEngine(secret=bytes(16))
    t = FourTuple(1, 2, 3, 4)
    a = e.isn(t, 0.0)
    assert e.isn(t, 1.0) == (a + 250_000) % 2**32  # RFC 6528: 4 µs tick
    assert e.isn(FourTuple(1, 2, 3, 5), 0.0) != a
    assert TcpEngine(secret=b"\x01" * 16).isn(t, 0.0) != a
