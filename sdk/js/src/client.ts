/**
 * The client: identity, the persisted per-tab queue, delivery with retries, and the hand-over
 * of queues between tabs.
 *
 * Delivery guarantee. An event's id is made when the event is created and never changes. An
 * event leaves the queue only when the gateway answered for it: 2xx (accepted, or rejected
 * with a reason), or a 4xx other than 408/429 (refused). Network errors, 408, 429 and 5xx keep
 * the batch, which is retried with the same ids after an exponential backoff with jitter,
 * never sooner than `Retry-After`. The queue is in localStorage, so a reload, a crash or an
 * offline period loses nothing. A batch sent while the page goes away (keepalive fetch or
 * sendBeacon) cannot report its answer to anyone, so its events stay queued and the next
 * page of the site sends them again; the worker stores each event id once per project, so
 * such a resend never counts twice.
 *
 * Tabs. Every tab owns one queue key, `insightflow:q:<write key>:<tab id>`, and is the only
 * writer of it; the tab id lives in sessionStorage so a reload finds its queue again. A tab
 * holds the Web Lock `insightflow:tab:<tab id>` for its life, which the browser releases when
 * the tab closes or crashes. Other tabs of the site look for queues whose lock is free, take
 * it, move the events into their own queue and delete the orphan, so two tabs never send the
 * same stored events. (A duplicated tab copies sessionStorage: its lock is taken, so it makes
 * a new id.) Without Web Locks a queue unchanged for 5 minutes counts as orphaned.
 */
import { backoffMs, retryAfterMs } from './backoff';
import { kv, readJSON, type KV } from './store';
import type {
  DiscardReport,
  InitOptions,
  Order,
  PageInfo,
  QueueStats,
  WireEvent,
} from './types';
import { uuidv7 } from './uuid';

declare const __VERSION__: string;
export const VERSION: string = typeof __VERSION__ === 'string' ? __VERSION__ : '0.0.0-dev';
export const LIBRARY = 'insightflow-js';

const NS = 'insightflow:';
const ANON = NS + 'anon';
const USER = NS + 'user';
const SESSION = NS + 'session';
export const OPT_OUT = NS + 'opt_out';
const TAB = NS + 'tab';
const LOCK = NS + 'tab:';
/** Events per request at most (the gateway takes 500). */
const MAX_BATCH = 100;
/** Bytes per request at most: under the 64 KiB that keepalive fetches and beacons may carry. */
const MAX_BODY = 60000;
/** Without Web Locks, a queue nobody wrote for this long belongs to a tab that is gone. */
const STALE_MS = 5 * 60 * 1000;

/** What the client takes from the browser; tests pass their own. */
export interface Env {
  window: Window & typeof globalThis;
  local: KV;
  session: KV;
  fetch: (url: string, init: RequestInit) => Promise<Response>;
  sendBeacon?: (url: string, body: string) => boolean;
  locks?: LockManager | null;
  now: () => number;
  random: () => number;
}

const storage = (w: Window, name: 'localStorage' | 'sessionStorage'): Storage | null => {
  try {
    return w[name];
  } catch {
    return null; // sandboxed iframes throw on access
  }
};

export function browserEnv(w: Window & typeof globalThis = window): Env {
  const n = w.navigator;
  return {
    window: w,
    local: kv(storage(w, 'localStorage')),
    session: kv(storage(w, 'sessionStorage')),
    fetch: (url, init) => w.fetch(url, init),
    sendBeacon: n.sendBeacon ? (url, body) => n.sendBeacon(url, body) : undefined,
    locks: n.locks,
    now: Date.now,
    random: Math.random,
  };
}

interface StoredQueue {
  /** When the owner last wrote it. */
  t: number;
  /** Events dropped unsent so far. */
  d: number;
  e: WireEvent[];
}

const encoder = new TextEncoder();
const bytes = (s: string): number => encoder.encode(s).length;

/** Do-Not-Track in any of its spellings, or Global Privacy Control. */
export function privacySignal(w: Window): boolean {
  const n = w.navigator as Navigator & { globalPrivacyControl?: boolean; msDoNotTrack?: string };
  const dnt = [n.doNotTrack, (w as unknown as { doNotTrack?: string }).doNotTrack, n.msDoNotTrack];
  return n.globalPrivacyControl === true || dnt.some((v) => v === '1' || v === 'yes');
}

