"""The Prometheus exporter: contract names, types and labels, scrape-time reads, HTTP serving."""

from __future__ import annotations

import re
import socket
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

import pystack
from pystack.metrics import exporter
from pystack.metrics.exporter import (
    CONNECTION_STATES,
    METRICS,
    XDP_ACTIONS,
    XDP_DROP_REASONS,
    StackCollector,
    StackMetrics,
    StackSources,
    parse_hostport,
    serve_metrics,
)

# DESIGN.md "Public contracts" plus the families the brief adds; (name, type, labels).
CONTRACT: dict[str, tuple[str, frozenset[str]]] = {
    "pystack_xdp_packets_total": ("counter", frozenset({"action"})),
    "pystack_xdp_drops_total": ("counter", frozenset({"reason"})),
    "pystack_tcp_active_opens_total": ("counter", frozenset()),
    "pystack_tcp_passive_opens_total": ("counter", frozenset()),
    "pystack_tcp_curr_estab": ("gauge", frozenset()),
    "pystack_tcp_in_segs_total": ("counter", frozenset()),
    "pystack_tcp_out_segs_total": ("counter", frozenset()),
    "pystack_tcp_retrans_segs_total": ("counter", frozenset()),
    "pystack_tcp_out_rsts_total": ("counter", frozenset()),
    "pystack_tcp_in_errs_total": ("counter", frozenset()),
    "pystack_tcp_attempt_fails_total": ("counter", frozenset()),
    "pystack_tcp_estab_resets_total": ("counter", frozenset()),
    "pystack_tcp_syncookies_sent_total": ("counter", frozenset()),
    "pystack_tcp_syncookies_recv_total": ("counter", frozenset()),
    "pystack_tcp_syncookies_failed_total": ("counter", frozenset()),
    "pystack_tcp_fastopen_active_total": ("counter", frozenset()),
    "pystack_tcp_fastopen_active_fail_total": ("counter", frozenset()),
    "pystack_tcp_fastopen_passive_total": ("counter", frozenset()),
    "pystack_tcp_fastopen_passive_fail_total": ("counter", frozenset()),
    "pystack_tcp_fastopen_cookie_reqd_total": ("counter", frozenset()),
    "pystack_tcp_fastopen_listen_overflow_total": ("counter", frozenset()),
    "pystack_tcp_fastopen_blackhole_total": ("counter", frozenset()),
    "pystack_tcp_listen_overflows_total": ("counter", frozenset()),
    "pystack_tcp_listen_drops_total": ("counter", frozenset()),
    "pystack_tcp_challenge_acks_total": ("counter", frozenset()),
    "pystack_tcp_timeouts_total": ("counter", frozenset()),
    "pystack_tcp_delayed_acks_total": ("counter", frozenset()),
    "pystack_tcp_connections": ("gauge", frozenset({"state"})),
    "pystack_build_info": ("gauge", frozenset({"version", "python", "kernel"})),
    "pystack_up": ("gauge", frozenset()),
    "pystack_start_time_seconds": ("gauge", frozenset()),
    "pystack_scrape_source_success": ("gauge", frozenset({"source"})),
}
HISTOGRAMS = ("pystack_tcp_handshake_seconds", "pystack_tcp_srtt_seconds")

