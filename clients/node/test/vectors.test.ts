// Replays clients/vectors/ (the scenarios the Python, Go and Java clients replay too).
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";

import {
  AuthenticationError,
  type BatchResult,
  MeterstreamClient,
  MeterstreamError,
  NotFoundError,
  PayloadTooLargeError,
  PermissionDeniedError,
  RetriesExhaustedError,
  UnprocessableError,
  WebhookVerificationError,
  makeEvent,
  verifyWebhook,
  type CloudEvent,
  type FetchLike,
} from "../src/index.js";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;

const VECTORS = new URL("../../../vectors/", import.meta.url);
const UA = /^meterstream-node\/\d+\.\d+\.\d+/;
const KINDS: Record<string, typeof MeterstreamError> = {
  authentication: AuthenticationError,
  permission: PermissionDeniedError,
  not_found: NotFoundError,
  payload_too_large: PayloadTooLargeError,
  unprocessable: UnprocessableError,
  retries_exhausted: RetriesExhaustedError,
  api: MeterstreamError,
};

function load(name: string): Json {
  return JSON.parse(readFileSync(new URL(name, VECTORS), "utf8"));
}

async function text(body: unknown): Promise<string> {
  if (body === undefined) return "";
  if (body instanceof Uint8Array) return Buffer.from(body).toString("utf8");
  const chunks: Buffer[] = [];
  for await (const chunk of body as AsyncIterable<Uint8Array>) chunks.push(Buffer.from(chunk));
  return Buffer.concat(chunks).toString("utf8");
}

/** A fake fetch serving a scenario's exchanges in order and checking each request. */
function replay(doc: Json, scenario: Json): { fetch: FetchLike; bodies: string[]; done: () => void } {
  const exchanges: Json[] = [...scenario.exchanges];
  const bodies: string[] = [];
  const fetch: FetchLike = async (url, init) => {
    const exchange = exchanges.shift();
    assert.ok(exchange, `unexpected request ${init.method} ${url}`);
    const want = exchange.request;
    const answer = exchange.response;
    const body = await text(init.body);
    bodies.push(body);
    const parsed = new URL(url);
    const headers = Object.fromEntries(
      Object.entries(init.headers).map(([k, v]) => [k.toLowerCase(), v]),
    );
    assert.equal(init.method, want.method);
    assert.equal(parsed.pathname, want.path);
    assert.deepEqual(Object.fromEntries(parsed.searchParams), want.query ?? {});
    assert.equal(headers.authorization, `Bearer ${doc.token}`);
    assert.match(headers["user-agent"] ?? "", UA);
    for (const [name, value] of Object.entries(want.headers ?? {})) {
      assert.equal(headers[name], value, name);
    }
    if ("json" in want) assert.deepEqual(JSON.parse(body), want.json);
    if ("body" in want) assert.equal(body, want.body);
    if (answer.network_error) throw new TypeError("fetch failed");
    const content = "json" in answer ? JSON.stringify(answer.json) : (answer.body ?? "");
    return new Response(content, { status: answer.status, headers: answer.headers ?? {} });
  };
  return {
    fetch,
    bodies,
    done: () => assert.equal(exchanges.length, 0, "exchanges never asked for"),
  };
}

function client(doc: Json, scenario: Json, fetch: FetchLike, extra: object = {}) {
  const slept: number[] = [];
  const randoms: number[] = [...(scenario.random ?? [])];
  const c = scenario.client ?? {};
  const ms = (s: number | undefined) => (s === undefined ? undefined : s * 1000);
  const made = new MeterstreamClient(doc.base_url, doc.token, {
    fetch,
    batchSize: c.batch_size,
    maxBatchBytes: c.max_batch_bytes,
    maxAttempts: c.max_attempts,
    backoffMs: ms(c.backoff_s),
    maxBackoffMs: ms(c.max_backoff_s),
    flushIntervalMs: 0,
    sleep: async (wait) => {
      slept.push(wait / 1000);
    },
    random: () => {
      const value = randoms.shift();
      assert.notEqual(value, undefined, "the scenario has no more random values");
      return value as number;
    },
    ...extra,
  });
  return { client: made, slept };
}

async function outcome<T>(call: () => Promise<T>, want: Json): Promise<T | undefined> {
  if (want === undefined) return call();
  await assert.rejects(call, (error: unknown) => {
    assert.ok(error instanceof MeterstreamError);
    assert.equal(error.constructor, KINDS[want.kind]);
    assert.equal(error.status, want.status ?? undefined);
    if ("code" in want) assert.equal(error.code, want.code);
    if ("detail" in want) assert.equal(error.detail, want.detail);
    return true;
  });
  return undefined;
}

function asJson(result: BatchResult): Json {
  return {
    accepted: result.accepted,
    rejected: result.rejected,
    failed: result.failed,
    results: result.results.map((r) => {
      const item: Json = { index: r.index, id: r.id, status: r.status };
      if (r.reason !== undefined) item.reason = r.reason;
      if (r.detail !== undefined && r.status !== "failed") item.detail = r.detail;
      return item;
    }),
  };
}

function near(actual: number[], expected: number[]): void {
  assert.equal(actual.length, expected.length, `sleeps ${actual} vs ${expected}`);
  actual.forEach((a, i) => assert.ok(Math.abs(a - (expected[i] as number)) < 1e-9, `sleeps ${actual} vs ${expected}`));
}

