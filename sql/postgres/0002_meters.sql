-- Meters issue: every aggregation kind, segments, warnings and conflicts in the validation log.

ALTER TABLE usage_aggregates
    ADD COLUMN IF NOT EXISTS aggregation text NOT NULL DEFAULT 'SUM';
COMMENT ON COLUMN usage_aggregates.aggregation IS
    'How quantity was computed from the events: SUM, COUNT, MIN, MAX, MEAN, LATEST or UNIQUE_COUNT.';
COMMENT ON COLUMN usage_aggregates.dimensions IS
    'The segment: canonical JSON of the meter''s group-by values, e.g. {"model":"large"}; '
    'empty for a meter without group_by. Query with dimensions::jsonb ->> ''model''.';
COMMENT ON COLUMN usage_aggregates.quantity IS
    'The period''s figure in the meter''s unit, computed as `aggregation` says.';

ALTER TABLE rejected_events
    ADD COLUMN IF NOT EXISTS severity   text NOT NULL DEFAULT 'error',
    ADD COLUMN IF NOT EXISTS account_id text,
    ADD COLUMN IF NOT EXISTS meter      text,
    ADD COLUMN IF NOT EXISTS event_id   text;
COMMENT ON TABLE rejected_events IS
    'The validation log. severity = ''error'': the event was not counted (reason_code says why). '
    'severity = ''warning'': the event was counted, with a warning (a deprecated schema version). '
    'Keyed by Kafka position and code, so a replay never records anything twice.';
COMMENT ON COLUMN rejected_events.severity IS 'error (not counted) or warning (counted).';
COMMENT ON COLUMN rejected_events.account_id IS 'The account, when the envelope could be read that far.';
COMMENT ON COLUMN rejected_events.meter IS 'The meter, when the envelope could be read that far.';
COMMENT ON COLUMN rejected_events.event_id IS 'The CloudEvents id, when known.';

-- A record may be logged twice under different codes (a warning, then a conflict).
ALTER TABLE rejected_events DROP CONSTRAINT IF EXISTS rejected_events_pkey;
ALTER TABLE rejected_events
    ADD PRIMARY KEY (source_topic, source_partition, source_offset, reason_code);
CREATE INDEX IF NOT EXISTS rejected_events_by_account ON rejected_events (account_id, arrived_at);
CREATE INDEX IF NOT EXISTS rejected_events_by_meter ON rejected_events (meter, arrived_at);
