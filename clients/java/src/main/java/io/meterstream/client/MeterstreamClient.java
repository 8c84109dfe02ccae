package io.meterstream.client;

import com.fasterxml.jackson.core.type.TypeReference;
import com.fasterxml.jackson.databind.JavaType;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.net.URI;
import java.net.URLEncoder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.NoSuchElementException;
import java.util.Optional;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;
import java.util.function.DoubleSupplier;
import java.util.regex.Pattern;

/**
 * Sends usage events (batched), reads usage and rejections page by page, uploads files. Same
 * rules as the Python client (meterstream.client); clients/vectors/ holds the scenarios both
 * replay. Thread-safe; close it to send what is buffered.
 *
 * <pre>{@code
 * try (var client = MeterstreamClient.builder(URI.create("http://127.0.0.1:18080"), token).build()) {
 *   client.add(Event.of("llm_tokens", "acct-42", Map.of("tokens", 812, "model", "large")));
 * }
 * }</pre>
 */
public final class MeterstreamClient implements AutoCloseable {
  public static final String VERSION = "0.1.0";
  public static final String USER_AGENT =
      "meterstream-java/" + VERSION + " (java " + System.getProperty("java.version") + ")";
  /** The API's limits per request ({@code api.max_events_per_request}, {@code max_request_bytes}). */
  public static final int MAX_BATCH_EVENTS = 1000;

  public static final int MAX_BATCH_BYTES = 512 * 1024;

  private static final String BATCH_TYPE = "application/cloudevents-batch+json";
  private static final Set<Integer> RETRY_STATUSES = Set.of(429, 502, 503, 504);
  private static final Pattern DIGITS = Pattern.compile("\\d{1,9}");

  /** Waits between attempts; a test passes one that records them. */
  @FunctionalInterface
  public interface Sleeper {
    void sleep(Duration duration) throws InterruptedException;
  }

  private final String baseUrl;
  private final String token;
  private final Transport transport;
  private final int batchSize;
  private final int maxBatchBytes;
  private final Duration flushInterval;
  private final int maxAttempts;
  private final Duration backoff;
  private final Duration maxBackoff;
  private final Duration timeout;
  private final Consumer<BatchResult> onResult;
  private final Sleeper sleeper;
  private final DoubleSupplier random;

  private final Object lock = new Object();
  private List<Buffered> buffer = new ArrayList<>();
  private int bufferBytes = 2;
  private ScheduledExecutorService scheduler;
  private ScheduledFuture<?> timer;
  private final Set<Future<?>> background = new HashSet<>();
  private MeterstreamException deferred;

  private record Buffered(String id, byte[] raw) {}

  private MeterstreamClient(Builder b) {
    this.baseUrl = b.baseUrl.toString().replaceAll("/+$", "");
    this.token = b.token;
    this.transport = b.transport != null ? b.transport : JdkTransport.create(b.caCertificatesPem);
    if (b.batchSize < 1 || b.batchSize > MAX_BATCH_EVENTS) {
      throw new IllegalArgumentException(
          "batchSize must be 1.." + MAX_BATCH_EVENTS + ", not " + b.batchSize);
    }
    this.batchSize = b.batchSize;
    this.maxBatchBytes = Math.min(b.maxBatchBytes, MAX_BATCH_BYTES);
    this.flushInterval = b.flushInterval;
    this.maxAttempts = b.maxAttempts;
    this.backoff = b.backoff;
    this.maxBackoff = b.maxBackoff;
    this.timeout = b.timeout;
    this.onResult = b.onResult;
    this.sleeper = b.sleeper;
    this.random = b.random;
  }

  /** A client of the API at {@code baseUrl} (e.g. {@code http://127.0.0.1:18080}). */
  public static Builder builder(URI baseUrl, String token) {
    return new Builder(baseUrl, token);
  }

  // --- events ----------------------------------------------------------------------------------

  /**
   * Buffers an event and sends the buffer when it is full (batchSize events, or maxBatchBytes).
   * The event is encoded now, so the bytes sent (and resent) are fixed here.
   *
   * @return the result of a batch this call sent, if any
   * @throws MeterstreamException for a batch that could not be sent (also one the timer sent)
   */
  public Optional<BatchResult> add(Event event) {
    byte[] raw = Json.write(event);
    List<List<Buffered>> batches = new ArrayList<>();
    synchronized (lock) {
      throwDeferred();
      if (!buffer.isEmpty() && bufferBytes + raw.length + 1 > maxBatchBytes) {
        batches.add(take());
      }
      bufferBytes += raw.length + (buffer.isEmpty() ? 0 : 1);
      buffer.add(new Buffered(event.id(), raw));
      if (buffer.size() >= batchSize) {
        batches.add(take());
      } else {
        arm();
      }
    }
    BatchResult result = null;
    for (List<Buffered> batch : batches) {
      result = sendTaken(batch);
    }
    return Optional.ofNullable(result);
  }

