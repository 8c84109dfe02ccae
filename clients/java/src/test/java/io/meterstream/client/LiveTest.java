package io.meterstream.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import java.math.BigDecimal;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/**
 * The live test: run by tests/clients/test_live.py against a real {@code meterstream serve}
 * (skipped without METERSTREAM_LIVE_PHASE). Same steps as tests/clients/live_python.py.
 */
class LiveTest {
  static final int EVENTS = 2500;
  static final int UPLOADED = 100;

  static String need(String name) {
    String value = System.getenv(name);
    assertNotNull(value, name + " is not set");
    return value;
  }

  static Event tokens(Object n, String id, String account) {
    return Event.builder("llm_tokens", account, Map.of("tokens", n, "model", "small")).id(id).build();
  }

  @Test
  void liveAgainstARealServer() throws Exception {
    String phase = System.getenv("METERSTREAM_LIVE_PHASE");
    assumeTrue(phase != null, "run by tests/clients/test_live.py (METERSTREAM_LIVE_PHASE)");
    URI url = URI.create(need("METERSTREAM_LIVE_URL"));
    String token = need("METERSTREAM_LIVE_TOKEN");
    String account = need("METERSTREAM_LIVE_ACCOUNT");
    String prefix = need("METERSTREAM_LIVE_PREFIX");
    long quantity = UPLOADED + 7;
    for (int i = 0; i < EVENTS; i++) {
      quantity += i % 100 + 1;
    }
    long count = EVENTS + UPLOADED + 1;

    if (phase.equals("send")) {
      try (MeterstreamClient client =
          MeterstreamClient.builder(url, token)
              .backoff(Duration.ofMillis(200))
              .maxBackoff(Duration.ofSeconds(2))
              .maxAttempts(40)
              .build()) {
        for (int i = 0; i < EVENTS; i++) {
          Map<String, Object> data = Map.of("tokens", i % 100 + 1, "model", i % 2 == 0 ? "small" : "large");
          client.add(Event.builder("llm_tokens", account, data).id(prefix + "-" + i).build());
        }
        client.flush();
        BatchResult mixed =
            client.sendBatch(
                List.of(
                    tokens(7, prefix + "-ok", account),
                    tokens(1, prefix + "-x", need("METERSTREAM_LIVE_STRANGER")),
                    tokens("lots", prefix + "-bad", account)));
        List<String> statuses = new ArrayList<>();
        mixed.results().forEach(r -> statuses.add(r.status() + ":" + r.reason()));
        assertEquals(List.of("accepted:null", "rejected:ACCOUNT_NOT_IN_ORGANISATION", "accepted:null"), statuses);
        Path path = Path.of(need("METERSTREAM_LIVE_DIR"), "java-upload.jsonl");
        StringBuilder lines = new StringBuilder();
        ObjectMapper mapper = new ObjectMapper();
        for (int i = 0; i < UPLOADED; i++) {
          lines.append(mapper.writeValueAsString(tokens(1, prefix + "-up-" + i, account))).append('\n');
        }
        Files.writeString(path, lines, StandardCharsets.UTF_8);
        long[] last = new long[2];
        UploadStatus status = client.upload(path, null, null, (sent, size) -> {
          last[0] = sent;
          last[1] = size;
        });
        assertEquals("done", status.state());
        assertEquals(UPLOADED, status.accepted());
        assertEquals(0, status.rejected());
        long size = Files.size(path);
        assertEquals(List.of(size, size), List.of(last[0], last[1]));
      }
      System.out.println("LIVE SEND OK");
      return;
    }
    MeterstreamClient client = MeterstreamClient.builder(url, token).build();
    BigDecimal sum = BigDecimal.ZERO;
    long events = 0;
    int rows = 0;
    for (UsageRow row : client.usage(new UsageFilter().account(account).limit(1))) {
      sum = sum.add(row.quantity());
      events += row.eventCount();
      rows++;
    }
    assertTrue(rows >= 2, "rows: " + rows);
    assertEquals(0, BigDecimal.valueOf(quantity).compareTo(sum), "quantity " + sum);
    assertEquals(count, events);
    List<RejectionRow> rejected = new ArrayList<>();
    client.rejections(new RejectionFilter().account(account)).forEach(rejected::add);
    assertEquals(1, rejected.size());
    assertEquals("WRONG_TYPE", rejected.get(0).reason());
    assertTrue(rejected.get(0).rawPayload().contains(prefix + "-bad"));
    MeterstreamClient stranger = MeterstreamClient.builder(url, "ms_000000000000_wrong").build();
    assertThrows(AuthenticationException.class, () -> stranger.usage(new UsageFilter()).iterator().hasNext());
    System.out.println("LIVE VERIFY OK");
  }
}
