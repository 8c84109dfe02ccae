package io.meterstream.client;

import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.net.URI;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;

/**
 * Events per second sent through one client (1,000-event batches): run by
 * bench/sdk_throughput.py with {@code mvn test -Dtest=ThroughputBench}; skipped otherwise (and
 * not a *Test class, so {@code mvn test} leaves it out).
 */
class ThroughputBench {
  @Test
  void sendThroughOneClient() {
    String url = System.getenv("METERSTREAM_BENCH_URL");
    assumeTrue(url != null, "run by bench/sdk_throughput.py");
    int events = Integer.parseInt(System.getenv("METERSTREAM_BENCH_EVENTS"));
    String account = System.getenv("METERSTREAM_BENCH_ACCOUNT");
    String prefix = System.getenv("METERSTREAM_BENCH_PREFIX");
    AtomicLong accepted = new AtomicLong();
    long started = System.nanoTime();
    try (MeterstreamClient client =
        MeterstreamClient.builder(URI.create(url), System.getenv("METERSTREAM_BENCH_TOKEN"))
            .onResult(r -> accepted.addAndGet(r.accepted()))
            .build()) {
      Map<String, Object> data = Map.of("endpoint", "/v1/search", "status", 200);
      for (int i = 0; i < events; i++) {
        client.add(Event.builder("api_calls", account, data).id(prefix + "-" + i).build());
      }
    }
    double seconds = (System.nanoTime() - started) / 1e9;
    System.out.println(
        "{\"sdk\": \"java\", \"events\": " + events + ", \"accepted\": " + accepted.get()
            + ", \"seconds\": " + seconds + "}");
  }
}
