// Events per second sent through one client (1,000-event batches): run by bench/sdk_throughput.py.
import { MeterstreamClient, makeEvent } from "../src/index.js";

const env = process.env;
const events = Number(env.METERSTREAM_BENCH_EVENTS ?? "100000");
let accepted = 0;
const client = new MeterstreamClient(env.METERSTREAM_BENCH_URL ?? "", env.METERSTREAM_BENCH_TOKEN ?? "", {
  onResult: (r) => (accepted += r.accepted),
});
const account = env.METERSTREAM_BENCH_ACCOUNT ?? "";
const prefix = env.METERSTREAM_BENCH_PREFIX ?? "bench";
const started = process.hrtime.bigint();
for (let i = 0; i < events; i++) {
  await client.add(makeEvent("api_calls", account, { endpoint: "/v1/search", status: 200 }, { id: `${prefix}-${i}` }));
}
await client.close();
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
console.log(JSON.stringify({ sdk: "node", events, accepted, seconds }));
