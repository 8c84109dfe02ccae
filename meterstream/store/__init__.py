"""PostgreSQL: migrations and the reads the CLI and API make."""
