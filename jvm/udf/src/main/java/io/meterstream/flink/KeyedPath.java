package io.meterstream.flink;

import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.datastream.SingleOutputStreamOperator;
import org.apache.flink.streaming.api.functions.ProcessFunction;
import org.apache.flink.table.api.DataTypes;
import org.apache.flink.table.api.Table;
import org.apache.flink.table.api.bridge.java.StreamTableEnvironment;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.runtime.typeutils.InternalTypeInfo;
import org.apache.flink.table.types.DataType;
import org.apache.flink.table.types.logical.RowType;
import org.apache.flink.util.Collector;
import org.apache.flink.util.OutputTag;

/**
 * Wires the keyed hot path into a job's Table API program: meterstream/flink/workflow.py calls
 * {@link #register} with the view of checked records, and reads what it registers.
 *
 * <p>The view is turned into one DataStream (so the source and the check are planned once, in
 * one chain), its log rows (rejections, warnings) are split off in that chain, and the accepted
 * events are keyed by account into {@link DedupAndFigures}. Registered views, each with the
 * columns of the input view unless said:
 *
 * <ul>
 *   <li>{@code check_log}: records with a reason or a warning;
 *   <li>{@code figure_updates}: {@link #FIGURE_COLUMNS}, absolute figures to upsert;
 *   <li>{@code duplicate_conflicts}: later arrivals of a key with other content;
 *   <li>{@code late_first_arrivals}: first arrivals after their period's allowed lateness;
 *   <li>{@code archive_rows}: every accepted event (when the archive is on).
 * </ul>
 */
public final class KeyedPath {
  /** The input view's columns, in order. */
  public static final List<String> COLUMNS =
      Arrays.asList(
          "reason", "detail", "warning", "warning_detail", "source_topic", "source_partition",
          "source_offset", "event_id", "account_id", "meter", "aggregation", "event_time_ms",
          "period_start", "dimensions", "quantity", "unique_value", "dedup_key", "fingerprint",
          "payload", "arrived_at", "too_late");

  static final int REASON = COLUMNS.indexOf("reason");
  static final int WARNING = COLUMNS.indexOf("warning");
  static final int ACCOUNT_ID = COLUMNS.indexOf("account_id");
  static final int METER = COLUMNS.indexOf("meter");
  static final int EVENT_TIME_MS = COLUMNS.indexOf("event_time_ms");
  static final int PERIOD_START = COLUMNS.indexOf("period_start");
  static final int DIMENSIONS = COLUMNS.indexOf("dimensions");
  static final int QUANTITY = COLUMNS.indexOf("quantity");
  static final int UNIQUE_VALUE = COLUMNS.indexOf("unique_value");
  static final int DEDUP_KEY = COLUMNS.indexOf("dedup_key");
  static final int FINGERPRINT = COLUMNS.indexOf("fingerprint");
  static final int ARRIVED_AT = COLUMNS.indexOf("arrived_at");
  static final int TOO_LATE = COLUMNS.indexOf("too_late");

  /** The figures' columns: those of the usage_aggregates sink table. */
  static final DataType FIGURE_COLUMNS =
      DataTypes.ROW(
          DataTypes.FIELD("account_id", DataTypes.STRING()),
          DataTypes.FIELD("meter", DataTypes.STRING()),
          DataTypes.FIELD("period_start", DataTypes.DATE()),
          DataTypes.FIELD("dimensions", DataTypes.STRING()),
          DataTypes.FIELD("aggregation", DataTypes.STRING()),
          DataTypes.FIELD("quantity", DataTypes.DECIMAL(Figure.PRECISION, Figure.SCALE)),
          DataTypes.FIELD("event_count", DataTypes.BIGINT()),
          DataTypes.FIELD("first_event_at", DataTypes.TIMESTAMP(3)),
          DataTypes.FIELD("last_event_at", DataTypes.TIMESTAMP(3)),
          DataTypes.FIELD("last_arrived_at", DataTypes.TIMESTAMP(3)));

  private KeyedPath() {}

