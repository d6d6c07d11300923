"""Urgent data as Linux does it (tcp(7)): one out-of-band byte, BSD urgent pointer."""

import pytest

from pystack.tcp.testing import LOCAL_ISN, REMOTE_ISN, Harness
from pystack.wire.segment import ACK, URG, TcpOptions

L = LOCAL_ISN + 1
R = REMOTE_ISN + 1


def test_send_oob_sets_urgent_pointer_after_last_byte() -> None:
    h = Harness()
    c = h.established_client()
    c.send(b"abc", oob=True)
    h.expect(flags="PAU", seq=L, payload=b"abc", urgent=3)
    h.send(ACK, R, L + 3)
    c.send(b"d")
    h.expect(flags="PA", urgent=0)


def test_receive_oob_byte_out_of_band() -> None:
    h = Harness()
    c = h.established_server(options=TcpOptions(mss=1460))
    h.send(ACK | URG, R, L, payload=b"abcde", urgent=3)
    h.recv()
    assert ("urgent" in [k for _, k in h.events])
    assert c.recv(100) == b"ab"  # a read stops at the mark
    assert c.at_mark
    assert c.recv(oob=True) == b"c"
    assert c.recv(100) == b"de"  # the urgent byte is not in the normal stream
    with pytest.raises(OSError):
        c.recv(oob=True)  # already read (EINVAL)


def test_oob_inline() -> None:
    h = Harness()
    c = h.established_server(options=TcpOptions(mss=1460))
    c.set_option("SO_OOBINLINE", 1)
    h.send(ACK | URG, R, L, payload=b"abcde", urgent=3)
    h.recv()
    assert c.recv(100) == b"ab"
    with pytest.raises(OSError):
        c.recv(oob=True)
    assert c.recv(100) == b"cde"


def test_urgent_pointer_before_data_arrives_is_notyet() -> None:
    h = Harness()
    c = h.established_server(options=TcpOptions(mss=1460))
    h.send(ACK | URG, R, L, payload=b"ab", urgent=5)
    h.recv()
    with pytest.raises(BlockingIOError):
        c.recv(oob=True)
    h.send(ACK, R + 2, L, payload=b"cdef")
    h.recv()
    assert c.recv(100) == b"abcd"
    assert c.recv(oob=True) == b"e"
    assert c.recv(100) == b"f"


def test_stdurg_points_at_the_urgent_byte() -> None:
    h = Harness(tcp_stdurg=1)
    c = h.established_server(options=TcpOptions(mss=1460))
    h.send(ACK | URG, R, L, payload=b"abcde", urgent=3)
    h.recv()
    assert c.recv(100) == b"abc"
    assert c.recv(oob=True) == b"d"
