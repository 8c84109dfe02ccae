-- Event-time issue: billing periods per account time zone, late events, period status.

CREATE TABLE IF NOT EXISTS account_time_zones (
    account_id  text        PRIMARY KEY,
    time_zone   text        NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE account_time_zones IS
    'Each account''s billing time zone (IANA name). Accounts without a row are billed in UTC. '
    'Set with `meterstream time-zone set`; the job picks a change up within a minute.';

CREATE TABLE IF NOT EXISTS late_events (
    source_topic     text          NOT NULL,
    source_partition integer       NOT NULL,
    source_offset    bigint        NOT NULL,
    account_id       text          NOT NULL,
    meter            text          NOT NULL,
    event_id         text          NOT NULL,
    period_start     date          NOT NULL,
    dimensions       text          NOT NULL,
    quantity         numeric(38, 9),
    event_time       timestamptz   NOT NULL,
    arrived_at       timestamptz   NOT NULL,
    raw_payload      text          NOT NULL,
    recorded_at      timestamptz   NOT NULL DEFAULT now(),
    PRIMARY KEY (source_topic, source_partition, source_offset)
);
COMMENT ON TABLE late_events IS
    'Valid, first-arriving events that reached Kafka after their billing period''s end plus the '
    'allowed lateness. They are kept (here and in the audit archive), not added to '
    'usage_aggregates; `meterstream recalculate` folds them into their period.';
CREATE INDEX IF NOT EXISTS late_events_by_period ON late_events (period_start, account_id);

-- The deployment's allowed lateness, written by `meterstream migrate` from the settings.
CREATE TABLE IF NOT EXISTS billing_config (
    id                boolean  PRIMARY KEY DEFAULT true CHECK (id),
    allowed_lateness  interval NOT NULL DEFAULT interval '72 hours'
);
INSERT INTO billing_config (id) VALUES (true) ON CONFLICT (id) DO NOTHING;

CREATE OR REPLACE VIEW billing_periods AS
SELECT p.account_id,
       p.period_start,
       coalesce(z.time_zone, 'UTC') AS time_zone,
       ((p.period_start + interval '1 month')::timestamp
            AT TIME ZONE coalesce(z.time_zone, 'UTC')) AS period_end,
       ((p.period_start + interval '1 month')::timestamp
            AT TIME ZONE coalesce(z.time_zone, 'UTC')) + c.allowed_lateness AS closes_at,
       CASE WHEN now() >= ((p.period_start + interval '1 month')::timestamp
                           AT TIME ZONE coalesce(z.time_zone, 'UTC')) + c.allowed_lateness
            THEN 'closed' ELSE 'open' END AS status
FROM (SELECT DISTINCT account_id, period_start FROM usage_aggregates) AS p
LEFT JOIN account_time_zones AS z USING (account_id)
CROSS JOIN billing_config AS c;
COMMENT ON VIEW billing_periods IS
    'Each account''s billing periods: open (figures are provisional, events may still arrive) or '
    'closed (past the allowed lateness: figures are final unless recalculated).';
