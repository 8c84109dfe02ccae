package io.meterstream.flink;

import java.math.BigDecimal;
import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;

/**
 * What the keyed operator remembers of one (account, idempotency key): its first arrival's
 * content fingerprint (the dedup), and, while it counts, its contribution to its figure (so that
 * a correction can take it out again). Stored as compact bytes: ~25 more than the fingerprint
 * alone, for a SUM event.
 *
 * <p>States: COUNTED (in its figure), LATE (after its period's lateness: not counted), VOIDED
 * (taken out by a correction), PENDING (a correction came before its event: the event is not seen
 * yet; {@link #pending} holds the correction).
 */
final class Arrival {
  static final byte COUNTED = 1;
  static final byte LATE = 2;
  static final byte VOIDED = 3;
  static final byte PENDING = 4;
  private static final byte FORMAT = 1;

  byte status;
  long fingerprint;
  /** COUNTED: the figure it counts in ({@link Figure#id}), its times, quantity and unique value. */
  int figureId;
  long eventMs;
  long arrivedMs;
  BigDecimal quantity;
  String uniqueValue;
  /** PENDING: the correction's JSON, applied when the event arrives. */
  String pending;

  static Arrival counted(
      long fingerprint,
      int figureId,
      long eventMs,
      long arrivedMs,
      BigDecimal quantity,
      String uniqueValue) {
    Arrival a = new Arrival();
    a.status = COUNTED;
    a.fingerprint = fingerprint;
    a.figureId = figureId;
    a.eventMs = eventMs;
    a.arrivedMs = arrivedMs;
    a.quantity = quantity;
    a.uniqueValue = uniqueValue;
    return a;
  }

  static Arrival of(byte status, long fingerprint) {
    Arrival a = new Arrival();
    a.status = status;
    a.fingerprint = fingerprint;
    return a;
  }

  static Arrival pending(String correction) {
    Arrival a = new Arrival();
    a.status = PENDING;
    a.pending = correction;
    return a;
  }

  byte[] encode() {
    Writer out = new Writer();
    out.bytes[out.size++] = FORMAT;
    out.bytes[out.size++] = status;
    if (status == PENDING) {
      out.text(pending);
      return out.result();
    }
    out.fixed(fingerprint);
    if (status == COUNTED) {
      out.varint(figureId);
      out.fixed(eventMs);
      out.varint(zigzag(arrivedMs - eventMs));
      if (quantity == null) {
        out.varint(0);
      } else {
        byte[] unscaled = quantity.unscaledValue().toByteArray();
        out.varint(unscaled.length);
        out.raw(unscaled);
        out.varint(zigzag(quantity.scale()));
      }
      out.text(uniqueValue);
    }
    return out.result();
  }

  static Arrival decode(byte[] bytes) {
    Reader in = new Reader(bytes);
    byte format = in.bytes[in.at++];
    if (format != FORMAT) {
      throw new IllegalStateException("an arrival in state has unknown format " + format);
    }
    Arrival a = new Arrival();
    a.status = in.bytes[in.at++];
    if (a.status == PENDING) {
      a.pending = in.text();
      return a;
    }
    a.fingerprint = in.fixed();
    if (a.status == COUNTED) {
      a.figureId = (int) in.varint();
      a.eventMs = in.fixed();
      a.arrivedMs = a.eventMs + unzigzag(in.varint());
      int length = (int) in.varint();
      if (length > 0) {
        BigInteger unscaled = new BigInteger(Arrays.copyOfRange(in.bytes, in.at, in.at + length));
        in.at += length;
        a.quantity = new BigDecimal(unscaled, (int) unzigzag(in.varint()));
      }
      a.uniqueValue = in.text();
    }
    return a;
  }

  private static long zigzag(long value) {
    return (value << 1) ^ (value >> 63);
  }

  private static long unzigzag(long value) {
    return (value >>> 1) ^ -(value & 1);
  }

  /** Bytes out: fixed longs, varints, and strings (UTF-8, length + 1, 0 for null). */
  private static final class Writer {
    byte[] bytes = new byte[48];
    int size;

    void room(int more) {
      if (size + more > bytes.length) {
        bytes = Arrays.copyOf(bytes, Math.max(bytes.length * 2, size + more));
      }
    }

    void fixed(long value) {
      room(8);
      for (int i = 7; i >= 0; i--) {
        bytes[size++] = (byte) (value >>> (8 * i));
      }
    }

    void varint(long value) {
      room(10);
      while ((value & ~0x7FL) != 0) {
        bytes[size++] = (byte) ((value & 0x7F) | 0x80);
        value >>>= 7;
      }
      bytes[size++] = (byte) value;
    }

    void raw(byte[] data) {
      room(data.length);
      System.arraycopy(data, 0, bytes, size, data.length);
      size += data.length;
    }

    void text(String value) {
      if (value == null) {
        varint(0);
        return;
      }
      byte[] utf8 = value.getBytes(StandardCharsets.UTF_8);
      varint(utf8.length + 1L);
      raw(utf8);
    }

    byte[] result() {
      return Arrays.copyOf(bytes, size);
    }
  }

  private static final class Reader {
    final byte[] bytes;
    int at;

    Reader(byte[] bytes) {
      this.bytes = bytes;
    }

    long fixed() {
      long value = 0;
      for (int i = 0; i < 8; i++) {
        value = (value << 8) | (bytes[at++] & 0xFFL);
      }
      return value;
    }

    long varint() {
      long value = 0;
      for (int shift = 0; ; shift += 7) {
        byte b = bytes[at++];
        value |= (long) (b & 0x7F) << shift;
        if ((b & 0x80) == 0) {
          return value;
        }
      }
    }

    String text() {
      int length = (int) varint();
      if (length == 0) {
        return null;
      }
      String value = new String(bytes, at, length - 1, StandardCharsets.UTF_8);
      at += length - 1;
      return value;
    }
  }
}
