"""pystack.api: use pystack's TCP from asyncio or from blocking code.

A :class:`Stack` is the TCP engine attached to an interface (XDP + AF_XDP; inside a
network namespace with ``netns=``) or, for tests, to an in-memory link
(:meth:`Stack.pair`). Settings use the kernel's sysctl names.

asyncio: :func:`open_connection`, :func:`start_server`, :func:`create_connection` and
:func:`create_server` have the standard library's signatures (plus ``stack=``) and return
genuine ``asyncio.StreamReader``/``StreamWriter`` or a protocol on a real
``asyncio.Transport``, so existing asyncio code runs unchanged, ``drain()`` included.

Blocking code: :class:`socket` (``pystack.api.socket.socket``), the ``socket`` module's
methods, constants and errnos.

Fast Open (RFC 7413): ``open_connection(host, port, fastopen=True, data=b"...")`` puts the
request into the SYN once a cookie for ``host`` is cached (the first connection asks for
one); blocking code uses ``sendto(data, MSG_FASTOPEN, addr)`` or ``TCP_FASTOPEN_CONNECT``;
a server enables it with the listener option ``TCP_FASTOPEN`` (``options=`` of
``start_server``) and ``net.ipv4.tcp_fastopen`` & 0x2, as on Linux.

Life cycle: ``async with Stack(...)`` (or ``Stack.attach()``) drives the stack from the
running loop; ``Stack.start()`` runs it on a background thread instead. ``close()`` /
``aclose()`` give connections the application closed a few seconds to deliver their
data, reset the rest, and detach the XDP program (the kernel takes the ports back).
Settings: ``Stack(..., sysctls=["net.ipv4.tcp_sack=1"])`` and ``stack.sysctl(name,
value)``, the kernel's names and value syntax; counters: ``stack.mib`` (Linux MIB names).

Design: the engine runs inside the asyncio loop
-----------------------------------------------
The AF_XDP socket is pollable, so the application's own event loop drives the stack:
``loop.add_reader(xsk_fd)`` takes received batches into the engine, one ``TimerHandle``
follows the engine's next deadline, and one flush per loop turn polls the engine and
transmits (:mod:`pystack.api.driver`). Connection events call the transport's protocol
directly; writes go straight into the connection's send buffer. There is no second thread
and no cross-thread hop: on a 2-CPU machine with the GIL, a stack thread beside the
asyncio thread would only add a wake-up (eventfd/self-pipe write plus GIL hand-over,
several microseconds) per batch in each direction and could not run in parallel anyway.
For blocking code, :meth:`Stack.start` runs such a loop on a background thread and the
socket object hops into it for each call.

Example (two stacks joined in memory; with a real interface use ``Stack("eth1")``):

>>> import asyncio
>>> from pystack.api import Stack, open_connection, start_server
>>> async def main() -> bytes:
...     server_stack, client_stack = Stack.pair()
...     async with server_stack, client_stack:
...         async def echo(reader, writer):
...             writer.write(await reader.read(100))
...             await writer.drain()
...             writer.close()
...         server = await start_server(echo, "198.18.0.1", 7, stack=server_stack)
...         reader, writer = await open_connection("198.18.0.1", 7, stack=client_stack)
...         writer.write(b"hello")
...         reply = await reader.read()
...         writer.close()
...         await writer.wait_closed()
...         server.close()
...         return reply
>>> asyncio.run(main())
b'hello'

The same with blocking sockets, the stacks' loops on background threads:

>>> from pystack.api import socket as psocket
>>> server_stack, client_stack = Stack.pair()
>>> server_stack.start(); client_stack.start()
>>> srv = psocket.create_server(("198.18.0.1", 7), stack=server_stack)
>>> cli = psocket.create_connection(("198.18.0.1", 7), timeout=5, stack=client_stack)
>>> conn, peer = srv.accept()
>>> cli.sendall(b"ping"); conn.recv(4)
b'ping'
>>> cli.close(); conn.close(); srv.close()
>>> server_stack.close(); client_stack.close()
"""

from __future__ import annotations

from pystack.api import socket
from pystack.api.link import Link, MemoryLink, XdpLink
from pystack.api.stack import Stack, default_stack
from pystack.api.streams import (
    Server,
    create_connection,
    create_server,
    open_connection,
    start_server,
)
from pystack.api.tcpinfo import unpack_tcp_info
from pystack.api.transport import PystackTransport

__all__ = [
    "Link",
    "MemoryLink",
    "PystackTransport",
    "Server",
    "Stack",
    "XdpLink",
    "create_connection",
    "create_server",
    "default_stack",
    "open_connection",
    "socket",
    "start_server",
    "unpack_tcp_info",
]
