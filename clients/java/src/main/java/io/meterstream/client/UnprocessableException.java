package io.meterstream.client;

/** 422 without per-event results. */
public class UnprocessableException extends MeterstreamException {
  private static final long serialVersionUID = 1L;

  public UnprocessableException(String message, Integer status, Object body) {
    super(message, status, body, null);
  }
}
