/**
 * Several tabs of one site share localStorage: identity and sessions are shared, queues are
 * not; a closed tab's queue is adopted by exactly one live tab. And what happens when a page
 * is hidden or left: keepalive fetches, beacons, and what is kept for the next page.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Client, type Env } from '../src/client';
import type { InitOptions } from '../src/types';
import { FakeGateway, FakeLocks, MemoryStorage, settle, tab } from './helpers';

const T0 = Date.parse('2026-11-29T10:00:00.000Z');
const MIN = 60 * 1000;

let clients: Client[] = [];
function start(env: Env, options: Partial<InitOptions> = {}): Client {
  const c = new Client({ writeKey: 'wk_test', endpoint: 'http://gw.test', ...options }, env);
  clients.push(c);
  return c;
}
const queueKeys = (s: Storage): string[] =>
  [...Array(s.length).keys()].map((i) => s.key(i)!).filter((k) => k.startsWith('insightflow:q:'));
const storedIds = (s: Storage, key: string): string[] => JSON.parse(s.getItem(key)!).e.map((e: { event_id: string }) => e.event_id);

/** happy-dom's PageTransitionEvent has no `persisted`. */
function transition(type: 'pagehide' | 'pageshow', persisted: boolean): Event {
  const e = new Event(type);
  Object.defineProperty(e, 'persisted', { value: persisted });
  return e;
}

beforeEach(() => {
  vi.useFakeTimers({ now: T0 });
});
afterEach(() => {
  clients.forEach((c) => c.destroy());
  clients = [];
  vi.useRealTimers();
  Object.defineProperty(document, 'visibilityState', { value: 'visible', configurable: true });
});

describe('sessions and identity', () => {
  it('keeps a session while events come within 30 minutes, and starts a new one after', async () => {
    const gw = new FakeGateway();
    const c = start(tab(gw, { local: new MemoryStorage() }).env, { batchSize: 1 });
    await settle();
    c.track('a');
    vi.setSystemTime(T0 + 29 * MIN);
    c.track('b');
    vi.setSystemTime(T0 + 58 * MIN); // 29 min after b: still the same session
    c.track('c');
    vi.setSystemTime(T0 + 88 * MIN + 1); // 30 min + 1 ms idle
    c.track('d');
    await c.flush();
    const [a, b, cc, d] = gw.events();
    expect(b.session_id).toBe(a.session_id);
    expect(cc.session_id).toBe(a.session_id);
    expect(d.session_id).not.toBe(a.session_id);
    expect(d.anonymous_id).toBe(a.anonymous_id);
  });

  it('honours a configured session timeout', async () => {
    const gw = new FakeGateway();
    const c = start(tab(gw, { local: new MemoryStorage() }).env, { sessionTimeoutMs: 1000 });
    await settle();
    const first = c.getSessionId(true);
    vi.setSystemTime(T0 + 1001);
    expect(c.getSessionId(true)).not.toBe(first);
  });

  it('shares the anonymous id, user id and session between tabs', async () => {
    const gw = new FakeGateway();
    const local = new MemoryStorage();
    const locks = new FakeLocks();
    const one = start(tab(gw, { local, locks }).env, { batchSize: 1 });
    const two = start(tab(gw, { local, locks }).env, { batchSize: 1 });
    await settle();
    one.track('a');
    vi.setSystemTime(T0 + 20 * MIN);
    two.track('b'); // keeps the session alive for tab one too
    vi.setSystemTime(T0 + 45 * MIN);
    one.identify('u-7');
    two.track('c');
    await one.flush();
    await two.flush();
    const byType = Object.fromEntries(gw.events().map((e) => [e.event_type, e]));
    expect(byType.b.anonymous_id).toBe(byType.a.anonymous_id);
    expect(byType.b.session_id).toBe(byType.a.session_id);
    expect(byType.c.session_id).toBe(byType.a.session_id);
    expect(byType.c.user_id).toBe('u-7');
  });
});

