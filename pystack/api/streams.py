"""asyncio entry points with the standard library's signatures, over pystack.

``open_connection``/``start_server`` return genuine ``asyncio.StreamReader`` /
``StreamWriter`` (built exactly as ``asyncio.streams`` builds them, on a
:class:`~pystack.api.transport.PystackTransport`); ``create_connection``/``create_server``
take a protocol factory like the loop methods of the same names. The stack is the one
given with ``stack=``, else the one attached to the running loop; a stack not driven by
any loop yet is attached to the running one.
"""

from __future__ import annotations

import asyncio
import errno
import socket as _socket
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from pystack.api.stack import Stack, default_stack
from pystack.api.transport import PystackTransport, TransportSocket
from pystack.tcp.connection import Connection
from pystack.tcp.engine import Listener
from pystack.wire.segment import ip_to_int

__all__ = ["Server", "create_connection", "create_server", "open_connection", "start_server"]

_DEFAULT_LIMIT = 2**16  # asyncio.streams' default StreamReader limit

ProtocolFactory = Callable[[], asyncio.BaseProtocol]


def _stack_for(stack: Stack | None) -> tuple[Stack, asyncio.AbstractEventLoop]:
    loop = asyncio.get_running_loop()
    st = stack if stack is not None else default_stack(loop)
    if st.loop is None:
        st.attach(loop)
    elif st.loop is not loop:
        raise RuntimeError(
            "this pystack Stack is driven by another event loop; run the coroutine there "
            "(asyncio.run_coroutine_threadsafe(coro, stack.loop))")
    return st, loop


async def _resolve(loop: asyncio.AbstractEventLoop, host: str | int | None) -> int:
    if host is None or host == "":
        return 0
    try:
        return ip_to_int(host)
    except OSError:
        pass
    infos = await loop.getaddrinfo(host, None, family=_socket.AF_INET,
                                   type=_socket.SOCK_STREAM)
    if not infos:
        raise OSError(errno.EHOSTUNREACH, f"cannot resolve {host!r}")
    return int.from_bytes(_socket.inet_aton(infos[0][4][0]), "big")


async def create_connection(
    protocol_factory: ProtocolFactory,
    host: str | int,
    port: int,
    *,
    stack: Stack | None = None,
    local_addr: tuple[str, int] | None = None,
    options: Mapping[str, int | str] | None = None,
    fastopen: bool = False,
    data: bytes = b"",
) -> tuple[PystackTransport, asyncio.BaseProtocol]:
    """Active open; returns ``(transport, protocol)`` once established.

    ``options``: socket options by name applied before the SYN, e.g.
    ``{"TCP_NODELAY": 1, "TCP_USER_TIMEOUT": 5000}``. ``fastopen=True`` sends ``data`` in
    the SYN when a Fast Open cookie for ``host`` is cached (RFC 7413; otherwise the SYN
    asks for one and ``data`` follows the handshake); without it, ``data`` is just written
    first. Failures raise ``OSError`` with Linux's errno (ConnectionRefusedError,
    TimeoutError for ETIMEDOUT, ...).
    """
    st, loop = _stack_for(stack)
    rip = await _resolve(loop, host)
    lip, lport = 0, None
    if local_addr is not None:
        lip = await _resolve(loop, local_addr[0])
        lport = local_addr[1] or None
    conn = st._connect(rip, port, local_ip=lip, local_port=lport, options=options,
                       fastopen=fastopen, data=data)
    transport = PystackTransport(st, conn)
    waiter = transport._wait_connected()
    try:
        await waiter
    except BaseException:
        transport._force_close(None, reset=True)
        raise
    protocol = protocol_factory()
    transport._start(protocol)
    return transport, protocol


