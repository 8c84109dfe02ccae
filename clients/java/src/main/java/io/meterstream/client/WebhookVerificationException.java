package io.meterstream.client;

import java.util.Map;

/**
 * A webhook failed verification: {@link #code()} says why (one of {@link Webhooks}' codes, the
 * same in every SDK), {@link #detail()} how. Answer the request with a 4xx.
 */
public class WebhookVerificationException extends MeterstreamException {
  private static final long serialVersionUID = 1L;

  public WebhookVerificationException(String code, String detail) {
    super("webhook refused: " + code + ": " + detail, null, Map.of("error", code, "detail", detail), null);
  }
}
