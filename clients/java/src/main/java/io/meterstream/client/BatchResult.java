package io.meterstream.client;

import com.fasterxml.jackson.annotation.JsonIgnore;
import java.util.List;

/**
 * One batch's outcome. Failed events were not sent ({@code error} says why): send them again.
 *
 * @param error why the batch could not be sent, or null
 */
public record BatchResult(
    int accepted,
    int rejected,
    int failed,
    List<EventResult> results,
    @JsonIgnore MeterstreamException error) {

  public BatchResult {
    results = List.copyOf(results);
  }

  /** The rejected events. */
  public List<EventResult> rejections() {
    return results.stream().filter(r -> "rejected".equals(r.status())).toList();
  }
}
