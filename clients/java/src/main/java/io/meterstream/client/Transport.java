package io.meterstream.client;

import java.io.IOException;
import java.io.InputStream;
import java.net.URI;
import java.time.Duration;
import java.util.Map;

/**
 * How a request goes out: {@link JdkTransport} (java.net.http) unless another is given, e.g. a
 * fake in tests. An {@link IOException} is a network error: the client sends the same bytes again.
 */
@FunctionalInterface
public interface Transport {
  Answer send(Call call) throws IOException, InterruptedException;

  /**
   * A request.
   *
   * @param body null for none
   * @param timeout null for none (uploads)
   */
  record Call(String method, URI uri, Map<String, String> headers, Body body, Duration timeout) {}

  /** A request body that can be read again for each attempt. */
  interface Body {
    long length();

    InputStream open() throws IOException;

    static Body of(byte[] bytes) {
      return new Bytes(bytes);
    }
  }

  /** A body held in memory (a batch). */
  record Bytes(byte[] bytes) implements Body {
    @Override
    public long length() {
      return bytes.length;
    }

    @Override
    public InputStream open() {
      return new java.io.ByteArrayInputStream(bytes);
    }
  }

  /** An answer: status, headers (names in lower case), body. */
  record Answer(int status, Map<String, String> headers, byte[] body) {
    public String header(String name) {
      return headers.get(name.toLowerCase(java.util.Locale.ROOT));
    }
  }
}
