"""`Stack`: pystack attached to an interface (or an in-memory link), for embedding.

Life cycle::

    stack = Stack("eth1", netns="blue", sysctls=["net.ipv4.tcp_sack=1"])  # XDP + AF_XDP
    async with stack:           # driven by the running asyncio loop; closed on exit
        ...
    # or, for blocking code: stack.start() runs a loop on a background thread
    with Stack("eth1") as stack:
        stack.start()
        ...

``close()`` (``aclose()`` in the loop) first gives connections the application has
already closed a few seconds to deliver their data and FIN, like the kernel would after
a process exits, then resets whatever is still open (the kernel would answer those with
RSTs anyway once the XDP program is gone), detaches the program and frees the AF_XDP
socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from pystack.api.driver import Driver
from pystack.api.link import Link, MemoryLink, XdpLink
from pystack.api.netns import NamespaceThread, ThreadBound, netns_fd, setns
from pystack.host import Host, parse_sysctls
from pystack.tcp.connection import Connection, EventCallback
from pystack.tcp.engine import Listener, TcpEngine
from pystack.tcp.settings import Settings
from pystack.tcp.state import TcpState
from pystack.wire.segment import ip_to_int, ip_to_str

__all__ = ["Stack", "default_stack"]

T = TypeVar("T")

PAIR_IPS = ("198.18.0.1", "198.18.0.2")  # RFC 2544 benchmarking range; memory only
LINGER = 5.0  # seconds close() gives closed connections to deliver their data
# States of a connection whose user has closed (or shut down) its side and whose data or
# FIN the peer has not acknowledged yet.
_LINGER = frozenset({TcpState.FIN_WAIT_1, TcpState.CLOSING, TcpState.LAST_ACK})

_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Stack] = (
    weakref.WeakKeyDictionary()
)
_last: list[Stack] = []  # most recently attached or started stack (default for sockets)


def default_stack(loop: asyncio.AbstractEventLoop | None = None) -> Stack:
    """The stack attached to ``loop`` (if given), else the one most recently attached or
    started. Raises RuntimeError when there is none."""
    if loop is not None:
        st = _by_loop.get(loop)
        if st is not None and not st.closed:
            return st
    if _last and not _last[0].closed:
        return _last[0]
    raise RuntimeError("no pystack Stack is running: create one (Stack(ifname)) and pass "
                       "stack=..., or attach/start it first")


class Stack:
    """A TCP engine attached to ``ifname`` (XDP + AF_XDP), or to ``link``.

    ``netns``: the name of a network namespace (``ip netns``) holding the interface; the
    data path is built inside it and the background loop thread (``start``) runs in it.
    ``sysctls``: ``NAME=VALUE`` strings with the kernel's names; ``settings`` a ready
    :class:`~pystack.tcp.settings.Settings`. ``metrics``: ``HOST:PORT`` for Prometheus.
    """

    def __init__(
        self,
        ifname: str | None = None,
        *,
        netns: str | None = None,
        mode: str = "native",
        sysctls: Iterable[str] = (),
        settings: Settings | None = None,
        metrics: str | None = None,
        program: Any = None,
        link: Link | None = None,
    ) -> None:
        if (ifname is None) == (link is None):
            raise ValueError("Stack needs an interface name (or, for tests, a link)")
        self.netns = netns
        self.host: Host | None = None
        self._netns_fd = -1
        self._nl: NamespaceThread | None = None
        if link is None:
            assert ifname is not None
            # The Host is built, and its netlink handle used, by a thread of its own inside
            # the namespace (pystack.api.netns explains why the loop's thread cannot).
            nl = self._nl = NamespaceThread(netns)
            try:
                self.host = nl.call(lambda: Host(ifname, mode=mode, sysctls=sysctls,
                                                 settings=settings, metrics=metrics,
                                                 program=program))
            except BaseException:
                nl.close()
                raise
            neigh = getattr(self.host.dp, "neigh", None)
            if neigh is not None:
                neigh.ipr = ThreadBound(neigh.ipr, nl)
            if netns:
                self._netns_fd = netns_fd(netns)
            self.engine = self.host.engine
            self.settings = self.host.settings
            link = XdpLink(self.host, nl)
            # The Host's loop handler adds its periodic tick (SYN-cookie pressure and key
            # rotation, settings pushed to XDP) to the engine's timers.
            handler: Any = getattr(self.host, "handler", self.engine)
        else:
            self.settings = parse_sysctls(sysctls, settings)
            self.engine = TcpEngine(self.settings)
            handler = self.engine
        self.link: Link = link
        self.driver = Driver(handler, link)
        self.closed = False
        self._thread: threading.Thread | None = None
        self._own_loop: asyncio.AbstractEventLoop | None = None
        self._ports: set[tuple[int, int]] = set()  # (ip, port) bound by api sockets/servers
        self._users: weakref.WeakSet[Any] = weakref.WeakSet()  # transports, sockets

    @classmethod
    def pair(cls, *, sysctls: Iterable[str] = (), delay: float = 0.0) -> tuple[Stack, Stack]:
        """Two stacks joined by an in-memory link (198.18.0.1 and 198.18.0.2): no
        interface, no privileges. For tests and examples."""
        a_ip, b_ip = (ip_to_int(x) for x in PAIR_IPS)
        la, lb = MemoryLink.pair(a_ip, b_ip, delay=delay)
        sysctls = list(sysctls)
        return cls(link=la, sysctls=sysctls), cls(link=lb, sysctls=sysctls)

    def __repr__(self) -> str:
        ips = ",".join(ip_to_str(i) for i in self.link.local_ips)
        how = "closed" if self.closed else ("attached" if self.loop else "idle")
        return f"<pystack.api.Stack {ips} {how}>"

    # -- driving --------------------------------------------------------------------
    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The asyncio loop driving this stack (None until attached or started)."""
        return self.driver.loop

    @property
    def local_ip(self) -> str:
        return ip_to_str(self.link.local_ips[0])

    def attach(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Be driven by ``loop`` (default: the running loop), in the thread running it."""
        self._check_open()
        if loop is None:
            loop = asyncio.get_running_loop()
        if self.driver.loop is loop:
            return
        self.driver.bind(loop)
        _by_loop[loop] = self
        _last[:] = [self]

    def start(self) -> None:
        """Run a new asyncio loop on a background thread (inside ``netns``) driving this
        stack: for blocking code (:mod:`pystack.api.socket`) and for coroutines submitted
        with ``asyncio.run_coroutine_threadsafe(coro, stack.loop)``."""
        self._check_open()
        if self.driver.loop is not None:
            raise RuntimeError("this stack is already driven by an event loop")
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                if self._netns_fd >= 0:
                    setns(self._netns_fd)
                loop = asyncio.new_event_loop()
                self._own_loop = loop
                self.attach(loop)
            except BaseException as e:
                failure.append(e)
                started.set()
                return
            loop.call_soon(started.set)
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="pystack-api-loop", daemon=True)
        self._thread.start()
        started.wait(30)
        if failure:
            raise failure[0]

    def call(self, fn: Callable[[], T], timeout: float | None = 30.0) -> T:
        """Run ``fn`` on the loop's thread (the engine is single-threaded) and return its
        result; directly when already there or when nothing drives the stack yet."""
        return self.driver.call(fn, timeout)

    def post(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on the loop's thread soon, without waiting."""
        self.driver.post(fn)

    # -- settings and counters --------------------------------------------------------
    def sysctl(self, name: str, value: object = None) -> str:
        """A setting by its kernel name, as /proc/sys prints it; with ``value``, set it
        first (ValueError with a one-line message if bad). Applies at once."""
        host = self.host
        if host is not None and hasattr(host, "sysctl"):
            return str(self.call(lambda: host.sysctl(name, value)))

        def run() -> str:
            if value is not None:
                self.settings.set(name, value)
            return self.settings.format(name)

        return self.call(run)

    @property
    def mib(self) -> dict[str, int]:
        """The counters by Linux MIB name (a snapshot; with an interface, the XDP
        program's SYN-cookie counters included)."""
        host = self.host
        if host is not None and callable(getattr(host, "mib", None)):
            return self.call(host.mib)
        return self.call(lambda: dict(self.engine.mib))

    def connections(self) -> list[Connection]:
        return self.call(lambda: list(self.engine.connections.values()))

    # -- life cycle ---------------------------------------------------------------------
    def _lingering(self) -> int:
        """Connections the application closed whose data or FIN is not yet acknowledged
        (or, for a transport, not yet even handed to the connection)."""
        n = sum(1 for c in self.engine.connections.values() if c.state in _LINGER)
        return n + sum(1 for u in list(self._users) if getattr(u, "_flushing", False))

    def close(self, linger: float = LINGER) -> None:
        """Stop listening, give connections the application already closed up to
        ``linger`` seconds to deliver what they hold (from a thread other than the loop's),
        reset the rest, stop the loop thread (if ``start`` made one), detach from the
        interface. Idempotent."""
        if self.closed:
            return
        loop = self.driver.loop
        if linger > 0 and loop is not None and loop.is_running() and not self.driver.in_thread():
            end = time.monotonic() + linger
            while self.call(self._lingering) and time.monotonic() < end:
                time.sleep(0.01)
        self._close_now()

    async def aclose(self, linger: float = LINGER) -> None:
        """:meth:`close` for the loop's own thread: waits (asynchronously) for closed
        connections to deliver their data, up to ``linger`` seconds."""
        loop = asyncio.get_running_loop()
        if not self.closed and self.driver.loop is loop:
            end = loop.time() + linger
            while self._lingering() and loop.time() < end:
                await asyncio.sleep(0.01)
        self._close_now()

    def _close_now(self) -> None:
        if self.closed:
            return
        self.closed = True
        loop = self.driver.loop
        if loop is not None and (loop.is_closed() or not loop.is_running()):
            self._shutdown()  # the loop is gone (asyncio.run ended): nothing else runs
        elif loop is not None:
            self.driver.call(self._shutdown)
        if self._thread is not None and self._own_loop is not None:
            with contextlib.suppress(RuntimeError):
                self._own_loop.call_soon_threadsafe(self._own_loop.stop)
            if self._thread is not threading.current_thread():
                self._thread.join(10)
            self._thread = None
        if _last and _last[0] is self:
            _last.clear()
        self.link.close()
        if self._nl is not None:
            self._nl.close()
            self._nl = None
        if self._netns_fd >= 0:
            os.close(self._netns_fd)
            self._netns_fd = -1

    def _shutdown(self) -> None:
        for user in list(self._users):
            with contextlib.suppress(Exception):
                user._stack_closed()
        eng = self.engine
        for lst in list(eng.listeners.values()):
            lst.close()
        for c in list(eng.connections.values()):
            # FIN-WAIT-2 and TIME-WAIT have nothing left to say: dropped silently (a RST
            # could make the peer's kernel discard data its application has not read).
            if c.state not in (TcpState.CLOSED, TcpState.TIME_WAIT, TcpState.FIN_WAIT_2):
                c.abort()
        self.driver.flush_now()
        loop = self.driver.loop
        if loop is not None and _by_loop.get(loop) is self:
            del _by_loop[loop]
        self.driver.unbind()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Stack:
        self.attach()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("this pystack Stack is closed")

    # -- used by the asyncio and socket layers (on the loop's thread) -----------------
    def _connect(
        self,
        remote_ip: int,
        remote_port: int,
        *,
        local_ip: int = 0,
        local_port: int | None = None,
        options: Mapping[str, int | str] | None = None,
        on_event: EventCallback | None = None,
        fastopen: bool = False,
        data: bytes = b"",
    ) -> Connection:
        self._check_open()
        lip = local_ip or self.link.local_ips[0]
        kw: dict[str, Any] = {"options": options, "now": self.driver.now(),
                              "on_event": on_event}
        if fastopen:
            kw["fastopen"] = True
            kw["data"] = bytes(data)
        if local_port is not None:
            kw["local_port"] = local_port
        if self.host is not None:
            conn = self.host.connect(remote_ip, remote_port, local_ip=lip, **kw)  # steered
        else:
            conn = self.engine.connect(lip, remote_ip, remote_port, **kw)
        if data and not fastopen:
            conn.send(data)
        self.driver.kick()
        return conn

    def _listen(self, ip: int, port: int, backlog: int) -> Listener:
        self._check_open()
        if ip and ip not in self.link.local_ips:
            raise OSError(errno.EADDRNOTAVAIL, f"{ip_to_str(ip)} is not an address of this stack")
        if port == 0:
            port = self._free_port(ip)
        lst = self.engine.listen(ip, port, backlog)
        try:
            self.link.own_port(port, ip)
        except BaseException:
            lst.close()
            raise
        return lst

    def _unlisten(self, lst: Listener) -> None:
        lst.close()
        if not self.closed:
            self.link.disown_port(lst.port, lst.ip)

    def _free_port(self, ip: int) -> int:
        """An unused port from ip_local_port_range (pystack's range is above the kernel's
        so it never takes a port a kernel socket of the same host might pick)."""
        lo, hi = self.settings.ip_local_port_range
        used = {p for (_, p) in self.engine.listeners} | {p for (_, p) in self._ports}
        used |= {t.local_port for t in self.engine.connections}
        for port in range(lo, hi + 1):
            if port not in used:
                return port
        raise OSError(errno.EADDRINUSE, "no free local port")