export class Client {
  readonly url: string;
  private _o: Required<Pick<InitOptions, 'batchSize' | 'flushIntervalMs' | 'maxQueue' | 'retryBaseMs' | 'retryMaxMs' | 'sessionTimeoutMs'>> & InitOptions;
  private _env: Env;
  private _q: WireEvent[] = [];
  private _inflight = new Set<string>();
  private _busy: Promise<void> | null = null;
  private _next: Promise<void> | null = null;
  private _retryAt = 0;
  private _attempt = 0;
  private _cap = MAX_BATCH;
  private _prefix: string;
  private _key = '';
  private _owned = false;
  private _dead = false;
  private _release?: () => void;
  private _retryTimer?: ReturnType<typeof setTimeout>;
  private _undo: Array<() => void> = [];
  private _dropped = 0;
  private _refused = 0;
  private _referrer: string;
  private _ctx: WireEvent['context'];
  /** Set while a page view is being made, so autocapture can reset its per-page state. */
  /** @internal */
  _onPage?: () => void;

  constructor(options: InitOptions, env: Env) {
    if (!options || !options.writeKey || !options.endpoint) {
      throw new Error('InsightFlow: init needs writeKey and endpoint');
    }
    this._o = {
      batchSize: 10,
      flushIntervalMs: 5000,
      maxQueue: 1000,
      retryBaseMs: 1000,
      retryMaxMs: 60000,
      sessionTimeoutMs: 30 * 60 * 1000,
      ...options,
    };
    this._env = env;
    const ep = options.endpoint.replace(/\/+$/, '');
    this.url =
      (/\/api\/v1\/events(\/batch)?$/.test(ep) ? ep : ep + '/api/v1/events') +
      '?key=' +
      encodeURIComponent(options.writeKey);
    this._prefix = NS + 'q:' + options.writeKey + ':';
    const w = env.window;
    this._referrer = w.document.referrer;
    let timezone: string | undefined;
    try {
      timezone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    } catch {
      /* no Intl */
    }
    this._ctx = {
      library: { name: LIBRARY, version: VERSION },
      locale: w.navigator.language,
      timezone,
    };
    if (w.screen) this._ctx.screen = { width: w.screen.width, height: w.screen.height };

    const on = (target: EventTarget, type: string, fn: (e: Event) => void) => {
      target.addEventListener(type, fn);
      this._undo.push(() => target.removeEventListener(type, fn));
    };
    on(w, 'pagehide', (e) => this._pagehide((e as PageTransitionEvent).persisted));
    on(w, 'pageshow', (e) => (e as PageTransitionEvent).persisted && this._claim());
    on(w.document, 'visibilitychange', () => w.document.visibilityState === 'hidden' && this._leave(false));
    on(w, 'online', () => {
      this._retryAt = 0;
      void this.flush();
    });
    const tick = setInterval(() => this._tick(), this._o.flushIntervalMs);
    this._undo.push(() => clearInterval(tick), () => clearTimeout(this._retryTimer));
    void this._claim();
  }

  // ---- public API -------------------------------------------------------------------------

  /** Any event; `type` is a standard type (docs/INGEST.md) or a custom name. */
  track(type: string, properties?: Record<string, unknown>): void {
    this._emit(type, { properties });
  }

  /** A page view of the current location. */
  page(properties?: Record<string, unknown>): void {
    const page = this._pageInfo();
    page.referrer = this._referrer || undefined;
    this._referrer = page.url;
    this._onPage?.();
    this._emit('page_view', { page, properties });
  }

  trackPurchase(order: Order): void {
    this._emit('purchase', { properties: order });
  }

  /** From now on events carry `userId`; `traits` are merged into the user's properties. */
  identify(userId: string | number, traits?: Record<string, unknown>): void {
    if (this._off()) return;
    this._env.local.set(USER, String(userId));
    this._emit('identify', { user_properties: traits });
  }

  setUserProperties(properties: Record<string, unknown>): void {
    this._emit('identify', { user_properties: properties });
  }

