"""Corrections of counted events (void, amend), their audit trail, and erasure (issue 19).

`model` holds the values and the stream contract, `archived` finds counted events in the audit
archive, `service` records corrections, `outbox` publishes them to Kafka, `erasure` erases an
account's personal data. docs/corrections.md explains them for users.
"""