describe('tabs', () => {
  it('a tab never sends another live tab’s stored events', async () => {
    const gw = new FakeGateway();
    gw.replies = ['network'];
    const local = new MemoryStorage();
    const locks = new FakeLocks();
    const one = start(tab(gw, { local, locks }).env, { batchSize: 1, flushIntervalMs: 1000 });
    const two = start(tab(gw, { local, locks }).env, { batchSize: 1, flushIntervalMs: 1000 });
    await settle();
    one.track('from_one');
    two.track('from_two');
    await vi.advanceTimersByTimeAsync(120000); // many ticks and retries
    expect(queueKeys(local)).toHaveLength(2);
    const senders = new Map<string, Set<string>>();
    for (const s of gw.sent) for (const e of s.body.events) senders.set(e.event_type, new Set(s.body.events.map((x) => x.event_type)));
    expect([...senders.get('from_one')!]).toEqual(['from_one']);
    expect([...senders.get('from_two')!]).toEqual(['from_two']);
  });

  it('a closed tab’s queue is adopted by one live tab and sent once', async () => {
    const gw = new FakeGateway();
    gw.replies = ['network'];
    const local = new MemoryStorage();
    const locks = new FakeLocks();
    const closing = start(tab(gw, { local, locks }).env, { batchSize: 100, flushIntervalMs: 1000 });
    const a = start(tab(gw, { local, locks }).env, { batchSize: 100, flushIntervalMs: 1000 });
    const b = start(tab(gw, { local, locks }).env, { batchSize: 100, flushIntervalMs: 1000 });
    await settle();
    closing.track('x');
    closing.track('y');
    await settle();
    const [orphanKey] = queueKeys(local);
    const orphanIds = storedIds(local, orphanKey);
    closing.destroy(); // the browser releases its lock
    gw.replies = [{ status: 200 }];
    const before = gw.sent.length;
    await vi.advanceTimersByTimeAsync(5000);
    const resent = gw.sent.slice(before).flatMap((s) => s.body.events.map((e) => e.event_id));
    expect(resent.sort()).toEqual([...orphanIds].sort()); // once, by one of the two tabs
    expect(queueKeys(local)).toEqual([]);
    expect(a.stats().queued + b.stats().queued).toBe(0);
  });

  it('a duplicated tab (sessionStorage copied) takes a new tab id instead of sharing the queue', async () => {
    const gw = new FakeGateway();
    gw.replies = ['network'];
    const local = new MemoryStorage();
    const locks = new FakeLocks();
    const session = new MemoryStorage();
    const original = start(tab(gw, { local, locks }, session).env, { batchSize: 100 });
    await settle();
    original.track('a');
    const copy = start(tab(gw, { local, locks }, session.copy()).env, { batchSize: 100 });
    await settle();
    copy.track('b');
    await settle();
    expect(queueKeys(local)).toHaveLength(2);
    expect(locks.held.size).toBe(2);
  });

  it('a client destroyed before it got its lock gives the lock back (init called twice)', async () => {
    const gw = new FakeGateway();
    const local = new MemoryStorage();
    const locks = new FakeLocks();
    const session = new MemoryStorage();
    const first = start(tab(gw, { local, locks }, session).env);
    first.destroy(); // before the lock was granted
    const second = start(tab(gw, { local, locks }, session).env, { batchSize: 1 });
    await settle();
    expect(locks.held.size).toBe(1);
    second.track('a');
    await settle();
    expect(gw.events().map((e) => e.event_type)).toEqual(['a']);
  });

  it('without Web Locks, adopts only queues nobody wrote for 5 minutes', async () => {
    const gw = new FakeGateway();
    gw.replies = ['network'];
    const local = new MemoryStorage();
    const gone = start(tab(gw, { local }).env, { batchSize: 100 });
    await settle();
    gone.track('x');
    gone.destroy();
    gw.replies = [{ status: 200 }];
    const live = start(tab(gw, { local }).env, { batchSize: 100, flushIntervalMs: 1000 });
    await settle();
    const before = gw.sent.length;
    await vi.advanceTimersByTimeAsync(4 * MIN);
    expect(gw.sent.length).toBe(before); // might still be alive
    await vi.advanceTimersByTimeAsync(2 * MIN);
    expect(gw.events().slice(before).map((e) => e.event_type)).toEqual(['x']);
    expect(live.stats().queued).toBe(0);
  });
});

