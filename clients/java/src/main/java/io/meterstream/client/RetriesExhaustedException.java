package io.meterstream.client;

/** 429, 502-504 or network errors on every attempt; the status is the last answer's, if any. */
public class RetriesExhaustedException extends MeterstreamException {
  private static final long serialVersionUID = 1L;

  public RetriesExhaustedException(String message, Integer status, Object body, Throwable cause) {
    super(message, status, body, cause);
  }
}
