"""Meter definitions: Avro schemas in `schemas/` plus their billing semantics."""
