package io.meterstream.flink;

import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.time.Instant;
import org.apache.flink.table.data.DecimalData;
import org.apache.flink.table.data.GenericRowData;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.StringData;
import pemja.core.PythonInterpreter;
import pemja.core.PythonInterpreterConfig;

/**
 * The Python rules ({@code meterstream.rules.validate}) called in place, in the calling thread,
 * through pemja (the embedded CPython that PyFlink's thread mode uses too).
 *
 * <p>An interpreter belongs to the thread that made it: Flink opens, calls and closes a
 * function in its task's thread. The Python side is {@code meterstream.flink.embedded}; it
 * answers each record with the 17 fields of CHECKED_EVENT, as a tuple.
 */
final class PythonRules implements AutoCloseable {
  private static final int FIELDS = 17;
  private final PythonInterpreter python;

  PythonRules(String pythonExecutable, String meters) {
    python =
        new PythonInterpreter(
            PythonInterpreterConfig.newBuilder()
                .setPythonExec(pythonExecutable)
                .setExcType(PythonInterpreterConfig.ExecType.MULTI_THREAD)
                .build());
    try {
      python.set("_meterstream_meters", meters);
      python.exec(
          "try:\n"
              + "    from meterstream.flink.embedded import EmbeddedRules\n"
              + "except ImportError as exc:\n"
              + "    raise ImportError(f'the TaskManager\\'s Python ({__import__(\"sys\")"
              + ".executable}) cannot import meterstream: install it there ({exc})') from exc\n"
              + "_meterstream_check = EmbeddedRules(_meterstream_meters).check\n"
              + "del _meterstream_meters\n");
    } catch (RuntimeException e) {
      python.close();
      throw e;
    }
  }

  /** The CHECKED_EVENT row the Python rules give for one Kafka record. */
  RowData check(String payload, String topic, Integer partition, Long offset, Instant arrivedAt) {
    if (arrivedAt == null) {
      throw new IllegalArgumentException("a record without its Kafka timestamp: " + topic);
    }
    Object answer =
        python.invoke(
            "_meterstream_check",
            // As UTF-8 bytes: pemja's String conversion loses a leading byte order mark.
            (payload == null ? "" : payload).getBytes(StandardCharsets.UTF_8),
            topic,
            partition == null ? -1L : partition.longValue(),
            offset == null ? -1L : offset,
            arrivedAt.toEpochMilli());
    if (!(answer instanceof Object[]) || ((Object[]) answer).length != FIELDS) {
      throw new IllegalStateException("meterstream.flink.embedded answered " + answer);
    }
    Object[] f = (Object[]) answer;
    return GenericRowData.of(
        text(f[0]), text(f[1]), text(f[2]), text(f[3]), StringData.fromString(topic), partition,
        offset, text(f[7]), text(f[8]), text(f[9]), text(f[10]), asLong(f[11]), text(f[12]),
        asDecimal(f[13]), text(f[14]), text(f[15]), asLong(f[16]));
  }

  private static Long asLong(Object value) {
    return value == null ? null : ((Number) value).longValue();
  }

  private static StringData text(Object value) {
    return value == null ? null : StringData.fromString((String) value);
  }

  private static DecimalData asDecimal(Object value) {
    if (value == null) {
      return null;
    }
    BigDecimal decimal =
        value instanceof BigDecimal ? (BigDecimal) value : new BigDecimal(value.toString());
    return DecimalData.fromBigDecimal(decimal, 38, 9);
  }

  @Override
  public void close() {
    python.close();
  }
}
