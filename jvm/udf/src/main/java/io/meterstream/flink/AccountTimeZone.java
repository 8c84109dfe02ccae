package io.meterstream.flink;

import org.apache.flink.table.functions.FunctionContext;
import org.apache.flink.table.functions.ScalarFunction;

/**
 * {@code account_time_zone(account_id)}: the account's billing time zone ({@link TimeZoneTable}),
 * for the SQL reference path; the keyed operator's path reads the table in {@link CheckAndRoute}.
 */
public final class AccountTimeZone extends ScalarFunction {
  private static final long serialVersionUID = 1L;
  private final TimeZoneTable.Source source;
  private transient TimeZoneTable zones;

  public AccountTimeZone(
      String jdbcUrl, String user, String password, String table, long refreshSeconds) {
    this.source = new TimeZoneTable.Source(jdbcUrl, user, password, table, refreshSeconds);
  }

  @Override
  public boolean isDeterministic() {
    return false;
  }

  @Override
  public void open(FunctionContext context) throws Exception {
    zones = new TimeZoneTable(source);
  }

  public String eval(String accountId) {
    return zones.zoneOf(accountId);
  }

  @Override
  public void close() {
    if (zones != null) {
      zones.close();
      zones = null;
    }
  }
}
