package io.meterstream.client;

/** 413: too many events or bytes in one request. */
public class PayloadTooLargeException extends MeterstreamException {
  private static final long serialVersionUID = 1L;

  public PayloadTooLargeException(String message, Integer status, Object body) {
    super(message, status, body, null);
  }
}
