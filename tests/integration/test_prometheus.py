"""A real Prometheus scrapes serve_metrics (fed by fake, growing sources); every query of the
Grafana dashboard must then return data, and the alert rules must load and evaluate.
Needs /usr/bin/prometheus (Debian package `prometheus`), not root."""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pystack.metrics.exporter import (
    CONNECTION_STATES,
    METRICS,
    XDP_ACTIONS,
    XDP_DROP_REASONS,
    MetricsServer,
    StackMetrics,
    StackSources,
    serve_metrics,
)

PROMETHEUS = "/usr/bin/prometheus"
ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "dashboards" / "pystack.json"
ALERTS = ROOT / "dashboards" / "alerts.yml"
# What Grafana would put in place of its variables for a one-minute view.
RANGE = "1m"


class GrowingStack:
    """Fake sources: every scrape sees every counter higher than the last, and new
    handshake/RTT observations, so rate() and histogram_quantile() have data."""

    def __init__(self) -> None:
        self.metrics = StackMetrics(
            StackSources(
                xdp_actions=lambda: self._counts(XDP_ACTIONS),
                xdp_drops=lambda: self._counts((*XDP_DROP_REASONS, "syncookie_failed")),
                tcp_mib=self._mib,
                connections_by_state=lambda: self._counts(CONNECTION_STATES),
            )
        )
        self._tick = itertools.count(1)
        self._n = 0

    def _counts(self, keys: tuple[str, ...]) -> dict[str, int]:
        return {k: (i + 1) * self._n for i, k in enumerate(keys)}

    def _mib(self) -> dict[str, int]:
        self._n = next(self._tick)  # tcp_mib is read once per scrape
        for k in range(1, 6):
            self.metrics.handshake_seconds.observe(k * 50e-6)
            self.metrics.srtt_seconds.observe(k * 20e-6)
        keys = tuple(m.key for m in METRICS if m.source == "tcp_mib" and m.key)
        mib = {k: (i + 1) * 100 * self._n for i, k in enumerate(keys)}
        mib["CurrEstab"] = 3
        return mib


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def api(base: str, path: str, **params: str) -> dict[str, Any]:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else f"{base}{path}"
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def wait_until(cond: Any, timeout: float, what: str, proc: subprocess.Popen[bytes],
               log: Path) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"prometheus exited ({proc.returncode}):\n{log.read_text()[-2000:]}")
        try:
            v = cond()
        except OSError:
            v = None
        if v:
            return v
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}:\n"
                        f"{log.read_text()[-2000:]}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def stack() -> Iterator[MetricsServer]:
    fake = GrowingStack()
    srv = serve_metrics("127.0.0.1", 0, None, metrics=fake.metrics)
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture(scope="module")
def prometheus(stack: MetricsServer) -> Iterator[str]:
    """A Prometheus scraping `stack` every second, with dashboards/alerts.yml loaded;
    yields its base URL once three scrapes are stored."""
    assert os.access(PROMETHEUS, os.X_OK), f"{PROMETHEUS} missing: apt-get install prometheus"
    tmp = Path(tempfile.mkdtemp(prefix="pystack-prom-"))
    port = free_port()
    config = {  # JSON is YAML
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [{
            "job_name": "pystack",
            "static_configs": [{"targets": [f"127.0.0.1:{stack.port}"]}],
        }],
    }
    (tmp / "prometheus.yml").write_text(json.dumps(config))
    log = tmp / "prometheus.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={tmp / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
             "--log.level=warn"],
            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: urllib.request.urlopen(f"{base}/-/ready", timeout=2).status == 200,
                   15, "prometheus to be ready", proc, log)

        def scraped_three_times() -> bool:
            r = api(base, "/api/v1/query", query="count_over_time(pystack_up[1m])")["data"]
            return bool(r["result"]) and float(r["result"][0]["value"][1]) >= 3

        wait_until(scraped_three_times, 20, "three scrapes of the exporter", proc, log)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def dashboard_queries() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    out = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for p in panels:
            out.extend((p["title"], t["expr"]) for t in p.get("targets", []))
            walk(p.get("panels", []))

    walk(dash["panels"])
    return out


@pytest.mark.timeout(60)
def test_every_dashboard_query_returns_data_from_a_real_prometheus(
    stack: MetricsServer, prometheus: str
) -> None:
    instance = f"127.0.0.1:{stack.port}"
    # The instance variable's query: label_values(pystack_up, instance).
    values = api(prometheus, "/api/v1/label/instance/values", **{"match[]": "pystack_up"})
    assert values["status"] == "success" and instance in values["data"]

    queries = dashboard_queries()
    assert len(queries) >= 20
    failures = []
    for title, expr in queries:
        q = (expr.replace("$__rate_interval", RANGE).replace("$__interval", RANGE)
             .replace("$__range", RANGE).replace("$instance", instance))
        assert "$" not in q, f"{title}: unsubstituted variable in {q}"
        r = api(prometheus, "/api/v1/query", query=q)
        result = r.get("data", {}).get("result", [])
        finite = [s for s in result if not math.isnan(float(s["value"][1]))]
        if r["status"] != "success" or not result or not finite:
            failures.append(f"{title}: {q}\n  -> {json.dumps(r)[:300]}")
    assert not failures, "dashboard queries without data:\n" + "\n".join(failures)


@pytest.mark.timeout(60)
def test_alert_rules_load_and_evaluate_cleanly(prometheus: str) -> None:
    def evaluated() -> list[dict[str, Any]] | None:
        groups = api(prometheus, "/api/v1/rules")["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules if rules and all(r.get("health") == "ok" for r in rules) else None

    deadline = time.monotonic() + 15
    rules = None
    while rules is None and time.monotonic() < deadline:
        rules = evaluated()
        if rules is None:
            time.sleep(0.2)
    assert rules is not None, api(prometheus, "/api/v1/rules")
    assert {r["name"] for r in rules} == {
        "PystackSynFlood", "PystackChecksumDropSpike", "PystackRetransmitRatioHigh",
        "PystackControlPlaneDown",
    }
    down = next(r for r in rules if r["name"] == "PystackControlPlaneDown")
    assert down["state"] == "inactive", down  # the exporter is up
