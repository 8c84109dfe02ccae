// The Node client's own behaviour beyond the shared vectors: the timer, TLS with a private CA,
// the webhook check's default clock.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdtempSync, readFileSync } from "node:fs";
import { createServer as createHttpServer } from "node:http";
import { createServer } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";

import {
  type BatchResult,
  type FetchLike,
  MeterstreamClient,
  PermissionDeniedError,
  RetriesExhaustedError,
  VERSION,
  WebhookVerificationError,
  makeEvent,
  verifyWebhook,
} from "../src/index.js";

function acceptAll(body: string): Response {
  const events = JSON.parse(body) as { id: string }[];
  return Response.json(
    {
      accepted: events.length,
      rejected: 0,
      failed: 0,
      results: events.map((e, index) => ({ index, id: e.id, status: "accepted" })),
    },
    { status: 202 },
  );
}

const bodyOf = (init: { body?: unknown }) => Buffer.from(init.body as Uint8Array).toString();

describe("the batching sender", () => {
  it("sends what is buffered once the flush interval has passed, without flush()", async () => {
    let all!: () => void;
    const arrived = new Promise<void>((resolve) => (all = resolve));
    let sent = 0;
    const fetch: FetchLike = async (_url, init) => {
      sent += JSON.parse(bodyOf(init)).length; // one batch, or more if adding took long
      if (sent === 3) all();
      return acceptAll(bodyOf(init));
    };
    const reported: BatchResult[] = [];
    const client = new MeterstreamClient("http://api.test", "ms_x", {
      fetch,
      flushIntervalMs: 20,
      onResult: (r) => reported.push(r),
    });
    for (let i = 0; i < 3; i++) await client.add(makeEvent("api_calls", "acct-1", { i }));

    await arrived; // no flush() or close() was needed
    await client.close();

    assert.equal(reported.reduce((n, r) => n + r.accepted, 0), 3);
  });

  it("a batch the timer could not send is reported and its error thrown by the next flush", async () => {
    let called!: () => void;
    const answered = new Promise<void>((resolve) => (called = resolve));
    const fetch: FetchLike = async () => {
      setImmediate(called);
      return Response.json({ error: "FORBIDDEN", detail: "no scope" }, { status: 403 });
    };
    const reported: BatchResult[] = [];
    const client = new MeterstreamClient("http://api.test", "ms_x", {
      fetch,
      flushIntervalMs: 10,
      onResult: (r) => reported.push(r),
    });
    await client.add(makeEvent("api_calls", "acct-1", {}, { id: "e-1" }));
    await answered;

    await assert.rejects(client.flush(), PermissionDeniedError);
    assert.deepEqual(
      reported.map((r) => r.results.map((e) => [e.id, e.status])),
      [[["e-1", "failed"]]],
    );
    await client.close(); // the error was thrown once
  });

  it("makeEvent's event cannot be changed, so its id stays", () => {
    const event = makeEvent("api_calls", "acct-1", {});
    assert.throws(() => {
      (event as { id: string }).id = "other";
    }, TypeError);
  });

  it("VERSION is the package's version", () => {
    const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8"));
    assert.equal(VERSION, pkg.version);
  });
});

describe("TLS", () => {
  it("trusts a private CA given as `ca`, and nothing else", async () => {
    const dir = mkdtempSync(join(tmpdir(), "ms-tls-"));
    const cert = join(dir, "server.crt");
    const key = join(dir, "server.key");
    execFileSync("openssl", [
      "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
      "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert,
    ], { stdio: "ignore" });
    const seen: string[] = [];
    const server = createServer({ cert: readFileSync(cert), key: readFileSync(key) }, (req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        seen.push(String(req.headers["user-agent"]));
        const answer = acceptAll(Buffer.concat(chunks).toString());
        void answer.text().then((text) => {
          res.writeHead(202, { "content-type": "application/json" });
          res.end(text);
        });
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      const trusting = new MeterstreamClient(url, "ms_x", { ca: readFileSync(cert, "utf8") });
      const result = await trusting.sendBatch([makeEvent("api_calls", "acct-1", {})]);
      assert.equal(result.accepted, 1);
      assert.match(seen[0] ?? "", /^meterstream-node\/0\.1\.0/);

      const plain = new MeterstreamClient(url, "ms_x", { maxAttempts: 1 });
      await assert.rejects(plain.sendBatch([makeEvent("api_calls", "acct-1", {})]), RetriesExhaustedError);
    } finally {
      server.close();
      server.closeAllConnections();
    }
  });
});

describe("verifyWebhook", () => {
  it("checks the timestamp against the clock when no `now` is given", () => {
    const secret = `whsec_${Buffer.alloc(32, 7).toString("base64")}`;
    const now = Math.floor(Date.now() / 1000);

    assert.equal(verifyWebhook(TEST_EVENT, signed(now), secret).id, "n-1");
    assert.throws(
      () => verifyWebhook(TEST_EVENT, signed(now - 3600), secret),
      (error: unknown) => error instanceof WebhookVerificationError && error.code === "TIMESTAMP_TOO_OLD",
    );
  });

  it("takes node:http's req.headers and raw body as they come", async () => {
    const secret = `whsec_${Buffer.alloc(32, 7).toString("base64")}`;
    const outcomes: string[] = [];
    const server = createHttpServer(async (req, res) => {
      const chunks: Buffer[] = [];
      for await (const chunk of req) chunks.push(chunk as Buffer);
      try {
        outcomes.push(verifyWebhook(Buffer.concat(chunks), req.headers, secret).type);
        res.writeHead(204).end();
      } catch (error) {
        if (!(error instanceof WebhookVerificationError)) throw error;
        outcomes.push(error.code);
        res.writeHead(401).end();
      }
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks`;
    try {
      const now = Math.floor(Date.now() / 1000);
      const good = await fetch(url, { method: "POST", headers: signed(now), body: TEST_EVENT });
      const bad = await fetch(url, { method: "POST", headers: signed(now), body: `${TEST_EVENT} ` });
      assert.deepEqual([good.status, bad.status], [204, 401]);
      assert.deepEqual(outcomes, ["io.meterstream.endpoint.test", "NO_MATCHING_SIGNATURE"]);
    } finally {
      server.close();
    }
  });
});

const TEST_EVENT = JSON.stringify({
  specversion: "1.0",
  id: "n-1",
  source: "/meterstream/alerts",
  type: "io.meterstream.endpoint.test",
});

/** Headers signed by this test itself (the vectors' are made by the reference library). */
function signed(seconds: number): Record<string, string> {
  const mac = createHmac("sha256", Buffer.alloc(32, 7)).update(`n-1.${seconds}.${TEST_EVENT}`).digest("base64");
  return { "webhook-id": "n-1", "webhook-timestamp": String(seconds), "webhook-signature": `v1,${mac}` };
}
