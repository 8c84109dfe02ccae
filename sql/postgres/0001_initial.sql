-- meterstream: the output tables billing and finance query. Applied by `meterstream migrate`.

CREATE TABLE IF NOT EXISTS usage_aggregates (
    account_id      text          NOT NULL,
    meter           text          NOT NULL,
    period_start    date          NOT NULL,
    dimensions      text          NOT NULL DEFAULT '',
    quantity        numeric(38, 9) NOT NULL,
    event_count     bigint        NOT NULL,
    first_event_at  timestamptz   NOT NULL,
    last_event_at   timestamptz   NOT NULL,
    last_arrived_at timestamptz   NOT NULL,
    updated_at      timestamptz   NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, meter, period_start, dimensions)
);
COMMENT ON TABLE usage_aggregates IS
    'One row per account, meter and billing period (calendar month, UTC): the running total, '
    'deduplicated by event id. Rewritten in place (upsert) as events arrive.';
COMMENT ON COLUMN usage_aggregates.account_id IS 'The account (CloudEvents subject).';
COMMENT ON COLUMN usage_aggregates.meter IS 'The meter (CloudEvents type), see schemas/.';
COMMENT ON COLUMN usage_aggregates.period_start IS 'First day of the billing month (UTC).';
COMMENT ON COLUMN usage_aggregates.dimensions IS 'Group-by dimension values; empty when the meter has none.';
COMMENT ON COLUMN usage_aggregates.quantity IS
    'The meter''s aggregate in the meter''s unit (SUM of its value field, or COUNT of events).';
COMMENT ON COLUMN usage_aggregates.event_count IS 'Distinct events counted (after dedup).';
COMMENT ON COLUMN usage_aggregates.first_event_at IS 'Earliest event time counted.';
COMMENT ON COLUMN usage_aggregates.last_event_at IS 'Latest event time counted.';
COMMENT ON COLUMN usage_aggregates.last_arrived_at IS
    'When the newest counted event arrived in Kafka (for freshness: compare with updated_at).';
COMMENT ON COLUMN usage_aggregates.updated_at IS 'When the row last changed (set by PostgreSQL).';

CREATE TABLE IF NOT EXISTS rejected_events (
    source_topic     text        NOT NULL,
    source_partition integer     NOT NULL,
    source_offset    bigint      NOT NULL,
    reason_code      text        NOT NULL,
    detail           text        NOT NULL,
    raw_payload      text        NOT NULL,
    arrived_at       timestamptz NOT NULL,
    rejected_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_topic, source_partition, source_offset)
);
COMMENT ON TABLE rejected_events IS
    'The validation log: every event that was not counted, with its reason code and raw payload. '
    'Keyed by its Kafka position, so a replay never records a rejection twice.';
COMMENT ON COLUMN rejected_events.reason_code IS 'Why it was rejected; see README "Reason codes".';
COMMENT ON COLUMN rejected_events.detail IS 'Human-readable detail: which field, what was expected.';
COMMENT ON COLUMN rejected_events.raw_payload IS 'The record exactly as it arrived.';
COMMENT ON COLUMN rejected_events.arrived_at IS 'When Kafka received it (record timestamp).';
COMMENT ON COLUMN rejected_events.rejected_at IS 'When the pipeline recorded the rejection.';
CREATE INDEX IF NOT EXISTS rejected_events_by_code ON rejected_events (reason_code, arrived_at);

-- The JDBC sink writes only the columns it knows; PostgreSQL keeps updated_at current.
CREATE OR REPLACE FUNCTION meterstream_touch_updated_at() RETURNS trigger AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS usage_aggregates_touch ON usage_aggregates;
CREATE TRIGGER usage_aggregates_touch BEFORE INSERT OR UPDATE ON usage_aggregates
    FOR EACH ROW EXECUTE FUNCTION meterstream_touch_updated_at();
