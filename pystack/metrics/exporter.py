"""Prometheus exporter for pystack: stack counters read at scrape time, plus histograms.

The exporter knows nothing about the data path or the engine. It is given plain callables
(:class:`StackSources`) and calls them each time Prometheus scrapes:

- ``xdp_actions() -> {action: packets}`` and ``xdp_drops() -> {reason: packets}``: the XDP
  program's per-CPU counters, already summed;
- ``tcp_mib() -> {LinuxMibName: value}``: the engine's MIB counters (missing keys mean 0);
- ``connections_by_state() -> {LINUX_STATE: count}``.

Metric names are a public contract (DESIGN.md, "Public contracts"); :data:`METRICS` is the
single table that maps each one to its source and to the Linux counter it mirrors.

Counters never go backwards within a process: if a source's value drops (the XDP program was
reloaded, the engine restarted), the exporter carries the old total forward, so ``rate()``
sees an ordinary increase instead of a reset.
"""

from __future__ import annotations

import logging
import math
import platform
import re
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, make_wsgi_app
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)

import pystack
from pystack.xdp import abi

__all__ = [
    "CONNECTION_STATES",
    "HANDSHAKE_BUCKETS",
    "METRICS",
    "SRTT_BUCKETS",
    "XDP_ACTIONS",
    "XDP_DROP_REASONS",
    "MetricSpec",
    "MetricsServer",
    "StackCollector",
    "StackMetrics",
    "StackSources",
    "parse_hostport",
    "serve_metrics",
]

log = logging.getLogger(__name__)

Counts = Callable[[], Mapping[str, int]]

# The XDP program's actions and drop reasons, from the one table both sides share
# (bpf/pystack_xdp.h <-> pystack.xdp.abi, a plain constants module). Every reason is exported
# at 0 before its first drop so rate() sees the first one; reasons the program reports that
# are not listed are exported as they appear in xdp_drops().
XDP_ACTIONS: tuple[str, ...] = abi.ACTIONS
XDP_DROP_REASONS: tuple[str, ...] = abi.DROP_REASONS
# Linux's state names (include/net/tcp_states.h without TCP_), as /proc/net/tcp numbers them.
CONNECTION_STATES: tuple[str, ...] = (
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
)

# Other spellings a source may use for those states: RFC 9293 / pystack.tcp.state.TcpState
# names and `ss` names. Reported under the Linux name (a source's own spelling would otherwise
# split a state over two series).
_STATE_ALIASES: dict[str, str] = {
    "SYN_RECEIVED": "SYN_RECV",
    "FIN_WAIT_1": "FIN_WAIT1",
    "FIN_WAIT_2": "FIN_WAIT2",
    "CLOSED": "CLOSE",
    "ESTAB": "ESTABLISHED",
    "UNCONN": "CLOSE",
}


def _linux_state(name: str) -> str:
    key = name.strip().upper().replace("-", "_")
    return _STATE_ALIASES.get(key, key)


# Handshake time, SYN sent/received to ESTABLISHED. 10 µs (veth, same host) .. 3 s: one lost
# SYN costs the 1 s initial RTO (RFC 6298 §2.1), so 1..1.5 s means one retransmission and
# 3 s+ (the +Inf bucket) two or more.
HANDSHAKE_BUCKETS: tuple[float, ...] = (
    10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6,
    1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3,
    1.0, 1.5, 3.0, math.inf,
)
# Smoothed RTT (RFC 6298 SRTT): same range, a finer top end is not needed.
SRTT_BUCKETS: tuple[float, ...] = (
    10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6,
    1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3,
    1.0, 3.0, math.inf,
)

COUNTER = "counter"
GAUGE = "gauge"


@dataclass(frozen=True)
class MetricSpec:
    """One exported family: where its value comes from and what Linux calls it."""

    name: str  # Prometheus name, as scraped (counters end in _total)
    kind: str  # COUNTER or GAUGE
    source: str  # the StackSources field that provides it
    key: str | None  # key in that source's dict; None for a labelled family (one per key)
    label: str | None  # label name for a labelled family
    linux: str  # the Linux counter it mirrors (nstat spelling), or where Linux shows it
    help: str


def _mib(name: str, key: str, linux: str, help: str, kind: str = COUNTER) -> MetricSpec:
    return MetricSpec(name, kind, "tcp_mib", key, None, linux, help)


