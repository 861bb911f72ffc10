/** Test doubles for what the SDK takes from the browser: storage, Web Locks, fetch, beacons. */
import { vi } from 'vitest';
import type { Env } from '../src/client';
import { kv } from '../src/store';
import type { WireEvent } from '../src/types';

/** A Storage in memory: one per simulated tab (sessionStorage) or origin (localStorage). */
export class MemoryStorage implements Storage {
  private m = new Map<string, string>();
  get length(): number {
    return this.m.size;
  }
  clear(): void {
    this.m.clear();
  }
  getItem(k: string): string | null {
    return this.m.has(k) ? this.m.get(k)! : null;
  }
  key(i: number): string | null {
    return [...this.m.keys()][i] ?? null;
  }
  removeItem(k: string): void {
    this.m.delete(k);
  }
  setItem(k: string, v: string): void {
    this.m.set(k, String(v));
  }
  copy(): MemoryStorage {
    const c = new MemoryStorage();
    this.m.forEach((v, k) => c.setItem(k, v));
    return c;
  }
}

/**
 * Web Locks for several simulated tabs of one origin: exclusive locks by name, `ifAvailable`,
 * waiting requests granted in order, a lock released when its callback's promise settles.
 */
export class FakeLocks {
  held = new Set<string>();
  private waiting = new Map<string, Array<() => void>>();
  request(name: string, options: LockOptions, cb: (lock: Lock | null) => unknown): Promise<unknown> {
    // Taken at once, as the browser's lock manager does; the callback runs a moment later.
    const run = async () => {
      this.held.add(name);
      await Promise.resolve();
      try {
        return await cb({ name, mode: 'exclusive' } as Lock);
      } finally {
        this.held.delete(name);
        const next = this.waiting.get(name)?.shift();
        if (next) next();
      }
    };
    if (!this.held.has(name)) return run();
    if (options.ifAvailable) return Promise.resolve(cb(null));
    return new Promise((resolve) => {
      const list = this.waiting.get(name) ?? [];
      list.push(() => resolve(run()));
      this.waiting.set(name, list);
    });
  }
}

export interface Sent {
  url: string;
  init: RequestInit;
  body: { sent_at: string; events: WireEvent[] };
  at: number;
}

type Answer = { status: number; body?: unknown; headers?: Record<string, string> };
type Reply = Answer | 'network' | ((request: Sent['body']) => Answer);

/**
 * A gateway double behind fetch: records every request and answers from `replies` (in order;
 * the last one repeats), by default 200 accepting everything.
 */
export class FakeGateway {
  sent: Sent[] = [];
  beacons: Sent[] = [];
  replies: Reply[] = [];
  beaconResult = true;
  fetch = vi.fn(async (url: string, init: RequestInit): Promise<Response> => {
    const body = JSON.parse(String(init.body));
    this.sent.push({ url, init, body, at: Date.now() });
    const next = this.replies.length > 1 ? this.replies.shift()! : this.replies[0] ?? { status: 200 };
    if (next === 'network') throw new TypeError('Failed to fetch');
    const reply = typeof next === 'function' ? next(body) : next;
    const answer =
      reply.body ??
      (reply.status < 300 ? { success: true, accepted: body.events.length, rejected: [], server_time: new Date().toISOString(), clock_skew_ms: 0 } : {});
    return new Response(JSON.stringify(answer), { status: reply.status, headers: reply.headers });
  });
  sendBeacon = vi.fn((url: string, body: string): boolean => {
    if (this.beaconResult) this.beacons.push({ url, init: { body }, body: JSON.parse(body), at: Date.now() });
    return this.beaconResult;
  });
  /** Every event id the gateway received, in order, repeats included. */
  ids(): string[] {
    return this.sent.flatMap((s) => s.body.events.map((e) => e.event_id));
  }
  events(): WireEvent[] {
    return this.sent.flatMap((s) => s.body.events);
  }
}

export interface Tab {
  env: Env;
  local: MemoryStorage;
  session: MemoryStorage;
}

/** One browser tab's view of the world: the origin's localStorage and locks, its own sessionStorage. */
export function tab(
  gateway: FakeGateway,
  shared: { local: MemoryStorage; locks?: FakeLocks | null },
  session = new MemoryStorage(),
): Tab {
  const env: Env = {
    window: window as unknown as Window & typeof globalThis,
    local: kv(shared.local),
    session: kv(session),
    fetch: gateway.fetch,
    sendBeacon: gateway.sendBeacon,
    locks: (shared.locks ?? null) as unknown as LockManager | null,
    now: () => Date.now(),
    random: () => 0.5,
  };
  return { env, local: shared.local, session };
}

/** Lets pending promise callbacks (lock grants, fetch answers) run without moving the clock. */
export async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await Promise.resolve();
}
