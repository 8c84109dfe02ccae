/** @meterstream/client: usage events in, usage totals and rejections out, alerts verified. */
export {
  MAX_BATCH_BYTES,
  MAX_BATCH_EVENTS,
  MeterstreamClient,
  USER_AGENT,
  VERSION,
  type BatchResult,
  type ClientOptions,
  type EventResult,
  type RejectionFilters,
  type RejectionRow,
  type UploadOptions,
  type UploadStatus,
  type UsageFilters,
  type UsageRow,
} from "./client.js";
export {
  AuthenticationError,
  MeterstreamError,
  NotFoundError,
  PayloadTooLargeError,
  PermissionDeniedError,
  RetriesExhaustedError,
  UnprocessableError,
} from "./errors.js";
export { makeEvent, type CloudEvent, type EventOptions } from "./event.js";
export {
  WEBHOOK_TOLERANCE_MS,
  WebhookVerificationError,
  verifyWebhook,
  type VerifyOptions,
  type WebhookErrorCode,
  type WebhookEvent,
  type WebhookHeaders,
} from "./webhooks.js";
export { fetchWithCa, type FetchLike, type HttpRequest, type HttpResponse } from "./transport.js";
