-- The ingest API keeps accepting events while PostgreSQL is down (issue 21): it counts the
-- accounts' daily quota usage itself meanwhile, and adds those counts to account_daily_counts
-- when PostgreSQL answers again, one batch per process and attempt. A batch is recorded here
-- in the same transaction as its counts, so a batch retried after a lost answer is added once.

CREATE TABLE IF NOT EXISTS api_quota_reconciliations (
    batch_id    uuid        PRIMARY KEY,
    events      bigint      NOT NULL,
    accounts    integer     NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE api_quota_reconciliations IS
    'Quota usage an API process counted while PostgreSQL was unavailable, added to '
    'account_daily_counts afterwards: one row per batch (events: the sum of its counts).';
