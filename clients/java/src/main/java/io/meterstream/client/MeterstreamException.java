package io.meterstream.client;

import java.util.Map;

/**
 * The root of every error the client throws: the API refused a request (a subclass per status),
 * or retries ran out. {@code code} and {@code detail} are the API's error document's.
 */
public class MeterstreamException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  private final Integer status;
  private final String code;
  private final String detail;
  private final transient Object body;

  public MeterstreamException(String message, Integer status, Object body, Throwable cause) {
    super(message, cause);
    this.status = status;
    this.body = body;
    Map<?, ?> doc = body instanceof Map<?, ?> map ? map : Map.of();
    this.code = doc.get("error") instanceof String s ? s : null;
    this.detail = doc.get("detail") instanceof String s ? s : null;
  }

  /** The answer's HTTP status, or null when no answer came. */
  public Integer status() {
    return status;
  }

  /** The API's error code, e.g. {@code UNAUTHENTICATED}, if the answer had one. */
  public String code() {
    return code;
  }

  public String detail() {
    return detail;
  }

  /** The answer's JSON document (maps and lists), if it was JSON. */
  public Object body() {
    return body;
  }

  static MeterstreamException refused(String what, int status, byte[] answer) {
    String text = new String(answer, java.nio.charset.StandardCharsets.UTF_8);
    String message = what + ": " + status + " " + text.substring(0, Math.min(500, text.length()));
    Object body = Json.parseOrNull(answer);
    return switch (status) {
      case 401 -> new AuthenticationException(message, status, body);
      case 403 -> new PermissionDeniedException(message, status, body);
      case 404 -> new NotFoundException(message, status, body);
      case 413 -> new PayloadTooLargeException(message, status, body);
      case 422 -> new UnprocessableException(message, status, body);
      default -> new MeterstreamException(message, status, body, null);
    };
  }
}
