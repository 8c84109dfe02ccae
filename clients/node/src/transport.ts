/**
 * How requests go out: the global `fetch`, or, to trust a private CA (which Node 20's `fetch`
 * cannot be told about without the undici package), the same interface over `node:https`.
 */
import { request as httpsRequest } from "node:https";

/** The part of a `fetch` Response the client reads. */
export interface HttpResponse {
  readonly status: number;
  readonly headers: { get(name: string): string | null };
  text(): Promise<string>;
}

export interface HttpRequest {
  method: string;
  headers: Record<string, string>;
  body?: Uint8Array | ReadableStream<Uint8Array>;
  duplex?: "half";
  signal?: AbortSignal;
}

/** `fetch` itself fits; tests pass a fake. */
export type FetchLike = (url: string, init: HttpRequest) => Promise<HttpResponse>;

/** A `fetch` over `node:https` that trusts `ca` (PEM) instead of the system's CAs. */
export function fetchWithCa(ca: string | Uint8Array): FetchLike {
  const caText = typeof ca === "string" ? ca : Buffer.from(ca).toString("utf8");
  return (url, init) =>
    new Promise<HttpResponse>((resolve, reject) => {
      const req = httpsRequest(
        url,
        { method: init.method, headers: init.headers, ca: caText, signal: init.signal },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (chunk: Buffer) => chunks.push(chunk));
          res.on("error", reject);
          res.on("end", () => {
            const text = Buffer.concat(chunks).toString("utf8");
            resolve({
              status: res.statusCode ?? 0,
              headers: {
                get: (name) => {
                  const value = res.headers[name.toLowerCase()];
                  return value === undefined ? null : Array.isArray(value) ? value.join(", ") : value;
                },
              },
              text: () => Promise.resolve(text),
            });
          });
        },
      );
      req.on("error", reject);
      const body = init.body;
      if (body === undefined) {
        req.end();
      } else if (body instanceof Uint8Array) {
        req.end(body);
      } else {
        void (async () => {
          try {
            for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
              if (!req.write(chunk)) await new Promise((ok) => req.once("drain", ok));
            }
            req.end();
          } catch (error) {
            req.destroy(error as Error);
          }
        })();
      }
    });
}
