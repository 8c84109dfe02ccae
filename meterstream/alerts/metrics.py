"""Prometheus metrics of the alerts service (its own `/metrics`, `alerts.metrics_port`).

Labels never carry an organisation, account, rule or endpoint id: the series count stays fixed.
`ops/prometheus/meterstream.rules.yml` and `ops/grafana/meterstream.json` use these names.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600, 86_400)


class AlertMetrics:
    """The service's counters, gauges and histograms, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.passes = Counter(
            "meterstream_alerts_evaluation_passes",
            "Evaluation passes over the figures, by kind (incremental, backfill, rescan, recalc).",
            ["kind"],
            registry=r,
        )
        self.pass_seconds = Histogram(
            "meterstream_alerts_evaluation_seconds",
            "Time one evaluation pass took, by kind.",
            ["kind"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60),
            registry=r,
        )
        self.evaluator_lag = Gauge(
            "meterstream_alerts_evaluator_lag_seconds",
            "How far behind the evaluator's watermark is (now - the newest figure change read).",
            registry=r,
        )
        self.firings = Counter(
            "meterstream_alerts_firings",
            "Usage thresholds reached (each once per rule, account, period and threshold).",
            registry=r,
        )
        self.lowered = Counter(
            "meterstream_alerts_thresholds_lowered",
            "Fired thresholds that a recalculation took the figure back below.",
            registry=r,
        )
        self.health_transitions = Counter(
            "meterstream_alerts_health_transitions",
            "Health conditions reached or recovered, by rule kind and transition.",
            ["kind", "transition"],
            registry=r,
        )
        self.health_firing = Gauge(
            "meterstream_alerts_health_conditions_firing",
            "Health conditions that are firing now, by rule kind.",
            ["kind"],
            registry=r,
        )
        self.health_errors = Counter(
            "meterstream_alerts_health_check_errors",
            "Health checks that could not be made (the condition is left as it was), by kind.",
            ["kind"],
            registry=r,
        )
        self.notifications = Counter(
            "meterstream_alerts_notifications",
            "Notifications written to the outbox, by CloudEvents type.",
            ["type"],
            registry=r,
        )
        self.attempts = Counter(
            "meterstream_alerts_delivery_attempts",
            "Webhook delivery attempts, by outcome (delivered, failed).",
            ["outcome"],
            registry=r,
        )
        self.attempt_seconds = Histogram(
            "meterstream_alerts_delivery_attempt_seconds",
            "Time of one webhook request, answer or not.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.delivery_latency = Histogram(
            "meterstream_alerts_delivery_latency_seconds",
            "From a notification's decision to its first delivery to an endpoint (2xx).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.exhausted = Counter(
            "meterstream_alerts_deliveries_exhausted",
            "Deliveries given up after the last attempt failed (resend them through the API).",
            registry=r,
        )
        self.endpoints_disabled = Counter(
            "meterstream_alerts_endpoints_disabled",
            "Endpoints disabled after sustained failure.",
            registry=r,
        )
        self.pending = Gauge(
            "meterstream_alerts_deliveries_pending",
            "Deliveries waiting for an attempt (due now or scheduled for a retry).",
            registry=r,
        )
        self.oldest_pending = Gauge(
            "meterstream_alerts_oldest_pending_delivery_seconds",
            "Age of the oldest pending delivery to an enabled endpoint (0: none).",
            registry=r,
        )
        self.errors = Counter(
            "meterstream_alerts_loop_errors",
            "Errors that stopped one round of a loop (PostgreSQL down, ...), by loop.",
            ["loop"],
            registry=r,
        )