  /**
   * Sends what is buffered and waits for batches the timer is sending.
   *
   * @throws MeterstreamException for a batch that could not be sent (reported to onResult with
   *     every event failed)
   */
  public Optional<BatchResult> flush() {
    List<Buffered> batch;
    synchronized (lock) {
      batch = take();
    }
    BatchResult result = batch.isEmpty() ? null : sendTaken(batch);
    List<Future<?>> pending;
    synchronized (lock) {
      pending = new ArrayList<>(background);
    }
    for (Future<?> future : pending) {
      try {
        future.get();
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        throw new MeterstreamException("interrupted while waiting for a batch", null, null, e);
      } catch (ExecutionException | java.util.concurrent.CancellationException e) {
        // its outcome is in `deferred`
      }
    }
    synchronized (lock) {
      throwDeferred();
    }
    return Optional.ofNullable(result);
  }

  /** Sends events as one request, resending the same bytes on 429, 502-504 and network errors. */
  public BatchResult sendBatch(List<Event> events) {
    List<byte[]> parts = new ArrayList<>();
    for (Event e : events) {
      parts.add(Json.write(e));
    }
    return post(body(parts));
  }

  private static byte[] body(List<byte[]> parts) {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    out.write('[');
    for (int i = 0; i < parts.size(); i++) {
      if (i > 0) {
        out.write(',');
      }
      out.writeBytes(parts.get(i));
    }
    out.write(']');
    return out.toByteArray();
  }

  private List<Buffered> take() {
    List<Buffered> batch = buffer;
    buffer = new ArrayList<>();
    bufferBytes = 2;
    if (timer != null) {
      timer.cancel(false);
      timer = null;
    }
    return batch;
  }

  private void throwDeferred() {
    MeterstreamException error = deferred;
    if (error != null) {
      deferred = null;
      throw error;
    }
  }

  private void arm() {
    if (timer != null || flushInterval.isZero() || flushInterval.isNegative()) {
      return;
    }
    if (scheduler == null) {
      scheduler =
          Executors.newSingleThreadScheduledExecutor(
              run -> {
                Thread thread = new Thread(run, "meterstream-flush");
                thread.setDaemon(true);
                return thread;
              });
    }
    ScheduledFuture<?>[] self = new ScheduledFuture<?>[1];
    self[0] =
        scheduler.schedule(
            () -> {
              List<Buffered> batch;
              synchronized (lock) {
                if (timer != self[0]) {
                  return;
                }
                timer = null;
                batch = take();
              }
              try {
                sendTaken(batch);
              } catch (MeterstreamException e) {
                synchronized (lock) {
                  if (deferred == null) {
                    deferred = e;
                  }
                }
              } finally {
                synchronized (lock) {
                  background.remove(self[0]);
                }
              }
            },
            flushInterval.toNanos(),
            TimeUnit.NANOSECONDS);
    timer = self[0];
    background.add(self[0]);
  }

  private BatchResult sendTaken(List<Buffered> batch) {
    List<byte[]> parts = batch.stream().map(Buffered::raw).toList();
    BatchResult result;
    try {
      result = post(body(parts));
    } catch (MeterstreamException e) {
      List<EventResult> failed = new ArrayList<>();
      for (int i = 0; i < batch.size(); i++) {
        failed.add(new EventResult(i, batch.get(i).id(), "failed", null, e.getMessage()));
      }
      if (onResult != null) {
        onResult.accept(new BatchResult(0, 0, batch.size(), failed, e));
      }
      throw e;
    }
    if (onResult != null) {
      onResult.accept(result);
    }
    return result;
  }

  private record Posted(int accepted, int rejected, int failed, List<EventResult> results) {}

  private BatchResult post(byte[] payload) {
    Transport.Answer answer =
        retrying("POST", "/v1/events", Map.of(), Map.of("Content-Type", BATCH_TYPE), payload);
    int status = answer.status();
    if (status == 202 || status == 422) {
      try {
        Posted doc = Json.read(answer.body(), Posted.class);
        if (doc.results() != null) {
          return new BatchResult(doc.accepted(), doc.rejected(), doc.failed(), doc.results(), null);
        }
      } catch (IOException e) {
        // not the API's results: refused below
      }
    }
    throw MeterstreamException.refused("POST /v1/events", status, answer.body());
  }