  /** Forget the user (log-out): new anonymous id, no user id, a new session. Queued events are still sent. */
  reset(): void {
    const { local, now } = this._env;
    local.del(USER);
    local.del(SESSION);
    local.set(ANON, uuidv7(now()));
  }

  /** Send what waits now; resolves when the queue is empty or a retry is scheduled. */
  flush(): Promise<void> {
    // One drain at a time; a flush asked for meanwhile runs once more after it, so it also
    // covers events made after the running drain looked at the queue.
    if (this._busy) {
      return (this._next ||= this._busy.then(() => {
        this._next = null;
        return this.flush();
      }));
    }
    return (this._busy = this._drain().finally(() => {
      this._busy = null;
    }));
  }

  /** Stop sending and forget what is queued, until `optIn()` (kept in localStorage). */
  optOut(): void {
    this._env.local.set(OPT_OUT, '1');
    this._q = [];
    this._save();
  }

  optIn(): void {
    this._env.local.del(OPT_OUT);
  }

  getAnonymousId(): string {
    const { local, now } = this._env;
    let id = local.get(ANON);
    if (!id) local.set(ANON, (id = uuidv7(now())));
    return id;
  }

  getUserId(): string | null {
    return this._env.local.get(USER);
  }

  /** The current session id; a new one after `sessionTimeoutMs` without events. */
  getSessionId(touch = false): string {
    const { local, now } = this._env;
    const t = now();
    let s = readJSON<{ id: string; last: number }>(local, SESSION);
    if (!s || t - s.last > this._o.sessionTimeoutMs) s = { id: uuidv7(t), last: t };
    else if (!touch) return s.id;
    s.last = Math.max(s.last, t);
    local.set(SESSION, JSON.stringify(s));
    return s.id;
  }

  stats(): QueueStats {
    return { queued: this._q.length, dropped: this._dropped, refused: this._refused };
  }

  /** Remove listeners and timers and give the tab's queue up (it stays stored). */
  destroy(): void {
    this._undo.forEach((f) => f());
    this._undo = [];
    this._dead = true;
    this._owned = false;
    this._release?.();
  }

  /** Autocapture's listeners are removed with the client's. */
  /** @internal */
  _addCleanup(f: () => void): void {
    this._undo.push(f);
  }

  // ---- events -----------------------------------------------------------------------------

  /** @internal */
  _off(): boolean {
    return (
      this._env.local.get(OPT_OUT) === '1' ||
      (!!this._o.respectDoNotTrack && privacySignal(this._env.window))
    );
  }

  /** @internal */
  _pageInfo(): PageInfo {
    const { location, document } = this._env.window;
    return { url: location.href, path: location.pathname, title: document.title || undefined };
  }

  /** @internal */
  _emit(type: string, extra: Partial<WireEvent>): void {
    if (this._off()) return;
    const t = this._env.now();
    const event: WireEvent = {
      event_id: uuidv7(t),
      event_type: type,
      anonymous_id: this.getAnonymousId(),
      session_id: this.getSessionId(true),
      timestamp: new Date(t).toISOString(),
      page: this._pageInfo(),
      context: this._ctx,
    };
    const user = this.getUserId();
    if (user) event.user_id = user;
    for (const k in extra) {
      const v = extra[k as keyof WireEvent];
      if (v !== undefined) (event as unknown as Record<string, unknown>)[k] = v;
    }
    this._q.push(event);
    this._log('queued', type, event);
    this._trim();
    this._save();
    if (this._q.length - this._inflight.size >= this._o.batchSize) void this.flush();
  }

  /** Oldest first beyond `maxQueue`. */
  private _trim(): void {
    const over = this._q.length - this._o.maxQueue;
    if (over > 0) this._discard({ reason: 'queue_full', events: this._q.splice(0, over) });
  }

  private _discard(report: Omit<DiscardReport, 'events'> & { events: Array<Partial<WireEvent> & { field?: string; reason?: string }> }): void {
    const events = report.events.map((e) => ({
      event_id: e.event_id!,
      event_type: e.event_type!,
      field: e.field,
      reason: e.reason,
    }));
    if (!events.length) return;
    if (report.reason === 'queue_full') this._dropped += events.length;
    else this._refused += events.length;
    const full = { ...report, events } as DiscardReport;
    if (this._o.debug) console.warn('[insightflow] gave up on %d event(s): %s', events.length, report.reason, full);
    try {
      this._o.onDiscard?.(full);
    } catch {
      /* the app's callback must not break delivery */
    }
  }

