/** CloudEvents 1.0 usage events: an event's id is fixed when it is made. */
import { randomUUID } from "node:crypto";

/** A CloudEvents 1.0 usage event in structured JSON mode. */
export interface CloudEvent {
  readonly specversion: "1.0";
  readonly id: string;
  readonly source: string;
  /** The meter's name. */
  readonly type: string;
  /** The account id. */
  readonly subject: string;
  /** RFC 3339, UTC, milliseconds: `2026-10-31T23:59:59.250Z`. */
  readonly time: string;
  readonly datacontenttype: string;
  readonly data: Readonly<Record<string, unknown>>;
  readonly dataschema?: string;
}

export interface EventOptions {
  /** The idempotency key; a new random UUID unless given. */
  id?: string;
  /** When the usage happened; now unless given. */
  time?: Date;
  /** The producing system. */
  source?: string;
}

/** A usage event for `meter` and `account`; its id (a new UUID unless given) is fixed from now on. */
export function makeEvent(
  meter: string,
  account: string,
  data: Record<string, unknown>,
  options: EventOptions = {},
): CloudEvent {
  return Object.freeze({
    specversion: "1.0",
    id: options.id ?? randomUUID(),
    source: options.source ?? "meterstream-client",
    type: meter,
    subject: account,
    time: (options.time ?? new Date()).toISOString(),
    datacontenttype: "application/json",
    data,
  });
}
