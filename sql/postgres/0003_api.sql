-- meterstream: the ingest API's tables (organisations, their accounts, API tokens, quotas,
-- uploads). Applied by `meterstream migrate`. Tenancy rule: an organisation owns an explicit
-- list of account ids (no prefix rule), and an account belongs to exactly one organisation.

CREATE TABLE IF NOT EXISTS organisations (
    org_id     text        PRIMARY KEY,
    name       text        NOT NULL,
    operator   boolean     NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT organisations_id_syntax CHECK (org_id ~ '^[a-z0-9][a-z0-9_-]{0,63}$')
);
COMMENT ON TABLE organisations IS 'A tenant of the ingest API: it owns accounts and API tokens.';
COMMENT ON COLUMN organisations.operator IS
    'Runs the service: its admin tokens may read /health/ready and /metrics (all tenants).';

CREATE TABLE IF NOT EXISTS accounts (
    account_id        text        PRIMARY KEY,
    org_id            text        NOT NULL REFERENCES organisations (org_id),
    daily_event_quota bigint      CHECK (daily_event_quota >= 0),
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS accounts_by_org ON accounts (org_id, account_id);
COMMENT ON TABLE accounts IS
    'Which organisation owns each account id (the CloudEvents subject). One owner per account.';
COMMENT ON COLUMN accounts.daily_event_quota IS
    'Events per UTC day this account may send; NULL = the API default (api.account_daily_event_quota).';

CREATE TABLE IF NOT EXISTS api_tokens (
    token_id     text        PRIMARY KEY,
    org_id       text        NOT NULL REFERENCES organisations (org_id),
    secret_hash  bytea       NOT NULL,
    scopes       text[]      NOT NULL,
    description  text        NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    CONSTRAINT api_tokens_scopes CHECK (scopes <@ ARRAY['ingest:write', 'usage:read', 'admin'])
);
CREATE INDEX IF NOT EXISTS api_tokens_by_org ON api_tokens (org_id);
COMMENT ON TABLE api_tokens IS
    'Bearer tokens "ms_<token_id>_<secret>"; only SHA-256 of the 256-bit random secret is stored.';
COMMENT ON COLUMN api_tokens.secret_hash IS 'SHA-256 of the token''s secret part (32 bytes).';
COMMENT ON COLUMN api_tokens.revoked_at IS 'Set by `meterstream tokens revoke`; NULL while valid.';

CREATE TABLE IF NOT EXISTS account_daily_counts (
    account_id text   NOT NULL,
    day        date   NOT NULL,
    events     bigint NOT NULL,
    PRIMARY KEY (account_id, day)
);
COMMENT ON TABLE account_daily_counts IS
    'Events each account sent through the API per UTC day (quota bookkeeping, not billing).';

CREATE TABLE IF NOT EXISTS uploads (
    upload_id        uuid        PRIMARY KEY,
    org_id           text        NOT NULL REFERENCES organisations (org_id),
    token_id         text        NOT NULL,
    format           text        NOT NULL CHECK (format IN ('jsonl', 'json')),
    filename         text        NOT NULL DEFAULT '',
    state            text        NOT NULL DEFAULT 'open'
        CHECK (state IN ('open', 'interrupted', 'done', 'failed')),
    committed_offset bigint      NOT NULL DEFAULT 0,
    accepted         bigint      NOT NULL DEFAULT 0,
    rejected         bigint      NOT NULL DEFAULT 0,
    error            text        NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS uploads_by_org ON uploads (org_id, created_at);
COMMENT ON TABLE uploads IS 'Batch file uploads (POST /v1/uploads): progress, counts and state.';
COMMENT ON COLUMN uploads.committed_offset IS
    'Bytes of the file whose events are all in Kafka and counted; a resumed upload starts here.';
COMMENT ON COLUMN uploads.accepted IS 'Events up to committed_offset that were sent to Kafka.';
COMMENT ON COLUMN uploads.rejected IS 'Events up to committed_offset rejected by the API.';

CREATE TABLE IF NOT EXISTS upload_rejections (
    upload_id   uuid   NOT NULL REFERENCES uploads (upload_id) ON DELETE CASCADE,
    byte_offset bigint NOT NULL,
    reason_code text   NOT NULL,
    detail      text   NOT NULL,
    excerpt     text   NOT NULL,
    PRIMARY KEY (upload_id, byte_offset)
);
COMMENT ON TABLE upload_rejections IS
    'The first rejected events of each upload (at most 1,000 kept): where, why, and their start.';
COMMENT ON COLUMN upload_rejections.byte_offset IS 'Where the event starts in the file (bytes).';

-- The validation log (rejected_events, 0001) has no account column: the account is the raw
-- payload's subject. Tenants read only their accounts' rows, so index that subject. The
-- function never raises (a payload that is not a JSON object has no account), which is what
-- lets it be IMMUTABLE and used in an index.
CREATE OR REPLACE FUNCTION meterstream_payload_subject(payload text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    doc jsonb;
BEGIN
    doc := payload::jsonb;
    IF jsonb_typeof(doc) = 'object' AND jsonb_typeof(doc -> 'subject') = 'string' THEN
        RETURN doc ->> 'subject';
    END IF;
    RETURN NULL;
EXCEPTION WHEN others THEN
    RETURN NULL;
END;
$$;
CREATE INDEX IF NOT EXISTS rejected_events_by_subject
    ON rejected_events (meterstream_payload_subject(raw_payload), arrived_at);
