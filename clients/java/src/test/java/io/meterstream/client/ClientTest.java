package io.meterstream.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpsConfigurator;
import com.sun.net.httpserver.HttpsServer;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.net.InetSocketAddress;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.security.KeyStore;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CopyOnWriteArrayList;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The Java client's own behaviour beyond the shared vectors: the timer, TLS with a private CA, the
 * webhook check's default clock.
 */
class ClientTest {
  static final ObjectMapper MAPPER = new ObjectMapper();

  static Transport.Answer acceptAll(byte[] body) throws IOException {
    JsonNode events = MAPPER.readTree(body);
    List<Map<String, Object>> results = new ArrayList<>();
    for (int i = 0; i < events.size(); i++) {
      results.add(Map.of("index", i, "id", events.get(i).get("id").asText(), "status", "accepted"));
    }
    Map<String, Object> doc =
        Map.of("accepted", events.size(), "rejected", 0, "failed", 0, "results", results);
    return new Transport.Answer(202, Map.of(), MAPPER.writeValueAsBytes(doc));
  }

  static byte[] read(Transport.Call call) throws IOException {
    try (InputStream in = call.body().open()) {
      return in.readAllBytes();
    }
  }

  @Test
  void timerSendsWhatIsBufferedWithoutFlush() throws Exception {
    BlockingQueue<Integer> arrived = new ArrayBlockingQueue<>(4);
    List<BatchResult> reported = new CopyOnWriteArrayList<>();
    Transport transport =
        call -> {
          byte[] body = read(call);
          arrived.add(MAPPER.readTree(body).size());
          return acceptAll(body);
        };
    try (MeterstreamClient client =
        MeterstreamClient.builder(URI.create("http://api.test"), "ms_x")
            .transport(transport)
            .flushInterval(Duration.ofMillis(20))
            .onResult(reported::add)
            .build()) {
      for (int i = 0; i < 3; i++) {
        client.add(Event.of("api_calls", "acct-1", Map.of("i", i)));
      }
      int sent = 0;
      while (sent < 3) { // one batch, or more if adding took longer than the interval
        sent += arrived.take();
      }
    }
    assertEquals(3, reported.stream().mapToInt(BatchResult::accepted).sum());
  }

  @Test
  void timerFailureIsReportedAndThrownByTheNextFlushOnce() throws Exception {
    BlockingQueue<BatchResult> reported = new ArrayBlockingQueue<>(4);
    Transport transport =
        call ->
            new Transport.Answer(
                403, Map.of(), "{\"error\":\"FORBIDDEN\",\"detail\":\"no scope\"}".getBytes(StandardCharsets.UTF_8));
    MeterstreamClient client =
        MeterstreamClient.builder(URI.create("http://api.test"), "ms_x")
            .transport(transport)
            .flushInterval(Duration.ofMillis(10))
            .onResult(reported::add)
            .build();
    client.add(Event.builder("api_calls", "acct-1", Map.of()).id("e-1").build());
    BatchResult result = reported.take();

    assertThrows(PermissionDeniedException.class, client::flush);
    assertEquals("e-1", result.results().get(0).id());
    assertEquals("failed", result.results().get(0).status());
    client.close(); // thrown once
  }

  @Test
  void eventIdIsFixedAndDataCannotChange() {
    Map<String, Object> data = new HashMap<>(Map.of("tokens", 1));
    Event event = Event.of("llm_tokens", "acct-1", data);
    data.put("tokens", 2);

    assertEquals(1, event.data().get("tokens"));
    assertThrows(UnsupportedOperationException.class, () -> event.data().put("tokens", 3));
    assertEquals(event, new Event(event.specversion(), event.id(), event.source(), event.type(),
        event.subject(), event.time(), event.datacontenttype(), event.data()));
  }

