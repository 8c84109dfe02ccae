/**
 * The meterstream client: batches events and sends them, retrying the same bytes; reads usage
 * and rejections page by page; uploads files resumably. Same rules as meterstream.client
 * (Python); clients/vectors/ holds the scenarios both replay.
 */
import { randomUUID } from "node:crypto";
import { open, stat } from "node:fs/promises";
import { basename, extname } from "node:path";

import {
  MeterstreamError,
  RetriesExhaustedError,
  parseJson,
  refused,
} from "./errors.js";
import type { CloudEvent } from "./event.js";
import { type FetchLike, type HttpRequest, type HttpResponse, fetchWithCa } from "./transport.js";

export const VERSION = "0.1.0";
export const USER_AGENT = `meterstream-node/${VERSION} (node ${process.version})`;
/** The API's limits per request (`api.max_events_per_request`, `api.max_request_bytes`). */
export const MAX_BATCH_EVENTS = 1000;
export const MAX_BATCH_BYTES = 512 * 1024;

const BATCH_TYPE = "application/cloudevents-batch+json";
const RETRY_STATUSES = new Set([429, 502, 503, 504]);
const UPLOAD_CHUNK = 256 * 1024;

/** What the API said about one event of a batch. */
export interface EventResult {
  index: number;
  id: string | null;
  status: "accepted" | "rejected" | "failed";
  /** The reason code of a rejected event, e.g. `MISSING_FIELD`. */
  reason?: string;
  detail?: string;
}

/** One batch's outcome. `failed` events were not sent (`error` says why): send them again. */
export interface BatchResult {
  accepted: number;
  rejected: number;
  failed: number;
  results: EventResult[];
  error?: MeterstreamError;
}

/** A row of `usage_aggregates`. `quantity` is a decimal string (exact). */
export interface UsageRow {
  account_id: string;
  meter: string;
  period_start: string;
  dimensions: string;
  quantity: string;
  event_count: number;
  first_event_at: string;
  last_event_at: string;
  last_arrived_at: string;
  updated_at: string;
}

/** An entry of the validation log. */
export interface RejectionRow {
  account_id: string;
  reason: string;
  detail: string;
  raw_payload: string;
  arrived_at: string;
  rejected_at: string;
  source: { topic: string; partition: number; offset: number };
}

/** An upload's state and counts (`GET /v1/uploads/{id}`). */
export interface UploadStatus {
  upload_id: string;
  format: string;
  filename: string;
  state: "open" | "interrupted" | "done" | "failed";
  done: boolean;
  offset: number;
  accepted: number;
  rejected: number;
  error: string;
  created_at: string;
  updated_at: string;
  rejections: { offset: number; reason: string; detail: string; excerpt: string }[];
}

export interface UsageFilters {
  account?: string;
  meter?: string;
  /** First `period_start` to include, `YYYY-MM-DD`. */
  periodFrom?: string;
  periodTo?: string;
  /** Rows per page (at most 1,000). */
  limit?: number;
}

export interface RejectionFilters {
  account?: string;
  reason?: string;
  /** Arrived at or after. */
  since?: Date | string;
  /** Arrived before. */
  until?: Date | string;
  limit?: number;
}

export interface UploadOptions {
  /** `jsonl` or `json`; from the file name unless given (`.json` is json). */
  format?: "jsonl" | "json";
  /** Resume this upload (a UUID); a new one unless given. */
  uploadId?: string;
  /** Called as the file goes out, with the bytes sent so far and the file's size. */
  progress?: (sent: number, size: number) => void;
}

export interface ClientOptions {
  /** Events per request, at most 1,000 (default). */
  batchSize?: number;
  /** Bytes per request body, at most 512 KB (default). */
  maxBatchBytes?: number;
  /** Send what is buffered this long after the first event was added; 0: only on size and close. */
  flushIntervalMs?: number;
  maxAttempts?: number;
  /** The first backoff; it doubles per attempt up to `maxBackoffMs`, with jitter. */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** Per request; uploads have none. */
  timeoutMs?: number;
  /** PEM certificate(s) of a private CA to trust for https. */
  ca?: string | Uint8Array;
  /** Every batch's outcome, including batches sent by the timer. */
  onResult?: (result: BatchResult) => void;
  fetch?: FetchLike;
  sleep?: (ms: number) => Promise<void>;
  random?: () => number;
}

interface Buffered {
  event: CloudEvent;
  raw: string;
}

