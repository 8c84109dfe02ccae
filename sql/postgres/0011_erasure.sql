-- Corrections issue (#19): erasure of an account's personal data (`meterstream accounts erase`,
-- POST /v1/accounts/{account}/erasure). See docs/corrections.md.

-- The key of the pseudonyms: erased-<first 20 hex digits of HMAC-SHA256(secret, account id)>.
-- Random per database (gen_random_uuid draws from the operating system's strong random source).
CREATE TABLE IF NOT EXISTS erasure_secret (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    secret   text    NOT NULL
        DEFAULT replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '')
);
INSERT INTO erasure_secret DEFAULT VALUES ON CONFLICT DO NOTHING;
COMMENT ON TABLE erasure_secret IS
    'The key of erased accounts'' pseudonyms. Whoever has it can test whether a given account '
    'id was erased, nothing more; deleting it leaves the pseudonyms unlinkable for good.';

CREATE TABLE IF NOT EXISTS erased_accounts (
    pseudonym        text        PRIMARY KEY,
    org_id           text,
    figures          text        NOT NULL CHECK (figures IN ('keep', 'pseudonymise', 'delete')),
    kept_account_id  text,
    first_erased_at  timestamptz NOT NULL DEFAULT now(),
    last_erased_at   timestamptz NOT NULL DEFAULT now(),
    erasures         integer     NOT NULL DEFAULT 1
);
COMMENT ON TABLE erased_accounts IS
    'Every erased account, by its pseudonym (never its id). A recalculation of an erased '
    'account is refused, and one of all accounts leaves its figures as they are.';
COMMENT ON COLUMN erased_accounts.figures IS
    'What happened to its billing figures: kept as they were, kept under the pseudonym, deleted.';
COMMENT ON COLUMN erased_accounts.kept_account_id IS
    'Only when the figures were kept: the account id they still carry (NULL otherwise).';
COMMENT ON COLUMN erased_accounts.erasures IS 'How often it was erased (a second run catches late arrivals).';
