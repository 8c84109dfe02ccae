package io.meterstream.client;

import java.util.Map;

/**
 * A notification of the alerts service: a CloudEvents 1.0 JSON object, as {@link
 * Webhooks#verify} returns it.
 *
 * @param id the notification's id, also its {@code webhook-id}: the same on every retry
 * @param type e.g. {@code io.meterstream.usage.threshold_reached} (docs/alerts.md lists them)
 * @param subject the account, or null (a health condition of the pipeline)
 * @param time RFC 3339, or null
 * @param data the notification's fields (maps, lists, strings, numbers), or null
 */
public record WebhookEvent(
    String specversion,
    String id,
    String source,
    String type,
    String subject,
    String time,
    String datacontenttype,
    Map<String, Object> data) {}
