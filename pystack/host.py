"""A pystack host: one interface's data path, the TCP engine on it, the event loop and
(optionally) the metrics endpoint. What `pystackctl attach` runs; embeddable as is.

    with Host("eth1", sysctls=["net.ipv4.tcp_sack=1"]) as host:
        host.serve(7, Echo)
        host.run_forever()          # until SIGINT/SIGTERM

The host also joins the engine to the XDP program's SYN cookies (pystack/tcp/cookies.py,
bpf/pystack_xdp.h): net.ipv4.tcp_syncookies sets the program's mode (0 never, 1 when a
listener's SYN backlog overflows, 2 always) and follows changes at run time; the engine
raises a listener's pressure flag when its SYN queue overflows and a periodic tick lowers
it once the queue has drained; the cookie key is rotated every COOKIE_KEY_INTERVAL
seconds, the previous key still accepted. Every connection the engine holds is an owned
flow in the program from its first state on (SYN-SENT, SYN-RECEIVED, or ESTABLISHED from
a cookie): ACKs of stateful handshakes are then never judged as cookies.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from pystack.apps import serve
from pystack.iface.datapath import Datapath
from pystack.stack import Stack
from pystack.tcp import cookies
from pystack.tcp.connection import Connection
from pystack.tcp.engine import Listener, TcpEngine
from pystack.tcp.settings import Settings
from pystack.tcp.xdpsyn import XdpSynAcks
from pystack.wire.segment import FourTuple, TcpSegment, ip_to_int
from pystack.xdp import abi
from pystack.xdp.program import IngressProgram

T = TypeVar("T")
log = logging.getLogger("pystack.host")

# A new cookie key this often; the previous one stays valid, so a cookie lives until the
# second rotation after it was made: at least SYNCOOKIE_VALID_SEC, what its time counter
# allows anyway. (Linux keeps one secret for the life of the system.)
COOKIE_KEY_INTERVAL = float(abi.SYNCOOKIE_VALID_SEC)
TICK = 0.1  # seconds between the host's periodic checks (pressure, key, settings)


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
        cookie_key_interval: float = COOKIE_KEY_INTERVAL,
        queues: int | None = None,
    ) -> None:
        """`queues`: rx queues to serve from queue 0 (default all the interface has; one
        AF_XDP socket each, one engine for all: pystack/iface/datapath.py)."""
        self.settings = parse_sysctls(sysctls, settings)
        self.engine = TcpEngine(self.settings)
        self.dp = Datapath(ifname, mode=mode, program=program, queues=queues)
        # The engine as the loop's handler, with the host's periodic work on the side.
        self.handler = _Ticker(self.engine, self.tick)
        self.stack = Stack(self.dp, self.handler)
        self.engine.on_remove = self._forget_flow
        self.engine.on_add = self._own_flow
        # SYN cookies: the engine's half shares the key and SYN-ACK parameters with XDP.
        self.cookies = cookies.SynCookies(on_pressure=self._set_pressure)
        cookies.attach(self.engine, self.cookies)
        # pystack.xdp_synack: SYN-ACKs from XDP, requests kept in its map (xdpsyn.py).
        neigh = self.dp.neigh
        self.xdpsyn = XdpSynAcks(self.engine, self.cookies,
                                 neigh.learn if neigh is not None else None)
        self._synack_on: set[Listener] = set()  # listeners in the program's synack_listen
        self.cookie_key_interval = cookie_key_interval
        self._next_rotation = time.monotonic() + cookie_key_interval
        self._applied = -1  # settings.version last pushed to the XDP program
        try:
            prog = self.dp.program
            prog.reset_syncookies()  # a shared program may hold another host's state
            prog.set_cookie_key(self.cookies.keys[0], rotate=False)
            self._apply_syncookies()
        except BaseException:
            self.dp.close()
            raise
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
            tcp_mib=self.mib,
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
                options: Mapping[str, int | str] | None = None, **kw: Any) -> Connection:
        """Active open; the flow's segments are steered to pystack by its four-tuple.
        Other keyword arguments go to TcpEngine.connect as they are."""
        rip = ip_to_int(remote_ip)
        lip = ip_to_int(local_ip) if local_ip is not None else self.dp.local_ips[0]
        conn = self.engine.connect(lip, rip, remote_port, options=options, **kw)
        self._own_flow(conn.four_tuple)
        return conn

    def _own_flow(self, t: FourTuple) -> None:
        """Steer a connection's segments to pystack by four-tuple (engine.on_add, and
        active opens): from the first state it holds, so that in cookie mode the ACK of a
        stateful handshake is not judged as a cookie (bpf/pystack_xdp.h). The engine's
        connection table is the list of owned flows: no copy here (memory per connection).
        pystack.max_connections keeps the engine within the program's flow table; should
        the table still refuse (full), the flow is logged, not fatal to the loop."""
        try:
            self.dp.program.own_flow((t.local_ip, t.local_port), (t.remote_ip, t.remote_port))
        except OSError as e:
            log.warning("cannot steer %s to pystack: %s", t, e)

    def _forget_flow(self, t: FourTuple) -> None:
        # Also for flows the XDP program owned itself on a valid cookie ACK.
        self.dp.program.disown_flow((t.local_ip, t.local_port), (t.remote_ip, t.remote_port))

    # ---- settings and SYN cookies ----
    def sysctl(self, name: str, value: object | None = None) -> str:
        """Read a setting by its kernel name (as /proc/sys prints it), or write it first;
        a write applies at once, on the loop's thread (the XDP program's SYN-cookie mode
        and SYN-ACK options follow). ValueError with a one-line message if bad."""

        def run() -> str:
            if value is not None:
                self.settings.set(name, value)
                self._apply_syncookies()
            return self.settings.format(name)

        return self.call(run)

    def mib(self) -> dict[str, int]:
        """The engine's MIB counters with the XDP program's SyncookiesSent/Recv/Failed
        added (cookies made in XDP and in Python both count as sent)."""
        m = dict(self.engine.mib)
        for k, v in self.dp.program.syncookie_counters().items():
            m[k] = m.get(k, 0) + v
        return m

    def tick(self, now: float) -> None:
        """The periodic work, on the engine's thread (the loop runs it every TICK s):
        lower the pressure flag of drained listeners, rotate the cookie key when due, and
        push settings changed behind our back (Settings.set) to the XDP program."""
        self.cookies.drain()
        if now >= self._next_rotation:
            self._next_rotation = now + self.cookie_key_interval
            key = os.urandom(16)
            self.dp.program.set_cookie_key(key)  # the old primary becomes the previous key
            self.cookies.rotate(key)
        if self.settings.version != self._applied:
            self._apply_syncookies()
        self._xdp_synack(now)

    def _xdp_synack(self, now: float) -> None:
        """pystack.xdp_synack: tell the XDP program which listeners it may answer SYNs for,
        then retransmit and expire the requests it holds (pystack/tcp/xdpsyn.py)."""
        prog = self.dp.program
        xs = self.xdpsyn
        want = xs.wanted()
        was = self._synack_on
        if want != was:
            for lst in was - want:
                prog.set_synack_listener(lst.port, lst.ip, on=False)
            for lst in want - was:
                prog.set_synack_listener(lst.port, lst.ip)
            self._synack_on = want
        if want or was or xs.tracking:
            for key in xs.tick(now, prog.synack_requests()):
                prog.drop_synack_request(key)

    def _apply_syncookies(self) -> None:
        """net.ipv4.tcp_syncookies and what cookie SYN-ACKs offer, into the XDP program."""
        self._applied = self.settings.version
        c = self.cookies
        c.configure(self.engine)
        mode = self.settings.tcp_syncookies
        # ECN is never offered: connections made from a cookie do not take ECN (cookies.py).
        self.dp.program.configure_syncookies(
            mode=mode, mss=c.mss, window=c.window, wscale=c.wscale, ttl=64,
            timestamps=c.timestamps, sack=c.sack, window_scaling=c.window_scaling,
            ecn=False, ts_offset=c.ts_offset)
        if mode != 1:
            c.clear_pressure()  # the flags mean something in mode 1 only

    def _set_pressure(self, lst: Listener, up: bool) -> None:
        self.dp.program.set_listener_pressure(lst.port, lst.ip, on=up)

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Run fn on the loop's thread (the engine is single-threaded); see Stack.call."""
        return self.stack.call(fn, timeout)

    def step(self, max_wait: float = 0.2) -> int:
        return self.stack.step(max_wait)

    def run_forever(self, on_ready: Callable[[], None] | None = None) -> None:
        """Run in this thread until stop() or SIGINT/SIGTERM; `on_ready` runs once the
        signal handlers are installed."""
        self.stack.run_forever(on_ready)

    def start(self, max_wait: float = 0.02) -> None:
        """Run the loop in a background thread, inside this host's network namespace."""
        # Imported here: pystack.api imports this module (api.stack uses Host).
        from pystack.api.netns import setns

        self.stack.start(max_wait, setup=lambda: setns(self._netns_fd))

    def stop(self) -> None:
        self.stack.stop()

    def close(self) -> None:
        self.stop()
        for t in list(self.engine.connections):
            self._forget_flow(t)
        self.cookies.clear_pressure()
        self.dp.program.reset_syncookies()
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


class _Ticker:
    """The loop's segment handler: the engine, plus the host's tick every TICK seconds on
    the same thread. input, input_batch and poll are the engine's own bound methods:
    nothing is added per segment."""

    def __init__(self, engine: TcpEngine, tick: Callable[[float], None]) -> None:
        self.engine = engine
        self.input: Callable[[TcpSegment, float], None] = engine.input
        self.input_batch: Callable[[list[TcpSegment], float], None] = engine.input_batch
        self.poll: Callable[[float], list[TcpSegment]] = engine.poll
        self._tick = tick
        self._next = 0.0

    def next_deadline(self) -> float | None:
        d = self.engine.next_deadline()
        return self._next if d is None or d > self._next else d

    def on_timer(self, now: float) -> None:
        if now >= self._next:
            self._next = now + TICK
            self._tick(now)
        self.engine.on_timer(now)
