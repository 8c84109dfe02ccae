package io.meterstream.client;

import com.fasterxml.jackson.annotation.JsonFormat;
import com.fasterxml.jackson.annotation.JsonProperty;
import java.math.BigDecimal;

/** A row of usage_aggregates. Times are ISO 8601 strings as the API sends them. */
public record UsageRow(
    @JsonProperty("account_id") String accountId,
    @JsonProperty("meter") String meter,
    @JsonProperty("period_start") String periodStart,
    @JsonProperty("dimensions") String dimensions,
    @JsonProperty("quantity") @JsonFormat(shape = JsonFormat.Shape.STRING) BigDecimal quantity,
    @JsonProperty("event_count") long eventCount,
    @JsonProperty("first_event_at") String firstEventAt,
    @JsonProperty("last_event_at") String lastEventAt,
    @JsonProperty("last_arrived_at") String lastArrivedAt,
    @JsonProperty("updated_at") String updatedAt) {}
