"""meterstream: usage-metering ingestion for usage-based billing (Kafka -> Flink -> PostgreSQL)."""

__version__ = "0.1.0"
