"""pystack.api's asyncio layer over two engines joined in memory (Stack.pair), on a loop
with a virtual clock: real asyncio Transport/StreamReader/StreamWriter semantics,
deterministic, no privileges."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from pystack.api import (
    PystackTransport,
    Stack,
    create_connection,
    create_server,
    open_connection,
    start_server,
    unpack_tcp_info,
)
from pystack.api.testing import run
from pystack.tcp.state import TcpState
from pystack.wire.segment import SYN

SRV = "198.18.0.1"
PORT = 7


def with_pair(body: Callable[[Stack, Stack], Awaitable[Any]], *,
              sysctls: tuple[str, ...] = (), delay: float = 0.001) -> Any:
    """Run body(server_stack, client_stack) on a virtual-clock loop, stacks attached."""

    async def main() -> Any:
        a, b = Stack.pair(sysctls=sysctls, delay=delay)
        async with a, b:
            return await body(a, b)

    return run(main())


async def until(cond: Callable[[], Any], timeout: float = 10.0) -> None:
    """Wait (virtual time) until cond() is true."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "condition not reached"
        await asyncio.sleep(0.001)


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


class Recorder(asyncio.Protocol):
    """Records every protocol callback."""

    def __init__(self, eof_keep_open: bool = False) -> None:
        self.calls: list[str] = []
        self.data = bytearray()
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[BaseException | None] = (
            asyncio.get_running_loop().create_future())
        self.eof_keep_open = eof_keep_open

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.calls.append("made")
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.calls.append("data")
        self.data += data

    def eof_received(self) -> bool:
        self.calls.append("eof")
        return self.eof_keep_open

    def pause_writing(self) -> None:
        self.calls.append("pause")

    def resume_writing(self) -> None:
        self.calls.append("resume")

    def connection_lost(self, exc: BaseException | None) -> None:
        self.calls.append("lost")
        self.lost.set_result(exc)


# --- streams ------------------------------------------------------------------------
def test_streams_echo_one_megabyte_is_exact() -> None:
    payload = os.urandom(1 << 20)

    async def body(a: Stack, b: Stack) -> None:
        server = await start_server(echo, SRV, PORT, stack=a)
        reader, writer = await open_connection(SRV, PORT, stack=b)
        assert isinstance(reader, asyncio.StreamReader)
        assert isinstance(writer, asyncio.StreamWriter)
        assert isinstance(writer.transport, PystackTransport)

        async def send() -> None:
            writer.write(payload)
            await writer.drain()
            writer.write_eof()

        task = asyncio.create_task(send())
        got = await reader.read(-1)  # until the server's FIN
        await task
        assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    with_pair(body)


def test_replies_of_tasks_one_batch_woke_leave_in_one_send() -> None:
    """A batch of requests wakes one echo task per connection; the flush runs after all of
    them, so their ten replies leave in one send (one AF_XDP kick), not one, then nine."""

    async def body(a: Stack, b: Stack) -> None:
        server = await start_server(echo, SRV, PORT, stack=a)
        pairs = [await open_connection(SRV, PORT, stack=b) for _ in range(10)]
        await asyncio.sleep(1)  # every handshake and delayed ACK settled
        sends: list[int] = []
        link_send = a.link.send

        def counting_send(segs: Any) -> None:
            sends.append(sum(1 for s in segs if s.payload))
            link_send(segs)

        a.link.send = counting_send  # type: ignore[method-assign]
        for _, w in pairs:
            w.write(b"y" * 1024)  # ten requests in one client flush: one batch at the server
        for r, _ in pairs:
            assert await r.readexactly(1024) == b"y" * 1024
        assert [n for n in sends if n] == [10], sends
        for _, w in pairs:
            w.close()
        server.close()
        await server.wait_closed()

    with_pair(body)


def test_many_connections_share_one_flush_per_loop_turn() -> None:
    async def body(a: Stack, b: Stack) -> None:
        server = await start_server(echo, SRV, PORT, stack=a)
        pairs = [await open_connection(SRV, PORT, stack=b) for _ in range(10)]
        await asyncio.sleep(1)  # every handshake and delayed ACK settled
        turns = b.driver.turns
        for _, w in pairs:
            w.write(b"x" * 1024)  # ten writes in one loop turn
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert b.driver.turns == turns + 1, "writes of one turn must leave in one flush"
        for r, _ in pairs:
            assert await r.readexactly(1024) == b"x" * 1024
        for _, w in pairs:
            w.close()
        server.close()

    with_pair(body)


