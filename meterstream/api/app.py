"""The ASGI app factory: `create_app(settings, producer)` wires routes, errors and metrics.

The producer is passed in (a `KafkaEventProducer` in `meterstream serve`, a fake in unit
tests) and is owned by the caller, which closes it after the server stops.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import psycopg_pool
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from meterstream.api import alerts, corrections, health, ingest, reads, uploads
from meterstream.api.auth import Authenticator
from meterstream.api.context import AccountDirectory, ApiContext
from meterstream.api.errors import ApiError, ErrorCode, handle_api_error
from meterstream.api.metrics import ApiMetrics
from meterstream.api.outage import PostgresWatch, QuotaKeeper
from meterstream.api.producer import EventProducer
from meterstream.api.ratelimit import RateLimiter
from meterstream.api.store import Store
from meterstream.config import Settings
from meterstream.corrections.outbox import Relay

log = logging.getLogger(__name__)

OPEN_PATHS = ("/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")
#: The youngest generation's collection threshold of a serving process (CPython's default: 700).
GC_THRESHOLD = 50_000


class MetricsMiddleware:
    """Counts every answer by route template, method and status, and times it."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; count and time its answer."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(name, scope["method"], str(status)).inc()
            self.metrics.latency.labels(name).observe(time.perf_counter() - started)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    detail = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in errors
    )
    return ApiError(400, ErrorCode.BAD_REQUEST, detail or "invalid request").response()


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    status = exc.status_code if isinstance(exc, StarletteHTTPException) else 500
    code = ErrorCode.NOT_FOUND if status == 404 else ErrorCode.BAD_REQUEST  # noqa: PLR2004
    detail = exc.detail if isinstance(exc, StarletteHTTPException) else "error"
    headers = dict(exc.headers or {}) if isinstance(exc, StarletteHTTPException) else {}
    return ApiError(status, code, str(detail), headers=headers).response()


async def _database_down(_request: Request, _exc: Exception) -> JSONResponse:
    return ApiError(
        503,
        ErrorCode.DATABASE_UNAVAILABLE,
        "PostgreSQL is unavailable; try again",
        headers={"Retry-After": "5"},
    ).response()


async def _bad_data(_request: Request, exc: Exception) -> JSONResponse:
    return ApiError(400, ErrorCode.BAD_REQUEST, f"invalid value: {exc}").response()


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "ms_<id>_<secret>"}
        }
        for path, operations in schema.get("paths", {}).items():
            if path not in OPEN_PATHS:
                for operation in operations.values():
                    operation["security"] = [{"bearer": []}]
        app.openapi_schema = schema
    return app.openapi_schema


def create_app(
    settings: Settings,
    producer: EventProducer,
    *,
    store: Store | None = None,
    close_producer: bool = False,
) -> FastAPI:
    """The ingest API, sending accepted events with `producer` to `settings.kafka.topics.raw`.

    The caller closes `producer` after the server stops, unless `close_producer` is set:
    then the app does when it shuts down.
    """
    store = store or Store(settings, max_size=20)
    metrics = ApiMetrics()
    ttl = settings.api.token_cache_seconds
    # PostgreSQL down: ingestion goes on from the last good state (meterstream/api/outage.py).
    watch = PostgresWatch(store)
    stale = settings.api.max_staleness_seconds
    quota = QuotaKeeper(store, watch, stale)
    metrics.watch_postgres(lambda: watch.up, lambda: quota.unreconciled)
    # Corrections recorded but not yet acknowledged by Kafka are retried from here.
    relay = Relay(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await store.open()
        relay.start()
        try:
            yield
        finally:
            await relay.stop()
            await watch.close()
            await _reconcile_before_exit(quota)
            await store.close()
            if close_producer:
                producer.close()

    app = FastAPI(
        title="meterstream ingest API",
        version="1",
        description=(
            "Usage events in (CloudEvents 1.0), usage totals and the validation log out. "
            "Every route except /health needs `Authorization: Bearer <token>`."
        ),
        lifespan=lifespan,
    )
    app.state.ctx = ApiContext(
        settings=settings,
        producer=producer,
        store=store,
        auth=Authenticator(store, ttl, watch=watch, staleness_s=stale),
        accounts=AccountDirectory(store, ttl, watch=watch, staleness_s=stale),
        limiter=RateLimiter(),
        metrics=metrics,
        watch=watch,
        quota=quota,
    )
    app.add_exception_handler(ApiError, handle_api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(psycopg.OperationalError, _database_down)
    app.add_exception_handler(psycopg_pool.PoolTimeout, _database_down)
    app.add_exception_handler(psycopg.DataError, _bad_data)
    for module in (ingest, uploads, reads, health, alerts, corrections):
        app.include_router(module.router)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


async def _reconcile_before_exit(quota: QuotaKeeper) -> None:
    """Add quota use counted during an outage to PostgreSQL before the process ends."""
    if not quota.unreconciled:
        return
    try:
        await quota.reconcile()
    except Exception:  # noqa: BLE001 - still down: say what is lost, and stop anyway
        log.exception(
            "PostgreSQL is unavailable: %d events accepted during the outage are not added to"
            " the accounts' daily quota counts",
            quota.unreconciled,
        )


def tune_gc() -> None:
    """Make the cyclic garbage collector cheap for a server that handles 1,000-event batches.

    A batch makes several container objects per event and keeps them through its awaits, so
    with the default thresholds the collector runs about ten times per request and keeps
    promoting live batches into the old generation, whose full collections walk the whole
    heap: a quarter of the API's CPU time in a profile. Freezing what start-up created and
    collecting the youngest generation less often cut the server's CPU per 1,000-event
    request by about 40% (docs/benchmarks.md). Request objects are acyclic and are freed by
    reference counting anyway; cycles are still collected, later.
    """
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, middle, old)


def worker_app() -> FastAPI:
    """The app of one process of `meterstream serve --workers N` (a uvicorn app factory).

    Each process has its own settings (from the environment `serve` set up), Kafka producer
    and rate-limit buckets.
    """
    from meterstream.api.producer import KafkaEventProducer  # noqa: PLC0415
    from meterstream.config import load_settings  # noqa: PLC0415

    settings = load_settings()
    app = create_app(settings, KafkaEventProducer(settings), close_producer=True)
    tune_gc()
    return app