  /**
   * Registers the views above for the records of {@code inputView}.
   *
   * @param meterKinds "meter=KIND" pairs, comma-separated: each meter's aggregation kind.
   * @param archive whether to emit {@code archive_rows}.
   * @param late whether to emit {@code late_first_arrivals}.
   */
  public static void register(
      StreamTableEnvironment tEnv,
      String inputView,
      String meterKinds,
      long dedupTtlMs,
      long figureTtlMs,
      long flushIntervalMs,
      int flushSize,
      boolean archive,
      boolean late) {
    Table input = tEnv.from(inputView);
    DataType type = input.getResolvedSchema().toPhysicalRowDataType().bridgedTo(RowData.class);
    RowType rowType = (RowType) type.getLogicalType();
    if (!rowType.getFieldNames().equals(COLUMNS)) {
      throw new IllegalArgumentException(
          inputView + " has columns " + rowType.getFieldNames() + ", expected " + COLUMNS);
    }
    InternalTypeInfo<RowData> rows = InternalTypeInfo.of(rowType);
    OutputTag<RowData> logTag = new OutputTag<>("check_log", rows);
    OutputTag<RowData> conflictTag = new OutputTag<>("duplicate_conflicts", rows);
    OutputTag<RowData> lateTag = late ? new OutputTag<>("late_first_arrivals", rows) : null;
    OutputTag<RowData> archiveTag = archive ? new OutputTag<>("archive_rows", rows) : null;

    DataStream<RowData> checked = tEnv.toDataStream(input, type);
    SingleOutputStreamOperator<RowData> accepted =
        checked.process(new RouteChecked(logTag), rows).name("route_checked").uid("route_checked");
    InternalTypeInfo<RowData> figureInfo =
        InternalTypeInfo.of((RowType) FIGURE_COLUMNS.getLogicalType());
    SingleOutputStreamOperator<RowData> figures =
        accepted
            .keyBy(new AccountKey(), Types.STRING)
            .transform(
                "dedup_and_figures",
                figureInfo,
                new DedupAndFigures(
                    kinds(meterKinds),
                    dedupTtlMs,
                    figureTtlMs,
                    flushIntervalMs,
                    flushSize,
                    conflictTag,
                    lateTag,
                    archiveTag))
            .uid("dedup_and_figures");

    tEnv.createTemporaryView("check_log", accepted.getSideOutput(logTag));
    tEnv.createTemporaryView("figure_updates", figures);
    tEnv.createTemporaryView("duplicate_conflicts", figures.getSideOutput(conflictTag));
    if (lateTag != null) {
      tEnv.createTemporaryView("late_first_arrivals", figures.getSideOutput(lateTag));
    }
    if (archiveTag != null) {
      tEnv.createTemporaryView("archive_rows", figures.getSideOutput(archiveTag));
    }
  }

  static Map<String, Figure.Aggregation> kinds(String meterKinds) {
    Map<String, Figure.Aggregation> out = new HashMap<>();
    for (String pair : meterKinds.split(",")) {
      if (pair.isEmpty()) {
        continue;
      }
      int eq = pair.indexOf('=');
      out.put(pair.substring(0, eq), Figure.Aggregation.valueOf(pair.substring(eq + 1)));
    }
    return out;
  }

  /** The account of an accepted event: the key of its state. */
  static final class AccountKey implements KeySelector<RowData, String> {
    private static final long serialVersionUID = 1L;

    @Override
    public String getKey(RowData row) {
      return row.getString(ACCOUNT_ID).toString();
    }
  }

  /** Accepted events on; rejections and warnings to the log output (a warning's event both). */
  static final class RouteChecked extends ProcessFunction<RowData, RowData> {
    private static final long serialVersionUID = 1L;
    private final OutputTag<RowData> log;

    RouteChecked(OutputTag<RowData> log) {
      this.log = log;
    }

    @Override
    public void processElement(RowData row, Context ctx, Collector<RowData> out) {
      boolean rejected = !row.isNullAt(REASON);
      if (rejected || !row.isNullAt(WARNING)) {
        ctx.output(log, row);
      }
      if (!rejected) {
        out.collect(row);
      }
    }
  }
}