  private _log(...args: unknown[]): void {
    if (this._o.debug) console.log('[insightflow]', ...args);
  }

  // ---- the tab's queue --------------------------------------------------------------------

  /**
   * Becomes the owner of this tab's stored queue (at start, and when a page comes back from
   * the back/forward cache), merges it with what was made meanwhile, then adopts orphans.
   */
  private async _claim(): Promise<void> {
    const { session, locks, now } = this._env;
    let tab = session.get(TAB) || uuidv7(now());
    if (locks && !(await this._hold(tab, true))) {
      tab = uuidv7(now());
      await this._hold(tab, false);
    }
    if (this._dead) return this._release?.(); // destroyed while waiting for the lock
    session.set(TAB, tab);
    this._key = this._prefix + tab;
    const stored = readJSON<StoredQueue>(this._env.local, this._key);
    this._owned = true;
    if (stored) this._merge(stored);
    else this._save();
    this._adopt();
    void this.flush();
  }

  /** Takes the tab's lock and keeps it until `destroy()` or the page's end. */
  private _hold(tab: string, ifAvailable: boolean): Promise<boolean> {
    return new Promise((resolve) => {
      this._env
        .locks!.request(LOCK + tab, { ifAvailable }, (lock) => {
          if (!lock) return resolve(false);
          resolve(true);
          return new Promise<void>((r) => (this._release = r));
        })
        .catch(() => resolve(false));
    });
  }

  /** Adds stored events (this tab's after a reload, or an orphan's) in front of ours, without repeats. */
  private _merge(stored: StoredQueue): void {
    const have = new Set(this._q.map((e) => e.event_id));
    const fresh = (stored.e || []).filter((e) => e && e.event_id && !have.has(e.event_id));
    this._q = fresh.concat(this._q).sort((a, b) => (a.timestamp < b.timestamp ? -1 : a.timestamp > b.timestamp ? 1 : 0));
    this._dropped += stored.d || 0;
    this._trim();
    this._save();
  }

  private _save(): void {
    if (!this._owned) return;
    const { local, now } = this._env;
    if (!this._q.length && !this._dropped) local.del(this._key);
    else if (!local.set(this._key, JSON.stringify({ t: now(), d: this._dropped, e: this._q } as StoredQueue))) {
      this._log('localStorage refused the queue; it is kept in memory only');
    }
  }

  /** Moves the queues of tabs that are gone into this one. */
  private _adopt(): void {
    if (!this._owned) return;
    const { local, locks, now } = this._env;
    for (const key of local.keys()) {
      if (!key.startsWith(this._prefix) || key === this._key) continue;
      const take = () => {
        const stored = readJSON<StoredQueue>(local, key);
        local.del(key);
        if (stored) {
          this._log('adopted', stored.e.length, 'event(s) of a closed tab');
          this._merge(stored);
        }
      };
      if (locks) {
        locks
          .request(LOCK + key.slice(this._prefix.length), { ifAvailable: true }, (lock) => {
            if (lock && this._owned) take();
          })
          .catch(() => {});
      } else if (now() - (readJSON<StoredQueue>(local, key)?.t ?? 0) > STALE_MS) {
        take();
      }
    }
  }

  private _tick(): void {
    this._adopt();
    if (!this._q.length) return;
    if (!this._env.locks) this._save(); // keeps `t` fresh: this tab is alive
    void this.flush();
  }

  // ---- delivery ---------------------------------------------------------------------------

  private async _drain(): Promise<void> {
    while (
      this._owned &&
      !this._off() &&
      this._env.now() >= this._retryAt &&
      this._env.window.navigator.onLine !== false
    ) {
      const batch = this._nextBatch();
      if (!batch.length || !(await this._deliver(batch))) return;
    }
  }

  /** The oldest events not in flight, up to `cap` events and MAX_BODY bytes. */
  private _nextBatch(): WireEvent[] {
    const batch: WireEvent[] = [];
    let size = 0;
    for (const e of this._q) {
      if (this._inflight.has(e.event_id)) continue;
      const n = bytes(JSON.stringify(e)) + 1;
      if (batch.length && (batch.length >= this._cap || size + n > MAX_BODY)) break;
      batch.push(e);
      size += n;
    }
    return batch;
  }

