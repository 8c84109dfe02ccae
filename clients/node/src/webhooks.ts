/**
 * Receiving alerts: verify a webhook's Standard Webhooks signature, then parse its CloudEvent.
 * The same checks, in the same order, as every SDK (clients/vectors/webhooks.json).
 */
import { createHmac, timingSafeEqual } from "node:crypto";

import { MeterstreamError } from "./errors.js";

/** How far a webhook's timestamp may be from now (the Standard Webhooks default). */
export const WEBHOOK_TOLERANCE_MS = 5 * 60 * 1000;

/** Why a webhook was refused. */
export type WebhookErrorCode =
  | "INVALID_SECRET"
  | "MISSING_HEADER"
  | "INVALID_TIMESTAMP"
  | "TIMESTAMP_TOO_OLD"
  | "TIMESTAMP_TOO_NEW"
  | "NO_MATCHING_SIGNATURE"
  | "INVALID_BODY";

/** A webhook failed verification: `code` says why, `detail` how. Answer it with a 4xx. */
export class WebhookVerificationError extends MeterstreamError {
  declare readonly code: WebhookErrorCode;
  declare readonly detail: string;

  constructor(code: WebhookErrorCode, detail: string) {
    super(`webhook refused: ${code}: ${detail}`, undefined, { error: code, detail });
  }
}

/** A notification of the alerts service: a CloudEvents 1.0 JSON object. */
export interface WebhookEvent {
  readonly specversion: "1.0";
  /** The notification's id, also its `webhook-id`: the same on every retry. */
  readonly id: string;
  readonly source: string;
  /** e.g. `io.meterstream.usage.threshold_reached` (docs/alerts.md lists them). */
  readonly type: string;
  /** The account, or null (a health condition of the pipeline). */
  readonly subject?: string | null;
  readonly time?: string;
  readonly datacontenttype?: string;
  readonly data?: Readonly<Record<string, unknown>> | null;
}

/** Request headers: a fetch `Headers`, or Node's `req.headers` (any case of the names). */
export type WebhookHeaders =
  | { get(name: string): string | null }
  | Readonly<Record<string, string | readonly string[] | undefined>>;

export interface VerifyOptions {
  /** The time to check the timestamp against (default: the clock). */
  now?: Date;
  /** How far the timestamp may be from `now` (default: 5 minutes). */
  toleranceMs?: number;
}

const PREFIX = "whsec_";
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}(?:==)?|[A-Za-z0-9+/]{3}=?)?$/;
const SECONDS = /^[0-9]{1,15}$/;
const NAMES = ["webhook-id", "webhook-timestamp", "webhook-signature"] as const;

function refuse(code: WebhookErrorCode, detail: string): never {
  throw new WebhookVerificationError(code, detail);
}

function header(headers: WebhookHeaders, name: string): string {
  if (typeof headers.get === "function") {
    return (headers as { get(name: string): string | null }).get(name) ?? "";
  }
  const plain = headers as Readonly<Record<string, string | readonly string[] | undefined>>;
  for (const [key, value] of Object.entries(plain)) {
    if (key.toLowerCase() !== name) continue;
    const first = typeof value === "string" ? value : value?.[0];
    return first ?? "";
  }
  return "";
}

/**
 * Verify a webhook of the alerts service and return its CloudEvent.
 *
 * `webhook-signature` must hold a `v1,` signature (HMAC-SHA256, base64) of
 * `<webhook-id>.<webhook-timestamp>.<body>` under the endpoint's `whsec_` secret (any of its
 * space-separated signatures, as during a rotation), compared in constant time; the timestamp
 * must be within `toleranceMs` of `now`, which stops replays.
 *
 * @param body the request's body exactly as received (a string is taken as its UTF-8)
 * @throws WebhookVerificationError with the code of the first check that failed
 */
export function verifyWebhook(
  body: Uint8Array | string,
  headers: WebhookHeaders,
  secret: string,
  options: VerifyOptions = {},
): WebhookEvent {
  const encoded = secret.startsWith(PREFIX) ? secret.slice(PREFIX.length) : secret;
  if (encoded === "" || !BASE64.test(encoded)) {
    refuse("INVALID_SECRET", "expected whsec_ and the standard base64 of a key");
  }
  const key = Buffer.from(encoded, "base64");
  const [id, stamp, signatures] = NAMES.map((name) => header(headers, name)) as [string, string, string];
  const missing = NAMES.filter((_, i) => [id, stamp, signatures][i] === "");
  if (missing.length > 0) refuse("MISSING_HEADER", `missing or empty: ${missing.join(", ")}`);
  if (!SECONDS.test(stamp)) refuse("INVALID_TIMESTAMP", `not whole seconds: ${JSON.stringify(stamp.slice(0, 40))}`);
  const seconds = Number(stamp);
  const now = (options.now ?? new Date()).getTime() / 1000;
  const tolerance = (options.toleranceMs ?? WEBHOOK_TOLERANCE_MS) / 1000;
  if (seconds < now - tolerance) refuse("TIMESTAMP_TOO_OLD", `${seconds} is over ${tolerance} s before now`);
  if (seconds > now + tolerance) refuse("TIMESTAMP_TOO_NEW", `${seconds} is over ${tolerance} s after now`);
  const bytes = typeof body === "string" ? Buffer.from(body, "utf8") : body;
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    refuse("INVALID_BODY", "the body is not UTF-8");
  }
  const mac = createHmac("sha256", key).update(`${id}.${seconds}.`).update(bytes).digest("base64");
  const expected = Buffer.from(`v1,${mac}`);
  const matches = signatures.split(" ").some((entry) => {
    if (!entry.startsWith("v1,")) return false;
    const given = Buffer.from(entry);
    return given.length === expected.length && timingSafeEqual(given, expected);
  });
  if (!matches) refuse("NO_MATCHING_SIGNATURE", "no v1 signature of this body and secret");
  return cloudEvent(text);
}

/** The CloudEvents 1.0 JSON object of a verified body. */
function cloudEvent(text: string): WebhookEvent {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    refuse("INVALID_BODY", "not JSON");
  }
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) refuse("INVALID_BODY", "not a JSON object");
  const event = doc as Record<string, unknown>;
  if (event.specversion !== "1.0") refuse("INVALID_BODY", "specversion is not '1.0'");
  for (const name of ["id", "source", "type"]) {
    const value = event[name];
    if (typeof value !== "string" || value === "") refuse("INVALID_BODY", `${name} is not a non-empty string`);
  }
  const allowed: Record<string, (v: unknown) => boolean> = {
    subject: (v) => typeof v === "string" || v === null,
    time: (v) => typeof v === "string",
    datacontenttype: (v) => typeof v === "string",
    data: (v) => v === null || (typeof v === "object" && !Array.isArray(v)),
  };
  for (const [name, ok] of Object.entries(allowed)) {
    if (name in event && !ok(event[name])) refuse("INVALID_BODY", `${name} has the wrong type`);
  }
  return event as unknown as WebhookEvent;
}
