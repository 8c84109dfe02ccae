"""The local stack: Kafka, PostgreSQL and Flink, started and stopped by the project itself."""
