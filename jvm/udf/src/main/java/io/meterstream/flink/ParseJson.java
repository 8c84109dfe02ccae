package io.meterstream.flink;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import org.apache.flink.table.functions.FunctionContext;
import org.apache.flink.table.functions.ScalarFunction;

/**
 * {@code parse_json(payload)}: the number of top-level fields of a JSON object, -1 if the text is
 * not one. The benchmark's second baseline (jobs/read_blackhole.py --parse): a job that reads
 * each record and parses its JSON once, the least any check of it must do.
 */
public final class ParseJson extends ScalarFunction {
  private static final long serialVersionUID = 1L;
  private transient ObjectMapper mapper;

  @Override
  public void open(FunctionContext context) {
    mapper = new ObjectMapper();
  }

  public int eval(String payload) {
    try {
      JsonNode doc = mapper.readTree(payload);
      return doc != null && doc.isObject() ? doc.size() : -1;
    } catch (IOException | RuntimeException e) {
      return -1;
    }
  }
}
