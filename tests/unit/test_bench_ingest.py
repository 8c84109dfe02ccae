"""How the bench's ingest phase turns rounds into figures (no Kafka, no server: their stand-ins)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from meterstream.bench import ingest
from meterstream.config import load_settings


def _rounds(
    monkeypatch: pytest.MonkeyPatch, raw: list[float], api: list[float | OSError]
) -> tuple[ingest.ProduceFigures, ingest.ApiFigures]:
    """`measure_ingest` with raw produce and the API's passes replaced by these rates."""
    settings = load_settings()
    server = ingest._ApiServer(settings, {}, "org", "token", 1, [(1_000, b"[]")] * 10)  # noqa: SLF001
    raws, passes = iter(raw), iter(api)

    def produce(*_args: object) -> tuple[float, list[float]]:
        return next(raws), [0.005] * 10

    def post_all(_self: object) -> ingest._Pass:  # noqa: SLF001
        rate = next(passes)
        if isinstance(rate, OSError):
            raise rate
        return ingest._Pass(10_000 / rate, [40.0] * 10, 10_000, {202: 10}, {"server": 0.1})  # noqa: SLF001

    @contextlib.contextmanager
    def start(*_args: object) -> Iterator[ingest._ApiServer]:  # noqa: SLF001
        yield server

    monkeypatch.setattr(ingest, "batch_produce", produce)
    monkeypatch.setattr(ingest._ApiServer, "post_all", post_all)  # noqa: SLF001
    monkeypatch.setattr(ingest._ApiServer, "start", start)  # noqa: SLF001
    return ingest.measure_ingest(settings, "t", [], 0.0, rounds=len(raw))


def test_each_figure_is_its_median_round(monkeypatch: pytest.MonkeyPatch) -> None:
    produce, api = _rounds(monkeypatch, [200e3, 150e3, 260e3], [90e3, 120e3, 110e3])
    assert produce.batch_events_per_s == 200e3
    assert produce.batch_rounds == (200e3, 150e3, 260e3)
    assert api.events_per_s == pytest.approx(110e3)
    assert api.rounds == pytest.approx((90e3, 120e3, 110e3))
    assert api.cpu_ms_per_request == {"server": pytest.approx(1000 * 0.3 / 30)}


def test_an_api_that_fails_a_round_is_reported_and_the_baseline_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    refused = ConnectionRefusedError("refused")
    produce, api = _rounds(monkeypatch, [200e3, 150e3, 260e3], [90e3, refused])
    assert api.status == "failed"
    assert api.events_per_s is None
    assert "round 2" in api.detail
    assert "refused" in api.detail
    assert produce.batch_rounds == (200e3, 150e3, 260e3)
