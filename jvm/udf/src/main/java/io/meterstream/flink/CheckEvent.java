package io.meterstream.flink;

import java.time.Instant;
import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.functions.FunctionContext;
import org.apache.flink.table.functions.ScalarFunction;

/**
 * {@code check_event(payload, topic, partition, offset, arrived_at)}: validate one Kafka record
 * ({@link EventCheck}) in SQL: the SQL reference path's check, and the one the tests call.
 *
 * <p>A record's row must be read through one column (a view's {@code c}): a projection of several
 * of its fields that the planner merges into the call would call it once per field. The keyed
 * operator's path does not use SQL for the check at all ({@link CheckAndRoute}).
 */
public final class CheckEvent extends ScalarFunction {
  private static final long serialVersionUID = 1L;
  private final String meters;
  private final String spec;
  private final String pythonExecutable;
  private transient EventCheck check;

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
    check = new EventCheck(meters, spec, pythonExecutable);
  }

  @DataTypeHint(value = FastCheckEvent.CHECKED_EVENT, bridgedTo = RowData.class)
  public RowData eval(
      String payload,
      String topic,
      Integer partition,
      Long offset,
      @DataTypeHint("TIMESTAMP_LTZ(3)") Instant arrivedAt) {
    return check.check(payload, topic, partition, offset, arrivedAt);
  }

  @Override
  public void close() {
    if (check != null) {
      check.close();
      check = null;
    }
  }
}