describe("events.json", () => {
  const doc = load("events.json");
  for (const c of doc.cases) {
    it(c.name, () => {
      const given = c.input;
      const event: Json = {
        ...makeEvent(given.meter, given.account, given.data, {
          id: given.id,
          time: new Date(given.time),
          source: given.source,
        }),
      };
      if (c.id === "uuid") {
        assert.match(event.id, new RegExp(doc.uuid_pattern));
        delete event.id;
      }
      assert.deepEqual(event, c.event);
    });
  }
});

describe("send.json", () => {
  const doc = load("send.json");
  for (const scenario of doc.scenarios) {
    it(scenario.name, async () => {
      const fake = replay(doc, scenario);
      const { client: c, slept } = client(doc, scenario, fake.fetch);
      const result = await outcome(() => c.sendBatch(scenario.call.events), scenario.expect.error);
      if ("result" in scenario.expect) assert.deepEqual(asJson(result as BatchResult), scenario.expect.result);
      near(slept, scenario.expect.sleeps_s);
      assert.equal(new Set(fake.bodies).size, 1, "a retry must send the same bytes");
      fake.done();
    });
  }
});

describe("batching.json", () => {
  const doc = load("batching.json");
  for (const scenario of doc.scenarios) {
    it(scenario.name, async () => {
      const fake = replay(doc, scenario);
      const reported: BatchResult[] = [];
      const { client: c } = client(doc, scenario, fake.fetch, { onResult: (r: BatchResult) => reported.push(r) });
      const expect = scenario.expect;
      await outcome(async () => {
        for (const event of scenario.call.events as CloudEvent[]) await c.add(event);
        if (scenario.call.then === "close") await c.close();
        else await c.flush();
      }, expect.error);
      assert.deepEqual(
        fake.bodies.map((b) => JSON.parse(b).length),
        expect.batches,
      );
      if ("event_bytes" in expect) {
        for (const event of scenario.call.events) {
          assert.equal(Buffer.byteLength(JSON.stringify(event)), expect.event_bytes);
        }
      }
      if ("reported" in expect) {
        assert.deepEqual(reported.map(asJson), expect.reported);
        assert.ok(reported.every((r) => r.error !== undefined));
      }
      fake.done();
    });
  }
});

describe("reads.json", () => {
  const doc = load("reads.json");
  for (const scenario of doc.scenarios) {
    it(scenario.name, async () => {
      const fake = replay(doc, scenario);
      const { client: c, slept } = client(doc, scenario, fake.fetch);
      const f = scenario.call.filters;
      const filters = {
        account: f.account,
        meter: f.meter,
        periodFrom: f.period_from,
        periodTo: f.period_to,
        reason: f.reason,
        since: f.since,
        until: f.until,
        limit: f.limit,
      };
      const items = await outcome(async () => {
        const rows: unknown[] = [];
        const read = scenario.call.op === "usage" ? c.usage(filters) : c.rejections(filters);
        for await (const row of read) rows.push(row);
        return rows;
      }, scenario.expect.error);
      if ("items" in scenario.expect) assert.deepEqual(items, scenario.expect.items);
      near(slept, scenario.expect.sleeps_s ?? []);
      fake.done();
    });
  }
});

describe("uploads.json", () => {
  const doc = load("uploads.json");
  for (const scenario of doc.scenarios) {
    it(scenario.name, async () => {
      const fake = replay(doc, scenario);
      const { client: c, slept } = client(doc, scenario, fake.fetch);
      const call = scenario.call;
      const path = join(mkdtempSync(join(tmpdir(), "ms-vectors-")), call.filename);
      writeFileSync(path, call.content);
      const progress: [number, number][] = [];
      const status = await outcome(
        () =>
          c.upload(path, {
            format: call.format,
            uploadId: call.upload_id,
            progress: (sent, size) => progress.push([sent, size]),
          }),
        scenario.expect.error,
      );
      if ("status" in scenario.expect) {
        assert.deepEqual(status, scenario.expect.status);
        assert.deepEqual(progress.at(-1), scenario.expect.progress_last);
        near(slept, scenario.expect.sleeps_s);
      }
      fake.done();
    });
  }
});

describe("webhooks.json", () => {
  const doc = load("webhooks.json");
  for (const c of doc.cases) {
    it(c.name, () => {
      const body = "body_base64" in c ? Buffer.from(c.body_base64, "base64") : Buffer.from(c.body, "utf8");
      const options = {
        now: new Date(c.now * 1000),
        ...("tolerance_s" in c ? { toleranceMs: c.tolerance_s * 1000 } : {}),
      };
      const verify = () => verifyWebhook(body, c.headers, c.secret, options);
      if ("event" in c.expect) {
        assert.deepEqual(verify(), c.expect.event);
        if (!("body_base64" in c)) assert.deepEqual(verifyWebhook(c.body, new Headers(c.headers), c.secret, options), c.expect.event);
      } else {
        assert.throws(verify, (error: unknown) => {
          assert.ok(error instanceof WebhookVerificationError);
          assert.ok(error instanceof MeterstreamError);
          assert.equal(error.code, c.expect.error);
          assert.equal(error.status, undefined);
          assert.ok(error.detail);
          return true;
        });
      }
    });
  }
});
