package io.meterstream.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.io.InputStream;
import java.net.URI;
import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.time.OffsetDateTime;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import java.util.stream.StreamSupport;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.TestFactory;
import org.junit.jupiter.api.function.Executable;
import org.junit.jupiter.api.io.TempDir;

/** Replays clients/vectors/ (the scenarios the Python, Node and Go clients replay too). */
class VectorsTest {
  static final Path VECTORS = Path.of("..", "vectors");
  static final ObjectMapper MAPPER = new ObjectMapper();
  static final Pattern UA = Pattern.compile("^meterstream-java/\\d+\\.\\d+\\.\\d+.*");
  static final Map<String, Class<? extends MeterstreamException>> KINDS =
      Map.of(
          "authentication", AuthenticationException.class,
          "permission", PermissionDeniedException.class,
          "not_found", NotFoundException.class,
          "payload_too_large", PayloadTooLargeException.class,
          "unprocessable", UnprocessableException.class,
          "retries_exhausted", RetriesExhaustedException.class,
          "api", MeterstreamException.class);

  @TempDir Path tmp;

  static JsonNode load(String name) throws IOException {
    return MAPPER.readTree(VECTORS.resolve(name).toFile());
  }

  /** A fake transport serving a scenario's exchanges in order and checking each request. */
  static final class Replay implements Transport {
    final String token;
    final Deque<JsonNode> exchanges = new ArrayDeque<>();
    final List<String> bodies = new ArrayList<>();

    Replay(JsonNode doc, JsonNode scenario) {
      token = doc.get("token").asText();
      scenario.get("exchanges").forEach(exchanges::add);
    }

    @Override
    public Answer send(Call call) throws IOException {
      JsonNode exchange = exchanges.poll();
      assertNotNull(exchange, "unexpected request " + call.method() + " " + call.uri());
      JsonNode want = exchange.get("request");
      JsonNode answer = exchange.get("response");
      String body = "";
      if (call.body() != null) {
        try (InputStream in = call.body().open()) {
          body = new String(in.readAllBytes(), StandardCharsets.UTF_8);
        }
        assertEquals(call.body().length(), body.getBytes(StandardCharsets.UTF_8).length);
      }
      bodies.add(body);
      assertEquals(want.get("method").asText(), call.method());
      assertEquals(want.get("path").asText(), call.uri().getRawPath());
      Map<String, String> query = new LinkedHashMap<>();
      if (call.uri().getRawQuery() != null) {
        for (String pair : call.uri().getRawQuery().split("&")) {
          String[] kv = pair.split("=", 2);
          query.put(
              URLDecoder.decode(kv[0], StandardCharsets.UTF_8),
              URLDecoder.decode(kv.length > 1 ? kv[1] : "", StandardCharsets.UTF_8));
        }
      }
      Map<String, String> wantQuery = new LinkedHashMap<>();
      if (want.has("query")) {
        want.get("query").fields().forEachRemaining(e -> wantQuery.put(e.getKey(), e.getValue().asText()));
      }
      assertEquals(wantQuery, query);
      Map<String, String> headers = new LinkedHashMap<>();
      call.headers().forEach((k, v) -> headers.put(k.toLowerCase(java.util.Locale.ROOT), v));
      assertEquals("Bearer " + token, headers.get("authorization"));
      assertTrue(UA.matcher(headers.get("user-agent")).matches(), headers.get("user-agent"));
      if (want.has("headers")) {
        want.get("headers").fields().forEachRemaining(e -> assertEquals(e.getValue().asText(), headers.get(e.getKey()), e.getKey()));
      }
      if (want.has("json")) {
        assertEquals(want.get("json"), MAPPER.readTree(body));
      }
      if (want.has("body")) {
        assertEquals(want.get("body").asText(), body);
      }
      if (answer.path("network_error").asBoolean()) {
        throw new IOException("connection reset by the vector");
      }
      Map<String, String> answerHeaders = new LinkedHashMap<>();
      if (answer.has("headers")) {
        answer.get("headers").fields().forEachRemaining(e -> answerHeaders.put(e.getKey().toLowerCase(java.util.Locale.ROOT), e.getValue().asText()));
      }
      byte[] content =
          answer.has("json")
              ? MAPPER.writeValueAsBytes(answer.get("json"))
              : answer.path("body").asText("").getBytes(StandardCharsets.UTF_8);
      return new Answer(answer.get("status").asInt(), answerHeaders, content);
    }

