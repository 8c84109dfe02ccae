"""The local stack: Kafka, PostgreSQL and Flink processes started and stopped by the project itself."""
