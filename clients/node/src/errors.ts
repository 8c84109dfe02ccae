/** Errors: the API refused a request (a typed error per status), or retries ran out. */

/** The root of every error this SDK throws. `code` and `detail` are the API's error document's. */
export class MeterstreamError extends Error {
  readonly status: number | undefined;
  readonly code: string | undefined;
  readonly detail: string | undefined;
  readonly body: unknown;

  constructor(message: string, status?: number, body?: unknown) {
    super(message);
    this.name = new.target.name;
    this.status = status;
    this.body = body;
    const doc = (typeof body === "object" && body !== null ? body : {}) as Record<string, unknown>;
    this.code = typeof doc.error === "string" ? doc.error : undefined;
    this.detail = typeof doc.detail === "string" ? doc.detail : undefined;
  }
}

/** 401: the token is missing, malformed, unknown or revoked. */
export class AuthenticationError extends MeterstreamError {}
/** 403: the token lacks the route's scope. */
export class PermissionDeniedError extends MeterstreamError {}
/** 404: no such account or upload in your organisation. */
export class NotFoundError extends MeterstreamError {}
/** 413: too many events or bytes in one request. */
export class PayloadTooLargeError extends MeterstreamError {}
/** 422 without per-event results. */
export class UnprocessableError extends MeterstreamError {}
/** 429, 502-504 or network errors on every attempt; `status` is the last answer's, if any. */
export class RetriesExhaustedError extends MeterstreamError {}

const BY_STATUS: Record<number, typeof MeterstreamError> = {
  401: AuthenticationError,
  403: PermissionDeniedError,
  404: NotFoundError,
  413: PayloadTooLargeError,
  422: UnprocessableError,
};

/** The typed error for a non-retryable answer. */
export function refused(what: string, status: number, text: string): MeterstreamError {
  const Kind = BY_STATUS[status] ?? MeterstreamError;
  return new Kind(`${what}: ${status} ${text.slice(0, 500)}`, status, parseJson(text));
}

/** The JSON document in `text`, or undefined. */
export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
