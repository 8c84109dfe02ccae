"""Pure billing rules: validation, reason codes, periods, the oracle. No pyflink/Kafka/psycopg."""
