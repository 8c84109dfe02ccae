"""Alerts: usage-threshold and ingestion-health rules, the notification outbox, signed webhooks.

Pure parts: `thresholds`, `signing`, `events`, `retry`, `urls`, `model`. The service
(`meterstream alerts serve`) runs `evaluator`, `health` and `notifier` over PostgreSQL.
"""
