// The hand-written parts of reading `/live`: the event-stream parser, the backoff and
// Retry-After. Run with `npm test`.
import assert from "node:assert/strict";
import { test } from "node:test";
import { ApiError, parseRetryAfter } from "../src/api";
import { Backoff, retryDelayMs, SseParser, type SseEvent } from "../src/sse";

/** What the worker sends (crates/worker/src/api/live.rs `frame`). */
const STREAM =
  'event: stats\ndata: {"online_users":3,"counts":{"click":2}}\n\n' +
  'event: error\ndata: {"reason":"a data store is unavailable"}\n\n' +
  'event: stats\ndata: {"online_users":4,"counts":{"click":5}}\n\n';

const EXPECTED: SseEvent[] = [
  { event: "stats", data: '{"online_users":3,"counts":{"click":2}}', id: null },
  { event: "error", data: '{"reason":"a data store is unavailable"}', id: null },
  { event: "stats", data: '{"online_users":4,"counts":{"click":5}}', id: null },
];

function parseInChunks(text: string, cuts: number[]): SseEvent[] {
  const parser = new SseParser();
  const events: SseEvent[] = [];
  let from = 0;
  for (const cut of [...cuts, text.length]) {
    events.push(...parser.push(text.slice(from, cut)));
    from = cut;
  }
  return events;
}

test("frames in one chunk", () => {
  assert.deepEqual(parseInChunks(STREAM, []), EXPECTED);
});

test("frames split at every position give the same events", () => {
  for (let cut = 1; cut < STREAM.length; cut++) {
    assert.deepEqual(parseInChunks(STREAM, [cut]), EXPECTED, `cut at ${cut}`);
  }
  const everyChar = [...STREAM].map((_, i) => i + 1).slice(0, -1);
  assert.deepEqual(parseInChunks(STREAM, everyChar), EXPECTED);
});

test("CRLF and CR line ends, a CRLF split between chunks", () => {
  const crlf = STREAM.replaceAll("\n", "\r\n");
  for (let cut = 1; cut < crlf.length; cut++) {
    assert.deepEqual(parseInChunks(crlf, [cut]), EXPECTED, `CRLF cut at ${cut}`);
  }
  assert.deepEqual(parseInChunks(STREAM.replaceAll("\n", "\r"), []), EXPECTED);
});

test("comments, multi-line data, no space after the colon, a BOM, data-less events", () => {
  const text = "\uFEFF: keep-alive\n\nevent:stats\ndata:a\ndata: b\nid: 7\n\nevent: empty\n\ndata: plain\n\n";
  assert.deepEqual(parseInChunks(text, []), [
    { event: "stats", data: "a\nb", id: "7" },
    { event: "message", data: "plain", id: "7" },
  ]);
});

test("an unfinished frame waits for its blank line", () => {
  const parser = new SseParser();
  assert.deepEqual(parser.push("event: stats\ndata: {}\n"), []);
  assert.deepEqual(parser.push("\n"), [{ event: "stats", data: "{}", id: null }]);
});

test("backoff doubles up to its ceiling, jittered within the upper half, and resets", () => {
  const low = new Backoff(1000, 30_000, () => 0);
  assert.deepEqual([1, 2, 3, 4, 5, 6, 7].map(() => low.next()), [500, 1000, 2000, 4000, 8000, 15_000, 15_000]);
  const high = new Backoff(1000, 30_000, () => 1);
  assert.deepEqual([1, 2, 3].map(() => high.next()), [1000, 2000, 4000]);
  high.reset();
  assert.equal(high.next(), 1000);
});

test("Retry-After in seconds or as a date; the server's delay wins over a shorter backoff", () => {
  assert.equal(parseRetryAfter("7"), 7);
  assert.equal(parseRetryAfter(null), null);
  assert.equal(parseRetryAfter("soon"), null);
  const now = Date.parse("2026-11-29T10:00:00Z");
  assert.equal(parseRetryAfter("Sun, 29 Nov 2026 10:00:30 GMT", now), 30);
  const busy = new ApiError(503, "busy", "too many heavy queries", 10);
  assert.equal(retryDelayMs(busy, new Backoff(1000, 30_000, () => 0)), 10_000);
  const network = new ApiError(0, "network", "no answer", null);
  assert.equal(retryDelayMs(network, new Backoff(1000, 30_000, () => 0)), 500);
});

test("which refusals are retried and which stop the dashboard", () => {
  const refusal = (status: number, code: string) => new ApiError(status, code, "", null);
  assert.equal(refusal(401, "unauthorized").refusesKey, true);
  assert.equal(refusal(403, "forbidden").refusesKey, true);
  assert.equal(refusal(429, "too_many_failed_authentications").refusesKey, true);
  assert.equal(refusal(429, "rate_limited").retryable, true);
  assert.equal(refusal(429, "rate_limited").refusesKey, false);
  assert.equal(refusal(503, "busy").retryable, true);
  assert.equal(refusal(400, "invalid_parameter").retryable, false);
});
