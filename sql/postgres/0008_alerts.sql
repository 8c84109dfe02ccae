-- Alerts issue (#17): alert rules, the notification outbox, webhook endpoints and their
-- delivery log. Written by the ingest API (rules, endpoints, resends) and by the alerts service
-- (`meterstream alerts serve`: evaluator, health checks, notifier). See docs/alerts.md.

-- Tokens may carry the alerts scopes.
ALTER TABLE api_tokens DROP CONSTRAINT IF EXISTS api_tokens_scopes;
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_scopes
    CHECK (scopes <@ ARRAY['ingest:write', 'usage:read', 'admin', 'alerts:write', 'alerts:read']);

CREATE TABLE IF NOT EXISTS alert_rules (
    rule_id         uuid          PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id          text          NOT NULL REFERENCES organisations (org_id),
    name            text          NOT NULL,
    kind            text          NOT NULL CHECK (kind IN ('usage_threshold', 'rejections',
                        'job_not_running', 'consumer_lag', 'freshness', 'quota',
                        'deprecated_schema', 'late_events')),
    spec            jsonb         NOT NULL,
    enabled         boolean       NOT NULL DEFAULT true,
    -- A usage threshold's target, copied out of `spec` for the evaluator's join (NULL else).
    account_id      text,
    meter           text,
    segment         text,
    combine         text          CHECK (combine IN ('sum', 'max', 'min')),
    thresholds      numeric(38, 9)[],
    recurring_every numeric(38, 9),
    from_period     date,
    only_period     date,
    created_at      timestamptz   NOT NULL DEFAULT now(),
    updated_at      timestamptz   NOT NULL DEFAULT now(),
    evaluated_at    timestamptz
);
COMMENT ON TABLE alert_rules IS
    'Alert rules of each organisation: usage thresholds and ingestion-health conditions. `spec` '
    'is the rule as the API received it (docs/alerts.md); the other columns are derived from it.';
COMMENT ON COLUMN alert_rules.account_id IS 'usage_threshold: the account; NULL: every account of the organisation.';
COMMENT ON COLUMN alert_rules.segment IS
    'usage_threshold: the segment as usage_aggregates.dimensions spells it; NULL: the meter''s whole figure.';
COMMENT ON COLUMN alert_rules.combine IS
    'usage_threshold: how the figures of a segmented meter''s segments make the whole (sum, max, min).';
COMMENT ON COLUMN alert_rules.thresholds IS 'usage_threshold: absolute quantities, in the meter''s unit.';
COMMENT ON COLUMN alert_rules.recurring_every IS
    'usage_threshold: then every this many units above the highest threshold (meter''s unit); NULL: none.';
COMMENT ON COLUMN alert_rules.from_period IS 'usage_threshold: the first billing period the rule watches.';
COMMENT ON COLUMN alert_rules.only_period IS 'usage_threshold: the one billing period it watches; NULL: every one from from_period.';
COMMENT ON COLUMN alert_rules.evaluated_at IS
    'When the evaluator first evaluated the rule against the figures that existed (NULL: not yet).';
CREATE INDEX IF NOT EXISTS alert_rules_by_org ON alert_rules (org_id, created_at);
CREATE INDEX IF NOT EXISTS alert_rules_usage ON alert_rules (meter)
    WHERE kind = 'usage_threshold' AND enabled;

-- The outbox: one row per notification, written in the transaction that decided it.
CREATE TABLE IF NOT EXISTS alert_notifications (
    notification_id uuid          PRIMARY KEY,
    org_id          text          NOT NULL REFERENCES organisations (org_id),
    type            text          NOT NULL,
    subject         text          NOT NULL,
    rule_id         uuid,
    body            text          NOT NULL,
    created_at      timestamptz   NOT NULL DEFAULT now()
);
COMMENT ON TABLE alert_notifications IS
    'Every notification decided (the outbox): a CloudEvents 1.0 JSON document, sent byte for byte '
    'as `body` on every attempt to every endpoint. notification_id is its id and the webhook-id.';
CREATE INDEX IF NOT EXISTS alert_notifications_by_org
    ON alert_notifications (org_id, created_at, notification_id);

-- Exactly once per crossing: the primary key is (rule, account, period, threshold), and a
-- firing is inserted in the same transaction as its notification.
CREATE TABLE IF NOT EXISTS alert_firings (
    rule_id          uuid           NOT NULL REFERENCES alert_rules (rule_id) ON DELETE CASCADE,
    account_id       text           NOT NULL,
    period_start     date           NOT NULL,
    threshold        numeric(38, 9) NOT NULL,
    quantity         numeric(38, 9) NOT NULL,
    notification_id  uuid           NOT NULL,
    fired_at         timestamptz    NOT NULL DEFAULT now(),
    lowered_at       timestamptz,
    lowered_quantity numeric(38, 9),
    lowered_run_id   uuid,
    PRIMARY KEY (rule_id, account_id, period_start, threshold)
);
COMMENT ON TABLE alert_firings IS
    'Each usage threshold reached, once per (rule, account, period, threshold), with the figure '
    'when it was reached (meter''s unit). lowered_*: a recalculation later took the figure below '
    'the threshold (the firing stays; the threshold does not fire again).';
COMMENT ON COLUMN alert_firings.lowered_quantity IS
    'The figure after the recalculation (meter''s unit); NULL when it removed the figure.';

-- Ingestion-health conditions: ok -> pending (true, waiting for_seconds) -> firing -> ok.
CREATE TABLE IF NOT EXISTS alert_health_state (
    rule_id         uuid        NOT NULL REFERENCES alert_rules (rule_id) ON DELETE CASCADE,
    subject         text        NOT NULL,
    state           text        NOT NULL CHECK (state IN ('pending', 'firing')),
    since           timestamptz NOT NULL,
    value           text        NOT NULL DEFAULT '',
    notification_id uuid,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rule_id, subject)
);
COMMENT ON TABLE alert_health_state IS
    'Health conditions that hold now (pending: not yet for the rule''s for_seconds; firing: a '
    '`reached` notification went out). A row is deleted when its condition clears (and a '
    '`recovered` notification goes out if it was firing). subject: '''' or the account.';

CREATE TABLE IF NOT EXISTS alert_endpoints (
    endpoint_id                uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id                     text        NOT NULL REFERENCES organisations (org_id),
    url                        text        NOT NULL,
    description                text        NOT NULL DEFAULT '',
    event_types                text[]      NOT NULL DEFAULT '{}',
    secret                     text        NOT NULL,
    previous_secret            text,
    previous_secret_expires_at timestamptz,
    enabled                    boolean     NOT NULL DEFAULT true,
    disabled_at                timestamptz,
    disabled_reason            text        NOT NULL DEFAULT '',
    failing_since              timestamptz,
    consecutive_failures       integer     NOT NULL DEFAULT 0,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE alert_endpoints IS
    'Webhook endpoints of each organisation. event_types: the CloudEvents types it receives '
    '(exact, or a prefix ending in *; empty: all). secret: whsec_<base64>, the Standard Webhooks '
    'signing key; previous_secret signs too until previous_secret_expires_at (rotation).';
COMMENT ON COLUMN alert_endpoints.failing_since IS
    'The first failed attempt since the last success; NULL while the endpoint answers 2xx.';
CREATE INDEX IF NOT EXISTS alert_endpoints_by_org ON alert_endpoints (org_id, created_at);

CREATE TABLE IF NOT EXISTS alert_deliveries (
    notification_id    uuid        NOT NULL
        REFERENCES alert_notifications (notification_id) ON DELETE CASCADE,
    endpoint_id        uuid        NOT NULL REFERENCES alert_endpoints (endpoint_id) ON DELETE CASCADE,
    org_id             text        NOT NULL,
    state              text        NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts           integer     NOT NULL DEFAULT 0,
    next_attempt_at    timestamptz NOT NULL DEFAULT now(),
    last_response_code integer,
    last_error         text        NOT NULL DEFAULT '',
    delivered_at       timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (notification_id, endpoint_id)
);
COMMENT ON TABLE alert_deliveries IS
    'One notification to one endpoint: pending (next attempt at next_attempt_at, which is also '
    'the lease of an attempt in flight), delivered (a 2xx), or failed (max attempts used).';
CREATE INDEX IF NOT EXISTS alert_deliveries_due ON alert_deliveries (next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS alert_deliveries_by_endpoint ON alert_deliveries (endpoint_id, state);

CREATE TABLE IF NOT EXISTS alert_delivery_attempts (
    attempt_id      bigserial   PRIMARY KEY,
    notification_id uuid        NOT NULL,
    endpoint_id     uuid        NOT NULL,
    org_id          text        NOT NULL,
    attempt         integer     NOT NULL,
    started_at      timestamptz NOT NULL,
    duration_ms     integer     NOT NULL,
    outcome         text        NOT NULL CHECK (outcome IN ('delivered', 'failed')),
    response_code   integer,
    error           text        NOT NULL DEFAULT '',
    FOREIGN KEY (notification_id, endpoint_id)
        REFERENCES alert_deliveries (notification_id, endpoint_id) ON DELETE CASCADE
);
COMMENT ON TABLE alert_delivery_attempts IS
    'The delivery log: every attempt, its outcome, the HTTP status (NULL: no answer) and error.';
COMMENT ON COLUMN alert_delivery_attempts.duration_ms IS 'Request time in milliseconds.';
CREATE INDEX IF NOT EXISTS alert_delivery_attempts_by_org
    ON alert_delivery_attempts (org_id, attempt_id);
CREATE INDEX IF NOT EXISTS alert_delivery_attempts_by_delivery
    ON alert_delivery_attempts (notification_id, endpoint_id);

CREATE TABLE IF NOT EXISTS alert_evaluator_state (
    name       text        PRIMARY KEY,
    watermark  timestamptz,
    change_id  bigint,
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE alert_evaluator_state IS
    'How far the evaluator has read: usage_aggregates.updated_at and aggregate_changes.change_id.';

-- The evaluator reads the figures that changed since its last pass.
CREATE INDEX IF NOT EXISTS usage_aggregates_by_updated_at ON usage_aggregates (updated_at);

-- Health rules count an organisation's rejections and late events recorded in a recent window.
CREATE INDEX IF NOT EXISTS rejected_events_by_account_recorded
    ON rejected_events (account_id, rejected_at);
CREATE INDEX IF NOT EXISTS late_events_by_account_recorded ON late_events (account_id, recorded_at);
