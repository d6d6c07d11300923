"""pystack.api.socket: the blocking socket-like object, over two engines joined in memory.

Each stack's loop runs on its own background thread (Stack.start), the test's threads use
the sockets as blocking code would. Errors must carry Linux's errnos."""

from __future__ import annotations

import errno
import socket as ksocket
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from pystack.api import Stack, unpack_tcp_info
from pystack.api import socket as psocket
from pystack.tcp.state import TcpState
from pystack.wire.segment import SYN
from tests.helpers import wait_for

SRV = "198.18.0.1"
CLI = "198.18.0.2"
TCP = ksocket.IPPROTO_TCP
SOL = ksocket.SOL_SOCKET


@pytest.fixture
def stacks() -> Iterator[tuple[Stack, Stack]]:
    a, b = Stack.pair(sysctls=["net.ipv4.tcp_fastopen=3", "net.ipv4.tcp_syn_retries=1"])
    a.start()
    b.start()
    try:
        yield a, b
    finally:
        # Short linger: some tests cut the link under connections they closed.
        a.close(linger=0.5)
        b.close(linger=0.5)


def server(a: Stack, port: int = 7) -> psocket.socket:
    s = psocket.socket(stack=a)
    s.setsockopt(SOL, ksocket.SO_REUSEADDR, 1)  # accepted, no effect
    s.bind((SRV, port))
    s.listen(16)
    return s


def test_blocking_echo_between_threads(stacks: tuple[Stack, Stack]) -> None:
    a, b = stacks
    srv = server(a)
    data = bytes(range(256)) * 4000  # ~1 MB

    def serve() -> None:
        conn, peer = srv.accept()
        assert peer[0] == CLI
        with conn:
            while chunk := conn.recv(65536):
                conn.sendall(chunk)

    t = threading.Thread(target=serve)
    t.start()
    cli = psocket.socket(stack=b)
    cli.settimeout(30)
    cli.connect((SRV, 7))
    assert cli.getpeername() == (SRV, 7)
    assert cli.getsockname()[0] == CLI
    sender = threading.Thread(target=lambda: (cli.sendall(data), cli.shutdown(psocket.SHUT_WR)))
    sender.start()
    got = bytearray()
    buf = bytearray(70000)
    while n := cli.recv_into(buf):
        got += buf[:n]
    sender.join(10)
    t.join(10)
    assert bytes(got) == data
    cli.close()
    srv.close()


def test_nonblocking_connect_einprogress_ealready_then_connected(
        stacks: tuple[Stack, Stack]) -> None:
    a, b = stacks
    srv = server(a)
    cli = psocket.socket(stack=b)
    cli.setblocking(False)
    assert not cli.getblocking()
    with pytest.raises(BlockingIOError) as ei:
        cli.connect((SRV, 7))
    assert ei.value.errno == errno.EINPROGRESS
    codes = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        code = cli.connect_ex((SRV, 7))
        codes.append(code)
        if code != errno.EALREADY:
            break
        time.sleep(0.001)
    assert codes[-1] == 0, codes
    assert cli.connect_ex((SRV, 7)) == errno.EISCONN
    assert cli.getsockopt(SOL, ksocket.SO_ERROR) == 0
    with pytest.raises(BlockingIOError):
        cli.recv(10)
    cli.close()
    srv.close()


