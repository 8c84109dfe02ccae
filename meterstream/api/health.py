"""`GET /health` (liveness), `GET /health/ready` (dependencies) and `GET /metrics` (Prometheus).

Ready means: Kafka answers and has the raw topic, and PostgreSQL answers. The Flink job's
state, its consumer lag and the last minute's event counts are reported but do not make the
service unready: ingestion works while the job is down, the events wait in Kafka.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from typing import Annotated, Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from fastapi import APIRouter, Depends, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import JSONResponse, PlainTextResponse, Response

from meterstream.api.auth import Principal, Scope
from meterstream.api.context import authorize, context
from meterstream.config import Settings
from meterstream.stack.kafka import admin_config

router = APIRouter(tags=["health"])

CHECK_TIMEOUT_S = 3.0


async def operator_admin(request: Request) -> Principal:
    """The caller, who must be an admin token of the operator organisation."""
    return await authorize(request, Scope.ADMIN, operator=True)


def _kafka_client(settings: Settings) -> dict[str, Any]:
    return {"bootstrap.servers": settings.kafka.bootstrap_servers, "socket.timeout.ms": 2000}


def last_minute(consumer: Consumer, topic: str, partitions: list[int]) -> int:
    """Records appended to `topic` in the last 60 s (end offsets minus offsets at now-60s)."""
    since_ms = int((time.time() - 60) * 1000)
    asked = [TopicPartition(topic, p, since_ms) for p in partitions]
    found = consumer.offsets_for_times(asked, timeout=2)
    total = 0
    for tp in found:
        if tp.offset < 0:
            continue  # nothing newer than the timestamp
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=2)
        total += max(0, high - tp.offset)
    return total


#: A broker that has just started answers "not coordinator" for a moment: retry that.
COMMITTED_ATTEMPTS = 4
TRANSIENT = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
    }
)


def committed_offsets(consumer: Consumer, partitions: list[TopicPartition]) -> list[TopicPartition]:
    """The group's committed offsets, retrying transient coordinator errors (for ~2 s)."""
    for attempt in range(COMMITTED_ATTEMPTS):
        try:
            return consumer.committed(partitions, timeout=2)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            retriable = isinstance(error, KafkaError) and (
                error.retriable() or error.code() in TRANSIENT
            )
            if not retriable or attempt == COMMITTED_ATTEMPTS - 1:
                raise
            time.sleep(0.5)
    return []


def kafka_report(settings: Settings) -> dict[str, Any]:
    """Broker reachability, the raw topic, the job's consumer lag, last-minute counts."""
    topics = settings.kafka.topics
    try:
        admin = AdminClient(admin_config(settings) | _kafka_client(settings))
        metadata = admin.list_topics(timeout=2)
    except Exception as exc:  # noqa: BLE001 - any failure is "not reachable"
        return {"ok": False, "error": str(exc)}
    if topics.raw not in metadata.topics:
        return {"ok": False, "error": f"topic {topics.raw} does not exist"}
    report: dict[str, Any] = {"ok": True, "brokers": len(metadata.brokers)}
    raw_partitions = sorted(metadata.topics[topics.raw].partitions)
    consumer = Consumer(
        {
            **_kafka_client(settings),
            "group.id": settings.flink.consumer_group,
            "enable.auto.commit": False,
        }
    )
    try:
        report["events_in_last_minute"] = last_minute(consumer, topics.raw, raw_partitions)
        committed = committed_offsets(
            consumer, [TopicPartition(topics.raw, p) for p in raw_partitions]
        )
        lag, known = 0, False
        for tp in committed:
            _, high = consumer.get_watermark_offsets(TopicPartition(topics.raw, tp.partition), 2)
            if tp.offset >= 0:
                known = True
                lag += max(0, high - tp.offset)
        report["consumer_lag"] = lag if known else None
        if topics.rejected in metadata.topics:
            report["pipeline_rejected_last_minute"] = last_minute(
                consumer, topics.rejected, sorted(metadata.topics[topics.rejected].partitions)
            )
    except Exception as exc:  # noqa: BLE001 - partial information is still reported
        report["detail_error"] = str(exc)
    finally:
        consumer.close()
    return report


def flink_report(settings: Settings) -> dict[str, Any]:
    """The aggregation job's state from the Flink REST API, if a cluster answers."""
    url = f"http://127.0.0.1:{settings.flink.rest_port}/jobs/overview"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our loopback URL
            jobs = json.loads(response.read()).get("jobs", [])
    except (OSError, ValueError) as exc:
        return {"reachable": False, "job_state": None, "error": str(exc)}
    ours = sorted(
        (j for j in jobs if j.get("name") == settings.flink.job_name),
        key=lambda j: j.get("start-time", 0),
    )
    return {
        "reachable": True,
        "job_state": ours[-1].get("state") if ours else "NOT_SUBMITTED",
        "jobs": [
            {"id": j.get("jid"), "name": j.get("name"), "state": j.get("state")} for j in jobs
        ],
    }


@router.get("/health", summary="Liveness: the process answers", tags=["health"])
async def health() -> dict[str, str]:
    """Always `{"status": "ok"}` while the process serves requests. No token needed."""
    return {"status": "ok"}


@router.get(
    "/health/ready",
    summary="Readiness: Kafka, PostgreSQL, the Flink job, lag and event rates",
    responses={503: {"description": "Kafka or PostgreSQL is unavailable"}},
)
async def ready(
    request: Request, _principal: Annotated[Principal, Depends(operator_admin)]
) -> JSONResponse:
    """200 when Kafka and PostgreSQL answer, else 503; the body says what each check found."""
    ctx = context(request)

    async def postgres() -> dict[str, Any]:
        try:
            await asyncio.wait_for(ctx.store.ping(), CHECK_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - any failure is "not reachable"
            return {"ok": False, "error": str(exc) or type(exc).__name__}
        return {"ok": True}

    async def in_thread(fn: Any) -> dict[str, Any]:
        try:
            return await asyncio.wait_for(asyncio.to_thread(fn, ctx.settings), CHECK_TIMEOUT_S * 3)
        except TimeoutError:
            return {"ok": False, "error": "timed out"}

    kafka, pg, flink = await asyncio.gather(
        in_thread(kafka_report), postgres(), in_thread(flink_report)
    )
    ok = bool(kafka.get("ok") and pg.get("ok"))
    body = {
        "status": "ready" if ok else "unavailable",
        "kafka": kafka,
        "postgres": pg,
        "flink": flink,
        "api": {
            "accepted_last_minute": ctx.metrics.accepted_window.total(),
            "rejected_last_minute": ctx.metrics.rejected_window.total(),
            # False: POST /v1/events decides from the last good state (outage.py).
            "postgres_up": ctx.watch.up,
            "quota_unreconciled_events": ctx.quota.unreconciled,
        },
    }
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/metrics", summary="Prometheus metrics of this API instance", response_class=Response)
async def metrics(
    request: Request, _principal: Annotated[Principal, Depends(operator_admin)]
) -> PlainTextResponse:
    """The Prometheus text format; scrape with the operator's admin token."""
    ctx = context(request)
    return PlainTextResponse(
        generate_latest(ctx.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )
