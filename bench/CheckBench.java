import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.meterstream.flink.FastCheckEvent;
import java.lang.management.ManagementFactory;
import java.lang.management.ThreadMXBean;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;

/**
 * The JVM fast path's CPU time per record (bench/check_micro.py compiles and runs it): thread CPU
 * time, not wall time, so that a busy machine changes the figure little.
 */
public final class CheckBench {
  public static void main(String[] args) throws Exception {
    JsonNode doc = new ObjectMapper().readTree(Files.readString(Path.of(args[0])));
    String spec = doc.get("spec").textValue();
    Instant arrived = Instant.ofEpochMilli(doc.get("arrived_ms").longValue());
    List<String> payloads = new ArrayList<>();
    doc.get("payloads").forEach(p -> payloads.add(p.textValue()));
    int rounds = Integer.parseInt(args[1]);
    FastCheckEvent check = new FastCheckEvent();
    check.open(null);
    ThreadMXBean threads = ManagementFactory.getThreadMXBean();
    for (int round = 0; round < rounds; round++) {
      long accepted = 0;
      long started = threads.getCurrentThreadCpuTime();
      for (int i = 0; i < payloads.size(); i++) {
        if (check.eval(payloads.get(i), "t", 0, (long) i, arrived, spec) != null) {
          accepted++;
        }
      }
      long cpu = threads.getCurrentThreadCpuTime() - started;
      System.out.printf(
          "round %d: %.0f ns CPU per record, %d of %d answered by the fast path%n",
          round, (double) cpu / payloads.size(), accepted, payloads.size());
    }
  }
}