  // --- requests --------------------------------------------------------------------------------

  /**
   * The waits between attempts: Retry-After (capped) when the answer has one, else {@code
   * min(cap, base * 2^(k-1)) * (0.5 + 0.5 * random())} after attempt k.
   */
  private final class Backoff {
    private double delay = backoff.toNanos() / 1e9;
    private final double cap = maxBackoff.toNanos() / 1e9;

    Duration next(Transport.Answer answer) {
      String header = answer == null ? null : answer.header("Retry-After");
      double wait;
      if (header != null && DIGITS.matcher(header).matches()) {
        wait = Math.min(cap, Double.parseDouble(header));
      } else {
        wait = Math.min(cap, delay) * (0.5 + 0.5 * random.getAsDouble());
      }
      delay = Math.min(cap, delay * 2);
      return Duration.ofNanos(Math.round(wait * 1e9));
    }
  }

  private URI uri(String path, Map<String, String> query) {
    StringBuilder target = new StringBuilder(baseUrl).append(path);
    String sep = "?";
    for (Map.Entry<String, String> e : query.entrySet()) {
      target
          .append(sep)
          .append(URLEncoder.encode(e.getKey(), StandardCharsets.UTF_8))
          .append('=')
          .append(URLEncoder.encode(e.getValue(), StandardCharsets.UTF_8));
      sep = "&";
    }
    return URI.create(target.toString());
  }

  private Transport.Answer once(
      String method,
      String path,
      Map<String, String> query,
      Map<String, String> headers,
      Transport.Body body,
      Duration callTimeout)
      throws IOException, InterruptedException {
    Map<String, String> all = new LinkedHashMap<>();
    all.put("Authorization", "Bearer " + token);
    all.put("User-Agent", USER_AGENT);
    all.putAll(headers);
    return transport.send(new Transport.Call(method, uri(path, query), all, body, callTimeout));
  }

  private void pause(Duration wait) {
    try {
      sleeper.sleep(wait);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new MeterstreamException("interrupted while waiting to retry", null, null, e);
    }
  }

  private Transport.Answer retrying(
      String method, String path, Map<String, String> query, Map<String, String> headers, byte[] payload) {
    Backoff waits = new Backoff();
    Transport.Answer answer = null;
    IOException cause = null;
    for (int attempt = 1; attempt <= maxAttempts; attempt++) {
      answer = null;
      cause = null;
      try {
        answer =
            once(method, path, query, headers, payload == null ? null : Transport.Body.of(payload), timeout);
        if (!RETRY_STATUSES.contains(answer.status())) {
          return answer;
        }
      } catch (IOException e) {
        cause = e; // a network error or a time-out: send the same bytes again
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        throw new MeterstreamException(method + " " + path + ": interrupted", null, null, e);
      }
      if (attempt == maxAttempts) {
        break;
      }
      pause(waits.next(answer));
    }
    throw new RetriesExhaustedException(
        method + " " + path + ": gave up after " + maxAttempts + " attempts",
        answer == null ? null : answer.status(),
        answer == null ? null : Json.parseOrNull(answer.body()),
        cause);
  }

  // --- reads -----------------------------------------------------------------------------------

  /** Every usage row of your organisation matching the filter, fetched page by page. */
  public Iterable<UsageRow> usage(UsageFilter filter) {
    return () -> new Pages<>("/v1/usage", filter.query(), new TypeReference<Page<UsageRow>>() {});
  }

  /** Every rejection of your accounts matching the filter, oldest first, page by page. */
  public Iterable<RejectionRow> rejections(RejectionFilter filter) {
    return () ->
        new Pages<>("/v1/rejections", filter.query(), new TypeReference<Page<RejectionRow>>() {});
  }

  private record Page<T>(List<T> items, @com.fasterxml.jackson.annotation.JsonProperty("next_cursor") String nextCursor) {}

  private final class Pages<T> implements Iterator<T> {
    private final String path;
    private final Map<String, String> query;
    private final JavaType type;
    private Iterator<T> page = List.<T>of().iterator();
    private boolean done;

