package io.meterstream.client;

/** 401: the token is missing, malformed, unknown or revoked. */
public class AuthenticationException extends MeterstreamException {
  private static final long serialVersionUID = 1L;

  public AuthenticationException(String message, Integer status, Object body) {
    super(message, status, body, null);
  }
}