# MIB key -> metric, as the engine names its counters.
MIB_KEYS = {
    "ActiveOpens": "pystack_tcp_active_opens_total",
    "PassiveOpens": "pystack_tcp_passive_opens_total",
    "CurrEstab": "pystack_tcp_curr_estab",
    "InSegs": "pystack_tcp_in_segs_total",
    "OutSegs": "pystack_tcp_out_segs_total",
    "RetransSegs": "pystack_tcp_retrans_segs_total",
    "OutRsts": "pystack_tcp_out_rsts_total",
    "InErrs": "pystack_tcp_in_errs_total",
    "AttemptFails": "pystack_tcp_attempt_fails_total",
    "EstabResets": "pystack_tcp_estab_resets_total",
    "SyncookiesSent": "pystack_tcp_syncookies_sent_total",
    "SyncookiesRecv": "pystack_tcp_syncookies_recv_total",
    "SyncookiesFailed": "pystack_tcp_syncookies_failed_total",
    "TCPFastOpenActive": "pystack_tcp_fastopen_active_total",
    "TCPFastOpenActiveFail": "pystack_tcp_fastopen_active_fail_total",
    "TCPFastOpenPassive": "pystack_tcp_fastopen_passive_total",
    "TCPFastOpenPassiveFail": "pystack_tcp_fastopen_passive_fail_total",
    "TCPFastOpenCookieReqd": "pystack_tcp_fastopen_cookie_reqd_total",
    "TCPFastOpenListenOverflow": "pystack_tcp_fastopen_listen_overflow_total",
    "TCPFastOpenBlackhole": "pystack_tcp_fastopen_blackhole_total",
    "ListenOverflows": "pystack_tcp_listen_overflows_total",
    "ListenDrops": "pystack_tcp_listen_drops_total",
    "TCPChallengeACK": "pystack_tcp_challenge_acks_total",
    "TCPTimeouts": "pystack_tcp_timeouts_total",
    "DelayedACKs": "pystack_tcp_delayed_acks_total",
}


class Fake:
    """Mutable fake sources: the tests change the dicts between scrapes."""

    def __init__(self) -> None:
        self.actions: dict[str, int] = {"pass": 10, "redirect": 7}
        self.drops: dict[str, int] = {"ip_checksum": 2}
        self.mib: dict[str, int] = {key: i + 1 for i, key in enumerate(MIB_KEYS)}
        self.states: dict[str, int] = {"ESTABLISHED": 3, "LISTEN": 1}

    def sources(self, **override: Any) -> StackSources:
        kw: dict[str, Any] = {
            "xdp_actions": lambda: self.actions,
            "xdp_drops": lambda: self.drops,
            "tcp_mib": lambda: self.mib,
            "connections_by_state": lambda: self.states,
        }
        kw.update(override)
        return StackSources(**kw)


def scrape(registry: CollectorRegistry) -> dict[str, Metric]:
    """Families by sample-name stem, parsed back from the text exposition."""
    text = generate_latest(registry).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(registry: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for f in scrape(registry).values()
        for s in f.samples
    }


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return samples(registry)[(name, frozenset(labels.items()))]


def collector_registry(sources: StackSources, **kw: Any) -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(StackCollector(sources, **kw))
    return reg


@pytest.fixture
def fake() -> Fake:
    return Fake()


# ---- names, types, labels ----

def test_collector_exports_exactly_the_contract_names_types_and_labels(fake: Fake) -> None:
    fams = scrape(collector_registry(fake.sources()))
    got: dict[str, tuple[str, frozenset[str]]] = {}
    for fam in fams.values():
        for s in fam.samples:
            labels = frozenset(s.labels)
            assert got.setdefault(s.name, (fam.type, labels)) == (fam.type, labels), s.name
    assert got == CONTRACT


def test_stack_metrics_adds_the_two_histograms_on_its_own_registry(fake: Fake) -> None:
    m = StackMetrics(fake.sources())
    assert m.registry is not REGISTRY
    assert "pystack_up" not in {f.name for f in REGISTRY.collect()}
    fams = scrape(m.registry)
    for h in HISTOGRAMS:
        assert fams[h].type == "histogram"
        names = {s.name for s in fams[h].samples}
        assert {h + "_bucket", h + "_sum", h + "_count"} <= names
    pystack_names = {s.name for f in fams.values() for s in f.samples
                     if s.name.startswith("pystack_")}
    hist_names = {n for n in pystack_names if n.startswith(HISTOGRAMS)}
    assert pystack_names - hist_names == set(CONTRACT)
    assert any(n.startswith("process_") for n in (s.name for f in fams.values()
                                                  for s in f.samples))


