"""dashboards/: the Grafana dashboard, Prometheus config and alert rules agree with the exporter,
and promtool accepts them (check config, check rules, the rule unit tests)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pystack.metrics.exporter import METRICS, StackMetrics, StackSources

ROOT = Path(__file__).resolve().parents[2]
DASH_DIR = ROOT / "dashboards"
DASHBOARD = DASH_DIR / "pystack.json"
ALERTS = DASH_DIR / "alerts.yml"
PROMTOOL = "/usr/bin/promtool"

METRIC_RE = re.compile(r"\bpystack_[a-z_]+")
TARGET_LABELS = {"instance", "job"}  # added by Prometheus at scrape time


def exported() -> tuple[set[str], set[str], set[str]]:
    """(sample names, histogram family names, label names) a fully fed exporter produces."""
    m = StackMetrics(
        StackSources(
            xdp_actions=dict, xdp_drops=dict, tcp_mib=dict, connections_by_state=dict
        ),
        process_metrics=False,
    )
    names: set[str] = set()
    hists: set[str] = set()
    labels: set[str] = set()
    for fam in text_string_to_metric_families(generate_latest(m.registry).decode()):
        if fam.type == "histogram":
            hists.add(fam.name)
        for s in fam.samples:
            names.add(s.name)
            labels.update(s.labels)
    return names, hists, labels


SAMPLE_NAMES, HISTOGRAMS, LABELS = exported()


@pytest.fixture(scope="module")
def dash() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from all_panels(p.get("panels", []))  # collapsed rows nest their panels


def expressions(dash: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) for every query in the dashboard, variables included."""
    out = []
    for p in all_panels(dash["panels"]):
        for t in p.get("targets", []):
            out.append((p["title"], t["expr"]))
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]
            out.append((f"variable {v['name']}", q["query"] if isinstance(q, dict) else q))
    return out


def check_names(where: str, text: str) -> None:
    for name in METRIC_RE.findall(text):
        if name in HISTOGRAMS:
            pytest.fail(f"{where}: {name} is a histogram; use {name}_bucket/_sum/_count")
        stem = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in SAMPLE_NAMES or stem in HISTOGRAMS, (
            f"{where}: {name} is not exported (known: {sorted(SAMPLE_NAMES)})"
        )


# ---- the Grafana dashboard ----

def test_dashboard_identity_and_variables(dash: dict[str, Any]) -> None:
    assert dash["uid"] == "pystack-tcp"
    assert 36 <= dash["schemaVersion"] <= 41
    assert dash["title"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    inst = variables["instance"]
    assert inst["type"] == "query"
    q = inst["query"]["query"] if isinstance(inst["query"], dict) else inst["query"]
    assert q == "label_values(pystack_up, instance)"
    assert inst["datasource"]["uid"] == "${datasource}"


def test_every_panel_has_a_unique_id_a_title_and_the_datasource_variable(
    dash: dict[str, Any],
) -> None:
    ids = [p["id"] for p in all_panels(dash["panels"])]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(ids)}"
    for p in all_panels(dash["panels"]):
        assert isinstance(p["id"], int) and p.get("title"), p
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"], f"panel {p['title']!r} has no query"
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", p["title"]
            assert 'instance=~"$instance"' in t["expr"], f"{p['title']}: {t['expr']}"


