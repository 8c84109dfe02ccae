package io.meterstream.flink;

import java.time.Instant;
import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.functions.FunctionContext;
import org.apache.flink.table.functions.ScalarFunction;
import org.apache.flink.table.data.RowData;

/**
 * {@code check_event(payload, topic, partition, offset, arrived_at)}: validate one Kafka record,
 * in the record's own place in the stream.
 *
 * <p>The JVM fast path ({@link FastCheckEvent}) answers for the events it recognises as accepted
 * without a warning; every other record is decided by the Python rules, called in place
 * ({@link PythonRules}). Both happen inside this one call, so every record leaves the check in
 * the order it was read from its Kafka partition, whichever path decided it: the dedup behind
 * it sees an idempotency key's arrivals in offset order, and the first arrival is counted. (Two
 * branches merged after the check reordered them: a repeat decided by the JVM could overtake an
 * earlier one left to Python.)
 *
 * <p>{@code meters} is the Python rules' registry (meter schema documents, JSON); {@code spec}
 * the fast path's compiled rules, or null to send every record to Python.
 */
public final class CheckEvent extends ScalarFunction {
  private static final long serialVersionUID = 1L;
  private final String meters;
  private final String spec;
  private final String pythonExecutable;
  private transient FastCheckEvent fast;
  private transient PythonRules python;

  public CheckEvent(String meters, String spec, String pythonExecutable) {
    this.meters = meters;
    this.spec = spec;
    this.pythonExecutable = pythonExecutable;
  }

  /** Not deterministic in fact (Python decides some records); called once per record. */
  @Override
  public boolean isDeterministic() {
    return false;
  }

  @Override
  public void open(FunctionContext context) {
    if (spec != null) {
      fast = new FastCheckEvent();
      fast.open(context);
    }
    python = new PythonRules(pythonExecutable, meters);
  }

  @DataTypeHint(value = FastCheckEvent.CHECKED_EVENT, bridgedTo = RowData.class)
  public RowData eval(
      String payload,
      String topic,
      Integer partition,
      Long offset,
      @DataTypeHint("TIMESTAMP_LTZ(3)") Instant arrivedAt) {
    RowData row = fast == null ? null : fast.eval(payload, topic, partition, offset, arrivedAt, spec);
    return row != null ? row : python.check(payload, topic, partition, offset, arrivedAt);
  }

  @Override
  public void close() {
    if (python != null) {
      python.close();
      python = null;
    }
  }
}