    void done() {
      assertEquals(0, exchanges.size(), "exchanges never asked for");
    }
  }

  record Made(MeterstreamClient client, List<Double> slept) {}

  static Made client(JsonNode doc, JsonNode scenario, Replay replay, Consumer<MeterstreamClient.Builder> extra) {
    List<Double> slept = new ArrayList<>();
    Deque<Double> randoms = new ArrayDeque<>();
    scenario.path("random").forEach(v -> randoms.add(v.asDouble()));
    JsonNode c = scenario.path("client");
    MeterstreamClient.Builder builder =
        MeterstreamClient.builder(URI.create(doc.get("base_url").asText()), doc.get("token").asText())
            .transport(replay)
            .flushInterval(java.time.Duration.ZERO)
            .sleeper(d -> slept.add(d.toNanos() / 1e9))
            .random(
                () -> {
                  assertTrue(!randoms.isEmpty(), "the scenario has no more random values");
                  return randoms.poll();
                });
    if (c.has("batch_size")) builder.batchSize(c.get("batch_size").asInt());
    if (c.has("max_batch_bytes")) builder.maxBatchBytes(c.get("max_batch_bytes").asInt());
    if (c.has("max_attempts")) builder.maxAttempts(c.get("max_attempts").asInt());
    if (c.has("backoff_s")) builder.backoff(seconds(c.get("backoff_s")));
    if (c.has("max_backoff_s")) builder.maxBackoff(seconds(c.get("max_backoff_s")));
    if (extra != null) extra.accept(builder);
    return new Made(builder.build(), slept);
  }

  static java.time.Duration seconds(JsonNode v) {
    return java.time.Duration.ofNanos(Math.round(v.asDouble() * 1e9));
  }

  static <T> T outcome(java.util.concurrent.Callable<T> call, JsonNode want) throws Exception {
    if (want == null) {
      return call.call();
    }
    MeterstreamException error = assertThrows(MeterstreamException.class, () -> call.call());
    assertSame(KINDS.get(want.get("kind").asText()), error.getClass(), error.toString());
    assertEquals(want.get("status").isNull() ? null : want.get("status").asInt(), error.status());
    if (want.has("code")) assertEquals(want.get("code").asText(), error.code());
    if (want.has("detail")) assertEquals(want.get("detail").asText(), error.detail());
    return null;
  }

  /** As JSON text would parse (so that a long 3 equals an int 3). */
  static JsonNode tree(Object value) throws IOException {
    return MAPPER.readTree(MAPPER.writeValueAsBytes(value));
  }

  static JsonNode asJson(BatchResult result) throws IOException {
    ObjectNode node = (ObjectNode) tree(result);
    node.get("results").forEach(r -> {
      if ("failed".equals(r.get("status").asText())) ((ObjectNode) r).remove("detail");
    });
    return node;
  }

  static void sleeps(List<Double> slept, JsonNode want) {
    List<Double> expected = new ArrayList<>();
    if (want != null) want.forEach(v -> expected.add(v.asDouble()));
    assertEquals(expected.size(), slept.size(), "sleeps " + slept + " vs " + expected);
    for (int i = 0; i < slept.size(); i++) {
      assertEquals(expected.get(i), slept.get(i), 1e-6, "sleeps " + slept + " vs " + expected);
    }
  }

  static List<Event> events(JsonNode call) {
    List<Event> out = new ArrayList<>();
    call.get("events").forEach(e -> out.add(MAPPER.convertValue(e, Event.class)));
    return out;
  }

  static Stream<DynamicTest> scenarios(String file, ScenarioTest test) throws IOException {
    JsonNode doc = load(file);
    return StreamSupport.stream(doc.get("scenarios").spliterator(), false)
        .map(s -> DynamicTest.dynamicTest(s.get("name").asText(), (Executable) () -> test.run(doc, s)));
  }