/** Waits between attempts: Retry-After (capped), else capped exponential backoff with jitter. */
class Backoff {
  private delay: number;

  constructor(
    base: number,
    private readonly cap: number,
    private readonly random: () => number,
  ) {
    this.delay = base;
  }

  next(response: HttpResponse | undefined): number {
    const header = response?.headers.get("retry-after") ?? "";
    const wait = /^\d+$/.test(header)
      ? Math.min(this.cap, Number(header) * 1000)
      : Math.min(this.cap, this.delay) * (0.5 + 0.5 * this.random());
    this.delay = Math.min(this.cap, this.delay * 2);
    return wait;
  }
}

type Query = Record<string, string | number | Date | undefined>;

/** Sends events (batched), reads usage and rejections, uploads files. Call `close()` at the end. */
export class MeterstreamClient {
  readonly baseUrl: string;
  private readonly token: string;
  private readonly batchSize: number;
  private readonly maxBatchBytes: number;
  private readonly flushIntervalMs: number;
  private readonly maxAttempts: number;
  private readonly backoffMs: number;
  private readonly maxBackoffMs: number;
  private readonly timeoutMs: number;
  private readonly fetch: FetchLike;
  private readonly sleep: (ms: number) => Promise<void>;
  private readonly random: () => number;
  private readonly onResult: ((result: BatchResult) => void) | undefined;
  private buffer: Buffered[] = [];
  private bufferBytes = 2;
  private timer: NodeJS.Timeout | undefined;
  private readonly background = new Set<Promise<void>>();
  private deferred: MeterstreamError | undefined;