def test_write_eof_half_close_then_server_answers() -> None:
    async def body(a: Stack, b: Stack) -> None:
        async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            data = await reader.read()  # to EOF: the client's FIN
            assert reader.at_eof()
            writer.write(f"{len(data)}".encode())
            await writer.drain()
            writer.close()

        server = await start_server(count, SRV, PORT, stack=a)
        reader, writer = await open_connection(SRV, PORT, stack=b)
        assert writer.can_write_eof()
        writer.write(b"a" * 5000)
        writer.write_eof()
        with pytest.raises(RuntimeError):
            writer.write(b"more")
        assert await reader.read() == b"5000"
        conn = writer.get_extra_info("connection")
        assert conn.state in (TcpState.FIN_WAIT_2, TcpState.TIME_WAIT)
        writer.close()
        server.close()

    with_pair(body)


def test_drain_blocks_while_the_peer_reads_slowly() -> None:
    total = 2 << 20

    async def body(a: Stack, b: Stack) -> None:
        received = bytearray()

        async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while chunk := await reader.read(16384):
                received.extend(chunk)
                await asyncio.sleep(0.05)  # 16 KiB every 50 ms: far slower than the writer
            writer.close()

        server = await start_server(slow, SRV, PORT, stack=a)
        # A fixed send buffer (SO_SNDBUF stops its autotuning, as on Linux): the
        # transport's own buffer has to take the rest.
        _, writer = await open_connection(SRV, PORT, stack=b, options={"SO_SNDBUF": 32768})
        transport = writer.transport
        low, high = transport.get_write_buffer_limits()
        assert (low, high) == (16384, 65536)
        waits = 0
        peak = 0
        chunk = b"z" * 32768
        for _ in range(total // len(chunk)):
            writer.write(chunk)
            peak = max(peak, transport.get_write_buffer_size())
            before = asyncio.get_running_loop().time()
            await writer.drain()
            if asyncio.get_running_loop().time() > before:
                waits += 1
        writer.write_eof()
        while len(received) < total:
            await asyncio.sleep(0.1)
        assert bytes(received) == b"z" * total
        assert waits > 10, "drain() never waited: no back-pressure"
        assert peak <= high + len(chunk), f"transport buffer grew to {peak}"
        writer.close()
        server.close()

    with_pair(body)


def test_pause_reading_closes_the_window_and_resume_delivers_everything() -> None:
    async def body(a: Stack, b: Stack) -> None:
        servers: list[Recorder] = []

        def factory() -> Recorder:
            servers.append(Recorder())
            return servers[-1]

        server = await create_server(factory, SRV, PORT, stack=a)
        _, writer = await open_connection(SRV, PORT, stack=b)
        await asyncio.sleep(0.1)
        proto = servers[0]
        assert proto.transport is not None
        proto.transport.pause_reading()
        assert not proto.transport.is_reading()
        data = os.urandom(4 << 20)
        writer.write(data)
        await asyncio.sleep(5)
        conn = writer.get_extra_info("connection")
        held = len(proto.data)
        assert conn.snd_wnd == 0, "the paused receiver's window must close"
        assert held < len(data)
        proto.transport.resume_reading()
        await writer.drain()
        while len(proto.data) < len(data):
            await asyncio.sleep(0.1)
        assert bytes(proto.data) == data
        writer.close()
        server.close()

    with_pair(body)


# --- protocols ------------------------------------------------------------------------
def test_protocol_callbacks_in_order_and_clean_close() -> None:
    async def body(a: Stack, b: Stack) -> None:
        srv_protos: list[Recorder] = []

        def factory() -> Recorder:
            srv_protos.append(Recorder())
            return srv_protos[-1]

        server = await create_server(factory, SRV, PORT, stack=a)
        transport, client = await create_connection(Recorder, SRV, PORT, stack=b)
        assert isinstance(client, Recorder)
        transport.writelines([b"ab", b"cd", bytearray(b"ef"), memoryview(b"gh")])
        transport.close()
        assert transport.is_closing()
        assert await client.lost is None
        await until(lambda: srv_protos)  # the handshake's last ACK was still on the wire
        sp = srv_protos[0]
        assert await sp.lost is None  # eof_received() returned False: transport closed
        assert bytes(sp.data) == b"abcdefgh"
        assert sp.calls[0] == "made" and sp.calls[-2:] == ["eof", "lost"]
        assert client.calls == ["made", "lost"]
        server.close()

    with_pair(body)


def test_protocol_pause_and_resume_writing() -> None:
    async def body(a: Stack, b: Stack) -> None:
        servers: list[Recorder] = []

        def factory() -> Recorder:
            servers.append(Recorder())
            return servers[-1]

        server = await create_server(factory, SRV, PORT, stack=a)
        transport, client = await create_connection(
            Recorder, SRV, PORT, stack=b, options={"SO_SNDBUF": 16384})
        await until(lambda: servers)
        assert servers[0].transport is not None
        servers[0].transport.pause_reading()  # the peer stops reading: its window closes
        for _ in range(64):
            transport.write(b"w" * 16384)
        assert client.calls[-1] == "pause"
        assert transport.get_write_buffer_size() > 65536
        servers[0].transport.resume_reading()
        await until(lambda: "resume" in client.calls)
        assert transport.get_write_buffer_size() <= 16384
        await until(lambda: len(servers[0].data) == 64 * 16384)
        transport.close()
        server.close()

    with_pair(body)


def test_abort_resets_the_peer() -> None:
    async def body(a: Stack, b: Stack) -> None:
        server = await start_server(echo, SRV, PORT, stack=a)
        reader, writer = await open_connection(SRV, PORT, stack=b)
        transport, client = await create_connection(Recorder, SRV, PORT, stack=b)
        writer.write(b"hi")
        assert await reader.readexactly(2) == b"hi"
        server_writers: list[asyncio.StreamWriter] = []

        async def grab(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            server_writers.append(w)
            await r.read()

        server2 = await start_server(grab, SRV, PORT + 1, stack=a)
        r2, w2 = await open_connection(SRV, PORT + 1, stack=b)
        await asyncio.sleep(0.1)
        server_writers[0].transport.abort()
        with pytest.raises(ConnectionResetError):
            await r2.read(10)
        mib = a.mib
        assert mib["OutRsts"] >= 1
        transport.abort()
        assert await client.lost is None
        for w in (writer, w2):
            w.close()
        server.close()
        server2.close()

    with_pair(body)


def test_exception_in_data_received_closes_and_reports() -> None:
    class Broken(Recorder):
        def data_received(self, data: bytes) -> None:
            raise ValueError("boom")

    async def body(a: Stack, b: Stack) -> None:
        seen: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: seen.append(ctx))
        protos: list[Broken] = []

        def factory() -> Broken:
            protos.append(Broken())
            return protos[-1]

        server = await create_server(factory, SRV, PORT, stack=a)
        reader, writer = await open_connection(SRV, PORT, stack=b)
        writer.write(b"x")
        await until(lambda: protos)
        exc = await protos[0].lost
        assert isinstance(exc, ValueError)
        assert seen and isinstance(seen[0]["exception"], ValueError)
        writer.close()
        server.close()

    with_pair(body)


# --- errors ---------------------------------------------------------------------------
def test_refused_port_raises_connection_refused() -> None:
    async def body(a: Stack, b: Stack) -> None:
        with pytest.raises(ConnectionRefusedError) as ei:
            await open_connection(SRV, 9, stack=b)
        assert ei.value.errno == errno.ECONNREFUSED

    with_pair(body)


def test_unanswered_syn_times_out_with_etimedout() -> None:
    async def body(a: Stack, b: Stack) -> None:
        b.link.filter = lambda seg: False  # the network eats everything
        t0 = asyncio.get_running_loop().time()
        with pytest.raises(TimeoutError) as ei:
            await open_connection(SRV, PORT, stack=b)
        assert ei.value.errno == errno.ETIMEDOUT
        # tcp_syn_retries=2: SYN at 0, retransmissions at 1 s and 3 s, gives up at 7 s.
        assert asyncio.get_running_loop().time() - t0 == pytest.approx(7.0, abs=0.5)

    with_pair(body, sysctls=("net.ipv4.tcp_syn_retries=2",))


def test_user_timeout_fails_a_dead_connection() -> None:
    async def body(a: Stack, b: Stack) -> None:
        server = await start_server(echo, SRV, PORT, stack=a)
        reader, writer = await open_connection(
            SRV, PORT, stack=b, options={"TCP_USER_TIMEOUT": 3000})
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        b.link.filter = lambda seg: False  # the path dies
        t0 = asyncio.get_running_loop().time()
        writer.write(b"lost")
        with pytest.raises(TimeoutError) as ei:
            await reader.read(10)
        assert ei.value.errno == errno.ETIMEDOUT
        assert 3.0 <= asyncio.get_running_loop().time() - t0 < 10.0
        writer.close()
        server.close()

    with_pair(body)


def test_write_after_peer_reset_reports_connection_lost() -> None:
    async def body(a: Stack, b: Stack) -> None:
        writers: list[asyncio.StreamWriter] = []

        async def keep(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            writers.append(w)

        server = await start_server(keep, SRV, PORT, stack=a)
        transport, client = await create_connection(Recorder, SRV, PORT, stack=b)
        await asyncio.sleep(0.1)
        writers[0].transport.abort()
        exc = await asyncio.wait_for(client.lost, 5)
        assert isinstance(exc, ConnectionResetError)
        transport.write(b"after")  # ignored once lost, as asyncio's transports do
        server.close()

    with_pair(body)


# --- extra info, options, flow-control knobs ----------------------------------------
def test_extra_info_socket_options_and_tcp_info() -> None:
    async def body(a: Stack, b: Stack) -> None:
        server = await start_server(echo, SRV, PORT, stack=a)
        reader, writer = await open_connection(SRV, PORT, stack=b)
        assert writer.get_extra_info("peername") == (SRV, PORT)
        host, port = writer.get_extra_info("sockname")
        assert host == "198.18.0.2" and port >= 61000
        sock = writer.get_extra_info("socket")
        assert sock.fileno() == -1
        assert sock.getpeername() == (SRV, PORT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"reno")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(
            b"\0") == b"reno"
        info = unpack_tcp_info(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256))
        assert info["state"] == int(TcpState.ESTABLISHED)
        assert info["snd_mss"] == writer.get_extra_info("tcp_info")["mss"]
        assert writer.get_extra_info("stack") is b
        assert writer.get_extra_info("nonexistent", 42) == 42
        listen = server.sockets[0]
        assert listen.getsockname() == (SRV, PORT)
        writer.transport.set_write_buffer_limits(high=1000)
        assert writer.transport.get_write_buffer_limits() == (250, 1000)
        with pytest.raises(ValueError):
            writer.transport.set_write_buffer_limits(high=1, low=2)
        writer.close()
        server.close()

    with_pair(body)


def test_server_port_zero_context_manager_and_serve_forever() -> None:
    async def body(a: Stack, b: Stack) -> None:
        async with await start_server(echo, SRV, 0, stack=a) as server:
            port = server.sockets[0].getsockname()[1]
            assert port >= 61000 and server.is_serving()
            task = asyncio.create_task(server.serve_forever())
            reader, writer = await open_connection(SRV, port, stack=b)
            writer.write(b"ok")
            assert await reader.readexactly(2) == b"ok"
            writer.close()
            await writer.wait_closed()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert not server.is_serving()
            await asyncio.wait_for(server.wait_closed(), 10)
        with pytest.raises(ConnectionRefusedError):
            await open_connection(SRV, port, stack=b)

    with_pair(body)


def test_default_stack_and_wrong_loop() -> None:
    async def body(a: Stack, b: Stack) -> None:
        server = await start_server(echo, SRV, PORT, stack=a)
        # b was attached last (async with a, b): it is this loop's default stack.
        reader, writer = await open_connection(SRV, PORT)
        assert writer.get_extra_info("stack") is b
        writer.close()
        server.close()

    with_pair(body)

    a, _ = Stack.pair()
    other = asyncio.new_event_loop()
    try:
        a.attach(other)

        async def wrong() -> None:
            await open_connection(SRV, PORT, stack=a)

        with pytest.raises(RuntimeError, match="another event loop"):
            run(wrong())
    finally:
        a.close()
        other.close()


def test_stack_close_aborts_connections_and_tells_protocols() -> None:
    async def main() -> None:
        a, b = Stack.pair()
        async with a:
            b.attach()
            server = await start_server(echo, SRV, PORT, stack=a)
            transport, client = await create_connection(Recorder, SRV, PORT, stack=b)
            await until(lambda: a.engine.mib["CurrEstab"] == 1)
            b.close()
            exc = await client.lost
            assert isinstance(exc, ConnectionAbortedError)
            await asyncio.sleep(0.1)
            assert a.engine.mib["EstabResets"] == 1, "the peer saw a RST"
            server.close()

    run(main())


# --- Fast Open --------------------------------------------------------------------------
def test_open_connection_fastopen_puts_data_in_the_syn_once_a_cookie_is_cached() -> None:
    async def body(a: Stack, b: Stack) -> None:
        seen: list[tuple[int, bytes]] = []
        b.link.filter = lambda seg: seen.append((seg.flags, bytes(seg.payload))) or True

        async def upper(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write((await reader.read(100)).upper())
            await writer.drain()
            writer.close()

        # The listener's Fast Open queue (TCP_FASTOPEN), as Linux requires on the server.
        server = await start_server(upper, SRV, PORT, stack=a, options={"TCP_FASTOPEN": 16})
        for i in range(2):
            reader, writer = await open_connection(SRV, PORT, stack=b, fastopen=True,
                                                   data=b"hello%d" % i)
            assert await reader.read() == b"HELLO%d" % i
            writer.close()
            await writer.wait_closed()
        syns = [p for f, p in seen if f & SYN]
        assert syns == [b"", b"hello1"], "first SYN asks for a cookie, second carries data"
        assert b.mib["TCPFastOpenActive"] == 1
        assert a.mib["TCPFastOpenPassive"] == 1
        server.close()

    with_pair(body, sysctls=("net.ipv4.tcp_fastopen=3",))