def test_histograms_take_observations_with_buckets_from_10us_to_3s(fake: Fake) -> None:
    m = StackMetrics(fake.sources(), process_metrics=False)
    for v in (20e-6, 0.002, 1.2, 5.0):
        m.handshake_seconds.observe(v)
    m.srtt_seconds.observe(0.0004)
    reg = m.registry
    assert value(reg, "pystack_tcp_handshake_seconds_count") == 4
    assert value(reg, "pystack_tcp_handshake_seconds_sum") == pytest.approx(6.20202)
    assert value(reg, "pystack_tcp_handshake_seconds_bucket", le="1e-05") == 0
    assert value(reg, "pystack_tcp_handshake_seconds_bucket", le="2.5e-05") == 1
    assert value(reg, "pystack_tcp_handshake_seconds_bucket", le="1.5") == 3
    assert value(reg, "pystack_tcp_handshake_seconds_bucket", le="3.0") == 3
    assert value(reg, "pystack_tcp_handshake_seconds_bucket", le="+Inf") == 4
    assert value(reg, "pystack_tcp_srtt_seconds_bucket", le="0.0005") == 1
    for h in HISTOGRAMS:
        les = [s.labels["le"] for s in scrape(reg)[h].samples if s.name.endswith("_bucket")]
        assert les[0] == "1e-05" and les[-2:] == ["3.0", "+Inf"]


def test_xdp_actions_always_has_all_five_actions(fake: Fake) -> None:
    fake.actions = {"tx": 4}
    reg = collector_registry(fake.sources())
    got = {dict(k[1])["action"]: v for k, v in samples(reg).items()
           if k[0] == "pystack_xdp_packets_total"}
    assert got == {"aborted": 0, "drop": 0, "pass": 0, "tx": 4, "redirect": 0}


def test_drop_reasons_known_at_zero_and_unknown_ones_exported(fake: Fake) -> None:
    fake.drops = {"tcp_checksum": 5, "syncookie_failed": 9}
    reg = collector_registry(fake.sources())
    got = {dict(k[1])["reason"]: v for k, v in samples(reg).items()
           if k[0] == "pystack_xdp_drops_total"}
    assert got == {**dict.fromkeys(XDP_DROP_REASONS, 0.0), "tcp_checksum": 5, "syncookie_failed": 9}
    fake.drops = {}  # a reason once seen keeps its series (a counter does not vanish)
    assert value(reg, "pystack_xdp_drops_total", reason="syncookie_failed") == 9


def test_every_connection_state_always_present(fake: Fake) -> None:
    fake.states = {"TIME_WAIT": 2}
    reg = collector_registry(fake.sources())
    got = {dict(k[1])["state"]: v for k, v in samples(reg).items()
           if k[0] == "pystack_tcp_connections"}
    assert got == {**dict.fromkeys(CONNECTION_STATES, 0.0), "TIME_WAIT": 2}
    assert len(CONNECTION_STATES) == 11


def test_state_names_in_rfc_or_ss_spelling_are_reported_under_linux_names(fake: Fake) -> None:
    from pystack.tcp.state import TcpState

    fake.states = {s.name: 1 for s in TcpState}  # the engine's enum spelling
    fake.states["SYN-RECV"] = 2  # and ss's
    reg = collector_registry(fake.sources())
    got = {dict(k[1])["state"]: v for k, v in samples(reg).items()
           if k[0] == "pystack_tcp_connections"}
    assert got == {**dict.fromkeys(CONNECTION_STATES, 1.0), "SYN_RECV": 3.0}


def test_each_mib_key_lands_in_its_metric_and_missing_keys_are_zero(fake: Fake) -> None:
    for key, name in MIB_KEYS.items():
        fake.mib = {key: 42}
        reg = collector_registry(fake.sources())
        got = {k[0]: v for k, v in samples(reg).items() if k[0] in MIB_KEYS.values()}
        assert got == {**dict.fromkeys(MIB_KEYS.values(), 0.0), name: 42}, key


