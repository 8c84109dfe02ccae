package io.meterstream.flink;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.datastream.SingleOutputStreamOperator;
import org.apache.flink.table.api.DataTypes;
import org.apache.flink.table.api.Schema;
import org.apache.flink.table.connector.ChangelogMode;
import org.apache.flink.table.data.GenericRowData;
import org.apache.flink.table.api.Table;
import org.apache.flink.table.api.bridge.java.StreamTableEnvironment;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.runtime.typeutils.ExternalTypeInfo;
import org.apache.flink.table.runtime.typeutils.InternalTypeInfo;
import org.apache.flink.types.Row;
import org.apache.flink.table.types.DataType;
import org.apache.flink.table.types.logical.RowType;
import org.apache.flink.util.OutputTag;

/**
 * Wires the keyed hot path into a job's Table API program: meterstream/flink/workflow.py calls
 * {@link #register} with the view of raw Kafka records, and reads what it registers.
 *
 * <p>The view is turned into one DataStream (the source planned once, in one chain), each record
 * is checked, given its period and routed in that chain ({@link CheckAndRoute}), and the accepted
 * events are keyed by account into {@link DedupAndFigures}. Registered views, each with the
 * columns {@link #COLUMNS} unless said:
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
  /** The raw records' columns: what the Kafka source reads. */
  static final List<String> RAW_COLUMNS =
      Arrays.asList("payload", "kafka_topic", "kafka_partition", "kafka_offset", "arrived_at");

  /** A checked record's columns and types. */
  static final DataType CHECKED =
      DataTypes.ROW(
          DataTypes.FIELD("reason", DataTypes.STRING()),
          DataTypes.FIELD("detail", DataTypes.STRING()),
          DataTypes.FIELD("warning", DataTypes.STRING()),
          DataTypes.FIELD("warning_detail", DataTypes.STRING()),
          DataTypes.FIELD("source_topic", DataTypes.STRING()),
          DataTypes.FIELD("source_partition", DataTypes.INT()),
          DataTypes.FIELD("source_offset", DataTypes.BIGINT()),
          DataTypes.FIELD("event_id", DataTypes.STRING()),
          DataTypes.FIELD("account_id", DataTypes.STRING()),
          DataTypes.FIELD("meter", DataTypes.STRING()),
          DataTypes.FIELD("aggregation", DataTypes.STRING()),
          DataTypes.FIELD("event_time_ms", DataTypes.BIGINT()),
          DataTypes.FIELD("period_start", DataTypes.DATE()),
          DataTypes.FIELD("dimensions", DataTypes.STRING()),
          DataTypes.FIELD("quantity", DataTypes.DECIMAL(Figure.PRECISION, Figure.SCALE)),
          DataTypes.FIELD("unique_value", DataTypes.STRING()),
          DataTypes.FIELD("dedup_key", DataTypes.STRING()),
          DataTypes.FIELD("fingerprint", DataTypes.BIGINT()),
          DataTypes.FIELD("payload", DataTypes.STRING()),
          DataTypes.FIELD("arrived_at", DataTypes.TIMESTAMP_LTZ(3)),
          DataTypes.FIELD("too_late", DataTypes.BOOLEAN()));

  /** A checked record's columns, in order: the views' and the keyed operator's input. */
  public static final List<String> COLUMNS = DataType.getFieldNames(CHECKED);

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
  static final int PAYLOAD = COLUMNS.indexOf("payload");
  static final int ARRIVED_AT = COLUMNS.indexOf("arrived_at");
  static final int TOO_LATE = COLUMNS.indexOf("too_late");

  /** The figures' columns: those of the usage_aggregates sink table, keyed by the first four. */
  static final DataType FIGURE_COLUMNS =
      DataTypes.ROW(
          DataTypes.FIELD("account_id", DataTypes.STRING().notNull()),
          DataTypes.FIELD("meter", DataTypes.STRING().notNull()),
          DataTypes.FIELD("period_start", DataTypes.DATE().notNull()),
          DataTypes.FIELD("dimensions", DataTypes.STRING().notNull()),
          DataTypes.FIELD("aggregation", DataTypes.STRING()),
          DataTypes.FIELD("quantity", DataTypes.DECIMAL(Figure.PRECISION, Figure.SCALE)),
          DataTypes.FIELD("event_count", DataTypes.BIGINT()),
          DataTypes.FIELD("first_event_at", DataTypes.TIMESTAMP(3)),
          DataTypes.FIELD("last_event_at", DataTypes.TIMESTAMP(3)),
          DataTypes.FIELD("last_arrived_at", DataTypes.TIMESTAMP(3)));

  private KeyedPath() {}

  /**
   * Registers the views above for the records of {@code rawView} ({@link #RAW_COLUMNS}) and the
   * corrections of {@code correctionsView} ((account_id, payload): the corrections topic's key and
   * value), or none when it is null.
   *
   * @param optionsJson what the job decides, from its settings (meterstream/flink/workflow.py):
   *     {@code meters} (the Python rules' registry), {@code spec} (the fast path's rules, or
   *     null), {@code python} (the TaskManagers' Python), {@code time_zones} (null, or
   *     {@code jdbc_url}, {@code user}, {@code password}, {@code table}, {@code refresh_seconds}),
   *     {@code lateness_hours}, {@code meter_kinds} (meter name: aggregation kind),
   *     {@code dedup_ttl_ms}, {@code figure_ttl_ms}, {@code flush_interval_ms},
   *     {@code flush_size}, {@code figure_cache_size}, {@code archive} and {@code late}
   *     (whether to emit those views).
   */
  public static void register(
      StreamTableEnvironment tEnv, String rawView, String correctionsView, String optionsJson)
      throws IOException {
    JsonNode options = new ObjectMapper().readTree(optionsJson);
    Table input = tEnv.from(rawView);
    DataType type = input.getResolvedSchema().toPhysicalRowDataType().bridgedTo(RowData.class);
    RowType rawType = (RowType) type.getLogicalType();
    if (!rawType.getFieldNames().equals(RAW_COLUMNS)) {
      throw new IllegalArgumentException(
          rawView + " has columns " + rawType.getFieldNames() + ", expected " + RAW_COLUMNS);
    }
    InternalTypeInfo<RowData> rows = InternalTypeInfo.of((RowType) CHECKED.getLogicalType());
    OutputTag<RowData> logTag = new OutputTag<>("check_log", rows);
    OutputTag<RowData> conflictTag = new OutputTag<>("duplicate_conflicts", rows);
    boolean late = options.get("late").booleanValue();
    boolean archive = options.get("archive").booleanValue();
    OutputTag<RowData> lateTag = late ? new OutputTag<>("late_first_arrivals", rows) : null;
    OutputTag<RowData> archiveTag = archive ? new OutputTag<>("archive_rows", rows) : null;

    JsonNode zones = options.get("time_zones");
    TimeZoneTable.Source timeZones =
        zones == null || zones.isNull()
            ? null
            : new TimeZoneTable.Source(
                zones.get("jdbc_url").textValue(),
                zones.get("user").textValue(),
                zones.get("password").textValue(),
                zones.get("table").textValue(),
                zones.get("refresh_seconds").longValue());
    JsonNode spec = options.get("spec");
    CheckAndRoute checkAndRoute =
        new CheckAndRoute(
            options.get("meters").textValue(),
            spec == null || spec.isNull() ? null : spec.textValue(),
            options.get("python").textValue(),
            timeZones,
            options.get("lateness_hours").longValue(),
            logTag);
    Map<String, Figure.Aggregation> kinds = new HashMap<>();
    options
        .get("meter_kinds")
        .fields()
        .forEachRemaining(e -> kinds.put(e.getKey(), Figure.Aggregation.valueOf(e.getValue().textValue())));

    DataStream<RowData> raw = tEnv.toDataStream(input, type);
    SingleOutputStreamOperator<RowData> accepted =
        raw.process(checkAndRoute, rows).name("check_and_route").uid("check_and_route");
    InternalTypeInfo<RowData> correctionRows =
        InternalTypeInfo.of((RowType) CORRECTION_COLUMNS.getLogicalType());
    DataStream<RowData> corrections =
        correctionsView == null
            ? raw.getExecutionEnvironment()
                .fromData(correctionRows, new GenericRowData(2))
                .uid("no_corrections")
                .filter(r -> false)
                .returns(correctionRows)
                .uid("no_corrections_filter")
            : tEnv.toDataStream(
                tEnv.from(correctionsView),
                CORRECTION_COLUMNS.bridgedTo(RowData.class));
    ExternalTypeInfo<Row> figureRows = ExternalTypeInfo.of(FIGURE_COLUMNS);
    SingleOutputStreamOperator<Row> figures =
        accepted
            .connect(corrections)
            .keyBy(new AccountKey(), new CorrectionAccount(), Types.STRING)
            .transform(
                "dedup_and_figures",
                figureRows,
                new DedupAndFigures(
                    kinds,
                    options.get("dedup_ttl_ms").longValue(),
                    options.get("figure_ttl_ms").longValue(),
                    options.get("flush_interval_ms").longValue(),
                    options.get("flush_size").intValue(),
                    options.get("figure_cache_size").intValue(),
                    conflictTag,
                    lateTag,
                    archiveTag))
            .uid("dedup_and_figures");

    tEnv.createTemporaryView("check_log", accepted.getSideOutput(logTag));
    // Upserts and deletes (a figure whose events were all voided), keyed like usage_aggregates.
    DataStream<Row> toPostgres = figures;
    if (tEnv.getConfig().getConfiguration().toMap().getOrDefault("meterstream.figures-own-task", "false").equals("true")) {
      toPostgres = figures.map(r -> r, figureRows).name("figures_handoff").uid("figures_handoff").startNewChain();
    }
    tEnv.createTemporaryView(
        "figure_updates",
        tEnv.fromChangelogStream(
            toPostgres,
            Schema.newBuilder()
                .fromRowDataType(FIGURE_COLUMNS)
                .primaryKey("account_id", "meter", "period_start", "dimensions")
                .build(),
            ChangelogMode.all()));
    tEnv.createTemporaryView("duplicate_conflicts", figures.getSideOutput(conflictTag));
    if (lateTag != null) {
      tEnv.createTemporaryView("late_first_arrivals", figures.getSideOutput(lateTag));
    }
    if (archiveTag != null) {
      DataStream<RowData> archived = figures.getSideOutput(archiveTag);
      if (tEnv.getConfig().getConfiguration().toMap().getOrDefault("meterstream.archive-own-task", "false").equals("true")) {
        archived = archived.map(r -> r, rows).name("archive_handoff").uid("archive_handoff").startNewChain();
      }
      tEnv.createTemporaryView("archive_rows", archived);
    }
  }

  /** The corrections topic's records: the key (an account) and the value (JSON). */
  static final DataType CORRECTION_COLUMNS =
      DataTypes.ROW(
          DataTypes.FIELD("account_id", DataTypes.STRING()),
          DataTypes.FIELD("payload", DataTypes.STRING()));

  /** The account of a correction. */
  static final class CorrectionAccount implements KeySelector<RowData, String> {
    private static final long serialVersionUID = 1L;

    @Override
    public String getKey(RowData row) {
      return row.getString(0).toString();
    }
  }

  /** The account of an accepted event: the key of its state. */
  static final class AccountKey implements KeySelector<RowData, String> {
    private static final long serialVersionUID = 1L;

    @Override
    public String getKey(RowData row) {
      return row.getString(ACCOUNT_ID).toString();
    }
  }
}