    Pages(String path, Map<String, String> query, TypeReference<Page<T>> type) {
      this.path = path;
      this.query = new LinkedHashMap<>(query);
      this.type = Json.MAPPER.getTypeFactory().constructType(type);
    }

    @Override
    public boolean hasNext() {
      while (!page.hasNext() && !done) {
        fetch();
      }
      return page.hasNext();
    }

    @Override
    public T next() {
      if (!hasNext()) {
        throw new NoSuchElementException();
      }
      return page.next();
    }

    private void fetch() {
      Transport.Answer answer = retrying("GET", path, query, Map.of(), null);
      if (answer.status() != 200) {
        throw MeterstreamException.refused("GET " + path, answer.status(), answer.body());
      }
      Page<T> doc;
      try {
        doc = Json.MAPPER.readValue(answer.body(), type);
      } catch (IOException e) {
        throw MeterstreamException.refused("GET " + path, answer.status(), answer.body());
      }
      page = doc.items().iterator();
      if (doc.nextCursor() == null || doc.nextCursor().isEmpty()) {
        done = true;
      } else {
        query.put("cursor", doc.nextCursor());
      }
    }
  }

  // --- uploads ---------------------------------------------------------------------------------

  /** Called as a file goes out, with the bytes sent so far and the file's size. */
  @FunctionalInterface
  public interface Progress {
    void update(long sent, long size);
  }

