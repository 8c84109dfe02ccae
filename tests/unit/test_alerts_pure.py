"""Unit tests for the alerts' pure parts: signatures, notification types, retries, URLs, rules."""

from __future__ import annotations

import json
from datetime import date, timedelta
from decimal import Decimal

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from meterstream.alerts.model import (
    OPERATOR_KINDS,
    RuleError,
    RuleKind,
    parse_rule,
    usage_target,
)
from meterstream.alerts.notifications import (
    NotificationType,
    cloud_event,
    health_type,
    matches,
    valid_filter,
)
from meterstream.alerts.retry import retry_delay, schedule
from meterstream.alerts.signing import new_secret, signed_headers
from meterstream.alerts.urls import url_problem
from meterstream.config import AlertsSettings
from meterstream.meters.registry import MeterRegistry, parse_meter

BODY = b'{"type":"io.meterstream.usage.threshold_reached"}'


# --- signing --------------------------------------------------------------------------------


def test_signed_headers_give_id_timestamp_and_a_v1_signature() -> None:
    headers = signed_headers([new_secret()], "n-1", 1_700_000_000, BODY)

    assert headers["webhook-id"] == "n-1"
    assert headers["webhook-timestamp"] == "1700000000"
    assert headers["webhook-signature"].startswith("v1,")


def test_signed_headers_now_pass_verification_and_a_tampered_body_does_not() -> None:
    import time  # noqa: PLC0415

    secret, other = new_secret(), new_secret()
    headers = signed_headers([secret], "n-1", int(time.time()), BODY)

    assert Webhook(secret).verify(BODY, headers) == json.loads(BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY + b" ", headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(BODY, headers)


def test_signed_headers_during_rotation_carry_two_signatures_each_valid() -> None:
    import time  # noqa: PLC0415

    old, new = new_secret(), new_secret()
    headers = signed_headers([new, old], "n-2", int(time.time()), BODY)

    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(BODY, headers)
    Webhook(new).verify(BODY, headers)


def test_new_secret_is_whsec_and_256_bits() -> None:
    import base64  # noqa: PLC0415

    secret = new_secret()

    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert new_secret() != secret


# --- notification types ---------------------------------------------------------------------


def test_every_health_kind_has_a_reached_and_recovered_type() -> None:
    for kind in RuleKind:
        if kind is RuleKind.USAGE_THRESHOLD:
            continue
        assert health_type(kind.value, recovered=False).value.endswith(f"{kind.value}.reached")
        assert health_type(kind.value, recovered=True).value.endswith(f"{kind.value}.recovered")


def test_matches_exact_prefix_and_everything() -> None:
    threshold = NotificationType.THRESHOLD_REACHED.value

    assert matches([], threshold)
    assert matches(["io.meterstream.usage.*"], threshold)
    assert matches(["io.meterstream.*"], threshold)
    assert not matches(["io.meterstream.health.*"], threshold)
    assert not matches(["io.meterstream.usage.threshold"], threshold)
    assert valid_filter("*")
    assert not valid_filter("io.other.*")


def test_cloud_event_is_cloudevents_1_0_with_decimals_as_strings() -> None:
    doc = json.loads(
        cloud_event("id-1", NotificationType.THRESHOLD_REACHED, "acct", {"q": Decimal("1.5")})
    )

    assert doc["specversion"] == "1.0"
    assert doc["id"] == "id-1"
    assert doc["subject"] == "acct"
    assert doc["datacontenttype"] == "application/json"
    assert doc["data"] == {"q": "1.5"}
    assert doc["time"].endswith("Z")


# --- retries --------------------------------------------------------------------------------


def test_default_retries_span_more_than_a_day_and_grow() -> None:
    waits = schedule(AlertsSettings())

    assert sum(waits, timedelta()) > timedelta(days=1)
    assert waits == sorted(waits)
    assert max(waits) == timedelta(hours=10)


def test_retry_delay_is_capped_for_any_attempt_count() -> None:
    settings = AlertsSettings(retry_base_ms=200, retry_multiplier=2, retry_max_delay_ms=1_000)

    assert [retry_delay(n, settings).total_seconds() for n in (1, 2, 3, 4)] == [0.2, 0.4, 0.8, 1.0]
    assert retry_delay(10_000, settings) == timedelta(seconds=1)


# --- URLs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://10.0.0.8/x",
        "http://192.168.1.1/x",
        "http://172.16.0.1/x",
        "http://169.254.169.254/latest",
        "http://[::1]/x",
        "http://[fd00::1]/x",
        "http://[::ffff:10.0.0.1]/x",
        "http://0.0.0.0/x",
        "http://224.0.0.1/x",
    ],
)
def test_url_problem_refuses_private_addresses(url: str) -> None:
    assert "private" in (url_problem(url, allow_private=False) or "")
    assert url_problem(url, allow_private=True) is None


