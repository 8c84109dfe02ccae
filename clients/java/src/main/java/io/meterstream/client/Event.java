package io.meterstream.client;

import com.fasterxml.jackson.annotation.JsonPropertyOrder;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.time.temporal.ChronoUnit;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Objects;
import java.util.UUID;

/**
 * A CloudEvents 1.0 usage event in structured JSON mode. Its id is fixed when it is made, so
 * sending it again (a retry) can never count it twice.
 *
 * @param type the meter
 * @param subject the account
 * @param time RFC 3339, UTC, milliseconds: {@code 2026-10-31T23:59:59.250Z}
 */
@JsonPropertyOrder({
  "specversion", "id", "source", "type", "subject", "time", "datacontenttype", "data"
})
public record Event(
    String specversion,
    String id,
    String source,
    String type,
    String subject,
    String time,
    String datacontenttype,
    Map<String, Object> data) {

  private static final DateTimeFormatter MILLIS =
      DateTimeFormatter.ofPattern("yyyy-MM-dd'T'HH:mm:ss.SSS'Z'").withZone(ZoneOffset.UTC);

  public Event {
    Objects.requireNonNull(id, "id");
    data = data == null ? Map.of() : Collections.unmodifiableMap(new LinkedHashMap<>(data));
  }

  /** An event for {@code meter} and {@code account} with a new random id, happening now. */
  public static Event of(String meter, String account, Map<String, ?> data) {
    return builder(meter, account, data).build();
  }

  /** To set the id, time or source. */
  public static Builder builder(String meter, String account, Map<String, ?> data) {
    return new Builder(meter, account, data);
  }

  /** Builds an {@link Event}. */
  public static final class Builder {
    private final String meter;
    private final String account;
    private final Map<String, ?> data;
    private String id;
    private Instant time;
    private String source = "meterstream-client";

    private Builder(String meter, String account, Map<String, ?> data) {
      this.meter = meter;
      this.account = account;
      this.data = data;
    }

    /** The idempotency key (a new random UUID otherwise). */
    public Builder id(String id) {
      this.id = id;
      return this;
    }

    /** When the usage happened (now otherwise). */
    public Builder time(Instant time) {
      this.time = time;
      return this;
    }

    /** The producing system. */
    public Builder source(String source) {
      this.source = source;
      return this;
    }

    public Event build() {
      Instant at = (time == null ? Instant.now() : time).truncatedTo(ChronoUnit.MILLIS);
      @SuppressWarnings("unchecked")
      Map<String, Object> values = (Map<String, Object>) data;
      return new Event(
          "1.0",
          id == null ? UUID.randomUUID().toString() : id,
          source,
          meter,
          account,
          MILLIS.format(at),
          "application/json",
          values);
    }
  }
}