# THE mapping. One row per exported family; the comment names the Linux MIB counter
# (`nstat -az` spelling: Tcp* from /proc/net/snmp, TcpExt* from /proc/net/netstat).
METRICS: tuple[MetricSpec, ...] = (
    # no Linux MIB: XDP return codes of pystack's program (per-CPU map, summed)
    MetricSpec("pystack_xdp_packets_total", COUNTER, "xdp_actions", None, "action",
               "xdp", "Packets the XDP program handled, by XDP return code."),
    # no Linux MIB: pystack's XDP program drop reasons (per-CPU map, summed)
    MetricSpec("pystack_xdp_drops_total", COUNTER, "xdp_drops", None, "reason",
               "xdp", "Packets the XDP program dropped, by reason."),
    _mib("pystack_tcp_active_opens_total", "ActiveOpens",  # TcpActiveOpens
         "TcpActiveOpens", "Connections that went CLOSED -> SYN_SENT (active opens)."),
    _mib("pystack_tcp_passive_opens_total", "PassiveOpens",  # TcpPassiveOpens
         "TcpPassiveOpens", "Connections that went LISTEN -> SYN_RECV (passive opens)."),
    _mib("pystack_tcp_curr_estab", "CurrEstab",  # TcpCurrEstab
         "TcpCurrEstab", "Connections now in ESTABLISHED or CLOSE_WAIT.", kind=GAUGE),
    _mib("pystack_tcp_in_segs_total", "InSegs",  # TcpInSegs
         "TcpInSegs", "Segments received, including those received in error."),
    _mib("pystack_tcp_out_segs_total", "OutSegs",  # TcpOutSegs
         "TcpOutSegs", "Segments sent, excluding retransmissions."),
    _mib("pystack_tcp_retrans_segs_total", "RetransSegs",  # TcpRetransSegs
         "TcpRetransSegs", "Segments retransmitted."),
    _mib("pystack_tcp_out_rsts_total", "OutRsts",  # TcpOutRsts
         "TcpOutRsts", "Segments sent with the RST flag."),
    _mib("pystack_tcp_in_errs_total", "InErrs",  # TcpInErrs
         "TcpInErrs", "Segments received in error."),
    _mib("pystack_tcp_attempt_fails_total", "AttemptFails",  # TcpAttemptFails
         "TcpAttemptFails",
         "Failed connection attempts: SYN_SENT/SYN_RECV -> CLOSED, SYN_RECV -> LISTEN."),
    _mib("pystack_tcp_estab_resets_total", "EstabResets",  # TcpEstabResets
         "TcpEstabResets", "Connections reset from ESTABLISHED or CLOSE_WAIT."),
    _mib("pystack_tcp_syncookies_sent_total", "SyncookiesSent",  # TcpExtSyncookiesSent
         "TcpExtSyncookiesSent", "SYN-ACKs sent carrying a SYN cookie."),
    _mib("pystack_tcp_syncookies_recv_total", "SyncookiesRecv",  # TcpExtSyncookiesRecv
         "TcpExtSyncookiesRecv", "ACKs received with a valid SYN cookie."),
    _mib("pystack_tcp_syncookies_failed_total", "SyncookiesFailed",  # TcpExtSyncookiesFailed
         "TcpExtSyncookiesFailed", "ACKs received with an invalid SYN cookie."),
    _mib("pystack_tcp_fastopen_active_total", "TCPFastOpenActive",  # TcpExtTCPFastOpenActive
         "TcpExtTCPFastOpenActive", "Active opens whose SYN data the peer accepted (TFO)."),
    _mib("pystack_tcp_fastopen_active_fail_total",
         "TCPFastOpenActiveFail",  # TcpExtTCPFastOpenActiveFail
         "TcpExtTCPFastOpenActiveFail", "Active Fast Open attempts whose SYN data was not acked."),
    _mib("pystack_tcp_fastopen_passive_total", "TCPFastOpenPassive",  # TcpExtTCPFastOpenPassive
         "TcpExtTCPFastOpenPassive", "Passive opens that accepted data in the SYN (TFO)."),
    _mib("pystack_tcp_fastopen_passive_fail_total",
         "TCPFastOpenPassiveFail",  # TcpExtTCPFastOpenPassiveFail
         "TcpExtTCPFastOpenPassiveFail",
         "Fast Open SYNs refused (bad cookie or no memory); fell back to a 3-way handshake."),
    _mib("pystack_tcp_fastopen_cookie_reqd_total",
         "TCPFastOpenCookieReqd",  # TcpExtTCPFastOpenCookieReqd
         "TcpExtTCPFastOpenCookieReqd", "SYNs received asking for a Fast Open cookie."),
    _mib("pystack_tcp_fastopen_listen_overflow_total",
         "TCPFastOpenListenOverflow",  # TcpExtTCPFastOpenListenOverflow
         "TcpExtTCPFastOpenListenOverflow",
         "Fast Open SYNs refused because the listener's TFO queue was full."),
    _mib("pystack_tcp_fastopen_blackhole_total",
         "TCPFastOpenBlackhole",  # TcpExtTCPFastOpenBlackhole
         "TcpExtTCPFastOpenBlackhole",
         "Times active Fast Open was paused after a suspected middlebox blackhole."),
    _mib("pystack_tcp_listen_overflows_total", "ListenOverflows",  # TcpExtListenOverflows
         "TcpExtListenOverflows", "Handshakes dropped because a listener's accept queue was full."),
    _mib("pystack_tcp_listen_drops_total", "ListenDrops",  # TcpExtListenDrops
         "TcpExtListenDrops", "Segments to a listener dropped, for any reason."),
    _mib("pystack_tcp_challenge_acks_total", "TCPChallengeACK",  # TcpExtTCPChallengeACK
         "TcpExtTCPChallengeACK", "Challenge ACKs sent (RFC 5961)."),
    _mib("pystack_tcp_timeouts_total", "TCPTimeouts",  # TcpExtTCPTimeouts
         "TcpExtTCPTimeouts", "Retransmission timer expirations (RTO)."),
    _mib("pystack_tcp_delayed_acks_total", "DelayedACKs",  # TcpExtDelayedACKs
         "TcpExtDelayedACKs", "ACKs sent by the delayed-ACK timer."),
    # no Linux MIB: the state column of /proc/net/tcp (`ss -tan state X | wc -l`)
    MetricSpec("pystack_tcp_connections", GAUGE, "connections_by_state", None, "state",
               "/proc/net/tcp st", "Connections by TCP state (Linux state names)."),
)

