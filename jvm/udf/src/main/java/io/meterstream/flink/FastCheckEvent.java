package io.meterstream.flink;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.core.StreamReadFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.math.BigDecimal;
import java.math.RoundingMode;
import java.nio.charset.StandardCharsets;
import java.time.DateTimeException;
import java.time.Instant;
import java.time.LocalDate;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.functions.FunctionContext;
import org.apache.flink.table.functions.ScalarFunction;
import org.apache.flink.table.data.DecimalData;
import org.apache.flink.table.data.GenericRowData;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.StringData;

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

  private static final Pattern DATASCHEMA =
      Pattern.compile("(?:^|[/:])v([1-9][0-9]{0,5})(?:\\.avsc)?\\z");
  private static final int MAX_ID_LENGTH = 256;
  private static final int MAX_ACCOUNT_LENGTH = 128;
  private static final long MICROS = 1_000_000L;
  private static final long MAX_CLOCK_SKEW_MICROS = 5 * 60 * MICROS;
  private static final long DEDUP_WINDOW_MICROS = 35L * 24 * 3600 * MICROS;
  private static final BigDecimal MAX_QUANTITY = new BigDecimal("1e29");
  private static final BigDecimal ONE = BigDecimal.ONE.setScale(9);

  private transient ObjectMapper mapper;
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
    // Read as the Python rules read: a duplicate key or trailing text leaves the record to them.
    // No source text in error locations: building that reference cost ~3% of the check.
    JsonFactory factory =
        JsonFactory.builder()
            .enable(StreamReadFeature.STRICT_DUPLICATE_DETECTION)
            .disable(StreamReadFeature.INCLUDE_SOURCE_IN_LOCATION)
            .build();
    mapper = new ObjectMapper(factory);
    blake2b = new Blake2b64();
    content = new StringBuilder(512);
  }

  /** The accepted CHECKED_EVENT row, or NULL: the Python UDF decides. */
  @DataTypeHint(value = CHECKED_EVENT, bridgedTo = RowData.class)
  public RowData eval(
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
    if (mapper == null) {
      open(null);
    }
    return answer(payload, topic, partition, offset, arrivedAt);
  }

  /**
   * One pass over the record: the envelope's fields as they come (strings checked in place, other
   * values walked), {@code data} read as a tree (its canonical text and fields are needed).
   */
  private RowData answer(
      String payload, String topic, Integer partition, Long offset, Instant arrivedAt) {
    try (JsonParser parser = mapper.createParser(payload)) {
      return parser.nextToken() == JsonToken.START_OBJECT
          ? check(parser, topic, partition, offset, arrivedAt)
          : null;
    } catch (IOException | RuntimeException e) {
      return null;
    }
  }

  private RowData check(JsonParser parser, String topic, Integer partition, Long offset, Instant arrived)
      throws IOException {
    String eventId = null;
    String source = null;
    String meterName = null;
    String account = null;
    String time = null;
    JsonNode data = null;
    Integer version = null;
    for (JsonToken token = parser.nextToken();
        token != JsonToken.END_OBJECT;
        token = parser.nextToken()) {
      String name = parser.currentName();
      JsonToken value = parser.nextToken();
      if (!noSurrogates(name)) {
        return null;
      }
      switch (name) {
        case "data":
          if (value != JsonToken.START_OBJECT) {
            return null;
          }
          data = parser.readValueAsTree();
          break;
        case "id":
          eventId = envelopeText(parser, value);
          break;
        case "source":
          source = envelopeText(parser, value);
          break;
        case "type":
          meterName = envelopeText(parser, value);
          break;
        case "subject":
          account = envelopeText(parser, value);
          break;
        case "time":
          time = envelopeText(parser, value);
          break;
        case "dataschema":
          if (value != JsonToken.VALUE_NULL) {
            String schema = value == JsonToken.VALUE_STRING ? parser.getText() : null;
            Matcher match = schema == null ? null : DATASCHEMA.matcher(schema);
            if (match == null || !noSurrogates(schema) || !match.find()) {
              return null;
            }
            version = Integer.valueOf(match.group(1));
          }
          break;
        default:
          if (!plainStrings(parser, value)) {
            return null;
          }
      }
    }
    // The document ends with its object (FAIL_ON_TRAILING_TOKENS).
    if (parser.nextToken() != null
        || eventId == null
        || source == null
        || meterName == null
        || account == null
        || time == null
        || data == null
        || eventId.length() > MAX_ID_LENGTH) {
      return null;
    }
    if (!accountId(account)) {
      return null;
    }
    long eventMicros = epochMicros(time);
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

  private RowData accepted(
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
    // The table runtime's own row: no conversion from an external Row per record.
    return GenericRowData.of(
        null, null, null, null, StringData.fromString(topic), partition, offset,
        StringData.fromString(eventId), StringData.fromString(account),
        StringData.fromString(meter.meter), StringData.fromString(meter.aggregation), eventMs,
        StringData.fromString(dimensions),
        quantity == null ? null : DecimalData.fromBigDecimal(quantity, 38, 9),
        uniqueValue == null ? null : StringData.fromString(uniqueValue),
        StringData.fromString(dedupKey), fingerprint);
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

  /** Python's {@code datetime.isoformat()} of an aware UTC datetime (years 1 to 9999). */
  private static void isoformat(long micros, StringBuilder out) {
    long seconds = Math.floorDiv(micros, MICROS);
    int fraction = (int) Math.floorMod(micros, MICROS);
    LocalDate date = LocalDate.ofEpochDay(Math.floorDiv(seconds, 86_400L));
    int secondOfDay = (int) Math.floorMod(seconds, 86_400L);
    pad(out, date.getYear(), 4).append('-');
    pad(out, date.getMonthValue(), 2).append('-');
    pad(out, date.getDayOfMonth(), 2).append('T');
    pad(out, secondOfDay / 3600, 2).append(':');
    pad(out, secondOfDay / 60 % 60, 2).append(':');
    pad(out, secondOfDay % 60, 2);
    if (fraction != 0) {
      pad(out.append('.'), fraction, 6);
    }
    out.append("+00:00");
  }

  private static StringBuilder pad(StringBuilder out, int value, int width) {
    for (int limit = 10, i = 1; i < width; i++, limit *= 10) {
      if (value < limit) {
        out.append('0');
      }
    }
    return out.append(value);
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

  /**
   * RFC 3339 with an offset, as Python 3.11's fromisoformat reads it; MIN_VALUE if not. The
   * shape is {@code YYYY-MM-DD(T|t)hh:mm:ss[.f{1,9}](Z|z|(+|-)hh:mm)}, ASCII digits only, read
   * by position.
   */
  static long epochMicros(String text) {
    int length = text.length();
    if (length < 20
        || text.charAt(4) != '-'
        || text.charAt(7) != '-'
        || (text.charAt(10) != 'T' && text.charAt(10) != 't')
        || text.charAt(13) != ':'
        || text.charAt(16) != ':') {
      return Long.MIN_VALUE;
    }
    int year = digits(text, 0, 4);
    int month = digits(text, 5, 2);
    int dayOfMonth = digits(text, 8, 2);
    int hour = digits(text, 11, 2);
    int minute = digits(text, 14, 2);
    int second = digits(text, 17, 2);
    if (year < 1 || month < 0 || dayOfMonth < 0 || hour < 0 || minute < 0 || second < 0) {
      return Long.MIN_VALUE;
    }
    int at = 19;
    int micros = 0;
    if (text.charAt(at) == '.') {
      int start = ++at;
      while (at < length && at - start < 10 && isDigit(text.charAt(at))) {
        at++;
      }
      int count = at - start;
      if (count < 1 || count > 9) {
        return Long.MIN_VALUE;
      }
      // Python keeps the first six digits and drops the rest.
      for (int i = 0; i < 6; i++) {
        micros = micros * 10 + (i < count ? text.charAt(start + i) - '0' : 0);
      }
    }
    int offsetMinutes;
    if (at == length - 1 && (text.charAt(at) == 'Z' || text.charAt(at) == 'z')) {
      offsetMinutes = 0;
    } else if (at == length - 6
        && (text.charAt(at) == '+' || text.charAt(at) == '-')
        && text.charAt(at + 3) == ':') {
      int oh = digits(text, at + 1, 2);
      int om = digits(text, at + 4, 2);
      if (oh < 0 || om < 0 || oh > 23 || om > 59) {
        return Long.MIN_VALUE;
      }
      offsetMinutes = (text.charAt(at) == '-' ? -1 : 1) * (oh * 60 + om);
    } else {
      return Long.MIN_VALUE;
    }
    if (hour > 23 || minute > 59 || second > 59) {
      return Long.MIN_VALUE;
    }
    long day;
    try {
      day = LocalDate.of(year, month, dayOfMonth).toEpochDay();
    } catch (DateTimeException e) {
      return Long.MIN_VALUE;
    }
    long seconds = day * 86_400L + hour * 3_600L + minute * 60L + second - offsetMinutes * 60L;
    return seconds * MICROS + micros;
  }

  private static boolean isDigit(char c) {
    return c >= '0' && c <= '9';
  }

  /** The number written by {@code count} ASCII digits at {@code from}, or -1. */
  private static int digits(String text, int from, int count) {
    int value = 0;
    for (int i = from; i < from + count; i++) {
      char c = text.charAt(i);
      if (!isDigit(c)) {
        return -1;
      }
      value = value * 10 + (c - '0');
    }
    return value;
  }

  /** A required envelope attribute: a non-empty string without surrogates; null otherwise. */
  private static String envelopeText(JsonParser parser, JsonToken value) throws IOException {
    if (value != JsonToken.VALUE_STRING) {
      return null;
    }
    String text = parser.getText();
    return text.isEmpty() || !noSurrogates(text) ? null : text;
  }

  /**
   * Every string and key of an attribute outside {@code data} is one orjson and Jackson read
   * alike: no surrogates. ({@code data} is written by {@link CanonicalJson}, which refuses them
   * too.) Leaves the parser at the value's last token.
   */
  private static boolean plainStrings(JsonParser parser, JsonToken value) throws IOException {
    if (value == JsonToken.VALUE_STRING) {
      return noSurrogates(parser.getTextCharacters(), parser.getTextOffset(), parser.getTextLength());
    }
    if (value != JsonToken.START_OBJECT && value != JsonToken.START_ARRAY) {
      return true;
    }
    for (int depth = 1; depth > 0; ) {
      JsonToken token = parser.nextToken();
      if (token == JsonToken.START_OBJECT || token == JsonToken.START_ARRAY) {
        depth++;
      } else if (token == JsonToken.END_OBJECT || token == JsonToken.END_ARRAY) {
        depth--;
      } else if ((token == JsonToken.VALUE_STRING || token == JsonToken.FIELD_NAME)
          && !noSurrogates(
              parser.getTextCharacters(), parser.getTextOffset(), parser.getTextLength())) {
        return false;
      }
    }
    return true;
  }

  /** {@code [A-Za-z0-9][A-Za-z0-9._:@-]{0,127}}, as rules/validate.py's ACCOUNT_ID. */
  static boolean accountId(String text) {
    int length = text.length();
    if (length == 0 || length > MAX_ACCOUNT_LENGTH) {
      return false;
    }
    for (int i = 0; i < length; i++) {
      char c = text.charAt(i);
      boolean alphanumeric =
          (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
      if (!alphanumeric && (i == 0 || (c != '.' && c != '_' && c != ':' && c != '@' && c != '-'))) {
        return false;
      }
    }
    return true;
  }

  private static boolean noSurrogates(char[] chars, int offset, int length) {
    for (int i = offset; i < offset + length; i++) {
      if (Character.isSurrogate(chars[i])) {
        return false;
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
