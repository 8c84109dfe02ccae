package io.meterstream.client;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;

/** The one ObjectMapper: compact output, unknown fields ignored (the API may add some). */
final class Json {
  static final ObjectMapper MAPPER =
      new ObjectMapper().configure(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES, false);

  private Json() {}

  static byte[] write(Object value) {
    try {
      return MAPPER.writeValueAsBytes(value);
    } catch (JsonProcessingException e) {
      throw new IllegalArgumentException("cannot encode " + value.getClass().getSimpleName(), e);
    }
  }

  static <T> T read(byte[] data, Class<T> type) throws IOException {
    return MAPPER.readValue(data, type);
  }

  static Object parseOrNull(byte[] data) {
    try {
      return MAPPER.readValue(data, Object.class);
    } catch (IOException e) {
      return null;
    }
  }
}
