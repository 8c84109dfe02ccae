package io.meterstream.flink;

import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.ObjectReader;
import java.io.IOException;
import java.math.BigDecimal;
import java.math.RoundingMode;
import java.nio.charset.StandardCharsets;
import java.time.DateTimeException;
import java.time.Instant;
import java.time.LocalDate;
import java.time.LocalDateTime;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.Iterator;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.functions.FunctionContext;
import org.apache.flink.table.functions.ScalarFunction;
import org.apache.flink.types.Row;

/**
 * {@code fast_check_event(payload, topic, partition, offset, arrived_at, spec)}: the JVM fast path
 * of the Python {@code check_event} UDF.
 *
 * <p>The Python rules ({@code meterstream.rules.validate}) are the one definition of what is
 * accepted and why an event is rejected. This function recognises the common case, an event those
 * rules accept without a warning and whose content it can hash exactly as they do, and returns the
 * same CHECKED_EVENT row for it. For every other record (every rejection, every warning, anything
 * unusual) it returns NULL, and {@link CheckEvent} asks the Python rules. A differential test
 * (tests/flink/test_fast_path.py) holds the two to the same rows.
 */
public final class FastCheckEvent extends ScalarFunction {
  public static final String CHECKED_EVENT =
      "ROW<reason STRING, detail STRING, warning STRING, warning_detail STRING,"
          + " source_topic STRING, source_partition INT, source_offset BIGINT, event_id STRING,"
          + " account_id STRING, meter STRING, aggregation STRING, event_time_ms BIGINT,"
          + " dimensions STRING, quantity DECIMAL(38, 9), unique_value STRING,"
          + " dedup_key STRING, fingerprint BIGINT>";

  private static final Pattern ACCOUNT_ID = Pattern.compile("[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}");
  private static final Pattern DATASCHEMA =
      Pattern.compile("(?:^|[/:])v([1-9][0-9]{0,5})(?:\\.avsc)?\\z");
  private static final Pattern RFC3339 =
      Pattern.compile(
          "(\\d{4})-(\\d{2})-(\\d{2})[Tt](\\d{2}):(\\d{2}):(\\d{2})(?:\\.(\\d{1,9}))?"
              + "(?:[Zz]|([+-])(\\d{2}):(\\d{2}))");
  private static final String[] ENVELOPE = {"id", "source", "type", "subject", "time"};
  private static final int MAX_ID_LENGTH = 256;
  private static final long MICROS = 1_000_000L;
  private static final long MAX_CLOCK_SKEW_MICROS = 5 * 60 * MICROS;
  private static final long DEDUP_WINDOW_MICROS = 35L * 24 * 3600 * MICROS;
  private static final BigDecimal MAX_QUANTITY = new BigDecimal("1e29");
  private static final DateTimeFormatter ISO_SECONDS =
      DateTimeFormatter.ofPattern("uuuu-MM-dd'T'HH:mm:ss");
  private static final BigDecimal ONE = BigDecimal.ONE.setScale(9);

  private transient ObjectReader reader;
  private transient Blake2b64 blake2b;
  private transient StringBuilder content;
  private transient String specText;
  private transient MeterSpec spec;

  /** Not deterministic in fact; declared so that the planner calls it once per record. */
  @Override
  public boolean isDeterministic() {
    return false;
  }