def test_errnos(stacks: tuple[Stack, Stack]) -> None:
    a, b = stacks
    srv = server(a)
    cli = psocket.socket(stack=b)
    with pytest.raises(ConnectionRefusedError):
        cli.connect((SRV, 9))
    assert psocket.socket(stack=b).connect_ex((SRV, 9)) == errno.ECONNREFUSED
    fresh = psocket.socket(stack=b)
    with pytest.raises(OSError) as ei:
        fresh.recv(1)
    assert ei.value.errno == errno.ENOTCONN
    with pytest.raises(BrokenPipeError):
        fresh.send(b"x")
    with pytest.raises(OSError) as ei:
        fresh.getpeername()
    assert ei.value.errno == errno.ENOTCONN
    with pytest.raises(OSError) as ei:
        fresh.shutdown(psocket.SHUT_WR)
    assert ei.value.errno == errno.ENOTCONN
    other = psocket.socket(stack=a)
    with pytest.raises(OSError) as ei:
        other.bind((SRV, 7))
    assert ei.value.errno == errno.EADDRINUSE
    with pytest.raises(OSError) as ei:
        psocket.socket(stack=a).bind(("198.18.0.99", 80))
    assert ei.value.errno == errno.EADDRNOTAVAIL
    twice = psocket.socket(stack=a)
    twice.bind((SRV, 0))
    with pytest.raises(OSError) as ei:
        twice.bind((SRV, 0))
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(OSError) as ei:
        psocket.socket(ksocket.AF_INET6)
    assert ei.value.errno == errno.EAFNOSUPPORT
    cli = psocket.create_connection((SRV, 7), timeout=5, stack=b)
    cli.shutdown(psocket.SHUT_WR)
    with pytest.raises(BrokenPipeError) as ei:
        cli.send(b"after shutdown")
    assert ei.value.errno == errno.EPIPE
    cli.close()
    closed = psocket.socket(stack=b)
    closed.close()
    with pytest.raises(OSError) as ei:
        closed.connect((SRV, 7))
    assert ei.value.errno == errno.EBADF
    srv.close()


def test_timeouts(stacks: tuple[Stack, Stack]) -> None:
    a, b = stacks
    srv = server(a)
    cli = psocket.create_connection((SRV, 7), timeout=5, stack=b)
    conn, _ = srv.accept()
    cli.settimeout(0.2)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        cli.recv(10)
    assert time.monotonic() - t0 >= 0.2
    with pytest.raises(BlockingIOError):
        cli.recv(10, psocket.MSG_DONTWAIT)
    srv.settimeout(0.1)
    with pytest.raises(TimeoutError):
        srv.accept()
    srv.setblocking(False)
    with pytest.raises(BlockingIOError):
        srv.accept()
    # No answer at all: tcp_syn_retries=1 -> ETIMEDOUT after 1 s + 2 s.
    b.link.filter = lambda seg: False
    dead = psocket.socket(stack=b)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError) as ei:
        dead.connect((SRV, 7))
    assert ei.value.errno == errno.ETIMEDOUT
    assert 2.5 < time.monotonic() - t0 < 10
    for s in (cli, conn, srv, dead):
        s.close()


