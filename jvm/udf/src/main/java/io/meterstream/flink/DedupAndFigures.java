package io.meterstream.flink;

import static io.meterstream.flink.KeyedPath.ACCOUNT_ID;
import static io.meterstream.flink.KeyedPath.ARRIVED_AT;
import static io.meterstream.flink.KeyedPath.DEDUP_KEY;
import static io.meterstream.flink.KeyedPath.DIMENSIONS;
import static io.meterstream.flink.KeyedPath.EVENT_TIME_MS;
import static io.meterstream.flink.KeyedPath.FINGERPRINT;
import static io.meterstream.flink.KeyedPath.METER;
import static io.meterstream.flink.KeyedPath.PERIOD_START;
import static io.meterstream.flink.KeyedPath.QUANTITY;
import static io.meterstream.flink.KeyedPath.TOO_LATE;
import static io.meterstream.flink.KeyedPath.UNIQUE_VALUE;

import java.math.BigDecimal;
import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import org.apache.flink.api.common.state.MapState;
import org.apache.flink.api.common.state.MapStateDescriptor;
import org.apache.flink.api.common.state.StateTtlConfig;
import org.apache.flink.api.common.typeinfo.BasicTypeInfo;
import org.apache.flink.api.common.typeinfo.PrimitiveArrayTypeInfo;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.api.common.operators.ProcessingTimeService.ProcessingTimeCallback;
import org.apache.flink.table.data.GenericRowData;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.StringData;
import org.apache.flink.table.data.TimestampData;
import org.apache.flink.util.OutputTag;

/**
 * The keyed hot path in one operator, keyed by account: dedup, then the billing figures.
 *
 * <p>Per accepted event (a row of {@link KeyedPath#COLUMNS}): the first arrival of its (account,
 * idempotency key) is remembered in {@code first_fingerprints} (RocksDB map state, one entry per
 * key, expiring {@code dedupTtl} after its last arrival, as the SQL path's OVER aggregation does).
 * A later arrival with another content fingerprint goes to the {@code conflicts} output; one with
 * the same content is a retry and is dropped. A first arrival after its period's allowed lateness
 * goes to {@code late}. Every other first arrival is added to its figure. Every accepted event,
 * first or not, goes to {@code archive} when the archive is on.
 *
 * <p>Figures changed since the last flush are kept on the heap and flushed (written to the
 * {@code figures} map state and emitted as absolute values, one row per changed figure) every
 * {@code flushIntervalMs}, when {@code flushSize} figures are pending, before each checkpoint
 * barrier and at the end of input: a checkpoint always holds the figures of exactly the events
 * before it, and every emitted row is an idempotent upsert.
 *
 * <p>Records reach this operator in their Kafka partition's order (one chain from the source, one
 * exchange), so the first arrival of each key is the lowest offset in its partition.
 */