def test_panels_fit_the_grid_without_overlapping(dash: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = p["title"]


def test_dashboard_uses_only_exported_metrics_and_labels(dash: dict[str, Any]) -> None:
    exprs = expressions(dash)
    assert len(exprs) >= 20
    for title, expr in exprs:
        check_names(f"panel {title!r}", expr)
        for group in re.findall(r"\bby \(([^)]*)\)", expr):
            for label in (lbl.strip() for lbl in group.split(",")):
                assert label in LABELS | TARGET_LABELS, f"{title}: by ({label}) in {expr}"
    for p in all_panels(dash["panels"]):
        for t in p.get("targets", []):
            for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", t.get("legendFormat", "")):
                assert label in LABELS | TARGET_LABELS, f"{p['title']}: legend {{{{{label}}}}}"


def test_dashboard_covers_every_exported_family(dash: dict[str, Any]) -> None:
    used = {n for _, e in expressions(dash) for n in METRIC_RE.findall(e)}
    used |= {re.sub(r"_(bucket|sum|count)$", "", n) for n in used}
    missing = [m.name for m in METRICS if m.name not in used]
    missing += [h for h in HISTOGRAMS if h not in used]
    assert not missing, f"no panel shows {missing}"


def test_dashboard_mirrors_the_node_exporter_tcp_panels(dash: dict[str, Any]) -> None:
    text = " ".join(e for _, e in expressions(dash))
    for needle in (
        "rate(pystack_tcp_in_segs_total", "rate(pystack_tcp_out_segs_total",
        "pystack_tcp_retrans_segs_total", "pystack_tcp_syncookies_failed_total",
        "pystack_tcp_connections{", "pystack_tcp_curr_estab",
        "histogram_quantile(0.99, sum by (instance, le) (rate(pystack_tcp_handshake_seconds_bucket",
        "histogram_quantile(0.5, sum by (instance, le) (rate(pystack_tcp_srtt_seconds_bucket",
    ):
        assert needle in text, needle
    ratio = re.search(r"rate\(pystack_tcp_retrans_segs_total[^)]*\)\s*/\s*"
                      r"rate\(pystack_tcp_out_segs_total", text)
    assert ratio, "retransmit ratio retrans/out missing"


# ---- Prometheus config, alerts, provisioning ----

def test_alert_rules_use_only_exported_metrics_and_known_reasons() -> None:
    text = ALERTS.read_text()
    check_names("alerts.yml", text)
    for alert in ("PystackSynFlood", "PystackChecksumDropSpike", "PystackRetransmitRatioHigh",
                  "PystackControlPlaneDown"):
        assert f"alert: {alert}\n" in text, alert
    for block in text.split("- alert: ")[1:]:
        name = block.split("\n", 1)[0]
        assert re.search(r"\n\s+for: \d+[smh]\n", block), f"{name} has no for:"
        assert re.search(r"\n\s+severity: (warning|critical)\n", block), f"{name}: severity"
        assert "summary:" in block and "description:" in block, f"{name}: annotations"
    from pystack.metrics.exporter import XDP_DROP_REASONS

    for regex in re.findall(r'reason=~"([^"]+)"', text):
        for reason in regex.split("|"):
            assert reason in XDP_DROP_REASONS, reason


def promtool(*args: str) -> str:
    assert os.access(PROMTOOL, os.X_OK), f"{PROMTOOL} missing: apt-get install prometheus"
    r = subprocess.run([PROMTOOL, *args], cwd=DASH_DIR, capture_output=True, text=True,
                       timeout=60)
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"promtool {' '.join(args)} failed:\n{out}"
    return out


def test_promtool_check_rules() -> None:
    assert "SUCCESS: 4 rules found" in promtool("check", "rules", str(ALERTS))


def test_promtool_check_config() -> None:
    out = promtool("check", "config", str(DASH_DIR / "prometheus.yml"))
    assert "SUCCESS" in out and "1 rule files found" in out


def test_promtool_alert_unit_tests() -> None:
    assert "SUCCESS" in promtool("test", "rules", str(DASH_DIR / "alerts_test.yml"))


def test_alert_unit_tests_cover_every_alert_firing_and_quiet() -> None:
    text = (DASH_DIR / "alerts_test.yml").read_text()
    for alert in re.findall(r"- alert: (\w+)", ALERTS.read_text()):
        cases = re.findall(rf"alertname: {alert}\n\s+exp_alerts:(.*)", text)
        assert any(c.strip() == "[]" or c.strip().startswith("[]") for c in cases), (
            f"{alert}: no quiet case"
        )
        assert any(c.strip() == "" for c in cases), f"{alert}: no firing case"


def test_scrape_config_targets_the_exporter_every_5s() -> None:
    text = (DASH_DIR / "prometheus.yml").read_text()
    assert re.search(r"job_name: pystack\b", text)
    assert re.search(r"\n\s+scrape_interval: 5s\n", text)
    assert '"127.0.0.1:9464"' in text
    assert re.search(r"rule_files:\n\s+- alerts\.yml", text)


def test_grafana_provisioning_files() -> None:
    ds = (DASH_DIR / "provisioning/datasources/prometheus.yaml").read_text()
    assert re.search(r"^apiVersion: 1$", ds, re.M)
    assert re.search(r"\n\s+type: prometheus\n", ds) and "url: http://" in ds
    prov = (DASH_DIR / "provisioning/dashboards/pystack.yaml").read_text()
    assert re.search(r"^apiVersion: 1$", prov, re.M)
    assert re.search(r"\n\s+type: file\n", prov) and re.search(r"\n\s+path: /\S+", prov)
    for f in (ds, prov):
        assert "\t" not in f


def test_readme_is_short_and_names_the_files() -> None:
    lines = (DASH_DIR / "README.md").read_text().strip().splitlines()
    assert 5 <= len(lines) <= 15
    text = "\n".join(lines)
    for name in ("prometheus.yml", "alerts.yml", "alerts_test.yml", "pystack.json",
                 "provisioning/"):
        assert name in text, name
