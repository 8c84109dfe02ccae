package io.meterstream.client;

import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectReader;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Collections;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.regex.Pattern;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

/**
 * Receiving alerts: verify a webhook's Standard Webhooks signature, then parse its CloudEvent.
 * The same checks, in the same order, as every SDK (clients/vectors/webhooks.json).
 *
 * <pre>{@code
 * WebhookEvent event = Webhooks.verify(body, headers, secret); // throws if it is not ours
 * }</pre>
 */
public final class Webhooks {
  /** How far a webhook's timestamp may be from now (the Standard Webhooks default). */
  public static final Duration DEFAULT_TOLERANCE = Duration.ofMinutes(5);

  public static final String INVALID_SECRET = "INVALID_SECRET";
  public static final String MISSING_HEADER = "MISSING_HEADER";
  public static final String INVALID_TIMESTAMP = "INVALID_TIMESTAMP";
  public static final String TIMESTAMP_TOO_OLD = "TIMESTAMP_TOO_OLD";
  public static final String TIMESTAMP_TOO_NEW = "TIMESTAMP_TOO_NEW";
  public static final String NO_MATCHING_SIGNATURE = "NO_MATCHING_SIGNATURE";
  public static final String INVALID_BODY = "INVALID_BODY";

  private static final String PREFIX = "whsec_";
  private static final Pattern BASE64 =
      Pattern.compile("(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}(?:==)?|[A-Za-z0-9+/]{3}=?)?");
  private static final Pattern SECONDS = Pattern.compile("[0-9]{1,15}");
  private static final List<String> NAMES =
      List.of("webhook-id", "webhook-timestamp", "webhook-signature");
  private static final ObjectReader STRICT =
      Json.MAPPER.reader().with(DeserializationFeature.FAIL_ON_TRAILING_TOKENS);

  private Webhooks() {}

  /** {@link #verify(byte[], Map, String, Instant, Duration)} now, with the default tolerance. */
  public static WebhookEvent verify(byte[] body, Map<String, ?> headers, String secret) {
    return verify(body, headers, secret, Instant.now(), DEFAULT_TOLERANCE);
  }

  /** The same for a body read as text (its UTF-8 bytes are what was signed). */
  public static WebhookEvent verify(String body, Map<String, ?> headers, String secret) {
    return verify(body.getBytes(StandardCharsets.UTF_8), headers, secret);
  }

  /**
   * Verify a webhook of the alerts service and return its CloudEvent.
   *
   * <p>{@code webhook-signature} must hold a {@code v1,} signature (HMAC-SHA256, base64) of
   * {@code <webhook-id>.<webhook-timestamp>.<body>} under the endpoint's {@code whsec_} secret
   * (any of its space-separated signatures, as during a rotation), compared in constant time; the
   * timestamp must be within {@code tolerance} of {@code now}, which stops replays.
   *
   * @param body the request's body exactly as received
   * @param headers the request's headers, any case of their names; a value may be a String or a
   *     List of them (the first counts)
   * @param secret the endpoint's secret, {@code whsec_<base64>}
   * @throws WebhookVerificationException with the code of the first check that failed
   */
  public static WebhookEvent verify(
      byte[] body, Map<String, ?> headers, String secret, Instant now, Duration tolerance) {
    String encoded = secret.startsWith(PREFIX) ? secret.substring(PREFIX.length()) : secret;
    if (encoded.isEmpty() || !BASE64.matcher(encoded).matches()) {
      throw new WebhookVerificationException(
          INVALID_SECRET, "expected whsec_ and the standard base64 of a key");
    }
    byte[] key = Base64.getDecoder().decode(encoded);
    List<String> values = new ArrayList<>();
    List<String> missing = new ArrayList<>();
    for (String name : NAMES) {
      String value = header(headers, name);
      values.add(value);
      if (value.isEmpty()) missing.add(name);
    }
    if (!missing.isEmpty()) {
      throw new WebhookVerificationException(
          MISSING_HEADER, "missing or empty: " + String.join(", ", missing));
    }
    String id = values.get(0);
    String stamp = values.get(1);
    if (!SECONDS.matcher(stamp).matches()) {
      String shown = stamp.substring(0, Math.min(40, stamp.length()));
      throw new WebhookVerificationException(INVALID_TIMESTAMP, "not whole seconds: '" + shown + "'");
    }
    long seconds = Long.parseLong(stamp);
    Instant at = Instant.ofEpochSecond(seconds);
    if (at.isBefore(now.minus(tolerance))) {
      throw new WebhookVerificationException(
          TIMESTAMP_TOO_OLD, seconds + " is over " + tolerance + " before now");
    }
    if (at.isAfter(now.plus(tolerance))) {
      throw new WebhookVerificationException(
          TIMESTAMP_TOO_NEW, seconds + " is over " + tolerance + " after now");
    }
    String text = utf8(body);
    byte[] expected = ("v1," + sign(key, id + "." + seconds + ".", body)).getBytes(StandardCharsets.UTF_8);
    boolean matched = false;
    for (String entry : values.get(2).split(" ")) {
      if (entry.startsWith("v1,")
          && MessageDigest.isEqual(entry.getBytes(StandardCharsets.UTF_8), expected)) {
        matched = true;
      }
    }
    if (!matched) {
      throw new WebhookVerificationException(
          NO_MATCHING_SIGNATURE, "no v1 signature of this body and secret");
    }
    return cloudEvent(text);
  }

