"""`python -m meterstream` runs the CLI."""

from meterstream.cli import app

app()
