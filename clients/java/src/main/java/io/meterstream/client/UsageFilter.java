package io.meterstream.client;

import java.util.LinkedHashMap;
import java.util.Map;

/** Which usage rows to read; unset filters are not sent. */
public final class UsageFilter {
  private final Map<String, String> query = new LinkedHashMap<>();

  public UsageFilter account(String account) {
    query.put("account", account);
    return this;
  }

  public UsageFilter meter(String meter) {
    query.put("meter", meter);
    return this;
  }

  /** First {@code period_start} to include, {@code YYYY-MM-DD}. */
  public UsageFilter periodFrom(String date) {
    query.put("period_from", date);
    return this;
  }

  public UsageFilter periodTo(String date) {
    query.put("period_to", date);
    return this;
  }

  /** Rows per page, at most 1,000. */
  public UsageFilter limit(int limit) {
    query.put("limit", Integer.toString(limit));
    return this;
  }

  Map<String, String> query() {
    return query;
  }
}
