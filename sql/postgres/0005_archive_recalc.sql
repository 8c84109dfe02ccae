-- Event-time issue: recalculation of a billing period from the audit archive.
-- `meterstream recalculate` runs jobs/recalculate_period.py (Flink, batch) into the
-- staging table, then replaces the period's rows of usage_aggregates in one transaction and
-- records every difference in aggregate_changes.

CREATE TABLE IF NOT EXISTS usage_aggregates_recalc (
    account_id      text           NOT NULL,
    meter           text           NOT NULL,
    period_start    date           NOT NULL,
    dimensions      text           NOT NULL DEFAULT '',
    aggregation     text           NOT NULL,
    quantity        numeric(38, 9) NOT NULL,
    event_count     bigint         NOT NULL,
    first_event_at  timestamptz    NOT NULL,
    last_event_at   timestamptz    NOT NULL,
    last_arrived_at timestamptz    NOT NULL,
    PRIMARY KEY (account_id, meter, period_start, dimensions)
);
COMMENT ON TABLE usage_aggregates_recalc IS
    'Staging for recalculation: the figures the batch job computed from the audit archive, same '
    'columns and key as usage_aggregates. Emptied for its scope before and after every run; one '
    'run at a time (advisory lock).';

CREATE TABLE IF NOT EXISTS recalculation_runs (
    run_id        uuid        PRIMARY KEY,
    period_start  date        NOT NULL,
    account_id    text,
    reason        text        NOT NULL,
    archive_dir   text        NOT NULL,
    rows_added    integer     NOT NULL,
    rows_changed  integer     NOT NULL,
    rows_removed  integer     NOT NULL,
    started_at    timestamptz NOT NULL,
    applied_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE recalculation_runs IS
    'Every applied recalculation, also those that changed nothing: its scope (period, and account '
    'or NULL for all accounts), why it ran, and how many usage_aggregates rows it changed.';
COMMENT ON COLUMN recalculation_runs.period_start IS 'First day of the recalculated billing month.';
COMMENT ON COLUMN recalculation_runs.account_id IS 'The one account recalculated; NULL: all accounts.';
COMMENT ON COLUMN recalculation_runs.archive_dir IS 'The audit archive the figures were computed from.';
CREATE INDEX IF NOT EXISTS recalculation_runs_by_period ON recalculation_runs (period_start);

CREATE TABLE IF NOT EXISTS aggregate_changes (
    change_id           bigserial      PRIMARY KEY,
    run_id              uuid           NOT NULL REFERENCES recalculation_runs (run_id),
    account_id          text           NOT NULL,
    meter               text           NOT NULL,
    period_start        date           NOT NULL,
    dimensions          text           NOT NULL,
    change              text           NOT NULL CHECK (change IN ('added', 'changed', 'removed')),
    aggregation         text           NOT NULL,
    old_quantity        numeric(38, 9),
    new_quantity        numeric(38, 9),
    old_event_count     bigint,
    new_event_count     bigint,
    old_last_arrived_at timestamptz,
    new_last_arrived_at timestamptz,
    reason              text           NOT NULL,
    changed_at          timestamptz    NOT NULL DEFAULT now()
);
COMMENT ON TABLE aggregate_changes IS
    'The audit trail of recalculation: one row per usage_aggregates row a recalculation added, '
    'changed or removed, with the figures before and after. A row whose figures did not change '
    'gets no entry, so recalculating twice records nothing the second time.';
COMMENT ON COLUMN aggregate_changes.change IS
    'added: the period had no such row; removed: the archive has no event for it; changed: '
    'any figure column differed (quantity, event_count, first/last event or arrival time).';
COMMENT ON COLUMN aggregate_changes.old_quantity IS 'quantity before, in the meter''s unit; NULL when added.';
COMMENT ON COLUMN aggregate_changes.new_quantity IS 'quantity after, in the meter''s unit; NULL when removed.';
COMMENT ON COLUMN aggregate_changes.old_event_count IS 'Distinct events counted before; NULL when added.';
COMMENT ON COLUMN aggregate_changes.new_event_count IS 'Distinct events counted after; NULL when removed.';
COMMENT ON COLUMN aggregate_changes.reason IS 'Why the recalculation ran (given by the operator).';
CREATE INDEX IF NOT EXISTS aggregate_changes_by_account
    ON aggregate_changes (account_id, period_start, changed_at);
CREATE INDEX IF NOT EXISTS aggregate_changes_by_run ON aggregate_changes (run_id);
