package io.meterstream.flink;

import java.time.DateTimeException;
import java.time.Instant;
import java.time.LocalDate;
import java.time.ZoneId;
import java.time.ZoneOffset;
import java.util.HashMap;
import java.util.Map;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Billing periods: the calendar month, in an account's time zone, that contains an instant. The
 * same rule as {@code meterstream.rules.periods} (tests/flink/test_periods_jvm.py compares them).
 *
 * <p>Each zone remembers the last month it answered for, so the common case (an event in the
 * same month as the one before it) is two comparisons. Not thread-safe: one per function instance.
 */
final class LocalMonths {
  private static final Logger LOG = LoggerFactory.getLogger(LocalMonths.class);

  /** One local month: [startMs, endMs) in epoch milliseconds, and its first day. */
  static final class Month {
    final long startMs;
    final long endMs;
    final LocalDate firstDay;

    Month(long startMs, long endMs, LocalDate firstDay) {
      this.startMs = startMs;
      this.endMs = endMs;
      this.firstDay = firstDay;
    }
  }

  private final Map<String, ZoneId> zones = new HashMap<>();
  private final Map<String, Month> lastMonth = new HashMap<>();

  /** The local month of {@code epochMs} in {@code zoneName}. */
  Month of(long epochMs, String zoneName) {
    Month month = lastMonth.get(zoneName);
    if (month != null && epochMs >= month.startMs && epochMs < month.endMs) {
      return month;
    }
    ZoneId zone = zones.computeIfAbsent(zoneName, LocalMonths::zone);
    LocalDate first =
        Instant.ofEpochMilli(epochMs).atZone(zone).toLocalDate().withDayOfMonth(1);
    month =
        new Month(
            first.atStartOfDay(zone).toInstant().toEpochMilli(),
            first.plusMonths(1).atStartOfDay(zone).toInstant().toEpochMilli(),
            first);
    lastMonth.put(zoneName, month);
    return month;
  }

  /**
   * The zone named {@code name}, or UTC for a name Java does not know. The billing CLI accepts
   * only IANA names, so an unknown one was written to PostgreSQL by hand; like Flink's
   * CONVERT_TZ, the period is then taken in UTC, and the log says so once per name.
   */
  private static ZoneId zone(String name) {
    try {
      return ZoneId.of(name);
    } catch (DateTimeException e) {
      LOG.warn("unknown time zone {}: billing periods for its accounts are taken in UTC", name);
      return ZoneOffset.UTC;
    }
  }
}
