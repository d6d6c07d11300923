"""pystack.api on the veth bed against the Linux kernel's TCP in the peer namespace.

The Stack is built with netns= from the test's own thread (which stays outside the bed);
asyncio tests drive it from the test's event loop, blocking-socket tests from the loop
thread Stack.start() makes inside the namespace."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from pystack.api import Stack, open_connection, start_server, unpack_tcp_info
from pystack.api import socket as psocket
from pystack.tcp.state import TcpState
from tests.helpers import wait_for

MB = 1 << 20


def make_stack(bed: Any, program: Any, *sysctls: str) -> Stack:
    return Stack(bed.stack.ifname, netns=bed.stack.netns, program=program, sysctls=sysctls)


def run_async(bed: Any, program: Any, body: Callable[[Stack], Awaitable[Any]],
              *sysctls: str, timeout: float = 120) -> Any:
    async def main() -> Any:
        async with make_stack(bed, program, *sysctls) as st:
            return await asyncio.wait_for(body(st), timeout)

    return asyncio.run(main())


@pytest.fixture
def started(bed: Any, program: Any) -> Iterator[Stack]:
    st = make_stack(bed, program, "net.ipv4.tcp_syn_retries=1")
    st.start()
    try:
        yield st
    finally:
        st.close()


def kernel_listener(bed: Any, port: int, backlog: int = 16) -> socket.socket:
    srv = bed.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((bed.peer.ip, port))
    srv.listen(backlog)
    srv.settimeout(30)
    return srv


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as e:  # handed to the test
            out.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def result(t: threading.Thread, out: list[Any], timeout: float = 60) -> Any:
    t.join(timeout)
    assert not t.is_alive(), "kernel-side thread did not finish"
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


def digest(b: bytes | bytearray) -> str:
    return hashlib.sha256(b).hexdigest()


# --- asyncio ------------------------------------------------------------------------------
def test_asyncio_client_to_kernel_server(bed: Any, program: Any) -> None:
    srv = kernel_listener(bed, 9000)
    up = os.urandom(8 * MB)

    def kernel() -> tuple[int, str]:
        s, _ = srv.accept()
        s.settimeout(30)
        h, n = hashlib.sha256(), 0
        while chunk := s.recv(MB):  # to pystack's FIN (write_eof)
            h.update(chunk)
            n += len(chunk)
        s.sendall(b"%d %s" % (n, h.hexdigest().encode()))  # half-close: still answers
        s.close()
        return n, h.hexdigest()

    t, out = in_thread(kernel)

    async def body(st: Stack) -> bytes:
        reader, writer = await open_connection(bed.peer.ip, 9000, stack=st)
        writer.write(up)
        await writer.drain()
        writer.write_eof()
        reply = await reader.read()
        writer.close()
        await writer.wait_closed()
        return reply

    reply = run_async(bed, program, body)
    assert result(t, out) == (len(up), digest(up))
    assert reply == b"%d %s" % (len(up), digest(up).encode())
    srv.close()


def test_asyncio_server_echoes_kernel_client_with_half_close(bed: Any, program: Any) -> None:
    data = os.urandom(8 * MB)

    async def body(st: Stack) -> dict[str, int]:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
            writer.close()  # after the kernel's FIN: our FIN follows the echo

        server = await start_server(echo, bed.stack.ip, 7, stack=st)

        def kernel() -> bytes:
            c = bed.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
            c.settimeout(30)
            c.connect((bed.stack.ip, 7))
            w = threading.Thread(target=lambda: (c.sendall(data), c.shutdown(socket.SHUT_WR)))
            w.start()
            got = bytearray()
            while chunk := c.recv(MB):
                got += chunk
            w.join()
            c.close()
            return bytes(got)

        got = await asyncio.to_thread(kernel)
        assert digest(got) == digest(data)
        server.close()
        await server.wait_closed()
        return st.mib

    mib = run_async(bed, program, body)
    assert mib["PassiveOpens"] == 1 and mib["EstabResets"] == 0


def test_drain_back_pressure_with_a_slow_kernel_reader(bed: Any, program: Any) -> None:
    srv = kernel_listener(bed, 9001)
    total = 6 * MB

    def kernel() -> str:
        s, _ = srv.accept()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.settimeout(30)
        h = hashlib.sha256()
        while chunk := s.recv(65536):
            h.update(chunk)
            time.sleep(0.005)  # ~10 MB/s at most: far below what pystack can send
        s.close()
        return h.hexdigest()

    t, out = in_thread(kernel)
    data = os.urandom(total)

    async def body(st: Stack) -> tuple[int, int]:
        # A fixed send buffer (no autotuning): the transport's buffer must absorb the rest.
        _, writer = await open_connection(bed.peer.ip, 9001, stack=st,
                                          options={"SO_SNDBUF": 65536})
        transport = writer.transport
        waits = peak = 0
        loop = asyncio.get_running_loop()
        chunk = 65536
        for off in range(0, total, chunk):
            writer.write(data[off:off + chunk])
            peak = max(peak, transport.get_write_buffer_size())
            t0 = loop.time()
            await writer.drain()
            if loop.time() - t0 > 0.001:
                waits += 1
        writer.close()
        await writer.wait_closed()
        return waits, peak

    waits, peak = run_async(bed, program, body)
    assert result(t, out) == digest(data)
    assert waits >= 10, f"drain() waited only {waits} times"
    assert peak <= 65536 + 65536, f"transport buffer reached {peak}"
    srv.close()


def test_abort_resets_the_kernel_peer(bed: Any, program: Any) -> None:
    async def body(st: Stack) -> None:
        got: asyncio.Future[asyncio.StreamWriter] = asyncio.get_running_loop().create_future()

        async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readexactly(5)
            got.set_result(writer)

        server = await start_server(on_conn, bed.stack.ip, 8, stack=st)
        c = bed.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
        c.settimeout(10)
        await asyncio.to_thread(c.connect, (bed.stack.ip, 8))
        c.sendall(b"hello")
        writer = await got
        writer.transport.abort()
        with pytest.raises(ConnectionResetError):
            await asyncio.to_thread(c.recv, 10)
        c.close()
        server.close()

    run_async(bed, program, body)


def test_asyncio_errors_refused_and_timeout(bed: Any, program: Any) -> None:
    async def body(st: Stack) -> None:
        with pytest.raises(ConnectionRefusedError):  # the kernel's RST
            await open_connection(bed.peer.ip, 9, stack=st)
        t0 = time.monotonic()
        with pytest.raises(TimeoutError) as ei:  # nobody has 198.18.0.3: ARP never answers
            await open_connection("198.18.0.3", 80, stack=st)
        assert ei.value.errno == errno.ETIMEDOUT
        assert 2.5 < time.monotonic() - t0 < 15  # tcp_syn_retries=1: 1 s + 2 s

    run_async(bed, program, body, "net.ipv4.tcp_syn_retries=1")


def test_closing_the_stack_gives_the_port_back_to_the_kernel(bed: Any, program: Any) -> None:
    async def body(st: Stack) -> None:
        server = await start_server(lambda r, w: None, bed.stack.ip, 7, stack=st)
        c = bed.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
        c.settimeout(10)
        await asyncio.to_thread(c.connect, (bed.stack.ip, 7))  # pystack answers
        c.close()
        server.close()

    assert bed.xdp_prog_id("stack") == 0
    run_async(bed, program, body)
    assert bed.xdp_prog_id("stack") == 0, "the XDP program is detached"
    before = bed.snmp("stack")["OutRsts"]
    c = bed.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
    c.settimeout(10)
    with pytest.raises(ConnectionRefusedError):
        c.connect((bed.stack.ip, 7))
    assert bed.snmp("stack")["OutRsts"] > before, "the kernel answered the SYN itself"
    c.close()


# --- blocking sockets ---------------------------------------------------------------------
def test_blocking_client_and_server_against_the_kernel(bed: Any, started: Stack) -> None:
    # pystack server, kernel client
    srv = psocket.create_server((bed.stack.ip, 7), stack=started)
    srv.settimeout(10)

    def kernel_client() -> bytes:
        c = bed.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
        c.settimeout(10)
        c.connect((bed.stack.ip, 7))
        c.sendall(b"ping" * 1000)
        c.shutdown(socket.SHUT_WR)
        got = bytearray()
        while chunk := c.recv(65536):
            got += chunk
        c.close()
        return bytes(got)

    t, out = in_thread(kernel_client)
    conn, peer = srv.accept()
    assert peer[0] == bed.peer.ip
    conn.settimeout(10)
    data = conn.recv(4000, psocket.MSG_WAITALL)
    data += conn.recv(4000, psocket.MSG_WAITALL)
    conn.sendall(data[::-1])
    conn.close()
    assert result(t, out) == (b"ping" * 1000)[::-1]
    srv.close()

    # pystack client, kernel server
    ksrv = kernel_listener(bed, 9002)

    def kernel_server() -> bytes:
        s, _ = ksrv.accept()
        s.settimeout(10)
        msg = s.recv(100)
        s.sendall(msg.upper())
        s.close()
        return msg

    t, out = in_thread(kernel_server)
    cli = psocket.create_connection((bed.peer.ip, 9002), timeout=10, stack=started)
    cli.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    cli.sendall(b"hello kernel")
    assert cli.recv(100, psocket.MSG_WAITALL) == b"HELLO KERNEL"
    assert result(t, out) == b"hello kernel"
    cli.close()
    ksrv.close()


def test_blocking_errnos_against_the_kernel(bed: Any, started: Stack) -> None:
    s = psocket.socket(stack=started)
    assert s.connect_ex((bed.peer.ip, 9)) == errno.ECONNREFUSED
    s.close()
    ksrv = kernel_listener(bed, 9003)
    cli = psocket.create_connection((bed.peer.ip, 9003), timeout=10, stack=started)
    k, _ = ksrv.accept()
    k.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
    k.close()  # linger 0: the kernel resets
    with pytest.raises(ConnectionResetError):
        cli.recv(10)
    cli.close()
    # TCP_USER_TIMEOUT: the peer's interface goes down under an established connection.
    cli = psocket.socket(stack=started)
    cli.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 1500)
    cli.settimeout(20)
    cli.connect((bed.peer.ip, 9003))
    k, _ = ksrv.accept()
    bed.run("peer", ["ip", "link", "set", bed.peer.ifname, "down"])
    cli.send(b"into the void")
    t0 = time.monotonic()
    with pytest.raises(TimeoutError) as ei:
        cli.recv(10)
    assert ei.value.errno == errno.ETIMEDOUT
    assert 1.0 < time.monotonic() - t0 < 10
    cli.close()
    k.close()
    ksrv.close()


def test_tcp_info_matches_the_kernels_layout(bed: Any, started: Stack) -> None:
    ksrv = kernel_listener(bed, 9004)
    cli = psocket.create_connection((bed.peer.ip, 9004), timeout=10, stack=started)
    k, _ = ksrv.accept()
    cli.sendall(b"x" * 10000)
    assert len(k.recv(10000, socket.MSG_WAITALL)) == 10000
    wait_for(lambda: cli.tcp_info()["unacked"] == 0, 5, "everything acknowledged")
    ours = unpack_tcp_info(cli.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 512))
    raw = k.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 512)
    assert len(raw) >= 248, "pystack's struct must be a prefix of the kernel's"
    theirs = unpack_tcp_info(raw)
    assert ours["state"] == theirs["state"] == int(TcpState.ESTABLISHED)
    assert ours["options"] & 7 == theirs["options"] & 7 == 7  # ts, sack, wscale
    assert ours["bytes_acked"] == 10001 and theirs["bytes_received"] == 10000
    assert ours["snd_mss"] == theirs["rcv_mss"] or abs(ours["snd_mss"] - theirs["advmss"]) <= 12
    assert (ours["snd_wscale"], ours["rcv_wscale"]) == (theirs["rcv_wscale"],
                                                        theirs["snd_wscale"])
    cli.close()
    k.close()
    ksrv.close()


# --- Fast Open ------------------------------------------------------------------------------
def netstat(bed: Any, side: str) -> dict[str, int]:
    lines = bed.run(side, ["cat", "/proc/net/netstat"]).stdout.splitlines()
    rows = [ln.split()[1:] for ln in lines if ln.startswith("TcpExt:")]
    return {k: int(v) for k, v in zip(rows[0], rows[1], strict=True)}


def test_open_connection_fastopen_against_a_kernel_server(bed: Any, program: Any) -> None:
    bed.run("peer", ["sysctl", "-qw", "net.ipv4.tcp_fastopen=3"])
    srv = kernel_listener(bed, 9005)
    srv.setsockopt(socket.IPPROTO_TCP, socket.TCP_FASTOPEN, 16)

    def kernel() -> list[bytes]:
        got = []
        for _ in range(2):
            s, _ = srv.accept()
            s.settimeout(10)
            msg = s.recv(100)
            got.append(msg)
            s.sendall(msg.upper())
            s.close()
        return got

    t, out = in_thread(kernel)

    async def body(st: Stack) -> list[bytes]:
        replies = []
        for i in range(2):
            reader, writer = await open_connection(bed.peer.ip, 9005, stack=st, fastopen=True,
                                                   data=b"request %d" % i)
            replies.append(await reader.read())
            writer.close()
            await writer.wait_closed()
        return replies

    before = netstat(bed, "peer")["TCPFastOpenPassive"]
    assert run_async(bed, program, body) == [b"REQUEST 0", b"REQUEST 1"]
    assert result(t, out) == [b"request 0", b"request 1"]
    assert netstat(bed, "peer")["TCPFastOpenPassive"] - before == 1, (
        "the second connection's SYN carried its data (the kernel accepted it)")
    srv.close()


def test_kernel_fastopen_client_to_asyncio_server(bed: Any, program: Any) -> None:
    bed.run("peer", ["sysctl", "-qw", "net.ipv4.tcp_fastopen=3"])

    async def body(st: Stack) -> dict[str, int]:
        async def upper(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write((await reader.read(100)).upper())
            await writer.drain()
            writer.close()

        server = await start_server(upper, bed.stack.ip, 80, stack=st,
                                    options={"TCP_FASTOPEN": 16})

        def kernel() -> list[bytes]:
            replies = []
            for i in range(2):
                c = bed.socket("peer", socket.AF_INET, socket.SOCK_STREAM)
                # Blocking: sendto(MSG_FASTOPEN) returns once connected (a socket with a
                # Python timeout is non-blocking underneath and would say EINPROGRESS);
                # the kernel's own timeouts bound the wait instead.
                tv = struct.pack("ll", 10, 0)
                c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
                c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
                c.sendto(b"hello %d" % i, socket.MSG_FASTOPEN, (bed.stack.ip, 80))
                replies.append(c.recv(100))
                c.close()
            return replies

        assert await asyncio.to_thread(kernel) == [b"HELLO 0", b"HELLO 1"]
        server.close()
        return st.mib

    mib = run_async(bed, program, body, "net.ipv4.tcp_fastopen=3")
    assert mib["TCPFastOpenPassive"] == 1


# --- the README's example -----------------------------------------------------------------
def test_readme_embedding_example(bed: Any, program: Any) -> None:
    """The "Embedding" section of the README, with the bed's names filled in."""
    ifname, netns, peer = bed.stack.ifname, bed.stack.netns, bed.peer.ip
    ksrv = kernel_listener(bed, 9000)
    t, out = in_thread(lambda: (lambda s: (s[0].sendall(s[0].recv(100)), s[0].close()))(
        ksrv.accept()))

    # ---- README ----
    import asyncio

    from pystack.api import Stack, open_connection, start_server

    async def echo(reader, writer):  # noqa: ANN001, ANN202 - as in the README
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def main() -> bytes:
        async with Stack(ifname, netns=netns, program=program,
                         sysctls=["net.ipv4.tcp_sack=1"]) as stack:
            server = await start_server(echo, None, 7, stack=stack)   # port 7 is pystack's
            reader, writer = await open_connection(peer, 9000, stack=stack)
            writer.write(b"hello")
            reply = await reader.read(100)
            writer.close()
            server.close()
            return reply

    assert asyncio.run(main()) == b"hello"
    # ---- end README ----
    result(t, out)
    ksrv.close()