  private _body(batch: WireEvent[]): string {
    return JSON.stringify({ sent_at: new Date(this._env.now()).toISOString(), events: batch });
  }

  /**
   * One request. Resolves true when the batch is settled (accepted, rejected or refused: it
   * left the queue) and false when it stays for a retry.
   */
  private async _deliver(batch: WireEvent[], body = this._body(batch)): Promise<boolean> {
    const ids = batch.map((e) => e.event_id);
    ids.forEach((id) => this._inflight.add(id));
    let res: Response | null = null;
    try {
      // A string body is sent as text/plain: a CORS "simple" request, so no preflight.
      // keepalive lets the request finish if the page goes away meanwhile.
      res = await this._env.fetch(this.url, {
        method: 'POST',
        body,
        keepalive: bytes(body) <= 65000,
        credentials: 'omit',
      });
    } catch (e) {
      this._log('network error', e);
    }
    ids.forEach((id) => this._inflight.delete(id));
    if (!this._owned) return false;
    const status = res ? res.status : 0;
    if (!status || status === 408 || status === 429 || status >= 500) {
      this._retryLater(res);
      return false;
    }
    this._attempt = 0;
    let answer: { error?: string; field?: string; reason?: string; rejected?: Array<{ index: number; field: string; reason: string }> } | null = null;
    try {
      answer = await res!.json();
    } catch {
      /* not JSON: the status says enough */
    }
    if (status === 413 && batch.length > 1) {
      this._cap = Math.max(1, batch.length >> 1); // too large: send it in halves
      return true;
    }
    const gone = new Set(ids);
    this._q = this._q.filter((e) => !gone.has(e.event_id));
    this._save();
    if (status < 300 || answer?.error === 'no_valid_events') {
      const rejected = (answer?.rejected || []).map((r) => ({ ...batch[r.index], field: r.field, reason: r.reason }));
      this._discard({ reason: 'rejected', events: rejected });
      this._log('sent', batch.length - rejected.length, 'event(s)');
    } else {
      const { error, field, reason } = answer || {};
      this._discard({ reason: 'refused', events: batch, status, error: { error, field, reason } });
    }
    return true;
  }

  private _retryLater(res: Response | null): void {
    const { now, random } = this._env;
    const after = retryAfterMs(res?.headers.get('Retry-After'), now());
    const wait = backoffMs(this._attempt++, this._o.retryBaseMs, this._o.retryMaxMs, random(), after);
    this._retryAt = now() + wait;
    this._log('send failed (%s); retry in %d ms', res ? res.status : 'network', Math.round(wait));
    clearTimeout(this._retryTimer);
    this._retryTimer = setTimeout(() => {
      this._retryAt = 0;
      void this.flush();
    }, wait);
  }

  /**
   * The page is being hidden or left: send everything not in flight now, in parallel. While a
   * retry is pending (the gateway failed or asked to wait) nothing is sent: the events stay
   * stored for the next page. `beacon` (pagehide): use navigator.sendBeacon, which the browser
   * delivers after the page is gone; else keepalive fetches, whose answers count if the page
   * lives on.
   */
  private _leave(beacon: boolean): void {
    if (!this._owned || this._off() || this._env.now() < this._retryAt) return;
    for (let batch = this._nextBatch(); batch.length; batch = this._nextBatch()) {
      const body = this._body(batch);
      if (beacon && this._env.sendBeacon?.(this.url, body)) {
        // Its answer will never be seen; the events stay stored (see the top of this file).
        batch.forEach((e) => this._inflight.add(e.event_id));
        this._log('beacon', batch.length, 'event(s)');
      } else {
        void this._deliver(batch, body);
      }
    }
  }

  private _pagehide(persisted: boolean): void {
    this._leave(true);
    if (persisted) {
      // Into the back/forward cache: give the queue up (storage has it) so another tab may
      // adopt it; `pageshow` claims it again. A held lock would also keep the page out of
      // the cache in some browsers.
      this._owned = false;
      this._q = [];
      this._inflight.clear();
      this._release?.();
      this._release = undefined;
    }
  }
}
