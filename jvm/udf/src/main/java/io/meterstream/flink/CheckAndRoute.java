package io.meterstream.flink;

import java.time.Instant;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.streaming.api.functions.ProcessFunction;
import org.apache.flink.table.data.GenericRowData;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.TimestampData;
import org.apache.flink.util.Collector;
import org.apache.flink.util.OutputTag;

/**
 * The keyed path's first step, in the task that reads Kafka: check each raw record
 * ({@link EventCheck}), give an accepted event its billing period in its account's time zone and
 * whether it came too late ({@link LocalMonths}, {@link TimeZoneTable}: the rules of
 * {@code BillingPeriodStart} and {@code ArrivedTooLate}), and route it: accepted events on (to the
 * keyed operator), rejections and warnings to the log output (an event with a warning both).
 *
 * <p>Input: the raw source's (payload, kafka_topic, kafka_partition, kafka_offset, arrived_at).
 * Output: rows of {@link KeyedPath#COLUMNS}. Plain Java, not SQL: the planner must not be able to
 * call the check more than once per record (it did, once per column, when it merged projections).
 */
final class CheckAndRoute extends ProcessFunction<RowData, RowData> {
  private static final long serialVersionUID = 1L;
  private static final long HOUR_MS = 3_600_000L;
  /** CHECKED_EVENT's fields before the period, which the keyed row has in the same places. */
  private static final int CHECKED_HEAD = 12;

  private final String meters;
  private final String spec;
  private final String pythonExecutable;
  private final TimeZoneTable.Source timeZones;
  private final long latenessMs;
  private final OutputTag<RowData> log;
  private transient EventCheck check;
  private transient TimeZoneTable zones;
  private transient LocalMonths months;

  /**
   * @param spec the fast path's rules, or null: every record to the Python rules.
   * @param timeZones null: every account is billed in UTC.
   */
  CheckAndRoute(
      String meters,
      String spec,
      String pythonExecutable,
      TimeZoneTable.Source timeZones,
      long latenessHours,
      OutputTag<RowData> log) {
    this.meters = meters;
    this.spec = spec;
    this.pythonExecutable = pythonExecutable;
    this.timeZones = timeZones;
    this.latenessMs = latenessHours * HOUR_MS;
    this.log = log;
  }

  @Override
  public void open(OpenContext context) throws Exception {
    check = new EventCheck(meters, spec, pythonExecutable);
    zones = timeZones == null ? null : new TimeZoneTable(timeZones);
    months = new LocalMonths();
  }

  @Override
  public void processElement(RowData raw, Context ctx, Collector<RowData> out) {
    Instant arrived = raw.getTimestamp(4, 3).toInstant();
    GenericRowData checked =
        (GenericRowData)
            check.check(
                raw.getString(0).toString(),
                raw.getString(1).toString(),
                raw.getInt(2),
                raw.getLong(3),
                arrived);
    GenericRowData row = new GenericRowData(KeyedPath.COLUMNS.size());
    for (int i = 0; i < CHECKED_HEAD; i++) {
      row.setField(i, checked.getField(i));
    }
    for (int i = CHECKED_HEAD; i < 17; i++) {
      row.setField(i + 1, checked.getField(i));
    }
    row.setField(KeyedPath.PAYLOAD, raw.getString(0));
    row.setField(KeyedPath.ARRIVED_AT, TimestampData.fromInstant(arrived));
    boolean rejected = checked.getField(0) != null;
    if (rejected) {
      row.setField(KeyedPath.TOO_LATE, Boolean.FALSE);
      ctx.output(log, row);
      return;
    }
    long eventMs = (Long) checked.getField(11);
    String account = checked.getField(8).toString();
    LocalMonths.Month month = months.of(eventMs, zones == null ? "UTC" : zones.zoneOf(account));
    row.setField(KeyedPath.PERIOD_START, (int) month.firstDay.toEpochDay());
    row.setField(KeyedPath.TOO_LATE, arrived.toEpochMilli() > month.endMs + latenessMs);
    if (checked.getField(2) != null) {
      ctx.output(log, row);
    }
    out.collect(row);
  }

  @Override
  public void close() {
    if (check != null) {
      check.close();
    }
    if (zones != null) {
      zones.close();
    }
  }
}
