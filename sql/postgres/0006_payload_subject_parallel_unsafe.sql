-- meterstream_payload_subject (0003) catches bad JSON with an EXCEPTION block. Entering such a
-- block opens a subtransaction, which PostgreSQL does not allow in parallel mode, in the
-- leader or in a worker ("cannot start subtransactions during a parallel operation"), so the
-- function must be PARALLEL UNSAFE, not SAFE. Once rejected_events was large enough for a
-- parallel scan, a tenant's read of the validation log (GET /v1/rejections) failed with that
-- error. A query that calls the function now never runs in parallel mode.
ALTER FUNCTION meterstream_payload_subject(text) PARALLEL UNSAFE;
