"""A pystack host: one interface's data path, the TCP engine on it, the event loop and
(optionally) the metrics endpoint. What `pystackctl attach` runs; embeddable as is.

    with Host("eth1", sysctls=["net.ipv4.tcp_sack=1"]) as host:
        host.serve(7, Echo)
        host.run_forever()          # until SIGINT/SIGTERM
"""

from __future__ import annotations

import ctypes
import os
import socket
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from pystack.apps import serve
from pystack.iface.datapath import Datapath
from pystack.stack import Stack
from pystack.tcp.connection import Connection
from pystack.tcp.engine import Listener, TcpEngine
from pystack.tcp.settings import Settings
from pystack.wire.segment import FourTuple
from pystack.xdp.program import IngressProgram

T = TypeVar("T")


class HostError(Exception):
    """The host could not start; the message is one line naming the problem."""


def parse_sysctls(items: Iterable[str], settings: Settings | None = None) -> Settings:
    """Apply NAME=VALUE strings (kernel names, dotted or short) to a Settings."""
    settings = settings or Settings()
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--sysctl {item!r}: expected NAME=VALUE")
        settings.set(name.strip(), value.strip())
    return settings


class Host:
    def __init__(
        self,
        ifname: str,
        *,
        mode: str = "native",
        sysctls: Iterable[str] = (),
        settings: Settings | None = None,
        metrics: str | None = None,
        program: IngressProgram | None = None,
    ) -> None:
        self.settings = parse_sysctls(sysctls, settings)
        self.engine = TcpEngine(self.settings)
        self.dp = Datapath(ifname, mode=mode, program=program)
        self.stack = Stack(self.dp, self.engine)
        self.engine.on_remove = self._forget_flow
        self._flows: set[FourTuple] = set()
        # The network namespace this host was made in: its loop thread must run there too
        # (sockets and pyroute2 handles bind to the namespace of the thread using them).
        self._netns_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self.metrics = None
        if metrics:
            try:
                self.metrics = self._serve_metrics(metrics)
            except BaseException:
                self.dp.close()
                raise

    def _serve_metrics(self, hostport: str) -> object:
        from pystack.metrics import StackSources, parse_hostport, serve_metrics

        host, port = parse_hostport(hostport)
        prog = self.dp.program
        sources = StackSources(
            xdp_actions=prog.actions,
            xdp_drops=prog.drops,
            tcp_mib=lambda: dict(self.engine.mib),
            connections_by_state=self.engine.state_counts,
        )
        return serve_metrics(host, port, sources)

    def serve(self, port: int, factory: Callable[[Connection], object], ip: int = 0,
              backlog: int = 128) -> Listener:
        """Own `port` on the interface and run factory(conn) for each accepted connection."""
        listener = self.engine.listen(ip, port, backlog)
        self.dp.own_port(port, ip)
        serve(listener, factory)
        return listener

    def connect(self, remote_ip: str | int, remote_port: int, *, local_ip: str | int | None = None,
                options: Mapping[str, int | str] | None = None) -> Connection:
        """Active open; the flow's segments are steered to pystack by its four-tuple."""
        rip = _ip(remote_ip)
        lip = _ip(local_ip) if local_ip is not None else self.dp.local_ips[0]
        conn = self.engine.connect(lip, rip, remote_port, options=options)
        t = conn.four_tuple
        self.dp.program.own_flow((t.local_ip, t.local_port), (t.remote_ip, t.remote_port))
        self._flows.add(t)
        return conn

    def _forget_flow(self, t: FourTuple) -> None:
        if t in self._flows:
            self._flows.discard(t)
            self.dp.program.disown_flow((t.local_ip, t.local_port), (t.remote_ip, t.remote_port))

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Run fn on the loop's thread (the engine is single-threaded); see Stack.call."""
        return self.stack.call(fn, timeout)

    def step(self, max_wait: float = 0.2) -> int:
        return self.stack.step(max_wait)

    def run_forever(self) -> None:
        """Run in this thread until stop() or SIGINT/SIGTERM."""
        self.stack.run_forever()

    def start(self, max_wait: float = 0.02) -> None:
        """Run the loop in a background thread, inside this host's network namespace."""
        self.stack.start(max_wait, setup=lambda: _setns(self._netns_fd))

    def stop(self) -> None:
        self.stack.stop()

    def close(self) -> None:
        self.stop()
        for t in list(self._flows):
            self._forget_flow(t)
        if self._netns_fd >= 0:
            os.close(self._netns_fd)
            self._netns_fd = -1
        if self.metrics is not None:
            self.metrics.close()  # type: ignore[attr-defined]
            self.metrics = None
        self.dp.close()

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    """Move the calling thread into the network namespace open at fd."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _ip(addr: str | int) -> int:
    return addr if isinstance(addr, int) else int.from_bytes(socket.inet_aton(addr), "big")