  @Override
  public void open(FunctionContext context) {
    ObjectMapper mapper = new ObjectMapper();
    mapper.enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS);
    mapper.enable(JsonParser.Feature.STRICT_DUPLICATE_DETECTION);
    reader = mapper.reader();
    blake2b = new Blake2b64();
    content = new StringBuilder(512);
  }

  /** The accepted CHECKED_EVENT row, or NULL: the Python UDF decides. */
  @DataTypeHint(CHECKED_EVENT)
  public Row eval(
      String payload,
      String topic,
      Integer partition,
      Long offset,
      @DataTypeHint("TIMESTAMP_LTZ(3)") Instant arrivedAt,
      String meters) {
    if (payload == null || arrivedAt == null || meters == null) {
      return null;
    }
    if (meters != specText && !meters.equals(specText)) {
      spec = new MeterSpec(meters);
      specText = meters;
    }
    if (reader == null) {
      open(null);
    }
    return answer(payload, topic, partition, offset, arrivedAt);
  }

  private Row answer(
      String payload, String topic, Integer partition, Long offset, Instant arrivedAt) {
    JsonNode doc;
    try {
      doc = reader.readTree(payload);
    } catch (IOException | RuntimeException e) {
      return null;
    }
    return doc == null || !doc.isObject() ? null : check(doc, topic, partition, offset, arrivedAt);
  }

  private Row check(JsonNode doc, String topic, Integer partition, Long offset, Instant arrived) {
    if (!envelopeStrings(doc)) {
      return null;
    }
    for (String name : ENVELOPE) {
      JsonNode field = doc.get(name);
      if (field == null || !field.isTextual() || field.textValue().isEmpty()) {
        return null;
      }
    }
    String eventId = doc.get("id").textValue();
    String account = doc.get("subject").textValue();
    String meterName = doc.get("type").textValue();
    JsonNode data = doc.get("data");
    if (eventId.length() > MAX_ID_LENGTH || data == null || !data.isObject()) {
      return null;
    }
    Integer version = null;
    JsonNode schema = doc.get("dataschema");
    if (schema != null && !schema.isNull()) {
      Matcher match = schema.isTextual() ? DATASCHEMA.matcher(schema.textValue()) : null;
      if (match == null || !match.find()) {
        return null;
      }
      version = Integer.valueOf(match.group(1));
    }
    if (!ACCOUNT_ID.matcher(account).matches()) {
      return null;
    }
    long eventMicros = epochMicros(doc.get("time").textValue());
    MeterSpec.Version meter = spec.find(meterName, version);
    if (eventMicros == Long.MIN_VALUE || meter == null || meter.sunset) {
      return null;
    }
    long arrivedMicros = arrived.getEpochSecond() * MICROS + arrived.getNano() / 1_000;
    if (eventMicros > arrivedMicros + MAX_CLOCK_SKEW_MICROS
        || eventMicros < arrivedMicros - DEDUP_WINDOW_MICROS
        || !fieldsPass(meter, data)) {
      return null;
    }
    return accepted(meter, data, eventId, account, eventMicros, topic, partition, offset);
  }

  private Row accepted(
      MeterSpec.Version meter,
      JsonNode data,
      String eventId,
      String account,
      long eventMicros,
      String topic,
      Integer partition,
      Long offset) {
    BigDecimal quantity = null;
    String uniqueValue = null;
    switch (meter.aggregation) {
      case "COUNT":
        quantity = ONE;
        break;
      case "UNIQUE_COUNT":
        uniqueValue = canonicalScalar(data.get(meter.valueField));
        if (uniqueValue == null) {
          return null;
        }
        break;
      default:
        quantity = quantity(meter, data.get(meter.valueField));
        if (quantity == null) {
          return null;
        }
    }
    String dimensions = "";
    if (meter.groupBy.length > 0) {
      StringBuilder out = new StringBuilder(64);
      if (!dimensions(meter, data, out)) {
        return null;
      }
      dimensions = out.toString();
    }
    Long fingerprint = fingerprint(meter.meter, eventMicros, data);
    if (fingerprint == null) {
      return null;
    }
    // Python: int(event_time.timestamp() * 1000), in doubles, truncated.
    long eventMs = (long) (((double) eventMicros / 1e6) * 1000.0);
    String dedupKey = meter.eventIdKey ? "id:" + eventId : "ts:" + meter.meter + ":" + eventMs;
    return Row.of(
        null, null, null, null, topic, partition, offset, eventId, account, meter.meter,
        meter.aggregation, eventMs, dimensions, quantity, uniqueValue, dedupKey, fingerprint);
  }

  /** The quantity of a SUM, MIN, MAX, MEAN or LATEST event, or null when Python decides. */
  private static BigDecimal quantity(MeterSpec.Version meter, JsonNode value) {
    if (value == null || !value.isNumber()) {
      return null;
    }
    String text = CanonicalJson.scalar(value);
    if (text == null) {
      return null;
    }
    BigDecimal quantity = new BigDecimal(text);
    boolean additive = meter.aggregation.equals("SUM") || meter.aggregation.equals("MEAN");
    if ((additive && quantity.signum() < 0) || quantity.abs().compareTo(MAX_QUANTITY) >= 0) {
      return null;
    }
    return quantity.setScale(9, RoundingMode.HALF_EVEN);
  }

  /** Python's {@code _canonical}: str() of a string, integer, float or "true"/"false". */
  private static String canonicalScalar(JsonNode value) {
    if (value == null) {
      return null;
    }
    if (value.isTextual()) {
      return value.textValue();
    }
    if (value.isBoolean()) {
      return value.booleanValue() ? "true" : "false";
    }
    return value.isNumber() ? CanonicalJson.scalar(value) : null;
  }

  private static boolean dimensions(MeterSpec.Version meter, JsonNode data, StringBuilder out) {
    String[] keys = meter.groupBy;
    out.append('{');
    for (int i = 0; i < keys.length; i++) {
      JsonNode value = data.get(keys[i]);
      if (value == null || !CanonicalJson.plainString(keys[i])) {
        return false;
      }
      if (i > 0) {
        out.append(',');
      }
      out.append('"').append(keys[i]).append("\":");
      if (!CanonicalJson.write(value, out)) {
        return false;
      }
    }
    out.append('}');
    return true;
  }

  /** {@code blake2b(orjson.dumps([meter, event_time.isoformat(), data], sorted keys), 8)}. */
  private Long fingerprint(String meter, long eventMicros, JsonNode data) {
    if (!CanonicalJson.plainString(meter)) {
      return null;
    }
    StringBuilder out = content;
    out.setLength(0);
    out.append("[\"").append(meter).append("\",\"");
    isoformat(eventMicros, out);
    out.append("\",");
    if (!CanonicalJson.write(data, out)) {
      return null;
    }
    out.append(']');
    byte[] bytes = out.toString().getBytes(StandardCharsets.UTF_8);
    return blake2b.hash(bytes, bytes.length);
  }

  /** Python's {@code datetime.isoformat()} of an aware UTC datetime. */
  private static void isoformat(long micros, StringBuilder out) {
    long seconds = Math.floorDiv(micros, MICROS);
    int fraction = (int) Math.floorMod(micros, MICROS);
    out.append(LocalDateTime.ofEpochSecond(seconds, 0, ZoneOffset.UTC).format(ISO_SECONDS));
    if (fraction != 0) {
      String digits = Integer.toString(fraction);
      out.append('.');
      for (int i = digits.length(); i < 6; i++) {
        out.append('0');
      }
      out.append(digits);
    }
    out.append("+00:00");
  }

  /** Every data field rule of the version passes (CompiledMeter.check_fields). */
  private static boolean fieldsPass(MeterSpec.Version meter, JsonNode data) {
    for (MeterSpec.Field field : meter.fields) {
      JsonNode value = data.get(field.name);
      if (value == null || value.isNull()) {
        if (field.required) {
          return false;
        }
        continue;
      }
      if (!anyTypeMatches(field.types, value)) {
        return false;
      }
    }
    return true;
  }

  private static boolean anyTypeMatches(String[] types, JsonNode value) {
    for (String type : types) {
      if (typeMatches(type, value)) {
        return true;
      }
    }
    return false;
  }

  /** rules/validate.py AVRO_CHECKS for a non-null value; big integers are left to Python. */
  private static boolean typeMatches(String type, JsonNode value) {
    switch (type) {
      case "null":
        return false;
      case "string":
      case "bytes":
        return value.isTextual();
      case "boolean":
        return value.isBoolean();
      case "int":
        return value.isInt();
      case "long":
        return value.isInt() || value.isLong();
      case "float":
      case "double":
        return value.isInt() || value.isLong() || value.isDouble();
      case "array":
        return value.isArray();
      case "map":
      case "record":
        return value.isObject();
      default:
        return true;
    }
  }

  /** RFC 3339 with an offset, as Python 3.11's fromisoformat reads it; MIN_VALUE if not. */
  static long epochMicros(String text) {
    Matcher m = RFC3339.matcher(text);
    if (!m.matches()) {
      return Long.MIN_VALUE;
    }
    int hour = Integer.parseInt(m.group(4));
    int minute = Integer.parseInt(m.group(5));
    int second = Integer.parseInt(m.group(6));
    int offsetMinutes = 0;
    if (m.group(8) != null) {
      int oh = Integer.parseInt(m.group(9));
      int om = Integer.parseInt(m.group(10));
      if (oh > 23 || om > 59) {
        return Long.MIN_VALUE;
      }
      offsetMinutes = (m.group(8).equals("-") ? -1 : 1) * (oh * 60 + om);
    }
    if (hour > 23 || minute > 59 || second > 59) {
      return Long.MIN_VALUE;
    }
    long day;
    try {
      int year = Integer.parseInt(m.group(1));
      if (year < 1) {
        return Long.MIN_VALUE;
      }
      day =
          LocalDate.of(year, Integer.parseInt(m.group(2)), Integer.parseInt(m.group(3)))
              .toEpochDay();
    } catch (DateTimeException e) {
      return Long.MIN_VALUE;
    }
    int micros = 0;
    String fraction = m.group(7);
    if (fraction != null) {
      // Python keeps the first six digits and drops the rest.
      String six = (fraction + "00000").substring(0, 6);
      micros = Integer.parseInt(six);
    }
    long seconds = day * 86_400L + hour * 3_600L + minute * 60L + second - offsetMinutes * 60L;
    return seconds * MICROS + micros;
  }

  /**
   * Every string and key outside {@code data} is one orjson and Jackson read alike: no
   * surrogates. ({@code data} is written by {@link CanonicalJson}, which refuses them too.)
   */
  private static boolean envelopeStrings(JsonNode doc) {
    for (Iterator<Map.Entry<String, JsonNode>> it = doc.fields(); it.hasNext(); ) {
      Map.Entry<String, JsonNode> entry = it.next();
      if (!noSurrogates(entry.getKey())
          || (!entry.getKey().equals("data") && !plainStrings(entry.getValue()))) {
        return false;
      }
    }
    return true;
  }

  private static boolean plainStrings(JsonNode node) {
    if (node.isTextual()) {
      return noSurrogates(node.textValue());
    }
    if (node.isObject()) {
      for (Iterator<Map.Entry<String, JsonNode>> it = node.fields(); it.hasNext(); ) {
        Map.Entry<String, JsonNode> entry = it.next();
        if (!noSurrogates(entry.getKey()) || !plainStrings(entry.getValue())) {
          return false;
        }
      }
    } else if (node.isArray()) {
      for (JsonNode item : node) {
        if (!plainStrings(item)) {
          return false;
        }
      }
    }
    return true;
  }

  private static boolean noSurrogates(String text) {
    for (int i = 0; i < text.length(); i++) {
      if (Character.isSurrogate(text.charAt(i))) {
        return false;
      }
    }
    return true;
  }
}
