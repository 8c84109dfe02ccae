package io.meterstream.client;

import java.time.Instant;
import java.util.LinkedHashMap;
import java.util.Map;

/** Which rejections to read; unset filters are not sent. */
public final class RejectionFilter {
  private final Map<String, String> query = new LinkedHashMap<>();

  public RejectionFilter account(String account) {
    query.put("account", account);
    return this;
  }

  /** A reason code, e.g. {@code WRONG_TYPE}. */
  public RejectionFilter reason(String reason) {
    query.put("reason", reason);
    return this;
  }

  /** Arrived at or after. */
  public RejectionFilter since(Instant since) {
    query.put("since", since.toString());
    return this;
  }

  /** Arrived before. */
  public RejectionFilter until(Instant until) {
    query.put("until", until.toString());
    return this;
  }

  public RejectionFilter limit(int limit) {
    query.put("limit", Integer.toString(limit));
    return this;
  }

  Map<String, String> query() {
    return query;
  }
}