async def open_connection(
    host: str | int,
    port: int,
    *,
    stack: Stack | None = None,
    limit: int = _DEFAULT_LIMIT,
    **kwds: Any,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """``asyncio.open_connection`` over pystack: ``(reader, writer)``.

    Takes the keywords of :func:`create_connection`, notably ``fastopen=True,
    data=b"..."`` to put the first request into the SYN.
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await create_connection(lambda: protocol, host, port, stack=stack, **kwds)
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    return reader, writer


class Server(asyncio.AbstractServer):
    """What :func:`create_server`/:func:`start_server` return (asyncio.Server's API)."""

    def __init__(self, stack: Stack, loop: asyncio.AbstractEventLoop,
                 listeners: list[Listener], protocol_factory: ProtocolFactory) -> None:
        self._stack = stack
        self._loop = loop
        self._listeners: list[Listener] | None = listeners
        self._factory = protocol_factory
        self._active = 0
        self._serving = False
        self._waiters: list[asyncio.Future[None]] | None = []
        self._serving_forever: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"<pystack.api.Server sockets={self.sockets!r}>"

    def _attach(self) -> None:
        self._active += 1

    def _detach(self) -> None:
        self._active -= 1
        if self._active == 0 and self._listeners is None:
            self._wakeup()

    def _wakeup(self) -> None:
        waiters, self._waiters = self._waiters, None
        for w in waiters or ():
            if not w.done():
                w.set_result(None)

    def _on_accept(self, lst: Any, kind: str) -> None:
        if not self._serving:
            return
        while (conn := lst.accept()) is not None:
            self._accept(conn)

    def _accept(self, conn: Connection) -> None:
        transport = PystackTransport(self._stack, conn, server=self)
        try:
            protocol = self._factory()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler({
                "message": "pystack server: protocol factory failed", "exception": exc})
            transport._force_close(None, reset=True)
            return
        transport._start(protocol)

    @property
    def sockets(self) -> tuple[TransportSocket, ...]:
        if self._listeners is None:
            return ()
        return tuple(TransportSocket(lst, self._stack, listening=True)
                     for lst in self._listeners)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    def close(self) -> None:
        """Stop listening (the ports go back to the kernel); open connections stay."""
        listeners = self._listeners
        if listeners is None:
            return
        self._listeners = None
        self._serving = False
        for lst in listeners:
            self._stack._unlisten(lst)
        self._stack.driver.kick()
        fut = self._serving_forever
        if fut is not None and not fut.done():
            fut.cancel()
            self._serving_forever = None
        if self._active == 0:
            self._wakeup()

    async def start_serving(self) -> None:
        self._start_serving()

    def _start_serving(self) -> None:
        if self._serving or self._listeners is None:
            return
        self._serving = True
        for lst in self._listeners:
            lst.on_event = self._on_accept
            self._on_accept(lst, "accept")  # connections that queued before serving

    async def serve_forever(self) -> None:
        if self._serving_forever is not None:
            raise RuntimeError(f"server {self!r} is already being awaited on serve_forever()")
        if self._listeners is None:
            raise RuntimeError(f"server {self!r} is closed")
        self._start_serving()
        self._serving_forever = self._loop.create_future()
        try:
            await self._serving_forever
        except asyncio.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serving_forever = None

    async def wait_closed(self) -> None:
        """Wait until the server is closed and its connections are gone."""
        if self._waiters is None:
            return
        w = self._loop.create_future()
        self._waiters.append(w)
        await w


async def create_server(
    protocol_factory: ProtocolFactory,
    host: str | Iterable[str] | None = None,
    port: int = 0,
    *,
    stack: Stack | None = None,
    backlog: int = 100,
    start_serving: bool = True,
    options: Mapping[str, int | str] | None = None,
    **_ignored: Any,
) -> Server:
    """Listen on ``port`` (0: a free one) of ``host`` (None or "": every address of the
    stack); each connection gets ``protocol_factory()``. ``options`` are socket options
    by name set on the listener and inherited by accepted connections. Keywords of
    ``loop.create_server`` that mean nothing here (``reuse_address``...) are accepted."""
    st, loop = _stack_for(stack)
    hosts: list[str | None]
    if host is None or isinstance(host, str):
        hosts = [host]
    else:
        hosts = list(host)
    listeners: list[Listener] = []
    try:
        for h in hosts:
            ip = await _resolve(loop, h)
            lst = st._listen(ip, port, backlog)
            listeners.append(lst)
            port = lst.port  # port 0: the same chosen port on every address
            for name, value in (options or {}).items():
                lst.set_option(name, value)
    except BaseException:
        for lst in listeners:
            st._unlisten(lst)
        raise
    server = Server(st, loop, listeners, protocol_factory)
    if start_serving:
        server._start_serving()
    return server


async def start_server(
    client_connected_cb: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                  Awaitable[None] | None],
    host: str | Iterable[str] | None = None,
    port: int = 0,
    *,
    stack: Stack | None = None,
    limit: int = _DEFAULT_LIMIT,
    **kwds: Any,
) -> Server:
    """``asyncio.start_server`` over pystack: ``client_connected_cb(reader, writer)`` per
    connection (a coroutine function runs as a task)."""
    loop = asyncio.get_running_loop()

    def factory() -> asyncio.StreamReaderProtocol:
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        return asyncio.StreamReaderProtocol(reader, client_connected_cb, loop=loop)

    return await create_server(factory, host, port, stack=stack, **kwds)
