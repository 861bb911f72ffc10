/**
 * The queue and its delivery: batching by size and time, the canonical event shape, retries
 * with the same ids after backoff and Retry-After, what is dropped and reported, persistence
 * across reloads and crashes, the queue bound.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { backoffMs, retryAfterMs } from '../src/backoff';
import { Client, type Env } from '../src/client';
import type { InitOptions } from '../src/types';
import { FakeGateway, FakeLocks, MemoryStorage, settle, tab } from './helpers';

const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const T0 = Date.parse('2026-11-29T10:00:00.000Z');

const queueKeys = (s: Storage): string[] =>
  [...Array(s.length).keys()].map((i) => s.key(i)!).filter((k) => k.startsWith('insightflow:q:'));

let clients: Client[] = [];
function start(env: Env, options: Partial<InitOptions> = {}): Client {
  const c = new Client({ writeKey: 'wk_test', endpoint: 'http://gw.test/', ...options }, env);
  clients.push(c);
  return c;
}

beforeEach(() => {
  vi.useFakeTimers({ now: T0 });
  localStorage.clear();
  sessionStorage.clear();
});
afterEach(() => {
  clients.forEach((c) => c.destroy());
  clients = [];
  vi.useRealTimers();
});

describe('event shape', () => {
  it('sends canonical events with ids, identity, page, context and sent_at, the key in ?key=', async () => {
    const gw = new FakeGateway();
    const { env } = tab(gw, { local: new MemoryStorage() });
    document.title = 'Shoes';
    const c = start(env, { batchSize: 2 });
    await settle();
    c.page();
    c.track('Signup Started', { plan: 'pro' });
    await settle();

    expect(gw.sent).toHaveLength(1);
    const { url, init, body } = gw.sent[0];
    expect(url).toBe('http://gw.test/api/v1/events?key=wk_test');
    expect(init.method).toBe('POST');
    expect(typeof init.body).toBe('string'); // text/plain: no CORS preflight
    expect(init.keepalive).toBe(true);
    expect(body.sent_at).toBe(new Date(T0).toISOString());
    const [pv, custom] = body.events;
    expect(pv.event_id).toMatch(UUID_V7);
    expect(custom.event_id).toMatch(UUID_V7);
    expect(pv.event_id).not.toBe(custom.event_id);
    expect(pv.event_type).toBe('page_view');
    expect(pv.page).toEqual({ url: location.href, path: location.pathname, title: 'Shoes' });
    expect(pv.anonymous_id).toBe(c.getAnonymousId());
    expect(pv.session_id).toBe(custom.session_id);
    expect(pv.timestamp).toBe(new Date(T0).toISOString());
    expect(pv.context.library).toEqual({ name: 'insightflow-js', version: '0.0.0-test' });
    expect(pv.context.locale).toBe(navigator.language);
    expect(custom.event_type).toBe('Signup Started'); // the gateway normalises it
    expect(custom.properties).toEqual({ plan: 'pro' });
    expect(pv.user_id).toBeUndefined();
  });

  it('keeps a full events URL as given', () => {
    const gw = new FakeGateway();
    const c = start(tab(gw, { local: new MemoryStorage() }).env, { endpoint: 'https://x.test/api/v1/events/batch' });
    expect(c.url).toBe('https://x.test/api/v1/events/batch?key=wk_test');
  });

  it('identify sets user_id on this and later events; reset forgets it and the anonymous id', async () => {
    const gw = new FakeGateway();
    const c = start(tab(gw, { local: new MemoryStorage() }).env, { batchSize: 100 });
    await settle();
    const anon = c.getAnonymousId();
    c.identify('u-42', { plan: 'pro' });
    c.setUserProperties({ seats: 3 });
    c.trackPurchase({ order_id: 'o-1', total: 30, currency: 'EUR', items: [{ sku: 'A', quantity: 2 }] });
    c.reset();
    c.track('after_logout');
    await c.flush();
    const [ident, props, purchase, after] = gw.events();
    expect(ident).toMatchObject({ event_type: 'identify', user_id: 'u-42', anonymous_id: anon, user_properties: { plan: 'pro' } });
    expect(props).toMatchObject({ event_type: 'identify', user_id: 'u-42', user_properties: { seats: 3 } });
    expect(purchase).toMatchObject({ event_type: 'purchase', user_id: 'u-42', properties: { order_id: 'o-1', total: 30, currency: 'EUR' } });
    expect(after.user_id).toBeUndefined();
    expect(after.anonymous_id).not.toBe(anon);
    expect(after.session_id).not.toBe(purchase.session_id);
  });
});

describe('batching', () => {
  it('sends when batchSize events wait, not before', async () => {
    const gw = new FakeGateway();
    const c = start(tab(gw, { local: new MemoryStorage() }).env, { batchSize: 3 });
    await settle();
    c.track('a');
    c.track('b');
    await settle();
    expect(gw.sent).toHaveLength(0);
    c.track('c');
    await settle();
    expect(gw.sent).toHaveLength(1);
    expect(gw.sent[0].body.events.map((e) => e.event_type)).toEqual(['a', 'b', 'c']);
  });

  it('sends what waits every flushIntervalMs', async () => {
    const gw = new FakeGateway();
    const c = start(tab(gw, { local: new MemoryStorage() }).env, { flushIntervalMs: 2000 });
    await settle();
    c.track('a');
    await vi.advanceTimersByTimeAsync(1999);
    expect(gw.sent).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(1);
    expect(gw.sent).toHaveLength(1);
    expect(c.stats().queued).toBe(0);
  });

  it('splits a long queue into requests of at most 100 events', async () => {
    const gw = new FakeGateway();
    const c = start(tab(gw, { local: new MemoryStorage() }).env, { batchSize: 1000 });
    await settle();
    for (let i = 0; i < 250; i++) c.track('e', { i });
    await c.flush();
    expect(gw.sent.map((s) => s.body.events.length)).toEqual([100, 100, 50]);
    expect(new Set(gw.ids()).size).toBe(250);
  });
});

describe('retries', () => {
  it('retries a 503 batch with the same ids, not before Retry-After, with a fresh sent_at', async () => {
    const gw = new FakeGateway();
    gw.replies = [{ status: 503, headers: { 'Retry-After': '7' } }, { status: 200 }];
    const c = start(tab(gw, { local: new MemoryStorage() }).env, { batchSize: 2 });
    await settle();
    c.track('a');
    c.track('b');
    await settle();
    expect(gw.sent).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(6999);
    expect(gw.sent).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(gw.sent).toHaveLength(2);
    expect(gw.sent[1].body.events.map((e) => e.event_id)).toEqual(gw.sent[0].body.events.map((e) => e.event_id));
    expect(gw.sent[1].body.sent_at).toBe(new Date(T0 + 7000).toISOString());
    expect(gw.sent[1].body.events[0].timestamp).toBe(new Date(T0).toISOString());
    expect(c.stats().queued).toBe(0);
  });

  it('backs off exponentially with jitter on network errors, 408 and 5xx', async () => {
    const gw = new FakeGateway();
    gw.replies = ['network', { status: 500 }, { status: 408 }, 'network', { status: 200 }];
    const c = start(tab(gw, { local: new MemoryStorage() }).env, { batchSize: 1, retryBaseMs: 1000, retryMaxMs: 60000 });
    await settle();
    c.track('a');
    await settle();
    await vi.advanceTimersByTimeAsync(60000);
    // random() = 0.5 in tests: each wait is 3/4 of min(max, base * 2^n).
    const gaps = gw.sent.slice(1).map((s, i) => s.at - gw.sent[i].at);
    expect(gaps).toEqual([750, 1500, 3000, 6000]);
    expect(new Set(gw.ids()).size).toBe(1);
    expect(c.stats().queued).toBe(0);
  });

  it('honours a 429 Retry-After longer than the backoff, and resets the backoff after a success', async () => {
    const gw = new FakeGateway();
    gw.replies = [{ status: 429, headers: { 'Retry-After': '30' } }, { status: 200 }, 'network', { status: 200 }];
    const c = start(tab(gw, { local: new MemoryStorage() }).env, { batchSize: 1 });
    await settle();
    c.track('a');
    await settle();
    await vi.advanceTimersByTimeAsync(29999);
    expect(gw.sent).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(gw.sent).toHaveLength(2);
    c.track('b');
    await settle();
    await vi.advanceTimersByTimeAsync(750);
    expect(gw.sent).toHaveLength(4);
    expect(gw.sent[3].at - gw.sent[2].at).toBe(750); // the first retry's delay again
  });

  it('does not send while the browser is offline, and sends when it is back', async () => {
    const gw = new FakeGateway();
    const onLine = vi.spyOn(navigator, 'onLine', 'get').mockReturnValue(false);
    const c = start(tab(gw, { local: new MemoryStorage() }).env, { batchSize: 1 });
    await settle();
    c.track('a');
    await vi.advanceTimersByTimeAsync(20000);
    expect(gw.sent).toHaveLength(0);
    onLine.mockReturnValue(true);
    window.dispatchEvent(new Event('online'));
    await settle();
    expect(gw.sent).toHaveLength(1);
  });

  it('reads Retry-After as seconds or as an HTTP date', () => {
    const now = Date.parse('2026-11-29T10:00:00Z');
    expect(retryAfterMs('5', now)).toBe(5000);
    expect(retryAfterMs(' 0 ', now)).toBe(0);
    expect(retryAfterMs('Sun, 29 Nov 2026 10:00:12 GMT', now)).toBe(12000);
    expect(retryAfterMs('Sun, 29 Nov 2026 09:00:00 GMT', now)).toBe(0);
    expect(retryAfterMs('soon', now)).toBeNull();
    expect(retryAfterMs(null, now)).toBeNull();
  });

  it('computes equal-jitter backoff, capped, with Retry-After as a floor', () => {
    expect(backoffMs(0, 1000, 60000, 0, null)).toBe(500);
    expect(backoffMs(0, 1000, 60000, 1, null)).toBe(1000);
    expect(backoffMs(3, 1000, 60000, 0.5, null)).toBe(6000);
    expect(backoffMs(20, 1000, 60000, 1, null)).toBe(60000);
    expect(backoffMs(0, 1000, 60000, 0.5, 9000)).toBe(9000);
    expect(backoffMs(10, 1000, 60000, 0.5, 9000)).toBe(45000);
  });
});

describe('refused events', () => {
  it('drops events the gateway rejected one by one and reports them once', async () => {
    const gw = new FakeGateway();
    const reports: unknown[] = [];
    const c = start(tab(gw, { local: new MemoryStorage() }).env, { batchSize: 3, onDiscard: (r) => reports.push(r) });
    await settle();
    gw.replies = [
      (req) => ({
        status: 200,
        body: { success: true, accepted: 2, rejected: [{ index: 1, event_id: req.events[1].event_id, field: 'properties', reason: 'too deep' }] },
      }),
    ];
    c.track('good');
    c.track('bad');
    c.track('good');
    await settle();
    expect(reports).toHaveLength(1);
    expect(reports[0]).toMatchObject({ reason: 'rejected', events: [{ event_type: 'bad', field: 'properties', reason: 'too deep' }] });
    expect(c.stats()).toEqual({ queued: 0, dropped: 0, refused: 1 });
    await vi.advanceTimersByTimeAsync(60000);
    expect(gw.sent).toHaveLength(1); // nothing retried
  });

  it('drops the whole batch on 400 no_valid_events, naming each event', async () => {
    const gw = new FakeGateway();
    gw.replies = [{ status: 400, body: { error: 'no_valid_events', field: 'events', reason: 'every event of the request was rejected', accepted: 0, rejected: [{ index: 0, field: 'event_type', reason: 'bad' }, { index: 1, field: 'event_type', reason: 'bad' }] } }];
    const onDiscard = vi.fn();
    const c = start(tab(gw, { local: new MemoryStorage() }).env, { batchSize: 2, onDiscard });
    await settle();
    c.track('1x');
    c.track('2x');
    await settle();
    await vi.advanceTimersByTimeAsync(60000);
    expect(gw.sent).toHaveLength(1);
    expect(onDiscard).toHaveBeenCalledTimes(1);
    expect(onDiscard.mock.calls[0][0].events).toHaveLength(2);
    expect(c.stats().queued).toBe(0);
  });

  it.each([400, 401, 403, 404, 415])('drops a batch refused with %i and reports it once, in the console in debug mode', async (status) => {
    const gw = new FakeGateway();
    gw.replies = [{ status, body: { error: 'unauthorized', field: 'write_key', reason: 'unknown write key' } }];
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    vi.spyOn(console, 'log').mockImplementation(() => {});
    const onDiscard = vi.fn();
    const c = start(tab(gw, { local: new MemoryStorage() }).env, { batchSize: 1, debug: true, onDiscard });
    await settle();
    c.track('a');
    await settle();
    await vi.advanceTimersByTimeAsync(60000);
    expect(gw.sent).toHaveLength(1);
    expect(onDiscard).toHaveBeenCalledTimes(1);
    expect(onDiscard.mock.calls[0][0]).toMatchObject({ reason: 'refused', status, error: { error: 'unauthorized', field: 'write_key' } });
    expect(warn).toHaveBeenCalledTimes(1);
    expect(c.stats()).toEqual({ queued: 0, dropped: 0, refused: 1 });
  });

  it('prints nothing without debug', async () => {
    const gw = new FakeGateway();
    gw.replies = [{ status: 401 }];
    const warn = vi.spyOn(console, 'warn');
    const log = vi.spyOn(console, 'log');
    const c = start(tab(gw, { local: new MemoryStorage() }).env, { batchSize: 1 });
    await settle();
    c.track('a');
    await settle();
    expect(warn).not.toHaveBeenCalled();
    expect(log).not.toHaveBeenCalled();
  });

  it('halves a batch refused as too large (413) until it fits', async () => {
    const gw = new FakeGateway();
    gw.replies = [{ status: 413 }, { status: 413 }, { status: 200 }];
    const c = start(tab(gw, { local: new MemoryStorage() }).env, { batchSize: 8 });
    await settle();
    for (let i = 0; i < 8; i++) c.track('e');
    await settle();
    await c.flush();
    expect(gw.sent.map((s) => s.body.events.length)).toEqual([8, 4, 2, 2, 2, 2]);
    expect(new Set(gw.ids()).size).toBe(8);
    expect(c.stats().queued).toBe(0);
  });
});

describe('persistence', () => {
  it('a reload sends what the previous page left, with the same ids, once', async () => {
    const gw = new FakeGateway();
    gw.replies = ['network'];
    const local = new MemoryStorage();
    const session = new MemoryStorage();
    const locks = new FakeLocks();
    const first = start(tab(gw, { local, locks }, session).env, { batchSize: 1 });
    await settle();
    first.track('a');
    first.track('b');
    await settle();
    const stored = queueKeys(local).flatMap((k) => JSON.parse(local.getItem(k)!).e.map((e: { event_id: string }) => e.event_id));
    expect(stored).toHaveLength(2);
    first.destroy(); // the page is gone (a crash: no pagehide)

    gw.replies = [{ status: 200 }];
    const before = gw.sent.length;
    const reloaded = start(tab(gw, { local, locks }, session).env, { batchSize: 1 });
    await settle();
    await reloaded.flush();
    const resent = gw.sent.slice(before).flatMap((s) => s.body.events.map((e) => e.event_id));
    expect(resent).toEqual(stored);
    expect(reloaded.stats().queued).toBe(0);
    expect(queueKeys(local)).toEqual([]);
  });

  it('loses nothing across an offline period and a reload', async () => {
    const gw = new FakeGateway();
    gw.replies = ['network'];
    const local = new MemoryStorage();
    const session = new MemoryStorage();
    let c = start(tab(gw, { local }, session).env, { batchSize: 5 });
    await settle();
    for (let i = 0; i < 12; i++) c.track('e', { i });
    await vi.advanceTimersByTimeAsync(30000);
    c.destroy();
    gw.replies = [{ status: 200 }];
    c = start(tab(gw, { local }, session).env, { batchSize: 5 });
    await settle();
    await c.flush();
    const last = gw.sent.at(-1)!.body.events.map((e) => (e.properties as { i: number }).i);
    expect(last).toEqual([...Array(12).keys()]);
    expect(c.stats().queued).toBe(0);
  });

  it('bounds the queue: the oldest are dropped first, counted, reported and the count kept', async () => {
    const gw = new FakeGateway();
    gw.replies = ['network'];
    const local = new MemoryStorage();
    const session = new MemoryStorage();
    const onDiscard = vi.fn();
    const c = start(tab(gw, { local }, session).env, { maxQueue: 5, batchSize: 100, onDiscard });
    await settle();
    for (let i = 0; i < 8; i++) c.track('e', { i });
    expect(c.stats()).toEqual({ queued: 5, dropped: 3, refused: 0 });
    expect(onDiscard).toHaveBeenCalledTimes(3);
    expect(onDiscard.mock.calls.every(([r]) => r.reason === 'queue_full')).toBe(true);
    c.destroy();
    gw.replies = [{ status: 200 }];
    const again = start(tab(gw, { local }, session).env, { maxQueue: 5 });
    await settle();
    expect(again.stats().dropped).toBe(3);
    await again.flush();
    expect(gw.sent.at(-1)!.body.events.map((e) => (e.properties as { i: number }).i)).toEqual([3, 4, 5, 6, 7]);
  });

  it('keeps working from memory when localStorage refuses to store', async () => {
    const gw = new FakeGateway();
    const local = new MemoryStorage();
    local.setItem = () => {
      throw new DOMException('full', 'QuotaExceededError');
    };
    const c = start(tab(gw, { local }).env, { batchSize: 2 });
    await settle();
    c.track('a');
    c.track('b');
    await settle();
    expect(gw.events().map((e) => e.event_type)).toEqual(['a', 'b']);
  });
});
