package io.meterstream.flink;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.math.BigDecimal;
import java.time.LocalDate;

/**
 * One message of the corrections topic (written by meterstream.corrections after the correction
 * is recorded in PostgreSQL): a void of a counted event, or an amend (its new content, as the
 * Python rules checked it). docs/corrections.md has the format.
 */
final class Correction {
  private static final ObjectMapper JSON = new ObjectMapper();
  private static final char SEPARATOR = '\u0000';

  final String json;
  final String id;
  final String dedupKey;
  final String action;
  /** The event's period is still open: the stream applies it (else a recalculation will). */
  final boolean inStream;
  /** Amend only: the new content. */
  final String meter;
  final LocalDate periodStart;
  final String dimensions;
  final BigDecimal quantity;
  final String uniqueValue;
  final long eventMs;

  private Correction(String json, JsonNode doc) {
    this.json = json;
    this.id = text(doc, "correction_id");
    this.dedupKey = text(doc, "dedup_key");
    this.action = text(doc, "action");
    this.inStream = doc.path("in_stream").asBoolean(false);
    if (dedupKey == null || !("void".equals(action) || "amend".equals(action))) {
      throw new IllegalArgumentException("not a void or an amend of a key: " + json);
    }
    if (isVoid()) {
      meter = null;
      periodStart = null;
      dimensions = null;
      quantity = null;
      uniqueValue = null;
      eventMs = 0;
      return;
    }
    meter = text(doc, "meter");
    String period = text(doc, "period_start");
    dimensions = text(doc, "dimensions");
    String amount = text(doc, "quantity");
    uniqueValue = text(doc, "unique_value");
    if (meter == null || period == null || dimensions == null || !doc.path("event_time_ms").isNumber()) {
      throw new IllegalArgumentException("an amend without its new content: " + json);
    }
    periodStart = LocalDate.parse(period);
    quantity = amount == null ? null : new BigDecimal(amount).setScale(Figure.SCALE);
    eventMs = doc.get("event_time_ms").longValue();
  }

  static Correction parse(String json) {
    try {
      return new Correction(json, JSON.readTree(json));
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }

  boolean isVoid() {
    return "void".equals(action);
  }

  /** The amended content's figure: meter, period start (epoch day), dimensions. */
  String figureKey() {
    return meter + SEPARATOR + periodStart.toEpochDay() + SEPARATOR + dimensions;
  }

  private static String text(JsonNode doc, String field) {
    JsonNode value = doc.get(field);
    return value == null || value.isNull() ? null : value.asText();
  }
}
