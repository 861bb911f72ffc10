/** Retry timing: exponential backoff with jitter, never sooner than the server's Retry-After. */

/**
 * `Retry-After` in milliseconds: delta-seconds or an HTTP date (RFC 9110 10.2.3); null when
 * absent or unreadable.
 */
export function retryAfterMs(header: string | null | undefined, now: number): number | null {
  if (!header) return null;
  const v = header.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const at = Date.parse(v);
  return Number.isNaN(at) ? null : Math.max(0, at - now);
}

/**
 * The wait before retry number `attempt` (0 = the first retry): "equal jitter", i.e. half of
 * min(maxMs, baseMs * 2^attempt) plus a random part of the other half, so clients that failed
 * together do not come back together, yet each waits at least half the nominal delay. A
 * Retry-After from the server is a floor.
 */
export function backoffMs(
  attempt: number,
  baseMs: number,
  maxMs: number,
  random: number,
  retryAfter: number | null,
): number {
  const nominal = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
  const wait = nominal / 2 + (random * nominal) / 2;
  return retryAfter === null ? wait : Math.max(wait, retryAfter);
}
