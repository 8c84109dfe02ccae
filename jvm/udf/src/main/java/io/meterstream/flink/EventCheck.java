package io.meterstream.flink;

import java.time.Instant;
import org.apache.flink.table.data.RowData;

/**
 * The check of one Kafka record: the JVM fast path ({@link FastCheckEvent}) where it answers,
 * the Python rules in place ({@link PythonRules}) for every other record, in the calling thread.
 * Both the SQL function {@link CheckEvent} and the keyed path's {@link CheckAndRoute} use it.
 *
 * <p>{@code meters} is the Python rules' registry (meter schema documents, JSON); {@code spec}
 * the fast path's compiled rules, or null to send every record to Python.
 */
final class EventCheck implements AutoCloseable {
  private final String spec;
  private final FastCheckEvent fast;
  private final PythonRules python;

  EventCheck(String meters, String spec, String pythonExecutable) {
    this.spec = spec;
    if (spec != null) {
      fast = new FastCheckEvent();
      fast.open(null);
    } else {
      fast = null;
    }
    python = new PythonRules(pythonExecutable, meters);
  }

  /** The CHECKED_EVENT row of one record (FastCheckEvent.CHECKED_EVENT). */
  RowData check(String payload, String topic, Integer partition, Long offset, Instant arrivedAt) {
    RowData row = fast == null ? null : fast.eval(payload, topic, partition, offset, arrivedAt, spec);
    return row != null ? row : python.check(payload, topic, partition, offset, arrivedAt);
  }

  @Override
  public void close() {
    python.close();
  }
}
