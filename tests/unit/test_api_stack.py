"""pystack.api.Stack life cycle on the in-memory link: settings by sysctl name, counters,
context managers, threads, closing with linger."""

from __future__ import annotations

import asyncio
import threading

import pytest

from pystack.api import Stack, create_connection, default_stack, open_connection, start_server
from pystack.api.testing import run

SRV = "198.18.0.1"


def test_sysctls_by_kernel_name() -> None:
    a, b = Stack.pair(sysctls=["net.ipv4.tcp_sack=0", "tcp_rmem=4096 65536 1000000"])
    try:
        assert a.sysctl("net.ipv4.tcp_sack") == "0"
        assert a.sysctl("tcp_rmem") == "4096\t65536\t1000000"
        assert a.sysctl("net.ipv4.tcp_sack", 1) == "1"
        assert a.settings.tcp_sack == 1
        with pytest.raises(ValueError):
            a.sysctl("net.ipv4.tcp_syncookies", 7)
        with pytest.raises(ValueError):
            a.sysctl("net.ipv4.no_such_thing", 1)
        assert a.mib["ActiveOpens"] == 0
    finally:
        a.close()
        b.close()


def test_constructor_and_state_errors() -> None:
    with pytest.raises(ValueError):
        Stack()
    a, b = Stack.pair()
    assert "idle" in repr(a)
    a.start()
    assert "attached" in repr(a) and a.loop is not None
    with pytest.raises(RuntimeError):
        a.start()
    assert default_stack() is a
    a.close()
    a.close()  # idempotent
    assert "closed" in repr(a)
    with pytest.raises(RuntimeError):
        a.attach(asyncio.new_event_loop())
    b.close()


def test_call_and_post_run_on_the_loop_thread() -> None:
    a, b = Stack.pair()
    a.start()
    try:
        here = threading.get_ident()
        there = a.call(threading.get_ident)
        assert there != here
        seen = threading.Event()
        a.post(lambda: seen.set() if threading.get_ident() == there else None)
        assert seen.wait(5)
        with pytest.raises(ZeroDivisionError):
            a.call(lambda: 1 / 0)
    finally:
        a.close()
        b.close()


def test_close_lets_closed_connections_deliver_then_resets_the_rest() -> None:
    payload = b"q" * (2 << 20)

    async def main() -> None:
        a, b = Stack.pair(delay=0.005)
        async with a:
            got = bytearray()
            eof = asyncio.Event()

            async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                try:
                    while chunk := await reader.read(65536):
                        got.extend(chunk)
                except ConnectionResetError:
                    return  # the connection b leaves open when it closes
                eof.set()

            server = await start_server(sink, SRV, 9, stack=a)
            b.attach()
            _, writer = await open_connection(SRV, 9, stack=b)
            transport, _ = await create_connection(asyncio.Protocol, SRV, 9, stack=b)
            writer.write(payload)
            writer.close()  # closed by the application, its data still in flight
            await b.aclose()  # waits for it; resets the connection still open
            await asyncio.wait_for(eof.wait(), 10)
            assert bytes(got) == payload
            assert b.engine.mib["OutRsts"] == 1, "only the connection left open is reset"
            assert transport.is_closing()
            server.close()

    run(main())
