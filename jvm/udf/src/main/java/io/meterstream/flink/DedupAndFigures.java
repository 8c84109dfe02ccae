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
import java.time.LocalDate;
import java.time.LocalDateTime;
import java.time.ZoneOffset;
import java.util.HashMap;
import java.util.HashSet;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.apache.flink.api.common.operators.ProcessingTimeService.ProcessingTimeCallback;
import org.apache.flink.api.common.state.MapState;
import org.apache.flink.api.common.state.MapStateDescriptor;
import org.apache.flink.api.common.state.StateTtlConfig;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.BasicTypeInfo;
import org.apache.flink.api.common.typeinfo.PrimitiveArrayTypeInfo;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.TwoInputStreamOperator;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.table.data.DecimalData;
import org.apache.flink.table.data.RowData;
import org.apache.flink.types.Row;
import org.apache.flink.types.RowKind;
import org.apache.flink.util.OutputTag;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The keyed hot path in one operator, keyed by account: dedup, the billing figures, and the
 * corrections that void or amend counted events.
 *
 * <p>Input 1, accepted events (rows of {@link KeyedPath#COLUMNS}): the first arrival of its
 * (account, idempotency key) is remembered in {@code arrivals} (RocksDB map state, one entry per
 * key, expiring {@code dedupTtl} after its last arrival, as the SQL path's OVER aggregation does),
 * with its content fingerprint and its contribution to its figure ({@link Arrival}). A later
 * arrival with another fingerprint goes to the {@code conflicts} output; one with the same content
 * is a retry and is dropped. A first arrival after its period's allowed lateness goes to
 * {@code late}. Every other first arrival is added to its figure. Every accepted event, first or
 * not, goes to {@code archive} when the archive is on.
 *
 * <p>Input 2, corrections ({@link Correction}, from the corrections topic): a void takes a counted
 * event out of its figure, an amend replaces its contribution (keeping its arrival time and first
 * fingerprint); the figure is then computed again from the contributions of the account's counted
 * events, so every kind (MIN, MAX, LATEST included) and the first and last times are exact. A
 * correction for a key not seen yet waits in {@code arrivals} for its event. Applying one twice
 * changes nothing. A figure left with no event is deleted.
 *
 * <p>Figures changed since the last flush are kept on the heap and flushed (written to the
 * {@code figures} map state and emitted as absolute values, one row per changed figure: an upsert,
 * or a delete) every {@code flushIntervalMs}, when {@code flushSize} figures are pending, before
 * each checkpoint barrier and at the end of input: a checkpoint always holds the figures of
 * exactly the events before it, and every emitted row is idempotent.
 *
 * <p>Records reach this operator in their Kafka partition's order (one chain from the source, one
 * exchange), so the first arrival of each key is the lowest offset in its partition.
 */
public final class DedupAndFigures extends AbstractStreamOperator<Row>
    implements TwoInputStreamOperator<RowData, RowData, Row>, ProcessingTimeCallback {
  private static final long serialVersionUID = 1L;
  private static final Logger LOG = LoggerFactory.getLogger(DedupAndFigures.class);
  private static final char SEPARATOR = '\u0000';

  private final Map<String, Figure.Aggregation> kinds;
  private final long dedupTtlMs;
  private final long figureTtlMs;
  private final long flushIntervalMs;
  private final int flushSize;
  private final int cacheSize;
  private final OutputTag<RowData> conflicts;
  private final OutputTag<RowData> late;
  private final OutputTag<RowData> archive;

  private transient MapState<String, byte[]> arrivals;
  private transient MapState<String, byte[]> figures;
  private transient MapState<Integer, String> figureKeys;
  private transient ValueState<Integer> nextFigureId;
  private transient MapState<String, Boolean> uniqueValues;
  /** Figures changed since the last flush, by account, then figure key. */
  private transient Map<String, Map<String, Figure>> pending;
  /**
   * The figures read or written lately, by account and figure key, least recently used first
   * out: a figure is touched again in most flush windows, and reading it back from RocksDB each
   * time was a fifth of this operator's time (measured). Always what state holds, or will hold
   * at the next flush; empty after a restore.
   */
  private transient LinkedHashMap<String, Figure> cache;

  private transient int pendingCount;
  private transient boolean timerSet;

  /**
   * @param kinds each meter's aggregation kind (the meter definitions).
   * @param late null when late events are not written.
   * @param archive null when the archive is off.
   */
  DedupAndFigures(
      Map<String, Figure.Aggregation> kinds,
      long dedupTtlMs,
      long figureTtlMs,
      long flushIntervalMs,
      int flushSize,
      int cacheSize,
      OutputTag<RowData> conflicts,
      OutputTag<RowData> late,
      OutputTag<RowData> archive) {
    this.kinds = new HashMap<>(kinds);
    this.cacheSize = cacheSize;
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
    MapStateDescriptor<String, byte[]> arrival =
        new MapStateDescriptor<>(
            "arrivals",
            BasicTypeInfo.STRING_TYPE_INFO,
            PrimitiveArrayTypeInfo.BYTE_PRIMITIVE_ARRAY_TYPE_INFO);
    arrival.enableTimeToLive(ttl(dedupTtlMs));
    MapStateDescriptor<String, byte[]> figure =
        new MapStateDescriptor<>(
            "figures",
            BasicTypeInfo.STRING_TYPE_INFO,
            PrimitiveArrayTypeInfo.BYTE_PRIMITIVE_ARRAY_TYPE_INFO);
    figure.enableTimeToLive(ttl(figureTtlMs));
    MapStateDescriptor<Integer, String> key =
        new MapStateDescriptor<>("figure_keys", Types.INT, Types.STRING);
    key.enableTimeToLive(ttl(figureTtlMs));
    MapStateDescriptor<String, Boolean> unique =
        new MapStateDescriptor<>("unique_values", Types.STRING, Types.BOOLEAN);
    unique.enableTimeToLive(ttl(figureTtlMs));
    arrivals = getRuntimeContext().getMapState(arrival);
    figures = getRuntimeContext().getMapState(figure);
    figureKeys = getRuntimeContext().getMapState(key);
    // No TTL: an account's figure ids never repeat, even after its figures expired.
    nextFigureId =
        getRuntimeContext().getState(new ValueStateDescriptor<>("next_figure_id", Types.INT));
    uniqueValues = getRuntimeContext().getMapState(unique);
    pending = new HashMap<>();
    cache =
        new LinkedHashMap<>(16, 0.75f, true) {
          private static final long serialVersionUID = 1L;

          @Override
          protected boolean removeEldestEntry(Map.Entry<String, Figure> eldest) {
            return size() > cacheSize;
          }
        };
  }

  /** An accepted event. */
  @Override
  public void processElement1(StreamRecord<RowData> element) throws Exception {
    RowData row = element.getValue();
    if (archive != null) {
      output.collect(archive, element);
    }
    String dedupKey = row.getString(DEDUP_KEY).toString();
    long fingerprint = row.getLong(FINGERPRINT);
    byte[] stored = arrivals.get(dedupKey);
    Correction waiting = null;
    if (stored != null) {
      Arrival seen = Arrival.decode(stored);
      if (seen.status != Arrival.PENDING) {
        // A repeat: rewritten, so that the key lives dedupTtl after its last arrival (as the SQL
        // path's OVER aggregation, which updates its accumulator on every arrival).
        arrivals.put(dedupKey, stored);
        if (seen.fingerprint != fingerprint) {
          output.collect(conflicts, element);
        }
        return;
      }
      waiting = Correction.parse(seen.pending);
    }
    if (row.getBoolean(TOO_LATE)) {
      arrivals.put(dedupKey, Arrival.of(Arrival.LATE, fingerprint).encode());
      if (waiting != null) {
        LOG.warn("correction {} is for a late event, which is not counted", waiting.id);
      }
      if (late != null) {
        output.collect(late, element);
      }
      return;
    }
    String account = row.getString(ACCOUNT_ID).toString();
    long arrivedMs = row.getTimestamp(ARRIVED_AT, 3).getMillisecond();
    if (waiting != null && waiting.isVoid()) {
      arrivals.put(dedupKey, Arrival.of(Arrival.VOIDED, fingerprint).encode());
      return;
    }
    if (waiting != null) {
      count(account, dedupKey, fingerprint, waiting.meter, waiting.figureKey(), waiting.eventMs,
          arrivedMs, waiting.quantity, waiting.uniqueValue);
      return;
    }
    String meter = row.getString(METER).toString();
    String figureKey =
        meter + SEPARATOR + row.getInt(PERIOD_START) + SEPARATOR + row.getString(DIMENSIONS);
    BigDecimal quantity =
        row.isNullAt(QUANTITY)
            ? null
            : row.getDecimal(QUANTITY, Figure.PRECISION, Figure.SCALE).toBigDecimal();
    String uniqueValue = row.isNullAt(UNIQUE_VALUE) ? null : row.getString(UNIQUE_VALUE).toString();
    count(account, dedupKey, fingerprint, meter, figureKey, row.getLong(EVENT_TIME_MS), arrivedMs,
        quantity, uniqueValue);
  }

  /** Adds a first arrival to its figure and remembers its contribution. */
  private void count(
      String account,
      String dedupKey,
      long fingerprint,
      String meter,
      String figureKey,
      long eventMs,
      long arrivedMs,
      BigDecimal quantity,
      String uniqueValue)
      throws Exception {
    Figure figure = figure(account, figureKey, kindOf(meter));
    boolean newUnique = false;
    if (figure.kind == Figure.Aggregation.UNIQUE_COUNT && uniqueValue != null) {
      String uniqueKey = figureKey + SEPARATOR + uniqueValue;
      newUnique = !uniqueValues.contains(uniqueKey);
      uniqueValues.put(uniqueKey, Boolean.TRUE);
    }
    figure.add(eventMs, arrivedMs, quantity, newUnique);
    arrivals.put(
        dedupKey,
        Arrival.counted(fingerprint, figure.id, eventMs, arrivedMs, quantity, uniqueValue)
            .encode());
    changed();
  }

  /** A correction (void or amend) of one counted event of the current account. */
  @Override
  public void processElement2(StreamRecord<RowData> element) throws Exception {
    RowData row = element.getValue();
    Correction correction;
    try {
      correction = Correction.parse(row.getString(1).toString());
    } catch (RuntimeException e) {
      LOG.error("a record on the corrections topic is not a correction, skipped: {}", e.toString());
      return;
    }
    if (!correction.inStream) {
      return; // a closed period: the next recalculation applies it
    }
    String account = row.getString(0).toString();
    byte[] stored = arrivals.get(correction.dedupKey);
    if (stored == null) {
      // Its event is not here yet (a restore from an older savepoint): applied when it comes.
      arrivals.put(correction.dedupKey, Arrival.pending(correction.json).encode());
      return;
    }
    Arrival seen = Arrival.decode(stored);
    if (seen.status == Arrival.PENDING) {
      arrivals.put(correction.dedupKey, Arrival.pending(correction.json).encode());
      return;
    }
    if (seen.status != Arrival.COUNTED) {
      return; // voided already, or late (not counted): nothing to change
    }
    Set<Integer> touched = new HashSet<>();
    touched.add(seen.figureId);
    if (correction.isVoid()) {
      arrivals.put(correction.dedupKey, Arrival.of(Arrival.VOIDED, seen.fingerprint).encode());
    } else {
      Figure target = figure(account, correction.figureKey(), kindOf(correction.meter));
      touched.add(target.id);
      arrivals.put(
          correction.dedupKey,
          Arrival.counted(
                  seen.fingerprint,
                  target.id,
                  correction.eventMs,
                  seen.arrivedMs,
                  correction.quantity,
                  correction.uniqueValue)
              .encode());
    }
    recompute(account, touched);
  }

  private Figure.Aggregation kindOf(String meter) {
    Figure.Aggregation kind = kinds.get(meter);
    if (kind == null) {
      throw new IllegalStateException("no aggregation is known for meter " + meter);
    }
    return kind;
  }

  /** The current account's figure: pending on the heap, cached, from state, or a new one. */
  private Figure figure(String account, String figureKey, Figure.Aggregation kind)
      throws Exception {
    Map<String, Figure> ofAccount = pending.computeIfAbsent(account, a -> new HashMap<>());
    Figure figure = ofAccount.get(figureKey);
    if (figure != null) {
      return figure;
    }
    String cacheKey = cacheKey(account, figureKey);
    long now = getProcessingTimeService().getCurrentProcessingTime();
    figure = cache.get(cacheKey);
    if (figure == null || now - figure.writtenAtMs > figureTtlMs) {
      // Not cached, or cached longer than its state lives: what state holds decides.
      byte[] stored = figures.get(figureKey);
      if (stored != null) {
        figure = Figure.decode(stored);
      } else {
        Integer next = nextFigureId.value();
        figure = new Figure(kind, next == null ? 0 : next);
        nextFigureId.update(figure.id + 1);
        figureKeys.put(figure.id, figureKey);
      }
      cache.put(cacheKey, figure);
    }
    ofAccount.put(figureKey, figure);
    pendingCount++;
    return figure;
  }

  private static String cacheKey(String account, String figureKey) {
    return account + SEPARATOR + figureKey;
  }

  /**
   * Computes the current account's figures {@code ids} again from the contributions of its
   * counted events, and their unique values: after a correction took one out or changed it.
   */
  private void recompute(String account, Set<Integer> ids) throws Exception {
    Map<Integer, Figure> fresh = new HashMap<>();
    Map<Integer, Set<String>> uniques = new HashMap<>();
    Map<Integer, String> keys = new HashMap<>();
    for (int id : ids) {
      String figureKey = figureKeys.get(id);
      keys.put(id, figureKey);
      String meter = figureKey.substring(0, figureKey.indexOf(SEPARATOR));
      fresh.put(id, new Figure(kindOf(meter), id));
      uniques.put(id, new HashSet<>());
    }
    for (Map.Entry<String, byte[]> entry : arrivals.entries()) {
      Arrival a = Arrival.decode(entry.getValue());
      Figure figure = a.status == Arrival.COUNTED ? fresh.get(a.figureId) : null;
      if (figure != null) {
        boolean newUnique = a.uniqueValue != null && uniques.get(a.figureId).add(a.uniqueValue);
        figure.add(a.eventMs, a.arrivedMs, a.quantity, newUnique);
      }
    }
    Map<String, Figure> ofAccount = pending.computeIfAbsent(account, a -> new HashMap<>());
    for (Map.Entry<Integer, Figure> entry : fresh.entrySet()) {
      String figureKey = keys.get(entry.getKey());
      String prefix = figureKey + SEPARATOR;
      for (Iterator<String> it = uniqueValues.keys().iterator(); it.hasNext(); ) {
        if (it.next().startsWith(prefix)) {
          it.remove();
        }
      }
      for (String value : uniques.get(entry.getKey())) {
        uniqueValues.put(prefix + value, Boolean.TRUE);
      }
      cache.put(cacheKey(account, figureKey), entry.getValue());
      if (ofAccount.put(figureKey, entry.getValue()) == null) {
        pendingCount++;
      }
    }
    changed();
  }

  /** A figure changed: flush now if enough are pending, else make sure a flush is due. */
  private void changed() throws Exception {
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
    long now = getProcessingTimeService().getCurrentProcessingTime();
    for (Map.Entry<String, Map<String, Figure>> ofAccount : pending.entrySet()) {
      String account = ofAccount.getKey();
      setCurrentKey(account);
      for (Map.Entry<String, Figure> entry : ofAccount.getValue().entrySet()) {
        Figure figure = entry.getValue();
        if (figure.count == 0) {
          // Every event of it was voided: no figure (a recalculation gives no row either).
          figures.remove(entry.getKey());
          figureKeys.remove(figure.id);
          cache.remove(cacheKey(account, entry.getKey()));
          output.collect(new StreamRecord<>(deleted(account, entry.getKey())));
        } else {
          figures.put(entry.getKey(), figure.encode());
          figure.writtenAtMs = now;
          output.collect(new StreamRecord<>(row(account, entry.getKey(), figure)));
        }
      }
    }
    pending.clear();
    pendingCount = 0;
    if (key != null) {
      setCurrentKey(key);
    }
  }

  /**
   * The {@link KeyedPath#FIGURE_COLUMNS} row of one figure (an upsert): an external row, as the
   * Table API reads a changelog stream (one per changed figure and flush, not per event).
   */
  private static Row row(String account, String figureKey, Figure figure) {
    List<String> parts = split(figureKey);
    DecimalData quantity = figure.quantity();
    return Row.ofKind(
        RowKind.UPDATE_AFTER,
        account,
        parts.get(0),
        LocalDate.ofEpochDay(Long.parseLong(parts.get(1))),
        parts.get(2),
        figure.kind.name(),
        quantity == null ? null : quantity.toBigDecimal(),
        figure.count,
        utc(figure.firstEventMs),
        utc(figure.lastEventMs),
        utc(figure.lastArrivedMs));
  }

  private static LocalDateTime utc(long epochMs) {
    return LocalDateTime.ofEpochSecond(
        Math.floorDiv(epochMs, 1000L), (int) Math.floorMod(epochMs, 1000L) * 1_000_000,
        ZoneOffset.UTC);
  }

  /** The delete of one figure: its key columns, the others empty. */
  private static Row deleted(String account, String figureKey) {
    List<String> parts = split(figureKey);
    return Row.ofKind(
        RowKind.DELETE,
        account,
        parts.get(0),
        LocalDate.ofEpochDay(Long.parseLong(parts.get(1))),
        parts.get(2),
        null, null, null, null, null, null);
  }

  /** meter, period start (epoch day), dimensions. */
  private static List<String> split(String figureKey) {
    int first = figureKey.indexOf(SEPARATOR);
    int second = figureKey.indexOf(SEPARATOR, first + 1);
    return List.of(
        figureKey.substring(0, first),
        figureKey.substring(first + 1, second),
        figureKey.substring(second + 1));
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
