-- The identity of the stack this database belongs to. `meterstream reset` deletes the
-- database, so a new one gets a new id. The audit archive is marked with the id of the stack
-- whose job writes it (a STACK_ID file at its root): a recalculation refuses an archive of
-- another stack, whose events would otherwise come back into this stack's figures.
CREATE TABLE stack_identity (
    only_row   boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    stack_id   uuid NOT NULL DEFAULT gen_random_uuid(),
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO stack_identity DEFAULT VALUES;
