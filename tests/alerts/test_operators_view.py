"""The operators' view: Prometheus rules checked and unit-tested with promtool, and every metric
that the rules and the Grafana dashboard name is one the running services really export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from meterstream.alerts.service import AlertService
from meterstream.config import PROJECT_ROOT, Settings
from tests.alerts.conftest import RunningApi, Tenant, fast_settings, free_port

pytestmark = pytest.mark.integration

OPS = PROJECT_ROOT / "ops"
RULES = OPS / "prometheus" / "meterstream.rules.yml"
RULES_TEST = OPS / "prometheus" / "meterstream.rules.test.yml"
DASHBOARD = OPS / "grafana" / "meterstream.json"
METRIC = re.compile(r"\bmeterstream_[a-z0-9_]+\b")
#: What each metric type adds to its family's name in the samples it exports.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
}


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: apt-get install prometheus (.ci/run does)"
    return found


def exported(text: str) -> set[str]:
    """Every sample name a /metrics text can carry (a labelled metric shows only its family
    until it is first incremented)."""
    return {
        family.name + suffix
        for family in text_string_to_metric_families(text)
        for suffix in SUFFIXES.get(family.type, ("",))
    }


def rule_expressions() -> list[str]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule["expr"] for group in doc["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]


def test_promtool_checks_the_rules() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", RULES_TEST.name],
        capture_output=True,
        text=True,
        check=False,
        cwd=RULES_TEST.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    # promtool parses recording rules' expressions: one per dashboard query.
    rules = [
        {
            "record": f"meterstream:dashboard_query_{i}",
            "expr": expr.replace("$__rate_interval", "5m"),
        }
        for i, expr in enumerate(dashboard_expressions())
    ]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(rules) >= 20


def test_rules_and_dashboard_name_only_metrics_the_services_export(
    alerts_api: RunningApi, stack: Settings, tenant: Callable[..., Tenant]
) -> None:
    operator = tenant(0, operator=True)
    with alerts_api.client(operator.tokens["admin"]) as http:
        api_metrics = http.get("/metrics")
    assert api_metrics.status_code == 200
    port = free_port()
    service = AlertService(fast_settings(stack, metrics_port=port))
    service.start()
    try:
        service_metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    finally:
        service.stop()
    names = exported(api_metrics.text) | exported(service_metrics.text)

    used: dict[str, set[str]] = {"rules": set(), "dashboard": set()}
    for source, expressions in (
        ("rules", rule_expressions()),
        ("dashboard", dashboard_expressions()),
    ):
        for expr in expressions:
            found = set(METRIC.findall(expr))
            assert found or "up{" in expr, f"{source}: {expr} names no meterstream metric"
            used[source] |= found
    for source, metrics in used.items():
        assert metrics <= names, f"{source} names metrics nobody exports: {metrics - names}"
    # The dashboard shows every metric family the alerts service exports.
    families = {
        f.name
        for f in text_string_to_metric_families(service_metrics.text)
        if not f.name.endswith("_created")  # a counter's creation time, not a metric to show
    }
    shown = {f for f in families if any(m == f or m.startswith(f + "_") for m in used["dashboard"])}
    assert shown == families, families - shown
