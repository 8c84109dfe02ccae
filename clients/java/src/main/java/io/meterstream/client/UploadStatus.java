package io.meterstream.client;

import com.fasterxml.jackson.annotation.JsonProperty;
import java.util.List;

/**
 * An upload's state and counts ({@code GET /v1/uploads/{id}}).
 *
 * @param state {@code open}, {@code interrupted}, {@code done} or {@code failed}
 * @param offset the bytes committed
 */
public record UploadStatus(
    @JsonProperty("upload_id") String uploadId,
    @JsonProperty("format") String format,
    @JsonProperty("filename") String filename,
    @JsonProperty("state") String state,
    @JsonProperty("done") boolean done,
    @JsonProperty("offset") long offset,
    @JsonProperty("accepted") long accepted,
    @JsonProperty("rejected") long rejected,
    @JsonProperty("error") String error,
    @JsonProperty("created_at") String createdAt,
    @JsonProperty("updated_at") String updatedAt,
    @JsonProperty("rejections") List<Rejection> rejections) {

  /** A rejected event of the file, at its byte offset. */
  public record Rejection(
      @JsonProperty("offset") long offset,
      @JsonProperty("reason") String reason,
      @JsonProperty("detail") String detail,
      @JsonProperty("excerpt") String excerpt) {}
}
