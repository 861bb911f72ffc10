// Reading `/live` (text/event-stream) with fetch: EventSource cannot send the
// `Authorization` header the stats API needs, so the frames are parsed here, and the stream
// is reopened with backoff when it ends or fails.

import { ApiError, type LiveStats, type StatsClient } from "./api";

export interface SseEvent {
  event: string;
  data: string;
  id: string | null;
}

/** The event-stream format (WHATWG HTML, "Parsing an event stream"): lines end with CRLF,
 * LF or CR; a blank line dispatches; `:` starts a comment; `data` lines are joined with LF;
 * one space after the colon is dropped. Chunks may split anything, even a CRLF. */
export class SseParser {
  private buffer = "";
  private started = false;
  private event = "";
  private data: string[] = [];
  private lastId: string | null = null;
  /** The previous chunk ended with a CR: an LF opening this one belongs to it. */
  private afterCr = false;

  /** Feeds decoded text; returns the events it completed. */
  push(chunk: string): SseEvent[] {
    if (!this.started && chunk.length > 0) {
      this.started = true;
      if (chunk.charCodeAt(0) === 0xfeff) chunk = chunk.slice(1);
    }
    if (this.afterCr && chunk.length > 0) {
      this.afterCr = false;
      if (chunk[0] === "\n") chunk = chunk.slice(1);
    }
    this.buffer += chunk;
    const events: SseEvent[] = [];
    let start = 0;
    for (;;) {
      const cr = this.buffer.indexOf("\r", start);
      const lf = this.buffer.indexOf("\n", start);
      if (cr < 0 && lf < 0) break;
      let end: number;
      let next: number;
      if (cr >= 0 && (lf < 0 || cr < lf)) {
        end = cr;
        if (cr === this.buffer.length - 1) {
          // Maybe the first half of a CRLF split between chunks.
          this.afterCr = true;
          next = cr + 1;
        } else {
          next = this.buffer[cr + 1] === "\n" ? cr + 2 : cr + 1;
        }
      } else {
        end = lf;
        next = lf + 1;
      }
      const event = this.line(this.buffer.slice(start, end));
      if (event) events.push(event);
      start = next;
    }
    this.buffer = this.buffer.slice(start);
    return events;
  }

  private line(line: string): SseEvent | null {
    if (line === "") {
      const event = this.data.length > 0 ? { event: this.event || "message", data: this.data.join("\n"), id: this.lastId } : null;
      this.event = "";
      this.data = [];
      return event;
    }
    if (line.startsWith(":")) return null;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    switch (field) {
      case "event":
        this.event = value;
        break;
      case "data":
        this.data.push(value);
        break;
      case "id":
        if (!value.includes("\0")) this.lastId = value;
        break;
      default:
        // `retry` and unknown fields: the reconnection delay is ours (Backoff).
        break;
    }
    return null;
  }
}

/** Exponential backoff with jitter: half the delay fixed, half random, so many dashboards
 * that lost the same worker do not come back in step. */
export class Backoff {
  private attempt = 0;

  constructor(
    private readonly initialMs: number,
    private readonly maxMs: number,
    private readonly random: () => number = Math.random,
  ) {}

  next(): number {
    const ceiling = Math.min(this.maxMs, this.initialMs * 2 ** this.attempt);
    this.attempt = Math.min(this.attempt + 1, 30);
    return Math.round(ceiling / 2 + (this.random() * ceiling) / 2);
  }

  reset(): void {
    this.attempt = 0;
  }
}

/** The delay before the next try after `error`: at least what the server asked for. */
export function retryDelayMs(error: unknown, backoff: Backoff): number {
  const fallback = backoff.next();
  if (error instanceof ApiError && error.retryAfterSeconds !== null) {
    return Math.max(error.retryAfterSeconds * 1000, fallback);
  }
  return fallback;
}

export type LiveStatus =
  | { state: "connecting" }
  | { state: "live" }
  | { state: "waiting"; seconds: number; reason: string }
  | { state: "stopped"; error: ApiError | null };

export interface LiveHandlers {
  stats(frame: LiveStats): void;
  /** The server's `event: error` (a store failed for one update; the stream goes on). */
  serverError(reason: string): void;
  status(status: LiveStatus): void;
}

/** The server sends a frame every second; this long without a byte means the connection is
 * dead even if TCP has not noticed. */
const SILENCE_MS = 10_000;

export class LiveStream {
  private abort: AbortController | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private stopped = false;
  private readonly backoff = new Backoff(1000, 30_000);

  constructor(
    private readonly client: StatsClient,
    private readonly handlers: LiveHandlers,
  ) {}

  start(): void {
    this.stopped = false;
    void this.connect();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.abort?.abort();
    this.abort = null;
  }

  private async connect(): Promise<void> {
    this.timer = null;
    this.handlers.status({ state: "connecting" });
    const abort = new AbortController();
    this.abort = abort;
    let silence: ReturnType<typeof setTimeout> | null = null;
    const watch = () => {
      if (silence !== null) clearTimeout(silence);
      silence = setTimeout(() => abort.abort(), SILENCE_MS);
    };
    let error: unknown = null;
    try {
      watch();
      const response = await this.client.fetch("live", {}, { signal: abort.signal, headers: { Accept: "text/event-stream" } });
      if (!response.body) throw new ApiError(0, "network", "the live stream has no body", null);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      const parser = new SseParser();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        watch();
        for (const event of parser.push(value)) this.dispatch(event);
      }
    } catch (e) {
      error = e;
    } finally {
      if (silence !== null) clearTimeout(silence);
    }
    if (this.stopped) return;
    if (error instanceof ApiError && error.refusesKey) {
      this.handlers.status({ state: "stopped", error });
      return;
    }
    // A stream that ended by itself (the server's hour, a restart) or failed: open another.
    const delay = retryDelayMs(error, this.backoff);
    const reason =
      error instanceof ApiError ? error.message : error === null ? "the stream ended" : "the connection was lost";
    this.handlers.status({ state: "waiting", seconds: Math.ceil(delay / 1000), reason });
    this.timer = setTimeout(() => void this.connect(), delay);
  }

  private dispatch(event: SseEvent): void {
    let data: unknown;
    try {
      data = JSON.parse(event.data);
    } catch {
      return;
    }
    if (event.event === "stats") {
      this.backoff.reset();
      this.handlers.status({ state: "live" });
      this.handlers.stats(data as LiveStats);
    } else if (event.event === "error") {
      const reason = (data as { reason?: unknown }).reason;
      this.handlers.serverError(typeof reason === "string" ? reason : "the live update failed");
    }
  }
}