  interface ScenarioTest {
    void run(JsonNode doc, JsonNode scenario) throws Exception;
  }

  @TestFactory
  Stream<DynamicTest> events() throws IOException {
    JsonNode doc = load("events.json");
    Pattern uuid = Pattern.compile(doc.get("uuid_pattern").asText());
    return StreamSupport.stream(doc.get("cases").spliterator(), false)
        .map(c -> DynamicTest.dynamicTest(c.get("name").asText(), () -> {
          JsonNode in = c.get("input");
          @SuppressWarnings("unchecked")
          Map<String, Object> data = MAPPER.convertValue(in.get("data"), Map.class);
          Event.Builder builder = Event.builder(in.get("meter").asText(), in.get("account").asText(), data)
              .time(OffsetDateTime.parse(in.get("time").asText()).toInstant());
          if (in.has("id")) builder.id(in.get("id").asText());
          if (in.has("source")) builder.source(in.get("source").asText());
          ObjectNode event = MAPPER.readValue(Json.write(builder.build()), ObjectNode.class);
          if ("uuid".equals(c.path("id").asText())) {
            assertTrue(uuid.matcher(event.get("id").asText()).matches(), event.get("id").asText());
            event.remove("id");
          }
          assertEquals(c.get("event"), event);
        }));
  }

  @TestFactory
  Stream<DynamicTest> send() throws IOException {
    return scenarios("send.json", (doc, s) -> {
      Replay replay = new Replay(doc, s);
      Made made = client(doc, s, replay, null);
      JsonNode expect = s.get("expect");
      BatchResult result = outcome(() -> made.client().sendBatch(events(s.get("call"))), expect.get("error"));
      if (expect.has("result")) assertEquals(expect.get("result"), asJson(result));
      sleeps(made.slept(), expect.get("sleeps_s"));
      assertEquals(1, new HashSet<>(replay.bodies).size(), "a retry must send the same bytes");
      replay.done();
    });
  }

  @TestFactory
  Stream<DynamicTest> batching() throws IOException {
    return scenarios("batching.json", (doc, s) -> {
      Replay replay = new Replay(doc, s);
      List<BatchResult> reported = new ArrayList<>();
      Made made = client(doc, s, replay, b -> b.onResult(reported::add));
      JsonNode call = s.get("call");
      JsonNode expect = s.get("expect");
      outcome(() -> {
        for (Event e : events(call)) made.client().add(e);
        if ("close".equals(call.get("then").asText())) made.client().close();
        else made.client().flush();
        return null;
      }, expect.get("error"));
      List<Integer> sizes = new ArrayList<>();
      for (String body : replay.bodies) sizes.add(MAPPER.readTree(body).size());
      List<Integer> want = new ArrayList<>();
      expect.get("batches").forEach(v -> want.add(v.asInt()));
      assertEquals(want, sizes);
      if (expect.has("event_bytes")) {
        for (Event e : events(call)) assertEquals(expect.get("event_bytes").asInt(), Json.write(e).length);
      }
      if (expect.has("reported")) {
        List<JsonNode> got = new ArrayList<>();
        for (BatchResult r : reported) {
          assertNotNull(r.error());
          got.add(asJson(r));
        }
        assertEquals(expect.get("reported"), tree(got));
      }
      replay.done();
    });
  }

  @TestFactory
  Stream<DynamicTest> reads() throws IOException {
    return scenarios("reads.json", (doc, s) -> {
      Replay replay = new Replay(doc, s);
      Made made = client(doc, s, replay, null);
      JsonNode f = s.get("call").get("filters");
      JsonNode expect = s.get("expect");
      List<Object> rows = outcome(() -> {
        List<Object> out = new ArrayList<>();
        if ("usage".equals(s.get("call").get("op").asText())) {
          UsageFilter filter = new UsageFilter();
          if (f.has("account")) filter.account(f.get("account").asText());
          if (f.has("meter")) filter.meter(f.get("meter").asText());
          if (f.has("period_from")) filter.periodFrom(f.get("period_from").asText());
          if (f.has("period_to")) filter.periodTo(f.get("period_to").asText());
          if (f.has("limit")) filter.limit(f.get("limit").asInt());
          made.client().usage(filter).forEach(out::add);
        } else {
          RejectionFilter filter = new RejectionFilter();
          if (f.has("account")) filter.account(f.get("account").asText());
          if (f.has("reason")) filter.reason(f.get("reason").asText());
          if (f.has("since")) filter.since(Instant.parse(f.get("since").asText()));
          if (f.has("until")) filter.until(Instant.parse(f.get("until").asText()));
          if (f.has("limit")) filter.limit(f.get("limit").asInt());
          made.client().rejections(filter).forEach(out::add);
        }
        return out;
      }, expect.get("error"));
      if (expect.has("items")) assertEquals(expect.get("items"), tree(rows));
      sleeps(made.slept(), expect.get("sleeps_s"));
      replay.done();
    });
  }

