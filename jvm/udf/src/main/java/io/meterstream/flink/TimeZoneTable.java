package io.meterstream.flink;

import java.io.Serializable;
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
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Each account's billing time zone, from PostgreSQL's {@code account_time_zones}, held in memory
 * and read again every {@code refreshSeconds} by a thread of its own ('UTC' for an account
 * without one, or no account).
 *
 * <p>A lookup join with a cache asked PostgreSQL once per account each time its cache entry
 * expired: with 10,000 accounts that was over a fifth of the thread that reads and checks events
 * (measured). A change is seen within {@code refreshSeconds}. If a reload fails, the last table
 * read stays in use and the failure is logged; the first read, when the task starts, must succeed
 * (retried for a minute, then the task fails and Flink restarts it).
 */
final class TimeZoneTable implements AutoCloseable {
  private static final Logger LOG = LoggerFactory.getLogger(TimeZoneTable.class);
  private static final String UTC = "UTC";
  private static final long FIRST_READ_TIMEOUT_MS = 60_000;

  /** Where the table is; serialisable, so that functions can carry it. */
  static final class Source implements Serializable {
    private static final long serialVersionUID = 1L;
    final String jdbcUrl;
    final String user;
    final String password;
    final String table;
    final long refreshSeconds;

    Source(String jdbcUrl, String user, String password, String table, long refreshSeconds) {
      this.jdbcUrl = jdbcUrl;
      this.user = user;
      this.password = password;
      this.table = table;
      this.refreshSeconds = refreshSeconds;
    }
  }

  private final Source source;
  private final ScheduledExecutorService reloader;
  private volatile Map<String, String> zones;

  /** Reads the table (waiting up to a minute for PostgreSQL), then keeps it fresh. */
  TimeZoneTable(Source source) throws InterruptedException {
    this.source = source;
    try {
      // Registers the driver with DriverManager from this (the job's) class loader.
      Class.forName("org.postgresql.Driver");
    } catch (ClassNotFoundException e) {
      throw new IllegalStateException("the PostgreSQL JDBC driver is not on the class path", e);
    }
    long deadline = System.currentTimeMillis() + FIRST_READ_TIMEOUT_MS;
    while (zones == null) {
      try {
        zones = read();
      } catch (SQLException e) {
        if (System.currentTimeMillis() > deadline) {
          throw new IllegalStateException(
              "cannot read " + source.table + " from " + source.jdbcUrl, e);
        }
        LOG.warn("cannot read {} yet, retrying: {}", source.table, e.getMessage());
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
        this::reload, source.refreshSeconds, source.refreshSeconds, TimeUnit.SECONDS);
  }

  /** The account's zone name; 'UTC' when it has none. */
  String zoneOf(String accountId) {
    return accountId == null ? UTC : zones.getOrDefault(accountId, UTC);
  }

  private void reload() {
    try {
      zones = read();
    } catch (SQLException | RuntimeException e) {
      LOG.warn(
          "cannot read {}; keeping the {} time zones read before: {}",
          source.table,
          zones.size(),
          e.getMessage());
    }
  }

  private Map<String, String> read() throws SQLException {
    Map<String, String> read = new HashMap<>();
    String query = "SELECT account_id, time_zone FROM " + source.table;
    try (Connection connection =
            DriverManager.getConnection(source.jdbcUrl, source.user, source.password);
        Statement statement = connection.createStatement();
        ResultSet rows = statement.executeQuery(query)) {
      while (rows.next()) {
        read.put(rows.getString(1), rows.getString(2));
      }
    }
    return read;
  }

  @Override
  public void close() {
    reloader.shutdownNow();
  }
}