# Label values always exported for a labelled family (0 until the source reports them).
_KNOWN_LABELS: dict[str, tuple[str, ...]] = {
    "pystack_xdp_packets_total": XDP_ACTIONS,
    "pystack_xdp_drops_total": XDP_DROP_REASONS,
    "pystack_tcp_connections": CONNECTION_STATES,
}


@dataclass(frozen=True)
class StackSources:
    """Where the numbers come from; each is called at scrape time. None: not available here
    (e.g. no XDP on the simulated link), and its families are left out."""

    xdp_actions: Counts | None = None
    xdp_drops: Counts | None = None
    tcp_mib: Counts | None = None
    connections_by_state: Counts | None = None
    up: Callable[[], bool] | None = None  # control plane healthy; None means always 1

    @classmethod
    def of(cls, sources: StackSources | Mapping[str, Any]) -> StackSources:
        if isinstance(sources, StackSources):
            return sources
        if not isinstance(sources, Mapping):
            raise TypeError(f"sources must be StackSources or a mapping, not {type(sources)}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(sources) - known)
        if unknown:
            raise TypeError(f"unknown metric sources {unknown}; expected some of {sorted(known)}")
        return cls(**sources)


def _family(spec: MetricSpec) -> Metric:
    labels = [spec.label] if spec.label else None
    if spec.kind == COUNTER:
        return CounterMetricFamily(spec.name, spec.help, labels=labels)
    return GaugeMetricFamily(spec.name, spec.help, labels=labels)


def _as_count(value: Any) -> int:
    n = int(value)
    return n if n > 0 else 0


class StackCollector:
    """A prometheus_client custom collector over :class:`StackSources`.

    Every scrape calls each source once (no polling thread). A source that raises is left out
    of that scrape and ``pystack_scrape_source_success{source}`` says so; the others are still
    exported.
    """

    def __init__(
        self,
        sources: StackSources | Mapping[str, Any],
        *,
        start_time: float | None = None,
    ) -> None:
        self.sources = StackSources.of(sources)
        self.start_time = time.time() if start_time is None else start_time
        self._build = {
            "version": pystack.__version__,
            "python": platform.python_version(),
            "kernel": platform.release(),
        }
        self._lock = threading.Lock()  # concurrent scrapes: read + carry-forward is atomic
        self._last: dict[tuple[str, str], int] = {}  # (family, key) -> last raw value
        self._offset: dict[tuple[str, str], int] = {}  # carried over from before a reset
        self._seen: dict[str, dict[str, None]] = {}  # family -> label values exported so far
        self._failing: set[str] = set()

    # -- prometheus_client Collector protocol --
    def describe(self) -> Iterator[Metric]:
        """Empty families: lets the registry refuse duplicates without calling the sources."""
        yield from self._meta_families(with_samples=False)
        for spec in METRICS:
            yield _family(spec)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            families = list(self._collect_locked())
        yield from families

    # -- internals --
    def _collect_locked(self) -> Iterator[Metric]:
        yield from self._meta_families(with_samples=True)
        readings: dict[str, Mapping[str, int]] = {}
        success = GaugeMetricFamily(
            "pystack_scrape_source_success",
            "1 if the source was read at this scrape, 0 if it failed.",
            labels=["source"],
        )
        for name in ("xdp_actions", "xdp_drops", "tcp_mib", "connections_by_state"):
            fn = getattr(self.sources, name)
            if fn is None:
                continue
            reading = self._read(name, fn)
            success.add_metric([name], 0.0 if reading is None else 1.0)
            if reading is not None:
                readings[name] = reading
        yield success
        for spec in METRICS:
            reading = readings.get(spec.source)
            if reading is None:
                continue
            family = _family(spec)
            if spec.label is None:
                assert spec.key is not None
                family.add_metric([], self._value(spec, spec.key, reading.get(spec.key, 0)))
            else:
                seen = self._seen.setdefault(spec.name, dict.fromkeys(_KNOWN_LABELS[spec.name]))
                seen.update(dict.fromkeys(reading))
                for key in seen:
                    family.add_metric([key], self._value(spec, key, reading.get(key, 0)))
            yield family

    def _read(self, name: str, fn: Counts) -> dict[str, int] | None:
        try:
            reading: dict[str, int] = {}
            for k, v in fn().items():
                key = _linux_state(str(k)) if name == "connections_by_state" else str(k)
                reading[key] = reading.get(key, 0) + _as_count(v)
        except Exception as e:  # a broken source must not break the whole scrape
            if name not in self._failing:
                log.warning("metrics source %s failed: %s: %s", name, type(e).__name__, e)
                self._failing.add(name)
            return None
        if name in self._failing:
            log.info("metrics source %s recovered", name)
            self._failing.discard(name)
        return reading

    def _value(self, spec: MetricSpec, key: str, raw: int) -> float:
        if spec.kind != COUNTER:
            return float(raw)
        k = (spec.name, key)
        last = self._last.get(k)
        if last is not None and raw < last:  # the source restarted: carry its total over
            self._offset[k] = self._offset.get(k, 0) + last
        self._last[k] = raw
        return float(self._offset.get(k, 0) + raw)

    def _meta_families(self, *, with_samples: bool) -> Iterator[Metric]:
        info = InfoMetricFamily(
            "pystack_build", "pystack build: version, Python and kernel release.",
            labels=[],
        )
        up = GaugeMetricFamily("pystack_up", "1 if the pystack control plane is up.")
        start = GaugeMetricFamily(
            "pystack_start_time_seconds", "Start time of the pystack control plane, Unix time."
        )
        if with_samples:
            info.add_metric([], self._build)
            up.add_metric([], self._up())
            start.add_metric([], self.start_time)
        yield info
        yield up
        yield start
        if not with_samples:
            yield GaugeMetricFamily(
                "pystack_scrape_source_success",
                "1 if the source was read at this scrape, 0 if it failed.",
                labels=["source"],
            )

    def _up(self) -> float:
        if self.sources.up is None:
            return 1.0
        try:
            return 1.0 if self.sources.up() else 0.0
        except Exception as e:
            log.warning("metrics source up failed: %s: %s", type(e).__name__, e)
            return 0.0


class StackMetrics:
    """Everything a pystack process exports, on its own registry (never the global one).

    The engine observes into :attr:`handshake_seconds` and :attr:`srtt_seconds`
    (``metrics.handshake_seconds.observe(seconds)``); they are thread-safe.
    """

    def __init__(
        self,
        sources: StackSources | Mapping[str, Any],
        *,
        registry: CollectorRegistry | None = None,
        start_time: float | None = None,
        process_metrics: bool = True,
    ) -> None:
        self.registry = CollectorRegistry() if registry is None else registry
        self.collector = StackCollector(sources, start_time=start_time)
        self.registry.register(self.collector)
        self.handshake_seconds = Histogram(
            "pystack_tcp_handshake_seconds",
            "Time from the first SYN sent or received to ESTABLISHED.",
            buckets=HANDSHAKE_BUCKETS,
            registry=self.registry,
        )
        self.srtt_seconds = Histogram(
            "pystack_tcp_srtt_seconds",
            "Smoothed round-trip time (RFC 6298 SRTT), sampled per connection.",
            buckets=SRTT_BUCKETS,
            registry=self.registry,
        )
        if process_metrics:  # process_cpu_seconds_total etc. of this control-plane process
            ProcessCollector(registry=self.registry)


class MetricsServer:
    """A running ``/metrics`` endpoint; :meth:`close` stops it and frees the port."""

    def __init__(self, metrics: StackMetrics, host: str, port: int) -> None:
        self.metrics = metrics
        self.host = host
        try:
            family, addr = _best_family(host, port)
            self._httpd = _make_server(family, addr, port, make_wsgi_app(metrics.registry))
        except (OverflowError, UnicodeError) as e:  # port bind() refuses, host IDNA refuses
            raise ValueError(f"cannot serve metrics on {_join(host, port)}: {e}") from None
        except OSError as e:
            reason = e.strerror or str(e) or type(e).__name__
            err = OSError(f"cannot serve metrics on {_join(host, port)}: {reason}")
            err.errno = e.errno
            raise err from None
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
            name="pystack-metrics", daemon=True,
        )
        self._thread.start()
        self.port: int = self._httpd.server_address[1]
        self._closed = False

    @property
    def url(self) -> str:
        return f"http://{_join(self.host, self.port)}/metrics"

    @property
    def registry(self) -> CollectorRegistry:
        return self.metrics.registry

    @property
    def handshake_seconds(self) -> Histogram:
        return self.metrics.handshake_seconds

    @property
    def srtt_seconds(self) -> Histogram:
        return self.metrics.srtt_seconds

    def close(self) -> None:
        """Stop serving and close the listening socket. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_metrics(
    host: str,
    port: int,
    sources: StackSources | Mapping[str, Any] | None,
    *,
    metrics: StackMetrics | None = None,
) -> MetricsServer:
    """Serve ``sources`` on http://host:port/metrics from a daemon thread (or a ready
    ``metrics``, if given; ``sources`` is then ignored). Port 0 picks a free port (see
    ``.port``). Raises ValueError for a malformed host or port, and OSError (one line, naming
    host:port) when it cannot listen."""
    if not isinstance(host, str) or not host or any(c.isspace() for c in host):
        raise ValueError(f"invalid metrics host {host!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"invalid metrics port {port!r}: expected 0..65535")
    if metrics is None:
        if sources is None:
            raise TypeError("serve_metrics needs sources or metrics")
        metrics = StackMetrics(sources)
    return MetricsServer(metrics, host, port)


_HOSTPORT = re.compile(r"(?:\[(?P<v6>[^\[\]\s]+)\]|(?P<host>[^:\[\]\s]*)):(?P<port>[^:]*)")


def parse_hostport(text: str, *, default_host: str = "0.0.0.0") -> tuple[str, int]:
    """``"127.0.0.1:9464"`` -> ``("127.0.0.1", 9464)``; ``"[::1]:9464"`` -> ``("::1", 9464)``;
    ``":9464"`` -> ``(default_host, 9464)``. ValueError with a one-line message otherwise."""
    m = _HOSTPORT.fullmatch(text.strip()) if isinstance(text, str) else None
    if m is None:
        hint = " (put IPv6 addresses in brackets: [::1]:9464)" if str(text).count(":") > 1 else ""
        raise ValueError(f"invalid address {text!r}: expected HOST:PORT{hint}")
    host = m.group("v6") or m.group("host") or default_host
    port_text = m.group("port")
    if not port_text.isdigit() or not port_text.isascii():
        raise ValueError(f"invalid port {port_text!r} in {text!r}: expected a number 0..65535")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"invalid port {port} in {text!r}: expected 0..65535")
    return host, port


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    """prometheus_client's start_http_server server, minus the reverse DNS lookup
    (HTTPServer.server_bind calls getfqdn) and with a short shutdown poll."""

    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]
        self.setup_environ()


def _best_family(host: str, port: int) -> tuple[socket.AddressFamily, str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, sockaddr = infos[0]
    return family, str(sockaddr[0])


def _make_server(
    family: socket.AddressFamily, addr: str, port: int, app: Callable[..., Any]
) -> WSGIServer:
    server_cls = type("_Server", (_ThreadingWSGIServer,), {"address_family": family})
    httpd: WSGIServer = server_cls((addr, port), _QuietHandler)
    httpd.set_app(app)
    return httpd


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