  @TestFactory
  Stream<DynamicTest> uploads() throws IOException {
    return scenarios("uploads.json", (doc, s) -> {
      Replay replay = new Replay(doc, s);
      Made made = client(doc, s, replay, null);
      JsonNode call = s.get("call");
      JsonNode expect = s.get("expect");
      Path dir = Files.createTempDirectory(tmp, "upload");
      Path file = dir.resolve(call.get("filename").asText());
      Files.writeString(file, call.get("content").asText());
      long[] last = new long[2];
      UploadStatus status = outcome(
          () -> made.client().upload(
              file,
              call.has("format") ? call.get("format").asText() : null,
              call.get("upload_id").asText(),
              (sent, size) -> { last[0] = sent; last[1] = size; }),
          expect.get("error"));
      if (expect.has("status")) {
        assertEquals(expect.get("status"), tree(status));
        assertEquals(expect.get("progress_last"), tree(last));
        sleeps(made.slept(), expect.get("sleeps_s"));
      }
      replay.done();
    });
  }

  @TestFactory
  Stream<DynamicTest> webhooks() throws IOException {
    JsonNode doc = load("webhooks.json");
    return StreamSupport.stream(doc.get("cases").spliterator(), false)
        .map(c -> DynamicTest.dynamicTest(c.get("name").asText(), () -> {
          byte[] body = c.has("body_base64")
              ? java.util.Base64.getDecoder().decode(c.get("body_base64").asText())
              : c.get("body").asText().getBytes(StandardCharsets.UTF_8);
          Map<String, Object> headers = new LinkedHashMap<>();
          c.get("headers").fields().forEachRemaining(e -> headers.put(e.getKey(), e.getValue().asText()));
          java.time.Duration tolerance = c.has("tolerance_s")
              ? seconds(c.get("tolerance_s"))
              : Webhooks.DEFAULT_TOLERANCE;
          Executable verify = () -> Webhooks.verify(
              body, headers, c.get("secret").asText(), Instant.ofEpochSecond(c.get("now").asLong()), tolerance);
          JsonNode expect = c.get("expect");
          if (expect.has("event")) {
            WebhookEvent event = Webhooks.verify(
                body, headers, c.get("secret").asText(), Instant.ofEpochSecond(c.get("now").asLong()), tolerance);
            assertEquals(withoutNulls(expect.get("event")), withoutNulls(tree(event)));
            // The same with each header as a list of values (com.sun.net.httpserver, Spring).
            Map<String, Object> lists = new LinkedHashMap<>();
            headers.forEach((k, v) -> lists.put(k, List.of(v)));
            assertEquals(event, Webhooks.verify(
                body, lists, c.get("secret").asText(), Instant.ofEpochSecond(c.get("now").asLong()), tolerance));
          } else {
            WebhookVerificationException error = assertThrows(WebhookVerificationException.class, verify);
            assertEquals(expect.get("error").asText(), error.code());
            assertEquals(null, error.status());
            assertNotNull(error.detail());
          }
        }));
  }

  /** The event's top-level attributes that are not null (the record has every one). */
  static JsonNode withoutNulls(JsonNode event) {
    ObjectNode copy = event.deepCopy();
    List<String> nulls = new ArrayList<>();
    copy.fields().forEachRemaining(e -> { if (e.getValue().isNull()) nulls.add(e.getKey()); });
    copy.remove(nulls);
    return copy;
  }
}