  private static String header(Map<String, ?> headers, String name) {
    for (Map.Entry<String, ?> entry : headers.entrySet()) {
      if (entry.getKey() == null || !entry.getKey().toLowerCase(Locale.ROOT).equals(name)) continue;
      Object value = entry.getValue();
      if (value instanceof List<?> list) value = list.isEmpty() ? null : list.get(0);
      return value == null ? "" : value.toString();
    }
    return "";
  }

  private static String utf8(byte[] body) {
    try {
      return StandardCharsets.UTF_8
          .newDecoder()
          .onMalformedInput(CodingErrorAction.REPORT)
          .onUnmappableCharacter(CodingErrorAction.REPORT)
          .decode(ByteBuffer.wrap(body))
          .toString();
    } catch (CharacterCodingException e) {
      throw new WebhookVerificationException(INVALID_BODY, "the body is not UTF-8");
    }
  }

  private static String sign(byte[] key, String prefix, byte[] body) {
    try {
      Mac mac = Mac.getInstance("HmacSHA256");
      mac.init(new SecretKeySpec(key, "HmacSHA256"));
      mac.update(prefix.getBytes(StandardCharsets.UTF_8));
      return Base64.getEncoder().encodeToString(mac.doFinal(body));
    } catch (GeneralSecurityException e) {
      throw new IllegalStateException("HmacSHA256 is part of every JDK", e);
    }
  }

  private static WebhookEvent cloudEvent(String text) {
    JsonNode doc;
    try {
      doc = STRICT.readTree(text);
    } catch (IOException e) {
      throw new WebhookVerificationException(INVALID_BODY, "not JSON");
    }
    if (doc == null || !doc.isObject()) {
      throw new WebhookVerificationException(INVALID_BODY, "not a JSON object");
    }
    if (!"1.0".equals(doc.path("specversion").textValue())) {
      throw new WebhookVerificationException(INVALID_BODY, "specversion is not '1.0'");
    }
    for (String name : List.of("id", "source", "type")) {
      JsonNode value = doc.get(name);
      if (value == null || !value.isTextual() || value.textValue().isEmpty()) {
        throw new WebhookVerificationException(INVALID_BODY, name + " is not a non-empty string");
      }
    }
    String subject = optional(doc, "subject", true);
    String time = optional(doc, "time", false);
    String contentType = optional(doc, "datacontenttype", false);
    JsonNode data = doc.get("data");
    if (data != null && !data.isNull() && !data.isObject()) {
      throw new WebhookVerificationException(INVALID_BODY, "data has the wrong type");
    }
    @SuppressWarnings("unchecked")
    Map<String, Object> values =
        data == null || data.isNull()
            ? null
            : Collections.unmodifiableMap(Json.MAPPER.convertValue(data, Map.class));
    return new WebhookEvent(
        "1.0",
        doc.get("id").textValue(),
        doc.get("source").textValue(),
        doc.get("type").textValue(),
        subject,
        time,
        contentType,
        values);
  }

  private static String optional(JsonNode doc, String name, boolean nullable) {
    JsonNode value = doc.get(name);
    if (value == null || (nullable && value.isNull())) return null;
    if (!value.isTextual()) {
      throw new WebhookVerificationException(INVALID_BODY, name + " has the wrong type");
    }
    return value.textValue();
  }
}