  /**
   * Uploads a JSON Lines or JSON array file, resuming after any interruption from the offset the
   * server committed.
   *
   * @param format {@code jsonl} or {@code json}; null: from the file name ({@code .json} is json)
   * @param uploadId resume this upload (a UUID); null: a new one
   * @param progress null for none
   * @return the final status: state {@code done}, or {@code failed} for a broken JSON array
   */
  public UploadStatus upload(Path file, String format, String uploadId, Progress progress) {
    String name = file.getFileName().toString();
    String fmt =
        format != null ? format : name.toLowerCase(Locale.ROOT).endsWith(".json") ? "json" : "jsonl";
    String id = uploadId != null ? uploadId : UUID.randomUUID().toString();
    long size;
    try {
      size = Files.size(file);
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
    Backoff waits = new Backoff();
    boolean created = false;
    long offset = 0;
    for (int attempt = 0; attempt < maxAttempts; attempt++) {
      Transport.Answer answer = null;
      try {
        Transport.Body body = fileBody(file, offset, size, progress);
        answer =
            created
                ? once("PATCH", "/v1/uploads/" + id, Map.of(), Map.of("Upload-Offset", Long.toString(offset)), body, null)
                : once(
                    "POST",
                    "/v1/uploads",
                    orderedQuery("format", fmt, "filename", name.length() > 255 ? name.substring(0, 255) : name),
                    Map.of("Upload-Id", id),
                    body,
                    null);
      } catch (IOException e) {
        answer = null;
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        throw new MeterstreamException("upload " + id + ": interrupted", null, null, e);
      }
      if (answer != null) {
        int status = answer.status();
        if (status == 200 || status == 201 || status == 422) {
          try {
            UploadStatus doc = Json.read(answer.body(), UploadStatus.class);
            if ("done".equals(doc.state()) || "failed".equals(doc.state())) {
              return doc;
            }
          } catch (IOException e) {
            // not a status document: ask for the status below
          }
        } else if (!RETRY_STATUSES.contains(status) && status != 409) {
          throw MeterstreamException.refused("upload", status, answer.body());
        }
      }
      Optional<UploadStatus> status = uploadStatus(id);
      if (status.isEmpty()) {
        created = false;
        offset = 0;
      } else {
        created = true;
        offset = status.get().offset();
        if ("done".equals(status.get().state())) {
          return status.get();
        }
      }
      pause(waits.next(answer));
    }
    throw new RetriesExhaustedException(
        "upload " + id + ": gave up after " + maxAttempts + " attempts", null, null, null);
  }

  /** Uploads a file with a new upload id, its format from its name. */
  public UploadStatus upload(Path file) {
    return upload(file, null, null, null);
  }

  private static Map<String, String> orderedQuery(String... pairs) {
    Map<String, String> query = new LinkedHashMap<>();
    for (int i = 0; i < pairs.length; i += 2) {
      query.put(pairs[i], pairs[i + 1]);
    }
    return query;
  }

  /** An upload's status, or empty if there is no such upload. */
  public Optional<UploadStatus> uploadStatus(String uploadId) {
    Transport.Answer answer = retrying("GET", "/v1/uploads/" + uploadId, Map.of(), Map.of(), null);
    if (answer.status() == 404) {
      return Optional.empty();
    }
    if (answer.status() != 200) {
      throw MeterstreamException.refused("upload status", answer.status(), answer.body());
    }
    try {
      return Optional.of(Json.read(answer.body(), UploadStatus.class));
    } catch (IOException e) {
      throw MeterstreamException.refused("upload status", answer.status(), answer.body());
    }
  }

  private static Transport.Body fileBody(Path file, long offset, long size, Progress progress) {
    return new Transport.Body() {
      @Override
      public long length() {
        return size - offset;
      }

      @Override
      public InputStream open() throws IOException {
        InputStream in = Files.newInputStream(file);
        in.skipNBytes(offset);
        return new java.io.FilterInputStream(in) {
          private long sent = offset;

          @Override
          public int read() throws IOException {
            int b = super.read();
            if (b >= 0) {
              report(1);
            }
            return b;
          }

          @Override
          public int read(byte[] buf, int off, int len) throws IOException {
            int n = super.read(buf, off, len);
            if (n > 0) {
              report(n);
            }
            return n;
          }

          private void report(int n) {
            sent += n;
            if (progress != null) {
              progress.update(sent, size);
            }
          }
        };
      }
    };
  }

  // --- lifecycle -------------------------------------------------------------------------------

  /** Sends what is buffered, waits for the timer's batches, stops the timer's thread. */
  @Override
  public void close() {
    try {
      flush();
    } finally {
      synchronized (lock) {
        if (scheduler != null) {
          scheduler.shutdown();
          scheduler = null;
        }
      }
    }
  }

  /** Options of a {@link MeterstreamClient}. */
  public static final class Builder {
    private final URI baseUrl;
    private final String token;
    private int batchSize = MAX_BATCH_EVENTS;
    private int maxBatchBytes = MAX_BATCH_BYTES;
    private Duration flushInterval = Duration.ofSeconds(1);
    private int maxAttempts = 8;
    private Duration backoff = Duration.ofMillis(500);
    private Duration maxBackoff = Duration.ofSeconds(30);
    private Duration timeout = Duration.ofSeconds(60);
    private byte[] caCertificatesPem;
    private Transport transport;
    private Consumer<BatchResult> onResult;
    private Sleeper sleeper = duration -> Thread.sleep(duration.toMillis(), duration.toNanosPart() % 1_000_000);
    private DoubleSupplier random = () -> ThreadLocalRandom.current().nextDouble();

    private Builder(URI baseUrl, String token) {
      this.baseUrl = baseUrl;
      this.token = token;
    }

    /** Events per request, at most 1,000 (the default). */
    public Builder batchSize(int value) {
      batchSize = value;
      return this;
    }

    /** Bytes per request body, at most 512 KB (the default). */
    public Builder maxBatchBytes(int value) {
      maxBatchBytes = value;
      return this;
    }

    /** Send what is buffered this long after the first event was added; zero: only on size and close. */
    public Builder flushInterval(Duration value) {
      flushInterval = value;
      return this;
    }

    public Builder maxAttempts(int value) {
      maxAttempts = value;
      return this;
    }

    /** The first backoff; it doubles per attempt up to maxBackoff, with jitter. */
    public Builder backoff(Duration value) {
      backoff = value;
      return this;
    }

    public Builder maxBackoff(Duration value) {
      maxBackoff = value;
      return this;
    }

    /** Per request; uploads have none. */
    public Builder timeout(Duration value) {
      timeout = value;
      return this;
    }

    /** PEM certificates of a private CA to trust for https (instead of the system's). */
    public Builder caCertificates(byte[] pem) {
      caCertificatesPem = pem.clone();
      return this;
    }

    /** PEM certificates of a private CA, from a file. */
    public Builder caCertificates(Path pemFile) {
      try {
        caCertificatesPem = Files.readAllBytes(pemFile);
      } catch (IOException e) {
        throw new UncheckedIOException(e);
      }
      return this;
    }

    /** Every batch's outcome, including batches the timer sent. */
    public Builder onResult(Consumer<BatchResult> value) {
      onResult = value;
      return this;
    }

    public Builder transport(Transport value) {
      transport = value;
      return this;
    }

    public Builder sleeper(Sleeper value) {
      sleeper = value;
      return this;
    }

    public Builder random(DoubleSupplier value) {
      random = value;
      return this;
    }

    public MeterstreamClient build() {
      return new MeterstreamClient(this);
    }
  }
}
