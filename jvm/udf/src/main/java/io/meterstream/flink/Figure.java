package io.meterstream.flink;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.math.BigDecimal;
import java.math.BigInteger;
import org.apache.flink.table.data.DecimalData;
import org.apache.flink.table.data.DecimalDataUtils;

/**
 * The running figure of one (account, meter, billing period, segment): what the SQL reference
 * path's GROUP BY computes (meterstream/flink/sqlgen.py), kept for one aggregation kind.
 *
 * <p>Every kind keeps the event count, the first and last event time and the last arrival; the
 * quantity is the kind's own: SUM and MEAN keep the exact sum, MIN and MAX the extreme value,
 * LATEST the value of the latest event time (ties: the larger text, as SQL's MAX of
 * "{@code <ms>|<value>}"), UNIQUE_COUNT the number of distinct values (the values themselves are
 * in their own map state). Stored as bytes, with a format version first.
 */
final class Figure {
  static final int PRECISION = 38;
  static final int SCALE = 9;
  private static final byte FORMAT = 1;

  final Aggregation kind;
  /** The figure's number within its account (its events' contributions name it). */
  final int id;
  long count;
  long firstEventMs;
  long lastEventMs;
  long lastArrivedMs;
  /** SUM, MEAN: the sum; MIN, MAX: the extreme; LATEST: the latest value; else null. */
  BigDecimal value;
  /** LATEST: the event time of {@link #value}. */
  long valueMs;
  /** UNIQUE_COUNT: distinct values seen. */
  long unique;
  /** When it was last written to state (processing time, ms); not stored. */
  long writtenAtMs;

  /** The aggregation kinds (meterstream.meters.model.Aggregation), in a stable order. */
  enum Aggregation {
    SUM,
    COUNT,
    MIN,
    MAX,
    MEAN,
    LATEST,
    UNIQUE_COUNT
  }

  Figure(Aggregation kind, int id) {
    this.kind = kind;
    this.id = id;
  }

  /** Counts one deduplicated event; {@code newUnique}: a UNIQUE_COUNT value not seen before. */
  void add(long eventMs, long arrivedMs, BigDecimal quantity, boolean newUnique) {
    if (count == 0) {
      firstEventMs = eventMs;
      lastEventMs = eventMs;
      lastArrivedMs = arrivedMs;
    } else {
      firstEventMs = Math.min(firstEventMs, eventMs);
      lastEventMs = Math.max(lastEventMs, eventMs);
      lastArrivedMs = Math.max(lastArrivedMs, arrivedMs);
    }
    count++;
    if (newUnique) {
      unique++;
    }
    if (quantity == null) {
      return;
    }
    switch (kind) {
      case SUM:
      case MEAN:
        value = value == null ? quantity : value.add(quantity);
        break;
      case MIN:
        value = value == null || quantity.compareTo(value) < 0 ? quantity : value;
        break;
      case MAX:
        value = value == null || quantity.compareTo(value) > 0 ? quantity : value;
        break;
      case LATEST:
        if (value == null
            || eventMs > valueMs
            || (eventMs == valueMs
                && quantity.toPlainString().compareTo(value.toPlainString()) > 0)) {
          value = quantity;
          valueMs = eventMs;
        }
        break;
      default:
        break;
    }
  }

  /**
   * The figure as DECIMAL(38, 9), computed as Flink SQL computes it: a sum beyond 38 digits is
   * NULL; a mean is the sum divided by the count with Flink's own decimal division.
   */
  DecimalData quantity() {
    switch (kind) {
      case COUNT:
        return DecimalData.fromBigDecimal(BigDecimal.valueOf(count), PRECISION, SCALE);
      case UNIQUE_COUNT:
        return DecimalData.fromBigDecimal(BigDecimal.valueOf(unique), PRECISION, SCALE);
      case MEAN:
        DecimalData sum = decimal(value);
        if (sum == null || count == 0) {
          return null;
        }
        // AVG's division: DECIMAL(38, 9) / BIGINT, 34 digits, then HALF_UP to scale 9.
        DecimalData n = DecimalData.fromBigDecimal(BigDecimal.valueOf(count), 19, 0);
        return DecimalDataUtils.divide(sum, n, PRECISION, SCALE);
      default:
        return decimal(value);
    }
  }

  private static DecimalData decimal(BigDecimal v) {
    return v == null ? null : DecimalData.fromBigDecimal(v, PRECISION, SCALE);
  }

  byte[] encode() {
    ByteArrayOutputStream bytes = new ByteArrayOutputStream(48);
    try (DataOutputStream out = new DataOutputStream(bytes)) {
      out.writeByte(FORMAT);
      out.writeByte(kind.ordinal());
      out.writeInt(id);
      out.writeLong(count);
      out.writeLong(firstEventMs);
      out.writeLong(lastEventMs);
      out.writeLong(lastArrivedMs);
      out.writeLong(valueMs);
      out.writeLong(unique);
      if (value == null) {
        out.writeByte(0);
      } else {
        byte[] unscaled = value.unscaledValue().toByteArray();
        out.writeByte(1);
        out.writeInt(value.scale());
        out.writeShort(unscaled.length);
        out.write(unscaled);
      }
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
    return bytes.toByteArray();
  }

  static Figure decode(byte[] data) {
    try (DataInputStream in = new DataInputStream(new ByteArrayInputStream(data))) {
      byte format = in.readByte();
      if (format != FORMAT) {
        throw new IllegalStateException("a figure in state has unknown format " + format);
      }
      Aggregation kind = Aggregation.values()[in.readByte()];
      Figure figure = new Figure(kind, in.readInt());
      figure.count = in.readLong();
      figure.firstEventMs = in.readLong();
      figure.lastEventMs = in.readLong();
      figure.lastArrivedMs = in.readLong();
      figure.valueMs = in.readLong();
      figure.unique = in.readLong();
      if (in.readByte() == 1) {
        int scale = in.readInt();
        byte[] unscaled = new byte[in.readShort()];
        in.readFully(unscaled);
        figure.value = new BigDecimal(new BigInteger(unscaled), scale);
      }
      return figure;
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }
}
