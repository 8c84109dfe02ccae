package io.meterstream.flink;

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import org.apache.flink.table.functions.FunctionContext;
import org.apache.flink.table.functions.ScalarFunction;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * {@code account_time_zone(account_id)}: the account's billing time zone from PostgreSQL's
 * {@code account_time_zones}, 'UTC' for an account without one (or no account).
 *
 * <p>The whole table is held in memory and read again every {@code refreshSeconds} by a thread
 * of its own; a change is seen within that time. A lookup join with a cache asked PostgreSQL once
 * per account each time its cache entry expired: with 10,000 accounts that was a fifth of the
 * thread that reads and checks events (measured). If a reload fails, the last table read stays in
 * use and the failure is logged; the first read, when the task starts, must succeed (retried for a
 * minute, then the task fails and Flink restarts it).
 */
public final class AccountTimeZone extends ScalarFunction {
  private static final long serialVersionUID = 1L;
  private static final Logger LOG = LoggerFactory.getLogger(AccountTimeZone.class);
  private static final String UTC = "UTC";
  private static final long FIRST_READ_TIMEOUT_MS = 60_000;

  private final String jdbcUrl;
  private final String user;
  private final String password;
  private final String table;
  private final long refreshSeconds;
  private transient volatile Map<String, String> zones;
  private transient ScheduledExecutorService reloader;

  public AccountTimeZone(
      String jdbcUrl, String user, String password, String table, long refreshSeconds) {
    this.jdbcUrl = jdbcUrl;
    this.user = user;
    this.password = password;
    this.table = table;
    this.refreshSeconds = refreshSeconds;
  }

  @Override
  public boolean isDeterministic() {
    return false;
  }

  @Override
  public void open(FunctionContext context) throws Exception {
    // Registers the driver with DriverManager from this (the job's) class loader.
    Class.forName("org.postgresql.Driver");
    long deadline = System.currentTimeMillis() + FIRST_READ_TIMEOUT_MS;
    while (zones == null) {
      try {
        zones = read();
      } catch (SQLException e) {
        if (System.currentTimeMillis() > deadline) {
          throw new IllegalStateException("cannot read " + table + " from " + jdbcUrl, e);
        }
        LOG.warn("cannot read {} yet, retrying: {}", table, e.getMessage());
        Thread.sleep(1_000);
      }
    }
    reloader =
        Executors.newSingleThreadScheduledExecutor(
            runnable -> {
              Thread thread = new Thread(runnable, "meterstream-time-zones");
              thread.setDaemon(true);
              return thread;
            });
    reloader.scheduleWithFixedDelay(
        this::reload, refreshSeconds, refreshSeconds, TimeUnit.SECONDS);
  }

  private void reload() {
    try {
      zones = read();
    } catch (SQLException | RuntimeException e) {
      LOG.warn("cannot read {}; keeping the {} time zones read before: {}",
          table, zones.size(), e.getMessage());
    }
  }

  private Map<String, String> read() throws SQLException {
    Map<String, String> read = new HashMap<>();
    try (Connection connection = DriverManager.getConnection(jdbcUrl, user, password);
        Statement statement = connection.createStatement();
        ResultSet rows = statement.executeQuery("SELECT account_id, time_zone FROM " + table)) {
      while (rows.next()) {
        read.put(rows.getString(1), rows.getString(2));
      }
    }
    return read;
  }

  public String eval(String accountId) {
    return accountId == null ? UTC : zones.getOrDefault(accountId, UTC);
  }

  @Override
  public void close() {
    if (reloader != null) {
      reloader.shutdownNow();
      reloader = null;
    }
  }
}
