package io.meterstream.flink;

import java.time.Instant;
import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.functions.ScalarFunction;

/**
 * {@code arrived_too_late(event_time_ms, time_zone, arrived_at, lateness_hours)}: whether an
 * event reached Kafka after its billing period's end plus the allowed lateness ({@code
 * meterstream.rules.periods.is_late}).
 */
public final class ArrivedTooLate extends ScalarFunction {
  private static final long serialVersionUID = 1L;
  private static final long HOUR_MS = 3_600_000L;
  private transient LocalMonths months;

  public Boolean eval(
      Long eventTimeMs,
      String timeZone,
      @DataTypeHint("TIMESTAMP_LTZ(3)") Instant arrivedAt,
      Integer latenessHours) {
    if (eventTimeMs == null || timeZone == null || arrivedAt == null || latenessHours == null) {
      return null;
    }
    if (months == null) {
      months = new LocalMonths();
    }
    long closesAt = months.of(eventTimeMs, timeZone).endMs + latenessHours * HOUR_MS;
    return arrivedAt.toEpochMilli() > closesAt;
  }
}
