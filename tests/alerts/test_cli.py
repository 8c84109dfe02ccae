"""`meterstream alerts ...` against the real API: the CLI is a client of the routes."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from typer.testing import CliRunner

from meterstream.cli import app
from tests.alerts.conftest import RunningApi, Tenant

pytestmark = pytest.mark.integration


def test_cli_creates_an_endpoint_and_a_rule_and_lists_them(
    alerts_api: RunningApi, tenant: Callable[..., Tenant]
) -> None:
    org = tenant(1)
    runner = CliRunner()
    env = {"METERSTREAM_API_URL": alerts_api.url, "METERSTREAM_TOKEN": org.tokens["admin"]}
    rule = {"kind": "usage_threshold", "name": "cli", "meter": "api_calls", "thresholds": [3]}

    endpoint = runner.invoke(
        app,
        [
            "alerts",
            "endpoints",
            "create",
            "http://127.0.0.1:9/hook",
            "--event-type",
            "io.meterstream.*",
        ],
        env=env,
    )
    created = runner.invoke(
        app, ["alerts", "rules", "create", "-"], input=json.dumps(rule), env=env
    )
    listed = runner.invoke(app, ["alerts", "rules", "list"], env=env)
    bad = runner.invoke(app, ["alerts", "rules", "create", "-"], input="{nope", env=env)
    refused = runner.invoke(
        app, ["alerts", "rules", "create", "-"], input=json.dumps(rule | {"meter": "x"}), env=env
    )

    assert endpoint.exit_code == 0, endpoint.output
    assert json.loads(endpoint.stdout)["secret"].startswith("whsec_")
    assert created.exit_code == 0, created.output
    rule_id = json.loads(created.stdout)["rule_id"]
    assert [r["rule_id"] for r in json.loads(listed.stdout)["items"]] == [rule_id]
    assert bad.exit_code == 1 and "not JSON" in bad.output
    assert refused.exit_code == 1 and "no meter" in refused.output
