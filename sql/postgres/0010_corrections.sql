-- Corrections issue (#19): voids and amends of counted events, their outbox to Kafka, and the
-- audit trail of corrections and erasures. Written by `meterstream corrections` and the API's
-- /v1/corrections routes (meterstream/corrections/), read by recalculation. See
-- docs/corrections.md.

-- Tokens may carry the usage:correct scope (every earlier scope kept: 0003, 0008).
ALTER TABLE api_tokens DROP CONSTRAINT IF EXISTS api_tokens_scopes;
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_scopes
    CHECK (scopes <@ ARRAY['ingest:write', 'usage:read', 'admin', 'alerts:write', 'alerts:read',
                           'usage:correct']);

CREATE TABLE IF NOT EXISTS corrections (
    correction_id     uuid           PRIMARY KEY,
    seq               bigint         GENERATED ALWAYS AS IDENTITY UNIQUE,
    request_id        uuid           NOT NULL,
    org_id            text,
    account_id        text           NOT NULL,
    action            text           NOT NULL CHECK (action IN ('void', 'amend')),
    dedup_key         text,
    event_id          text,
    meter             text           NOT NULL,
    aggregation       text           NOT NULL,
    period_start      date           NOT NULL,
    dimensions        text,
    new_payload       text,
    new_dimensions    text,
    new_quantity      numeric(38, 9),
    new_unique_value  text,
    new_event_time_ms bigint,
    new_fingerprint   bigint,
    reason            text           NOT NULL,
    requested_by      text           NOT NULL,
    in_stream         boolean        NOT NULL,
    created_at        timestamptz    NOT NULL DEFAULT now(),
    erased_at         timestamptz
);
COMMENT ON TABLE corrections IS
    'Every void and amend of a counted event, kept forever (append-only: only an erasure may '
    'pseudonymise a row). The last correction of an (account, dedup_key) is the one in force; '
    'nothing is accepted after a void.';
COMMENT ON COLUMN corrections.seq IS 'Order of the corrections (the stream and recalculation apply the last).';
COMMENT ON COLUMN corrections.request_id IS 'The request that made it (a range void makes one per event).';
COMMENT ON COLUMN corrections.org_id IS 'The organisation that owned the account then; NULL: none.';
COMMENT ON COLUMN corrections.dedup_key IS
    'The counted event''s idempotency key as the rules compute it (id:<event id>, '
    'ts:<meter>:<epoch ms>). NULL once the account was erased.';
COMMENT ON COLUMN corrections.event_id IS 'The counted event''s id; NULL once erased.';
COMMENT ON COLUMN corrections.meter IS 'The counted event''s meter (an amend keeps it).';
COMMENT ON COLUMN corrections.period_start IS
    'The counted event''s billing period (first day, account time zone); an amend keeps it.';
COMMENT ON COLUMN corrections.dimensions IS 'The counted (original) event''s segment; NULL once erased.';
COMMENT ON COLUMN corrections.new_payload IS 'Amend: the new CloudEvent as sent; NULL for a void or once erased.';
COMMENT ON COLUMN corrections.new_quantity IS 'Amend: the new value in the meter''s unit (NULL for UNIQUE_COUNT).';
COMMENT ON COLUMN corrections.new_event_time_ms IS 'Amend: the new event time, epoch milliseconds.';
COMMENT ON COLUMN corrections.requested_by IS 'Who: the API token id, or "operator" (the CLI).';
COMMENT ON COLUMN corrections.in_stream IS
    'The event''s period was still open (its end plus the allowed lateness in the future) and '
    'the job still holds its key: the streaming job applies it within seconds. Else only a '
    'recalculation of the period does.';
COMMENT ON COLUMN corrections.erased_at IS 'When an erasure pseudonymised the row (NULL: never).';
CREATE INDEX IF NOT EXISTS corrections_by_key ON corrections (account_id, dedup_key, seq);
CREATE INDEX IF NOT EXISTS corrections_by_org ON corrections (org_id, seq);
CREATE INDEX IF NOT EXISTS corrections_by_period ON corrections (period_start, account_id);

-- Published to Kafka after the transaction that recorded the correction commits; the row is
-- deleted once Kafka acknowledged the message. A failed publish leaves it for the next try.
CREATE TABLE IF NOT EXISTS correction_outbox (
    correction_id uuid        PRIMARY KEY REFERENCES corrections (correction_id),
    seq           bigint      NOT NULL,
    attempts      integer     NOT NULL DEFAULT 0,
    last_error    text        NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE correction_outbox IS
    'Corrections not yet acknowledged by Kafka (topic meterstream.corrections), published in '
    'seq order by whoever recorded them and retried by `meterstream corrections publish` and '
    'the API''s relay. A message sent twice is harmless: the job applies a correction once.';
CREATE INDEX IF NOT EXISTS correction_outbox_by_seq ON correction_outbox (seq);

CREATE TABLE IF NOT EXISTS audit_trail (
    audit_id   bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id     text,
    actor      text        NOT NULL,
    action     text        NOT NULL CHECK (action IN ('void', 'amend', 'erase')),
    account_id text,
    what       text        NOT NULL,
    reason     text        NOT NULL,
    details    jsonb       NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE audit_trail IS
    'Who did what, when and why: one row per correction request and per erasure, append-only '
    '(only an erasure may pseudonymise a row). No payloads; counts and ids in details.';
COMMENT ON COLUMN audit_trail.org_id IS 'The organisation whose account it concerns (NULL: none); it may read the row.';
COMMENT ON COLUMN audit_trail.actor IS 'The API token id, or "operator" (the CLI).';
COMMENT ON COLUMN audit_trail.account_id IS 'The account; its pseudonym once it was erased (always for erase rows).';
COMMENT ON COLUMN audit_trail.details IS
    'void/amend: request_id, corrections, correction ids, periods; erase: counts per store.';
CREATE INDEX IF NOT EXISTS audit_trail_by_org ON audit_trail (org_id, audit_id);
CREATE INDEX IF NOT EXISTS audit_trail_by_account ON audit_trail (account_id, audit_id);

-- Append-only: UPDATE, DELETE and TRUNCATE are refused, for every role (the owner too). Within
-- an erasure's transaction (`SET LOCAL meterstream.erasure = '<erasure id>'`) an UPDATE may
-- change the personal columns; the columns named as trigger arguments never change.
CREATE OR REPLACE FUNCTION meterstream_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    col text;
BEGIN
    IF TG_OP = 'UPDATE' AND coalesce(current_setting('meterstream.erasure', true), '') <> '' THEN
        FOREACH col IN ARRAY TG_ARGV LOOP
            IF to_jsonb(OLD) -> col IS DISTINCT FROM to_jsonb(NEW) -> col THEN
                RAISE EXCEPTION '%.% cannot change, not even in an erasure', TG_TABLE_NAME, col
                    USING ERRCODE = 'insufficient_privilege';
            END IF;
        END LOOP;
        RETURN NEW;
    END IF;
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'corrections and the audit trail are kept forever; only an erasure '
                     'pseudonymises rows';
END;
$$;

DROP TRIGGER IF EXISTS corrections_append_only ON corrections;
CREATE TRIGGER corrections_append_only BEFORE UPDATE OR DELETE ON corrections
    FOR EACH ROW EXECUTE FUNCTION meterstream_append_only(
        'correction_id', 'seq', 'request_id', 'org_id', 'action', 'meter', 'aggregation',
        'period_start', 'new_quantity', 'new_event_time_ms', 'new_fingerprint', 'requested_by',
        'in_stream', 'created_at');
DROP TRIGGER IF EXISTS corrections_no_truncate ON corrections;
CREATE TRIGGER corrections_no_truncate BEFORE TRUNCATE ON corrections
    FOR EACH STATEMENT EXECUTE FUNCTION meterstream_append_only();
DROP TRIGGER IF EXISTS audit_trail_append_only ON audit_trail;
CREATE TRIGGER audit_trail_append_only BEFORE UPDATE OR DELETE ON audit_trail
    FOR EACH ROW EXECUTE FUNCTION meterstream_append_only(
        'audit_id', 'org_id', 'actor', 'action', 'created_at');
DROP TRIGGER IF EXISTS audit_trail_no_truncate ON audit_trail;
CREATE TRIGGER audit_trail_no_truncate BEFORE TRUNCATE ON audit_trail
    FOR EACH STATEMENT EXECUTE FUNCTION meterstream_append_only();
REVOKE UPDATE, DELETE, TRUNCATE ON corrections, audit_trail FROM PUBLIC;

-- The correction in force for each (account, key): the last one. Recalculation reads it.
CREATE OR REPLACE VIEW effective_corrections AS
SELECT DISTINCT ON (account_id, dedup_key)
       account_id, dedup_key, action, meter, aggregation, period_start, dimensions,
       new_dimensions, new_quantity, new_unique_value, new_event_time_ms, seq
FROM corrections
WHERE dedup_key IS NOT NULL
ORDER BY account_id, dedup_key, seq DESC;
COMMENT ON VIEW effective_corrections IS
    'The correction in force for each (account, dedup_key): the last one recorded.';
