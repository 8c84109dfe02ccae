// The live test: run by tests/clients/test_live.py against a real `meterstream serve` (skipped
// without METERSTREAM_LIVE_PHASE). Same steps as tests/clients/live_python.py.
import assert from "node:assert/strict";
import { statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import { AuthenticationError, MeterstreamClient, makeEvent } from "../src/index.js";

const EVENTS = 2500;
const UPLOADED = 100;
let QUANTITY = UPLOADED + 7;
for (let i = 0; i < EVENTS; i++) QUANTITY += (i % 100) + 1;
const COUNT = EVENTS + UPLOADED + 1;

const env = process.env;
const phase = env.METERSTREAM_LIVE_PHASE;

function need(name: string): string {
  const value = env[name];
  assert.ok(value, `${name} is not set`);
  return value;
}

test(
  "live: a real meterstream serve",
  { skip: phase === undefined && "run by tests/clients/test_live.py (METERSTREAM_LIVE_PHASE)" },
  async () => {
    const url = need("METERSTREAM_LIVE_URL");
    const token = need("METERSTREAM_LIVE_TOKEN");
    const account = need("METERSTREAM_LIVE_ACCOUNT");
    const prefix = need("METERSTREAM_LIVE_PREFIX");
    const tokens = (n: unknown, id: string, subject = account) =>
      makeEvent("llm_tokens", subject, { tokens: n, model: "small" }, { id });

    if (phase === "send") {
      const client = new MeterstreamClient(url, token, {
        backoffMs: 200,
        maxBackoffMs: 2000,
        maxAttempts: 40,
      });
      for (let i = 0; i < EVENTS; i++) {
        const data = { tokens: (i % 100) + 1, model: i % 2 === 0 ? "small" : "large" };
        await client.add(makeEvent("llm_tokens", account, data, { id: `${prefix}-${i}` }));
      }
      await client.flush();
      const mixed = await client.sendBatch([
        tokens(7, `${prefix}-ok`),
        tokens(1, `${prefix}-x`, need("METERSTREAM_LIVE_STRANGER")),
        tokens("lots", `${prefix}-bad`),
      ]);
      assert.deepEqual(
        mixed.results.map((r) => [r.status, r.reason ?? null]),
        [
          ["accepted", null],
          ["rejected", "ACCOUNT_NOT_IN_ORGANISATION"],
          ["accepted", null],
        ],
      );
      const path = join(need("METERSTREAM_LIVE_DIR"), "node-upload.jsonl");
      let lines = "";
      for (let i = 0; i < UPLOADED; i++) lines += `${JSON.stringify(tokens(1, `${prefix}-up-${i}`))}\n`;
      writeFileSync(path, lines);
      let last: [number, number] = [0, 0];
      const status = await client.upload(path, { progress: (sent, size) => (last = [sent, size]) });
      assert.deepEqual([status.state, status.accepted, status.rejected], ["done", UPLOADED, 0]);
      const size = statSync(path).size;
      assert.deepEqual(last, [size, size]);
      await client.close();
      console.log("LIVE SEND OK");
    } else {
      const client = new MeterstreamClient(url, token);
      const rows = [];
      for await (const row of client.usage({ account, limit: 1 })) rows.push(row);
      assert.ok(rows.length >= 2, JSON.stringify(rows));
      assert.equal(rows.reduce((sum, r) => sum + Number(r.quantity), 0), QUANTITY);
      assert.equal(rows.reduce((sum, r) => sum + r.event_count, 0), COUNT);
      const rejected = [];
      for await (const row of client.rejections({ account })) rejected.push(row);
      assert.deepEqual(rejected.map((r) => r.reason), ["WRONG_TYPE"]);
      assert.ok(rejected[0]?.raw_payload.includes(`${prefix}-bad`));
      const stranger = new MeterstreamClient(url, "ms_000000000000_wrong");
      await assert.rejects(async () => {
        for await (const _ of stranger.usage()) break;
      }, AuthenticationError);
      console.log("LIVE VERIFY OK");
    }
  },
);