def test_reset_by_peer_and_user_timeout(stacks: tuple[Stack, Stack]) -> None:
    a, b = stacks
    srv = server(a)
    cli = psocket.create_connection((SRV, 7), timeout=5, stack=b)
    conn, _ = srv.accept()
    conn.setsockopt(SOL, ksocket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()  # SO_LINGER 0: RST
    with pytest.raises(ConnectionResetError):
        cli.recv(10)
    with pytest.raises(OSError) as ei:
        cli.send(b"x")
    assert ei.value.errno in (errno.ECONNRESET, errno.EPIPE)
    cli.close()

    cli = psocket.socket(stack=b)
    cli.setsockopt(TCP, ksocket.TCP_USER_TIMEOUT, 1000)
    cli.settimeout(10)
    cli.connect((SRV, 7))
    conn, _ = srv.accept()
    b.link.filter = lambda seg: False  # the path dies
    cli.send(b"never acknowledged")
    t0 = time.monotonic()
    with pytest.raises(TimeoutError) as ei:
        cli.recv(10)
    assert ei.value.errno == errno.ETIMEDOUT
    assert 0.5 < time.monotonic() - t0 < 8
    for s in (cli, conn, srv):
        s.close()


def test_shutdown_write_is_a_half_close(stacks: tuple[Stack, Stack]) -> None:
    a, b = stacks
    srv = server(a)
    cli = psocket.create_connection((SRV, 7), timeout=5, stack=b)
    conn, _ = srv.accept()
    conn.settimeout(5)
    cli.sendall(b"question")
    cli.shutdown(psocket.SHUT_WR)
    assert conn.recv(100, psocket.MSG_WAITALL) == b"question"  # stops at EOF
    assert conn.recv(100) == b""
    conn.sendall(b"answer")
    conn.close()
    assert cli.recv(100, psocket.MSG_WAITALL) == b"answer"
    cli.shutdown(psocket.SHUT_RD)
    assert cli.recv(10) == b""
    cli.close()
    srv.close()


def test_socket_options(stacks: tuple[Stack, Stack]) -> None:
    a, b = stacks
    srv = server(a)
    cli = psocket.socket(stack=b)
    # Before connect: validated and stored, applied before the SYN.
    cli.setsockopt(TCP, ksocket.TCP_MAXSEG, 1000)
    cli.setsockopt(SOL, ksocket.SO_RCVBUF, 65536)
    assert cli.getsockopt(SOL, ksocket.SO_RCVBUF) == 131072  # socket(7): doubled
    with pytest.raises(OSError) as ei:
        cli.setsockopt(TCP, ksocket.TCP_KEEPIDLE, 0)
    assert ei.value.errno == errno.EINVAL
    with pytest.raises(OSError) as ei:
        cli.setsockopt(TCP, 99, 1)
    assert ei.value.errno == errno.ENOPROTOOPT
    with pytest.raises(OSError) as ei:
        cli.setsockopt(TCP, ksocket.TCP_CONGESTION, b"nosuch")
    assert ei.value.errno == errno.ENOENT
    cli.settimeout(5)
    cli.connect((SRV, 7))
    conn, _ = srv.accept()
    assert conn.getsockopt(TCP, ksocket.TCP_MAXSEG) <= 1000, "our MSS reached the peer"
    for opt, value in [(ksocket.TCP_NODELAY, 1), (ksocket.TCP_CORK, 1), (ksocket.TCP_CORK, 0),
                       (ksocket.TCP_KEEPIDLE, 30), (ksocket.TCP_KEEPINTVL, 5),
                       (ksocket.TCP_KEEPCNT, 3), (ksocket.TCP_USER_TIMEOUT, 20000),
                       (ksocket.TCP_QUICKACK, 1)]:
        cli.setsockopt(TCP, opt, value)
        assert cli.getsockopt(TCP, opt) == value, opt
    cli.setsockopt(SOL, ksocket.SO_KEEPALIVE, 1)
    assert cli.getsockopt(SOL, ksocket.SO_KEEPALIVE) == 1
    cli.setsockopt(SOL, ksocket.SO_SNDBUF, 32768)
    assert cli.getsockopt(SOL, ksocket.SO_SNDBUF) == 65536
    cli.setsockopt(TCP, ksocket.TCP_CONGESTION, b"reno")
    assert cli.getsockopt(TCP, ksocket.TCP_CONGESTION, 16) == b"reno".ljust(16, b"\0")
    assert cli.getsockopt(TCP, ksocket.TCP_NODELAY, 4) == struct.pack("<i", 1)
    raw = cli.getsockopt(TCP, ksocket.TCP_INFO, 512)
    assert len(raw) == 248
    info = unpack_tcp_info(raw)
    assert info["state"] == int(TcpState.ESTABLISHED)
    assert info["snd_mss"] == cli.tcp_info()["mss"] and info["rcv_space"] > 0
    assert info["options"] & 7 == 7  # timestamps, SACK, window scaling negotiated
    assert unpack_tcp_info(srv.getsockopt(TCP, ksocket.TCP_INFO, 248))["state"] == int(
        TcpState.LISTEN)
    assert srv.getsockopt(SOL, ksocket.SO_ACCEPTCONN) == 1
    assert cli.getsockopt(SOL, ksocket.SO_TYPE) == ksocket.SOCK_STREAM
    # Options set on a listener are inherited by accepted connections (Linux).
    lst = psocket.socket(stack=a)
    lst.setsockopt(TCP, ksocket.TCP_NODELAY, 1)
    lst.bind((SRV, 8))
    lst.listen()
    c2 = psocket.create_connection((SRV, 8), timeout=5, stack=b)
    s2, _ = lst.accept()
    assert s2.getsockopt(TCP, ksocket.TCP_NODELAY) == 1
    for s in (cli, conn, srv, lst, c2, s2):
        s.close()


def test_makefile_and_context_manager(stacks: tuple[Stack, Stack]) -> None:
    a, b = stacks
    with psocket.create_server((SRV, 0), stack=a) as srv:
        port = srv.getsockname()[1]
        assert port >= 61000

        def serve() -> None:
            conn, _ = srv.accept()
            with conn, conn.makefile("rwb") as f:
                line = f.readline()
                f.write(line.upper())
                f.flush()

        t = threading.Thread(target=serve)
        t.start()
        with psocket.create_connection((SRV, port), timeout=5, stack=b) as cli:
            cli.sendall(b"hello\n")
            with cli.makefile("r") as f:
                assert f.readline() == "HELLO\n"
        t.join(5)
    assert cli.fileno() == -1


def test_blocking_call_on_the_loop_thread_is_refused(stacks: tuple[Stack, Stack]) -> None:
    a, _ = stacks
    srv = server(a)
    with pytest.raises(RuntimeError, match="own loop thread"):
        a.call(srv.accept)
    srv.close()


def test_closing_a_listener_gives_the_port_back(stacks: tuple[Stack, Stack]) -> None:
    a, b = stacks
    srv = server(a)
    srv.close()
    wait_for(lambda: (SRV, 7) not in [(ksocket.inet_ntoa(ip.to_bytes(4, "big")) if ip else SRV,
                                         p) for ip, p in a.engine.listeners], 5, "unlisten")
    again = server(a)
    with pytest.raises(ConnectionRefusedError):
        psocket.create_connection((SRV, 9), timeout=5, stack=b)
    again.close()


# --- Fast Open ------------------------------------------------------------------------
def syns(stack: Stack) -> list[bytes]:
    seen: list[bytes] = []

    def record(seg: object) -> bool:
        if seg.flags & SYN:  # type: ignore[attr-defined]
            seen.append(bytes(seg.payload))  # type: ignore[attr-defined]
        return True

    stack.link.filter = record
    return seen


def fo_server(a: Stack, port: int) -> psocket.socket:
    s = psocket.socket(stack=a)
    s.bind((SRV, port))
    s.setsockopt(TCP, psocket.TCP_FASTOPEN, 16)  # the listener's Fast Open queue
    s.listen()
    s.settimeout(5)
    return s


def test_sendto_msg_fastopen(stacks: tuple[Stack, Stack]) -> None:
    a, b = stacks
    srv = fo_server(a, 80)
    seen = syns(b)
    for i in range(2):
        cli = psocket.socket(stack=b)
        cli.settimeout(5)
        assert cli.sendto(b"GET %d" % i, psocket.MSG_FASTOPEN, (SRV, 80)) == 5
        conn, _ = srv.accept()
        assert conn.recv(10) == b"GET %d" % i
        cli.close()
        conn.close()
    assert seen == [b"", b"GET 1"], "the second SYN carries the data"
    # Non-blocking with a cookie: the bytes are queued in the SYN, no EINPROGRESS.
    cli = psocket.socket(stack=b)
    cli.setblocking(False)
    assert cli.sendto(b"GET 2", psocket.MSG_FASTOPEN, (SRV, 80)) == 5
    conn, _ = srv.accept()
    assert conn.recv(10) == b"GET 2"
    assert seen[-1] == b"GET 2"
    # Counted when the SYN-ACK acknowledges the SYN's data (Linux): it may still be on its way.
    wait_for(lambda: b.mib["TCPFastOpenActive"] == 2, 5, "TCPFastOpenActive == 2")
    for s in (cli, conn, srv):
        s.close()


def test_tcp_fastopen_connect_defers_the_syn_to_the_first_write(
        stacks: tuple[Stack, Stack]) -> None:
    a, b = stacks
    srv = fo_server(a, 81)
    seen = syns(b)
    for i in range(2):
        cli = psocket.socket(stack=b)
        cli.setsockopt(TCP, psocket.TCP_FASTOPEN_CONNECT, 1)
        cli.settimeout(5)
        cli.connect((SRV, 81))  # with a cookie: returns at once, nothing sent yet
        if i == 1:
            assert seen == [b""], "connect() must not send the SYN when a cookie is cached"
        cli.sendall(b"req%d" % i)
        conn, _ = srv.accept()
        assert conn.recv(10) == b"req%d" % i
        cli.close()
        conn.close()
    assert seen == [b"", b"req1"]
    srv.close()