def test_xdp_abi_names_are_all_prefilled() -> None:
    from pystack.xdp import abi

    assert XDP_ACTIONS == abi.ACTIONS
    missing = set(abi.DROP_REASONS) - set(XDP_DROP_REASONS)
    assert not missing, f"add {missing} to exporter.XDP_DROP_REASONS (exported at 0)"


def test_build_info_up_and_start_time(fake: Fake) -> None:
    reg = collector_registry(fake.sources(), start_time=1234.5)
    info = list(scrape(reg)["pystack_build_info"].samples)
    assert len(info) == 1 and info[0].value == 1
    assert info[0].labels["version"] == pystack.__version__
    assert re.fullmatch(r"3\.\d+\.\d+.*", info[0].labels["python"])
    assert info[0].labels["kernel"]
    assert value(reg, "pystack_up") == 1
    assert value(reg, "pystack_start_time_seconds") == 1234.5
    healthy = [True]
    reg = collector_registry(fake.sources(up=lambda: healthy[0]))
    assert value(reg, "pystack_up") == 1
    healthy[0] = False
    assert value(reg, "pystack_up") == 0


def test_metric_table_is_one_consistent_mapping() -> None:
    src = Path(exporter.__file__).read_text()
    names = [m.name for m in METRICS]
    assert len(names) == len(set(names))
    assert set(names) == {n for n in CONTRACT
                          if n not in ("pystack_build_info", "pystack_up",
                                       "pystack_start_time_seconds",
                                       "pystack_scrape_source_success")}
    for m in METRICS:
        assert m.name.endswith("_total") == (m.kind == "counter"), m.name
        if m.source == "tcp_mib":
            assert m.key is not None and MIB_KEYS[m.key] == m.name
            assert m.linux in ("Tcp" + m.key, "TcpExt" + m.key), m
            assert f"# {m.linux}\n" in src, f"row {m.name} needs a '# {m.linux}' comment"


# ---- scrape-time reads, monotonic counters, broken sources ----

def test_sources_are_read_at_scrape_time(fake: Fake) -> None:
    calls = [0]

    def mib() -> dict[str, int]:
        calls[0] += 1
        return fake.mib

    reg = collector_registry(fake.sources(tcp_mib=mib))
    assert calls[0] == 0
    assert value(reg, "pystack_tcp_in_segs_total") == fake.mib["InSegs"]
    fake.mib["InSegs"] = 1000
    fake.mib["CurrEstab"] = 7
    fake.actions["pass"] = 99
    fake.states["ESTABLISHED"] = 8
    s = samples(reg)
    assert calls[0] == 2
    assert s[("pystack_tcp_in_segs_total", frozenset())] == 1000
    assert s[("pystack_tcp_curr_estab", frozenset())] == 7
    assert s[("pystack_xdp_packets_total", frozenset({("action", "pass")}))] == 99
    assert s[("pystack_tcp_connections", frozenset({("state", "ESTABLISHED")}))] == 8


def test_counters_never_go_backwards_but_gauges_do(fake: Fake) -> None:
    reg = collector_registry(fake.sources())
    fake.mib = {"InSegs": 100, "CurrEstab": 5}
    fake.actions = {"pass": 50}
    assert value(reg, "pystack_tcp_in_segs_total") == 100
    fake.mib = {"InSegs": 3, "CurrEstab": 1}  # the engine restarted
    fake.actions = {"pass": 4}  # the XDP program was reloaded
    s = samples(reg)
    assert s[("pystack_tcp_in_segs_total", frozenset())] == 103
    assert s[("pystack_xdp_packets_total", frozenset({("action", "pass")}))] == 54
    assert s[("pystack_tcp_curr_estab", frozenset())] == 1
    fake.mib = {"InSegs": 10}
    assert value(reg, "pystack_tcp_in_segs_total") == 110


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=-5, max_value=2**64), min_size=1, max_size=12))
def test_exported_counter_is_monotonic_for_any_source_sequence(raw: list[int]) -> None:
    current = {"RetransSegs": 0}
    reg = collector_registry(StackSources(tcp_mib=lambda: current))
    seen = []
    for r in raw:
        current["RetransSegs"] = r
        seen.append(value(reg, "pystack_tcp_retrans_segs_total"))
    assert seen == sorted(seen)
    # Prometheus values are doubles: above 2**53 the export rounds to the nearest one.
    assert seen[-1] >= float(max(raw[-1], 0))