  @Test
  void privateCaIsTrustedAndNothingElse(@TempDir Path dir) throws Exception {
    Path cert = dir.resolve("server.crt");
    Path key = dir.resolve("server.key");
    Path p12 = dir.resolve("server.p12");
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        "-keyout", key.toString(), "-out", cert.toString());
    run("openssl", "pkcs12", "-export", "-in", cert.toString(), "-inkey", key.toString(),
        "-out", p12.toString(), "-passout", "pass:secret");
    KeyStore store = KeyStore.getInstance("PKCS12");
    try (FileInputStream in = new FileInputStream(p12.toFile())) {
      store.load(in, "secret".toCharArray());
    }
    KeyManagerFactory keys = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
    keys.init(store, "secret".toCharArray());
    SSLContext tls = SSLContext.getInstance("TLS");
    tls.init(keys.getKeyManagers(), null, null);
    HttpsServer server = HttpsServer.create(new InetSocketAddress("127.0.0.1", 0), 0);
    server.setHttpsConfigurator(new HttpsConfigurator(tls));
    List<String> agents = new CopyOnWriteArrayList<>();
    server.createContext("/v1/events", (HttpExchange exchange) -> {
      agents.add(exchange.getRequestHeaders().getFirst("User-Agent"));
      Transport.Answer answer = acceptAll(exchange.getRequestBody().readAllBytes());
      exchange.sendResponseHeaders(answer.status(), answer.body().length);
      exchange.getResponseBody().write(answer.body());
      exchange.close();
    });
    server.start();
    URI url = URI.create("https://127.0.0.1:" + server.getAddress().getPort());
    try {
      MeterstreamClient trusting = MeterstreamClient.builder(url, "ms_x").caCertificates(cert).build();
      assertEquals(1, trusting.sendBatch(List.of(Event.of("api_calls", "acct-1", Map.of()))).accepted());
      assertTrue(agents.get(0).startsWith("meterstream-java/" + MeterstreamClient.VERSION), agents.get(0));

      MeterstreamClient plain = MeterstreamClient.builder(url, "ms_x").maxAttempts(1).build();
      assertThrows(RetriesExhaustedException.class,
          () -> plain.sendBatch(List.of(Event.of("api_calls", "acct-1", Map.of()))));
    } finally {
      server.stop(0);
    }
  }

  static void run(String... command) throws Exception {
    Process process = new ProcessBuilder(command).redirectErrorStream(true).start();
    process.getInputStream().readAllBytes();
    assertEquals(0, process.waitFor(), String.join(" ", command));
  }

  @Test
  void verifyWebhookChecksTheClockWhenNoNowIsGiven() throws Exception {
    byte[] key = new byte[32];
    java.util.Arrays.fill(key, (byte) 7);
    String secret = "whsec_" + java.util.Base64.getEncoder().encodeToString(key);
    String body =
        "{\"specversion\":\"1.0\",\"id\":\"n-1\",\"source\":\"/meterstream/alerts\","
            + "\"type\":\"io.meterstream.endpoint.test\"}";
    javax.crypto.Mac mac = javax.crypto.Mac.getInstance("HmacSHA256");
    mac.init(new javax.crypto.spec.SecretKeySpec(key, "HmacSHA256"));
    long now = java.time.Instant.now().getEpochSecond();
    java.util.function.LongFunction<Map<String, String>> signed = seconds -> Map.of(
        "webhook-id", "n-1",
        "webhook-timestamp", Long.toString(seconds),
        "webhook-signature", "v1," + java.util.Base64.getEncoder().encodeToString(
            mac.doFinal(("n-1." + seconds + "." + body).getBytes(StandardCharsets.UTF_8))));

    assertEquals("n-1", Webhooks.verify(body, signed.apply(now), secret).id());
    WebhookVerificationException old = assertThrows(
        WebhookVerificationException.class, () -> Webhooks.verify(body, signed.apply(now - 3600), secret));
    assertEquals(Webhooks.TIMESTAMP_TOO_OLD, old.code());
  }
}
