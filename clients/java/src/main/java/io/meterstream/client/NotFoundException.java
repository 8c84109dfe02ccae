package io.meterstream.client;

/** 404: no such account or upload in your organisation. */
public class NotFoundException extends MeterstreamException {
  private static final long serialVersionUID = 1L;

  public NotFoundException(String message, Integer status, Object body) {
    super(message, status, body, null);
  }
}
