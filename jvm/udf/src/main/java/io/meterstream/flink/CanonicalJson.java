package io.meterstream.flink;

import com.fasterxml.jackson.core.io.schubfach.DoubleToDecimal;
import com.fasterxml.jackson.databind.JsonNode;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Iterator;
import java.util.List;

/**
 * The text Python's {@code orjson.dumps(value, option=OPT_SORT_KEYS)} writes for parsed JSON, for
 * the values where that text is easy to reproduce exactly. Anything else makes {@link #write}
 * return false, and the caller leaves the event to the Python rules.
 */
final class CanonicalJson {
  /** orjson writes floats in plain notation only inside [1e-4, 1e16); Java's inside [1e-3, 1e7). */
  private static final double PLAIN_MIN = 1e-3;

  private static final double PLAIN_MAX = 1e7;

  /** Deeper data is not usage; Python's serialiser stops at 254 levels. */
  private static final int MAX_DEPTH = 64;

  private CanonicalJson() {}

  /** Append the canonical text of {@code node}, or return false when it is not reproducible. */
  static boolean write(JsonNode node, StringBuilder out) {
    return write(node, out, 0);
  }

  private static boolean write(JsonNode node, StringBuilder out, int depth) {
    if (depth > MAX_DEPTH) {
      return false;
    }
    switch (node.getNodeType()) {
      case STRING:
        return string(node.textValue(), out);
      case NUMBER:
        return number(node, out);
      case BOOLEAN:
        out.append(node.booleanValue() ? "true" : "false");
        return true;
      case NULL:
        out.append("null");
        return true;
      case ARRAY:
        out.append('[');
        for (int i = 0; i < node.size(); i++) {
          if (i > 0) {
            out.append(',');
          }
          if (!write(node.get(i), out, depth + 1)) {
            return false;
          }
        }
        out.append(']');
        return true;
      case OBJECT:
        return object(node, out, depth);
      default:
        return false;
    }
  }

  private static boolean object(JsonNode node, StringBuilder out, int depth) {
    List<String> names = new ArrayList<>(node.size());
    for (Iterator<String> it = node.fieldNames(); it.hasNext(); ) {
      names.add(it.next());
    }
    // Java orders strings by UTF-16 units, Python by code points: the same without surrogates,
    // which string() refuses.
    Collections.sort(names);
    out.append('{');
    for (int i = 0; i < names.size(); i++) {
      if (i > 0) {
        out.append(',');
      }
      if (!string(names.get(i), out)) {
        return false;
      }
      out.append(':');
      if (!write(node.get(names.get(i)), out, depth + 1)) {
        return false;
      }
    }
    out.append('}');
    return true;
  }

  /** A string orjson writes verbatim: no quote, backslash, control character or surrogate. */
  static boolean plainString(String text) {
    for (int i = 0; i < text.length(); i++) {
      char c = text.charAt(i);
      if (c < 0x20 || c == '"' || c == '\\' || Character.isSurrogate(c)) {
        return false;
      }
    }
    return true;
  }

  private static boolean string(String text, StringBuilder out) {
    if (!plainString(text)) {
      return false;
    }
    out.append('"').append(text).append('"');
    return true;
  }

  private static boolean number(JsonNode node, StringBuilder out) {
    String text = scalar(node);
    if (text == null) {
      return false;
    }
    out.append(text);
    return true;
  }

  /**
   * Python's {@code str()} of a parsed JSON number, which is also orjson's text for it: integers
   * that fit a long, and floats in plain notation (their shortest repr). Null otherwise.
   */
  static String scalar(JsonNode node) {
    if (node.isInt() || node.isLong()) {
      return Long.toString(node.longValue());
    }
    if (node.isDouble()) {
      double value = node.doubleValue();
      double magnitude = Math.abs(value);
      if (magnitude != 0 && (magnitude < PLAIN_MIN || magnitude >= PLAIN_MAX)) {
        return null;
      }
      if (Double.isNaN(value) || Double.isInfinite(value)) {
        return null;
      }
      return DoubleToDecimal.toString(value);
    }
    return null;
  }
}
