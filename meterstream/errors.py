"""The exception tree for program errors; bad input is a value (`Rejection`), never one of these."""


class MeterstreamError(Exception):
    """Root of every error meterstream raises on purpose."""


class ConfigError(MeterstreamError):
    """Settings are missing or invalid."""


class SchemaError(MeterstreamError):
    """A meter definition in `schemas/` is invalid or incompatible."""


class StackError(MeterstreamError):
    """A local-stack service could not be installed, started, reached or stopped."""