def test_a_failing_source_drops_only_its_families(fake: Fake, caplog: Any) -> None:
    broken = [True]

    def drops() -> dict[str, int]:
        if broken[0]:
            raise RuntimeError("map read failed")
        return fake.drops

    reg = collector_registry(fake.sources(xdp_drops=drops))
    for _ in range(2):
        s = samples(reg)
        assert not any(k[0] == "pystack_xdp_drops_total" for k in s)
        assert s[("pystack_scrape_source_success", frozenset({("source", "xdp_drops")}))] == 0
        assert s[("pystack_scrape_source_success", frozenset({("source", "tcp_mib")}))] == 1
        assert s[("pystack_tcp_in_segs_total", frozenset())] == fake.mib["InSegs"]
    assert len([r for r in caplog.records if "xdp_drops" in r.getMessage()]) == 1  # once
    broken[0] = False
    assert value(reg, "pystack_xdp_drops_total", reason="ip_checksum") == 2


def test_absent_sources_are_left_out() -> None:
    mib = {"InSegs": 1}
    reg = collector_registry(StackSources(tcp_mib=lambda: mib))
    names = {k[0] for k in samples(reg)}
    assert "pystack_tcp_in_segs_total" in names and "pystack_up" in names
    assert not {"pystack_xdp_packets_total", "pystack_xdp_drops_total",
                "pystack_tcp_connections"} & names


def test_sources_as_a_mapping_and_unknown_names_rejected(fake: Fake) -> None:
    reg = collector_registry({"tcp_mib": lambda: {"OutRsts": 3}})  # type: ignore[arg-type]
    assert value(reg, "pystack_tcp_out_rsts_total") == 3
    with pytest.raises(TypeError, match="tcp_mibs"):
        StackCollector({"tcp_mibs": lambda: {}})


def test_registering_twice_is_refused(fake: Fake) -> None:
    m = StackMetrics(fake.sources(), process_metrics=False)
    with pytest.raises(ValueError):
        m.registry.register(StackCollector(fake.sources()))


# ---- HTTP ----

def http_get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, r.headers.get("Content-Type", ""), r.read().decode()