describe('leaving the page', () => {
  it('on visibilitychange to hidden, sends everything waiting at once with keepalive fetches', async () => {
    const gw = new FakeGateway();
    const c = start(tab(gw, { local: new MemoryStorage() }).env, { batchSize: 100 });
    await settle();
    c.track('a');
    c.track('b');
    Object.defineProperty(document, 'visibilityState', { value: 'hidden', configurable: true });
    document.dispatchEvent(new Event('visibilitychange'));
    await settle();
    expect(gw.sent).toHaveLength(1);
    expect(gw.sent[0].init.keepalive).toBe(true);
    expect(gw.sent[0].body.events).toHaveLength(2);
    expect(c.stats().queued).toBe(0); // the page lived on and saw the answer
  });

  it('on pagehide, sends with sendBeacon (text body, key in the URL), keeps the events until confirmed', async () => {
    const gw = new FakeGateway();
    const local = new MemoryStorage();
    const session = new MemoryStorage();
    const locks = new FakeLocks();
    const c = start(tab(gw, { local, locks }, session).env, { batchSize: 100 });
    await settle();
    c.track('a');
    c.track('b');
    window.dispatchEvent(transition('pagehide', false));
    expect(gw.sendBeacon).toHaveBeenCalledTimes(1);
    const [url, body] = gw.sendBeacon.mock.calls[0];
    expect(url).toBe('http://gw.test/api/v1/events?key=wk_test');
    expect(typeof body).toBe('string');
    const beaconed = JSON.parse(body).events.map((e: { event_id: string }) => e.event_id);
    expect(gw.sent).toHaveLength(0);
    // A beacon's answer is never seen: the next page sends the same ids again (the worker
    // stores each id once), so a beacon that failed loses nothing.
    c.destroy();
    const next = start(tab(gw, { local, locks }, session).env, { batchSize: 100 });
    await settle();
    await next.flush();
    expect(gw.ids()).toEqual(beaconed);
  });

  it('falls back to a keepalive fetch when the browser refuses the beacon', async () => {
    const gw = new FakeGateway();
    gw.beaconResult = false;
    const c = start(tab(gw, { local: new MemoryStorage() }).env, { batchSize: 100 });
    await settle();
    c.track('a');
    window.dispatchEvent(transition('pagehide', false));
    await settle();
    expect(gw.sent).toHaveLength(1);
    expect(gw.sent[0].init.keepalive).toBe(true);
  });

  it('sends nothing on the way out while a retry is pending: the events wait for the next page', async () => {
    const gw = new FakeGateway();
    gw.replies = [{ status: 503, headers: { 'Retry-After': '30' } }];
    const c = start(tab(gw, { local: new MemoryStorage() }).env, { batchSize: 1 });
    await settle();
    c.track('a');
    await settle();
    window.dispatchEvent(transition('pagehide', false));
    expect(gw.sendBeacon).not.toHaveBeenCalled();
    expect(c.stats().queued).toBe(1);
  });

  it('splits an unload flush into bodies under 64 KiB', async () => {
    const gw = new FakeGateway();
    const c = start(tab(gw, { local: new MemoryStorage() }).env, { batchSize: 1000 });
    await settle();
    for (let i = 0; i < 60; i++) c.track('big', { blob: 'x'.repeat(2000) });
    window.dispatchEvent(transition('pagehide', false));
    expect(gw.beacons.length).toBeGreaterThan(1);
    for (const b of gw.beacons) expect(new TextEncoder().encode(String(b.init.body)).length).toBeLessThan(64 * 1024);
    expect(gw.beacons.flatMap((b) => b.body.events)).toHaveLength(60);
  });

  it('into the back/forward cache: gives the queue up, and claims it again on pageshow', async () => {
    const gw = new FakeGateway();
    gw.replies = ['network'];
    const local = new MemoryStorage();
    const locks = new FakeLocks();
    const c = start(tab(gw, { local, locks }).env, { batchSize: 100 });
    await settle();
    c.track('a');
    await settle();
    window.dispatchEvent(transition('pagehide', true));
    await settle();
    expect(locks.held.size).toBe(0);
    expect(queueKeys(local)).toHaveLength(1);
    window.dispatchEvent(transition('pageshow', true));
    await settle();
    expect(locks.held.size).toBe(1);
    expect(c.stats().queued).toBe(1);
  });
});
