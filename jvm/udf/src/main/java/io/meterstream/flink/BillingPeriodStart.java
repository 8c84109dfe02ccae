package io.meterstream.flink;

import java.time.LocalDate;
import org.apache.flink.table.functions.ScalarFunction;

/**
 * {@code billing_period_start(event_time_ms, time_zone)}: the first day of the calendar month, in
 * {@code time_zone}, that contains the event time ({@code meterstream.rules.periods.period_start}).
 */
public final class BillingPeriodStart extends ScalarFunction {
  private static final long serialVersionUID = 1L;
  private transient LocalMonths months;

  public LocalDate eval(Long eventTimeMs, String timeZone) {
    if (eventTimeMs == null || timeZone == null) {
      return null;
    }
    if (months == null) {
      months = new LocalMonths();
    }
    return months.of(eventTimeMs, timeZone).firstDay;
  }
}
