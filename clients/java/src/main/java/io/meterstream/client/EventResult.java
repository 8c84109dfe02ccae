package io.meterstream.client;

import com.fasterxml.jackson.annotation.JsonInclude;

/**
 * What the API said about one event of a batch.
 *
 * @param status {@code accepted}, {@code rejected} or {@code failed}
 * @param reason the reason code of a rejected event, e.g. {@code MISSING_FIELD}
 */
@JsonInclude(JsonInclude.Include.NON_NULL)
public record EventResult(int index, String id, String status, String reason, String detail) {}
