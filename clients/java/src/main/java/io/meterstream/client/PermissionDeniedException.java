package io.meterstream.client;

/** 403: the token lacks the route's scope. */
public class PermissionDeniedException extends MeterstreamException {
  private static final long serialVersionUID = 1L;

  public PermissionDeniedException(String message, Integer status, Object body) {
    super(message, status, body, null);
  }
}
