package io.meterstream.flink;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Iterator;
import java.util.List;
import java.util.Map;

/**
 * The meters as {@code meterstream.flink.udfs.fast_path_spec} describes them: per meter its
 * current version, per version the aggregation, the idempotency key and the data field rules
 * that {@code meterstream.rules.validate.CompiledMeter} applies.
 */
final class MeterSpec {
  /** One field of a meter version's {@code data}. */
  static final class Field {
    final String name;
    final boolean required;
    final String[] types;

    Field(String name, boolean required, String[] types) {
      this.name = name;
      this.required = required;
      this.types = types;
    }
  }

  /** One version of a meter. */
  static final class Version {
    final String meter;
    final String aggregation;
    final String valueField;
    /** Sorted, as the canonical JSON of the segment orders its keys. */
    final String[] groupBy;
    final boolean eventIdKey;
    final boolean sunset;
    final Field[] fields;

    Version(String meter, JsonNode spec) {
      this.meter = meter;
      this.aggregation = spec.get("aggregation").textValue();
      JsonNode value = spec.get("value_field");
      this.valueField = value == null || value.isNull() ? null : value.textValue();
      this.groupBy = texts(spec.get("group_by"));
      Arrays.sort(this.groupBy);
      this.eventIdKey = spec.get("event_id_key").booleanValue();
      this.sunset = spec.get("sunset").booleanValue();
      List<Field> rules = new ArrayList<>();
      for (JsonNode field : spec.get("fields")) {
        rules.add(
            new Field(
                field.get("name").textValue(),
                field.get("required").booleanValue(),
                texts(field.get("types"))));
      }
      this.fields = rules.toArray(new Field[0]);
    }
  }

  private final Map<String, Integer> current = new HashMap<>();
  private final Map<String, Map<Integer, Version>> versions = new HashMap<>();

  MeterSpec(String text) {
    JsonNode root;
    try {
      root = new ObjectMapper().readTree(text);
    } catch (IOException e) {
      throw new UncheckedIOException("meterstream: unreadable meter spec", e);
    }
    for (Iterator<Map.Entry<String, JsonNode>> it = root.get("meters").fields(); it.hasNext(); ) {
      Map.Entry<String, JsonNode> meter = it.next();
      current.put(meter.getKey(), meter.getValue().get("current").intValue());
      Map<Integer, Version> byNumber = new HashMap<>();
      for (Iterator<Map.Entry<String, JsonNode>> vs = meter.getValue().get("versions").fields();
          vs.hasNext(); ) {
        Map.Entry<String, JsonNode> version = vs.next();
        byNumber.put(
            Integer.valueOf(version.getKey()), new Version(meter.getKey(), version.getValue()));
      }
      versions.put(meter.getKey(), byNumber);
    }
  }

  /** The version an event names (or the current one when it names none); null if unknown. */
  Version find(String meter, Integer version) {
    Integer number = version != null ? version : current.get(meter);
    Map<Integer, Version> byNumber = versions.get(meter);
    return number == null || byNumber == null ? null : byNumber.get(number);
  }

  private static String[] texts(JsonNode array) {
    String[] out = new String[array.size()];
    for (int i = 0; i < out.length; i++) {
      out[i] = array.get(i).textValue();
    }
    return out;
  }
}
