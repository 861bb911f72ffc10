/**
 * InsightFlow browser SDK. One client per page, made by `init`:
 *
 *   import { init, track } from 'insightflow-js';
 *   init({ writeKey: 'wk_live_shop', endpoint: 'https://ingest.example' });
 *   track('signup_started', { plan: 'pro' });
 *
 * The `<script>` bundle exposes the same functions on `window.InsightFlow`.
 */
import { autocapture } from './autocapture';
import { browserEnv, Client, LIBRARY, OPT_OUT, VERSION, type Env } from './client';
import type { InitOptions, Order, QueueStats } from './types';

export type { AutocaptureOptions, DiscardReport, InitOptions, Order, PageInfo, QueueStats, WireEvent } from './types';
export { Client, VERSION, LIBRARY, type Env };

let client: Client | null = null;

/** Starts the SDK (again: a second call replaces the first client). `env` is for tests. */
export function init(options: InitOptions, env?: Env): Client {
  client?.destroy();
  const e = env || browserEnv();
  const c = (client = new Client(options, e));
  const auto = options.autocapture;
  if (auto !== false) autocapture(c, e.window, auto === true || !auto ? {} : auto);
  return c;
}

const call = <T>(f: (c: Client) => T, fallback: T): T => (client ? f(client) : fallback);

export const track = (type: string, properties?: Record<string, unknown>): void =>
  call((c) => c.track(type, properties), undefined);
export const page = (properties?: Record<string, unknown>): void => call((c) => c.page(properties), undefined);
export const trackPurchase = (order: Order): void => call((c) => c.trackPurchase(order), undefined);
export const identify = (userId: string | number, traits?: Record<string, unknown>): void =>
  call((c) => c.identify(userId, traits), undefined);
export const setUserProperties = (properties: Record<string, unknown>): void =>
  call((c) => c.setUserProperties(properties), undefined);
export const reset = (): void => call((c) => c.reset(), undefined);
export const flush = (): Promise<void> => call((c) => c.flush(), Promise.resolve());
/** Opt-out and opt-in work before `init` too (a consent banner may come first). */
export const optOut = (): void => (client ? client.optOut() : void browserEnv().local.set(OPT_OUT, '1'));
export const optIn = (): void => (client ? client.optIn() : browserEnv().local.del(OPT_OUT));
export const getAnonymousId = (): string | null => call((c) => c.getAnonymousId(), null);
export const getSessionId = (): string | null => call((c) => c.getSessionId(), null);
export const getUserId = (): string | null => call((c) => c.getUserId(), null);
export const stats = (): QueueStats | null => call((c) => c.stats(), null);
/** Removes the SDK's listeners and timers; queued events stay stored for the next page. */
export const shutdown = (): void => {
  client?.destroy();
  client = null;
};