def test_url_problem_checks_what_a_name_resolves_to() -> None:
    def resolver(host: str) -> list[str]:
        return {"inside.example": ["10.1.1.1"], "outside.example": ["93.184.215.14"]}.get(host, [])

    assert "10.1.1.1" in (
        url_problem("https://inside.example/h", allow_private=False, resolver=resolver) or ""
    )
    assert url_problem("https://outside.example/h", allow_private=False, resolver=resolver) is None
    assert "does not resolve" in (
        url_problem("https://nowhere.example/h", allow_private=False, resolver=resolver) or ""
    )


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://93.184.215.14/", "https:// or http://"),
        ("https:///path", "no host"),
        ("https://user:pw@93.184.215.14/", "user name"),
        ("https://93.184.215.14:99999/", "not a URL"),
    ],
)
def test_url_problem_refuses_other_bad_urls(url: str, problem: str) -> None:
    assert problem in (url_problem(url, allow_private=True) or "")


# --- rules ----------------------------------------------------------------------------------


def meter(name: str, aggregation: str, group_by: list[str]) -> dict[str, object]:
    fields = [{"name": "v", "type": "long"}] + [{"name": g, "type": "string"} for g in group_by]
    return {
        "type": "record",
        "name": name.title().replace("_", ""),
        "fields": fields,
        "meterstream": {
            "meter": name,
            "version": 1,
            "aggregation": aggregation,
            **({"value_field": "v"} if aggregation != "COUNT" else {}),
            "group_by": group_by,
        },
    }


@pytest.fixture
def meters() -> MeterRegistry:
    docs = [
        meter("summed", "SUM", ["region"]),
        meter("latest_by", "LATEST", ["region"]),
        meter("plain", "MEAN", []),
        meter("peaks", "MAX", ["region"]),
    ]
    return MeterRegistry({d["meterstream"]["meter"]: {1: parse_meter(d, "test")} for d in docs})  # type: ignore[index]


def rule(**changes: object) -> dict[str, object]:
    return {"kind": "usage_threshold", "name": "r", "meter": "summed", "thresholds": [5]} | changes


def test_usage_target_combines_segments_by_aggregation(meters: MeterRegistry) -> None:
    today = date(2026, 11, 17)

    summed = usage_target(parse_rule(rule()), meters, today)  # type: ignore[arg-type]
    peaks = usage_target(parse_rule(rule(meter="peaks")), meters, today)  # type: ignore[arg-type]
    plain = usage_target(parse_rule(rule(meter="plain")), meters, today)  # type: ignore[arg-type]

    assert (summed.combine, peaks.combine, plain.combine) == ("sum", "max", "sum")
    assert summed.segment is None
    assert summed.from_period == date(2026, 11, 1) and summed.only_period is None


def test_usage_target_refuses_a_whole_figure_that_cannot_be_combined(meters: MeterRegistry) -> None:
    with pytest.raises(RuleError, match="give a segment"):
        usage_target(parse_rule(rule(meter="latest_by")), meters, date(2026, 11, 1))  # type: ignore[arg-type]
    segment = usage_target(
        parse_rule(rule(meter="latest_by", segment={"region": "eu"})),  # type: ignore[arg-type]
        meters,
        date(2026, 11, 1),
    )
    assert segment.segment == '{"region":"eu"}'


def test_usage_target_segment_is_canonical_like_the_pipeline(meters: MeterRegistry) -> None:
    from meterstream.rules.validate import CompiledMeter  # noqa: PLC0415

    target = usage_target(
        parse_rule(rule(segment={"region": "eu"})),
        meters,
        date(2026, 11, 1),  # type: ignore[arg-type]
    )
    compiled = CompiledMeter.compile(meters.current("summed"))  # type: ignore[arg-type]

    assert target.segment == compiled.dimensions({"v": 1, "region": "eu"})


def test_usage_target_period_options(meters: MeterRegistry) -> None:
    only = usage_target(parse_rule(rule(period="2026-09")), meters, date(2026, 11, 3))  # type: ignore[arg-type]
    since = usage_target(parse_rule(rule(from_period="2026-08-01")), meters, date(2026, 11, 3))  # type: ignore[arg-type]

    assert (only.from_period, only.only_period) == (date(2026, 9, 1), date(2026, 9, 1))
    assert (since.from_period, since.only_period) == (date(2026, 8, 1), None)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (rule(thresholds=[]), "give thresholds"),
        (rule(thresholds=["NaN"]), "thresholds"),
        (rule(thresholds=["1e40"]), "below"),
        (rule(recurring_every=0), "recurring_every"),
        (rule(account="not an id!"), "account"),
        ({"kind": "rejections", "name": "r", "above": -1}, "above"),
        ({"kind": "rejections", "name": "r", "above": 1, "window_seconds": 0}, "window_seconds"),
        ({"kind": "quota", "name": "q", "percent": 101}, "percent"),
        ({"kind": "freshness", "name": "f"}, "above_seconds"),
        ({"kind": "job_not_running"}, "name"),
    ],
)
def test_parse_rule_says_what_is_wrong(raw: dict[str, object], problem: str) -> None:
    with pytest.raises(RuleError, match=problem):
        parse_rule(raw)


def test_operator_kinds_are_the_shared_pipeline_ones() -> None:
    assert {k.value for k in OPERATOR_KINDS} == {"job_not_running", "consumer_lag", "freshness"}
