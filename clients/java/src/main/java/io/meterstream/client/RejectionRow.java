package io.meterstream.client;

import com.fasterxml.jackson.annotation.JsonProperty;

/** An entry of the validation log. */
public record RejectionRow(
    @JsonProperty("account_id") String accountId,
    @JsonProperty("reason") String reason,
    @JsonProperty("detail") String detail,
    @JsonProperty("raw_payload") String rawPayload,
    @JsonProperty("arrived_at") String arrivedAt,
    @JsonProperty("rejected_at") String rejectedAt,
    @JsonProperty("source") Source source) {

  /** Where the record was in Kafka. */
  public record Source(
      @JsonProperty("topic") String topic,
      @JsonProperty("partition") int partition,
      @JsonProperty("offset") long offset) {}
}