public final class DedupAndFigures extends AbstractStreamOperator<RowData>
    implements OneInputStreamOperator<RowData, RowData>, ProcessingTimeCallback {
  private static final long serialVersionUID = 1L;
  private static final char SEPARATOR = '\u0000';

  private final Map<String, Figure.Aggregation> kinds;
  private final long dedupTtlMs;
  private final long figureTtlMs;
  private final long flushIntervalMs;
  private final int flushSize;
  private final OutputTag<RowData> conflicts;
  private final OutputTag<RowData> late;
  private final OutputTag<RowData> archive;

  private transient MapState<String, Long> firstFingerprints;
  private transient MapState<String, byte[]> figures;
  private transient MapState<String, Boolean> uniqueValues;
  /** Figures changed since the last flush, by account, then figure key. */
  private transient Map<String, Map<String, Figure>> pending;

  private transient int pendingCount;
  private transient boolean timerSet;

  /**
   * @param kinds each meter's aggregation kind (the meter definitions).
   * @param archive null when the archive is off.
   */
  DedupAndFigures(
      Map<String, Figure.Aggregation> kinds,
      long dedupTtlMs,
      long figureTtlMs,
      long flushIntervalMs,
      int flushSize,
      OutputTag<RowData> conflicts,
      OutputTag<RowData> late,
      OutputTag<RowData> archive) {
    this.kinds = new HashMap<>(kinds);
    this.dedupTtlMs = dedupTtlMs;
    this.figureTtlMs = figureTtlMs;
    this.flushIntervalMs = flushIntervalMs;
    this.flushSize = flushSize;
    this.conflicts = conflicts;
    this.late = late;
    this.archive = archive;
  }

  private static StateTtlConfig ttl(long millis) {
    return StateTtlConfig.newBuilder(Duration.ofMillis(millis))
        .updateTtlOnCreateAndWrite()
        .neverReturnExpired()
        .build();
  }

  @Override
  public void open() throws Exception {
    super.open();
    MapStateDescriptor<String, Long> dedup =
        new MapStateDescriptor<>("first_fingerprints", Types.STRING, Types.LONG);
    dedup.enableTimeToLive(ttl(dedupTtlMs));
    MapStateDescriptor<String, byte[]> figure =
        new MapStateDescriptor<>(
            "figures", BasicTypeInfo.STRING_TYPE_INFO,
            PrimitiveArrayTypeInfo.BYTE_PRIMITIVE_ARRAY_TYPE_INFO);
    figure.enableTimeToLive(ttl(figureTtlMs));
    MapStateDescriptor<String, Boolean> unique =
        new MapStateDescriptor<>("unique_values", Types.STRING, Types.BOOLEAN);
    unique.enableTimeToLive(ttl(figureTtlMs));
    firstFingerprints = getRuntimeContext().getMapState(dedup);
    figures = getRuntimeContext().getMapState(figure);
    uniqueValues = getRuntimeContext().getMapState(unique);
    pending = new HashMap<>();
  }

  @Override
  public void processElement(StreamRecord<RowData> element) throws Exception {
    RowData row = element.getValue();
    if (archive != null) {
      output.collect(archive, element);
    }
    String dedupKey = row.getString(DEDUP_KEY).toString();
    long fingerprint = row.getLong(FINGERPRINT);
    Long first = firstFingerprints.get(dedupKey);
    if (first != null) {
      // A repeat: rewritten, so that the key lives dedupTtl after its last arrival (as the SQL
      // path's OVER aggregation, which updates its accumulator on every arrival).
      firstFingerprints.put(dedupKey, first);
      if (first != fingerprint) {
        output.collect(conflicts, element);
      }
      return;
    }
    firstFingerprints.put(dedupKey, fingerprint);
    if (row.getBoolean(TOO_LATE)) {
      if (late != null) {
        output.collect(late, element);
      }
      return;
    }
    count(row);
  }

  private void count(RowData row) throws Exception {
    String account = row.getString(ACCOUNT_ID).toString();
    String meter = row.getString(METER).toString();
    Figure.Aggregation kind = kinds.get(meter);
    if (kind == null) {
      throw new IllegalStateException("no aggregation is known for meter " + meter);
    }
    String figureKey =
        meter + SEPARATOR + row.getInt(PERIOD_START) + SEPARATOR + row.getString(DIMENSIONS);
    Map<String, Figure> ofAccount = pending.computeIfAbsent(account, a -> new HashMap<>());
    Figure figure = ofAccount.get(figureKey);
    if (figure == null) {
      byte[] stored = figures.get(figureKey);
      figure = stored == null ? new Figure(kind) : Figure.decode(stored);
      ofAccount.put(figureKey, figure);
      pendingCount++;
    }
    boolean newUnique = false;
    if (kind == Figure.Aggregation.UNIQUE_COUNT && !row.isNullAt(UNIQUE_VALUE)) {
      String uniqueKey = figureKey + SEPARATOR + row.getString(UNIQUE_VALUE);
      newUnique = !uniqueValues.contains(uniqueKey);
      uniqueValues.put(uniqueKey, Boolean.TRUE);
    }
    BigDecimal quantity =
        row.isNullAt(QUANTITY)
            ? null
            : row.getDecimal(QUANTITY, Figure.PRECISION, Figure.SCALE).toBigDecimal();
    figure.add(
        row.getLong(EVENT_TIME_MS),
        row.getTimestamp(ARRIVED_AT, 3).getMillisecond(),
        quantity,
        newUnique);
    if (pendingCount >= flushSize) {
      flush();
    } else if (!timerSet) {
      long now = getProcessingTimeService().getCurrentProcessingTime();
      getProcessingTimeService().registerTimer(now + flushIntervalMs, this);
      timerSet = true;
    }
  }

  @Override
  public void onProcessingTime(long time) throws Exception {
    timerSet = false;
    flush();
  }

  /** Writes every pending figure to state and emits it; the key context is restored after. */
  private void flush() throws Exception {
    if (pendingCount == 0) {
      return;
    }
    Object key = getCurrentKey();
    for (Map.Entry<String, Map<String, Figure>> ofAccount : pending.entrySet()) {
      String account = ofAccount.getKey();
      setCurrentKey(account);
      StringData accountData = StringData.fromString(account);
      for (Map.Entry<String, Figure> entry : ofAccount.getValue().entrySet()) {
        Figure figure = entry.getValue();
        figures.put(entry.getKey(), figure.encode());
        output.collect(new StreamRecord<>(row(accountData, entry.getKey(), figure)));
      }
    }
    pending.clear();
    pendingCount = 0;
    if (key != null) {
      setCurrentKey(key);
    }
  }

  /** The {@link KeyedPath#FIGURE_COLUMNS} row of one figure. */
  private static RowData row(StringData account, String figureKey, Figure figure) {
    int first = figureKey.indexOf(SEPARATOR);
    int second = figureKey.indexOf(SEPARATOR, first + 1);
    return GenericRowData.of(
        account,
        StringData.fromString(figureKey.substring(0, first)),
        Integer.parseInt(figureKey.substring(first + 1, second)),
        StringData.fromString(figureKey.substring(second + 1)),
        StringData.fromString(figure.kind.name()),
        figure.quantity(),
        figure.count,
        TimestampData.fromEpochMillis(figure.firstEventMs),
        TimestampData.fromEpochMillis(figure.lastEventMs),
        TimestampData.fromEpochMillis(figure.lastArrivedMs));
  }

  @Override
  public void prepareSnapshotPreBarrier(long checkpointId) throws Exception {
    super.prepareSnapshotPreBarrier(checkpointId);
    flush();
  }

  @Override
  public void finish() throws Exception {
    flush();
    super.finish();
  }
}