  constructor(baseUrl: string, token: string, options: ClientOptions = {}) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.token = token;
    this.batchSize = options.batchSize ?? MAX_BATCH_EVENTS;
    if (!(this.batchSize >= 1 && this.batchSize <= MAX_BATCH_EVENTS)) {
      throw new RangeError(`batchSize must be 1..${MAX_BATCH_EVENTS}, not ${this.batchSize}`);
    }
    this.maxBatchBytes = Math.min(options.maxBatchBytes ?? MAX_BATCH_BYTES, MAX_BATCH_BYTES);
    this.flushIntervalMs = options.flushIntervalMs ?? 1000;
    this.maxAttempts = options.maxAttempts ?? 8;
    this.backoffMs = options.backoffMs ?? 500;
    this.maxBackoffMs = options.maxBackoffMs ?? 30_000;
    this.timeoutMs = options.timeoutMs ?? 60_000;
    const https = this.baseUrl.startsWith("https:");
    this.fetch =
      options.fetch ??
      (options.ca !== undefined && https ? fetchWithCa(options.ca) : (globalThis.fetch as FetchLike));
    this.sleep = options.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
    this.random = options.random ?? Math.random;
    this.onResult = options.onResult;
  }

  // --- events --------------------------------------------------------------------------------

  /**
   * Buffer an event, sending the buffer when it is full (events or bytes). The event is encoded
   * now, so the bytes sent (and resent) are fixed here. Resolves to the result of a batch this
   * call sent, if any; rejects with the error of a batch that could not be sent.
   */
  async add(event: CloudEvent): Promise<BatchResult | undefined> {
    this.throwDeferred();
    const raw = JSON.stringify(event);
    const size = Buffer.byteLength(raw);
    const batches: Buffered[][] = [];
    if (this.buffer.length > 0 && this.bufferBytes + size + 1 > this.maxBatchBytes) {
      batches.push(this.take());
    }
    this.bufferBytes += size + (this.buffer.length > 0 ? 1 : 0);
    this.buffer.push({ event, raw });
    if (this.buffer.length >= this.batchSize) {
      batches.push(this.take());
    } else {
      this.arm();
    }
    let result: BatchResult | undefined;
    for (const batch of batches) result = await this.sendTaken(batch);
    return result;
  }

  /** Send what is buffered; rejects with the error of a batch that could not be sent. */
  async flush(): Promise<BatchResult | undefined> {
    const batch = this.take();
    const result = batch.length > 0 ? await this.sendTaken(batch) : undefined;
    await Promise.all([...this.background]);
    this.throwDeferred();
    return result;
  }

  /** Send one batch now, retrying the same bytes on 429, 502-504 and network errors. */
  async sendBatch(events: readonly CloudEvent[]): Promise<BatchResult> {
    return this.post(`[${events.map((e) => JSON.stringify(e)).join(",")}]`);
  }

  private take(): Buffered[] {
    const batch = this.buffer;
    this.buffer = [];
    this.bufferBytes = 2;
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    return batch;
  }

  private arm(): void {
    if (this.timer !== undefined || this.flushIntervalMs <= 0) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      const batch = this.take();
      if (batch.length === 0) return;
      const sending: Promise<void> = this.sendTaken(batch).then(
        () => undefined,
        (error: MeterstreamError) => {
          this.deferred ??= error;
        },
      );
      this.background.add(sending);
      void sending.finally(() => this.background.delete(sending));
    }, this.flushIntervalMs);
    // Not unref'd: a process that forgets close() still sends its last events before it exits.
  }

  private throwDeferred(): void {
    const error = this.deferred;
    if (error !== undefined) {
      this.deferred = undefined;
      throw error;
    }
  }

  private async sendTaken(batch: Buffered[]): Promise<BatchResult> {
    let result: BatchResult;
    try {
      result = await this.post(`[${batch.map((b) => b.raw).join(",")}]`);
    } catch (error) {
      const failure =
        error instanceof MeterstreamError ? error : new MeterstreamError(String(error));
      this.onResult?.({
        accepted: 0,
        rejected: 0,
        failed: batch.length,
        results: batch.map((b, index) => ({
          index,
          id: b.event.id,
          status: "failed",
          detail: failure.message,
        })),
        error: failure,
      });
      throw failure;
    }
    this.onResult?.(result);
    return result;
  }

  private async post(body: string): Promise<BatchResult> {
    const response = await this.retrying("POST", "/v1/events", {
      headers: { "content-type": BATCH_TYPE },
      body: new TextEncoder().encode(body),
    });
    const text = await response.text();
    const doc = parseJson(text) as Record<string, unknown> | undefined;
    if (
      (response.status !== 202 && response.status !== 422) ||
      typeof doc !== "object" ||
      doc === null ||
      !Array.isArray(doc.results)
    ) {
      throw refused("POST /v1/events", response.status, text);
    }
    return {
      accepted: doc.accepted as number,
      rejected: doc.rejected as number,
      failed: (doc.failed as number | undefined) ?? 0,
      results: doc.results as EventResult[],
    };
  }

  // --- requests ------------------------------------------------------------------------------

  private async request(
    method: string,
    path: string,
    options: { query?: Query; headers?: Record<string, string>; body?: HttpRequest["body"]; timeout?: boolean },
  ): Promise<HttpResponse> {
    const url = new URL(this.baseUrl + path);
    for (const [name, value] of Object.entries(options.query ?? {})) {
      if (value !== undefined) {
        url.searchParams.set(name, value instanceof Date ? value.toISOString() : String(value));
      }
    }
    const init: HttpRequest = {
      method,
      headers: {
        authorization: `Bearer ${this.token}`,
        "user-agent": USER_AGENT,
        ...options.headers,
      },
    };
    if (options.body !== undefined) {
      init.body = options.body;
      if (!(options.body instanceof Uint8Array)) init.duplex = "half";
    }
    if (options.timeout !== false) init.signal = AbortSignal.timeout(this.timeoutMs);
    return this.fetch(url.toString(), init);
  }

  private backoff(): Backoff {
    return new Backoff(this.backoffMs, this.maxBackoffMs, this.random);
  }

  private async retrying(
    method: string,
    path: string,
    options: { query?: Query; headers?: Record<string, string>; body?: Uint8Array } = {},
  ): Promise<HttpResponse> {
    const backoff = this.backoff();
    let response: HttpResponse | undefined;
    for (let attempt = 1; attempt <= this.maxAttempts; attempt++) {
      try {
        response = await this.request(method, path, options);
      } catch {
        response = undefined; // a network error or a time-out: send the same bytes again
      }
      if (response !== undefined && !RETRY_STATUSES.has(response.status)) return response;
      if (response !== undefined) await response.text().catch(() => "");
      if (attempt === this.maxAttempts) break;
      await this.sleep(backoff.next(response));
    }
    throw new RetriesExhaustedError(
      `${method} ${path}: gave up after ${this.maxAttempts} attempts`,
      response?.status,
    );
  }

  // --- reads ---------------------------------------------------------------------------------

  private async *pages<T>(path: string, query: Query): AsyncGenerator<T> {
    const q: Query = { ...query };
    for (;;) {
      const response = await this.retrying("GET", path, { query: q });
      const text = await response.text();
      if (response.status !== 200) throw refused(`GET ${path}`, response.status, text);
      const doc = JSON.parse(text) as { items: T[]; next_cursor: string | null };
      yield* doc.items;
      if (!doc.next_cursor) return;
      q.cursor = doc.next_cursor;
    }
  }

  /** Every usage row of your organisation matching the filters, fetched page by page. */
  usage(filters: UsageFilters = {}): AsyncGenerator<UsageRow> {
    return this.pages<UsageRow>("/v1/usage", {
      account: filters.account,
      meter: filters.meter,
      period_from: filters.periodFrom,
      period_to: filters.periodTo,
      limit: filters.limit,
    });
  }

  /** Every rejection of your accounts matching the filters, oldest first, page by page. */
  rejections(filters: RejectionFilters = {}): AsyncGenerator<RejectionRow> {
    return this.pages<RejectionRow>("/v1/rejections", {
      account: filters.account,
      reason: filters.reason,
      since: filters.since,
      until: filters.until,
      limit: filters.limit,
    });
  }

  // --- uploads -------------------------------------------------------------------------------

  /** Upload a JSON Lines or JSON array file, resuming after any interruption; the final status. */
  async upload(path: string, options: UploadOptions = {}): Promise<UploadStatus> {
    const format = options.format ?? (extname(path).toLowerCase() === ".json" ? "json" : "jsonl");
    const uploadId = options.uploadId ?? randomUUID();
    const size = (await stat(path)).size;
    const backoff = this.backoff();
    let created = false;
    let offset = 0;
    for (let attempt = 0; attempt < this.maxAttempts; attempt++) {
      const body = fileBody(path, offset, size, options.progress);
      let response: HttpResponse | undefined;
      try {
        response = created
          ? await this.request("PATCH", `/v1/uploads/${uploadId}`, {
              headers: { "upload-offset": String(offset) },
              body,
              timeout: false,
            })
          : await this.request("POST", "/v1/uploads", {
              query: { format, filename: basename(path).slice(0, 255) },
              headers: { "upload-id": uploadId },
              body,
              timeout: false,
            });
      } catch {
        response = undefined;
        await body.cancel().catch(() => undefined);
      }
      if (response !== undefined) {
        const text = await response.text();
        if ([200, 201, 422].includes(response.status)) {
          const doc = parseJson(text) as UploadStatus | undefined;
          if (doc?.state === "done" || doc?.state === "failed") return doc;
        } else if (!RETRY_STATUSES.has(response.status) && response.status !== 409) {
          throw refused("upload", response.status, text);
        }
      }
      const status = await this.uploadStatus(uploadId);
      if (status === undefined) {
        created = false;
        offset = 0;
      } else {
        created = true;
        offset = status.offset;
        if (status.state === "done") return status;
      }
      await this.sleep(backoff.next(response));
    }
    throw new RetriesExhaustedError(`upload ${uploadId}: gave up after ${this.maxAttempts} attempts`);
  }

  /** An upload's status, or undefined if there is no such upload. */
  async uploadStatus(uploadId: string): Promise<UploadStatus | undefined> {
    const response = await this.retrying("GET", `/v1/uploads/${uploadId}`);
    const text = await response.text();
    if (response.status === 404) return undefined;
    if (response.status !== 200) throw refused("upload status", response.status, text);
    return JSON.parse(text) as UploadStatus;
  }

  // --- lifecycle -----------------------------------------------------------------------------

  /** Send what is buffered and wait for batches the timer sent; rejects if one failed. */
  async close(): Promise<void> {
    await this.flush();
  }
}

/** The file from `offset` on, read as it is sent, reporting progress after each chunk. */
function fileBody(
  path: string,
  offset: number,
  size: number,
  progress: ((sent: number, size: number) => void) | undefined,
): ReadableStream<Uint8Array> {
  let position = offset;
  let handle: Awaited<ReturnType<typeof open>> | undefined;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      handle ??= await open(path, "r");
      const chunk = Buffer.alloc(UPLOAD_CHUNK);
      const { bytesRead } = await handle.read(chunk, 0, UPLOAD_CHUNK, position);
      if (bytesRead === 0) {
        await handle.close();
        controller.close();
        return;
      }
      position += bytesRead;
      controller.enqueue(chunk.subarray(0, bytesRead));
      progress?.(position, size);
    },
    async cancel() {
      await handle?.close();
    },
  });
}
