"""When a failed webhook delivery is tried again: exponential back-off (pure).

With the defaults (`AlertsSettings`: 5 s, x4, at most 10 h, 10 attempts) the retries wait 5 s,
20 s, 80 s, 5 min 20 s, 21 min, 1.4 h, 5.7 h, 10 h and 10 h: the last attempt is 27.6 hours
after the first. The schedule lives in PostgreSQL (`alert_deliveries.next_attempt_at`), so a
restarted notifier keeps it.
"""

from __future__ import annotations

from datetime import timedelta

from meterstream.config import AlertsSettings


def retry_delay(attempts_made: int, settings: AlertsSettings) -> timedelta:
    """How long to wait after the `attempts_made`-th failed attempt.

    >>> s = AlertsSettings()
    >>> [retry_delay(n, s).total_seconds() for n in (1, 2, 3)]
    [5.0, 20.0, 80.0]
    >>> retry_delay(9, s) == timedelta(hours=10)
    True
    """
    exponent = max(0, attempts_made - 1)
    # Cap the exponent before raising, so that a large attempt count cannot overflow.
    delay_ms = settings.retry_max_delay_ms
    if exponent < 64:  # noqa: PLR2004
        delay_ms = min(delay_ms, settings.retry_base_ms * settings.retry_multiplier**exponent)
    return timedelta(milliseconds=delay_ms)


def schedule(settings: AlertsSettings) -> list[timedelta]:
    """The waits between the attempts of one delivery that keeps failing.

    >>> total = sum(schedule(AlertsSettings()), timedelta())
    >>> round(total.total_seconds() / 3600, 1)
    27.6
    """
    return [retry_delay(n, settings) for n in range(1, settings.max_attempts)]