def refused(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_serve_metrics_answers_http_and_close_frees_the_port(fake: Fake) -> None:
    srv = serve_metrics("127.0.0.1", 0, fake.sources())
    try:
        port = srv.port
        assert port > 0 and srv.url == f"http://127.0.0.1:{port}/metrics"
        srv.handshake_seconds.observe(0.0001)
        srv.srtt_seconds.observe(0.0001)
        status, ctype, body = http_get(srv.url)
        assert status == 200 and ctype.startswith("text/plain")
        fams = {f.name: f for f in text_string_to_metric_families(body)}
        assert fams["pystack_tcp_in_segs"].samples[0].value == fake.mib["InSegs"]
        assert fams["pystack_tcp_handshake_seconds"].type == "histogram"
        fake.mib["InSegs"] = 5000
        assert "pystack_tcp_in_segs_total 5000.0" in http_get(srv.url)[2]
    finally:
        srv.close()
    srv.close()  # idempotent
    assert refused(port)
    with serve_metrics("127.0.0.1", port, fake.sources()) as again:  # rebind at once
        assert http_get(again.url)[0] == 200
    assert refused(port)


def test_serve_metrics_with_a_given_stack_metrics(fake: Fake) -> None:
    m = StackMetrics(fake.sources(), process_metrics=False)
    with serve_metrics("127.0.0.1", 0, None, metrics=m) as srv:
        assert srv.metrics is m and srv.registry is m.registry
        m.srtt_seconds.observe(0.01)
        assert "pystack_tcp_srtt_seconds_count 1.0" in http_get(srv.url)[2]


def one_line(exc: BaseException, *needles: str) -> None:
    msg = str(exc)
    assert "\n" not in msg and msg.strip() == msg, msg
    for n in needles:
        assert n in msg, f"{n!r} not in {msg!r}"


def test_serve_metrics_port_in_use_is_a_one_line_oserror(fake: Fake) -> None:
    with serve_metrics("127.0.0.1", 0, fake.sources()) as srv:
        with pytest.raises(OSError) as ei:
            serve_metrics("127.0.0.1", srv.port, fake.sources())
    one_line(ei.value, f"127.0.0.1:{srv.port}", "in use")
    assert ei.value.errno is not None


@pytest.mark.parametrize(
    "host, port, exc, needle",
    [
        ("192.0.2.1", 0, OSError, "192.0.2.1:0"),  # TEST-NET-1: not an address of ours
        ("127.0.0.1", 70000, ValueError, "70000"),
        ("127.0.0.1", -1, ValueError, "-1"),
        ("127.0.0.1", "9464", ValueError, "'9464'"),
        ("", 9464, ValueError, "''"),
        ("bad host", 9464, ValueError, "'bad host'"),
        ("x..y", 9464, ValueError, "x..y:9464"),
    ],
)
def test_serve_metrics_bad_host_or_port(
    fake: Fake, host: str, port: Any, exc: type[Exception], needle: str
) -> None:
    with pytest.raises(exc) as ei:
        serve_metrics(host, port, fake.sources())
    one_line(ei.value, needle)


def test_serve_metrics_ipv6_loopback(fake: Fake) -> None:
    if not socket.has_ipv6:
        pytest.fail("this host has no IPv6 support")
    try:
        srv = serve_metrics("::1", 0, fake.sources())
    except OSError as e:  # ::1 disabled in this namespace
        one_line(e, "[::1]:0")
        return
    with srv:
        assert srv.url == f"http://[::1]:{srv.port}/metrics"
        assert http_get(srv.url)[0] == 200


# ---- parse_hostport ----

@pytest.mark.parametrize(
    "text, expected",
    [
        ("127.0.0.1:9100", ("127.0.0.1", 9100)),
        ("localhost:9464", ("localhost", 9464)),
        ("[::1]:9464", ("::1", 9464)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        (":9464", ("0.0.0.0", 9464)),
        (" 127.0.0.1:80 ", ("127.0.0.1", 80)),
    ],
)
def test_parse_hostport(text: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(text) == expected


@pytest.mark.parametrize(
    "text, needle",
    [
        ("127.0.0.1", "HOST:PORT"),
        ("127.0.0.1:", "''"),
        ("127.0.0.1:http", "'http'"),
        ("127.0.0.1:65536", "65536"),
        ("127.0.0.1:-1", "'-1'"),
        ("::1:9464", "brackets"),
        ("[::1]", "HOST:PORT"),
        ("a b:80", "HOST:PORT"),
        ("", "HOST:PORT"),
        ("1.2.3.4:9\n464", "invalid port"),
    ],
)
def test_parse_hostport_errors_are_one_line(text: str, needle: str) -> None:
    with pytest.raises(ValueError) as ei:
        parse_hostport(text)
    msg = str(ei.value)
    assert "\n" not in msg.replace("\\n", ""), msg
    assert needle in msg, msg


def test_parse_hostport_feeds_serve_metrics(fake: Fake) -> None:
    serve: Callable[..., Any] = serve_metrics
    with serve(*parse_hostport("127.0.0.1:0"), fake.sources()) as srv:
        assert http_get(srv.url)[0] == 200
