// Shared helpers of the browser tests: the running services (started by scripts/browser-test.sh),
// headless Chromium through playwright-core, the stats API, and polling.
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium } from 'playwright-core';

function required(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(
      `${name} is not set: the browser tests run against services that scripts/browser-test.sh starts ` +
        '(from the repository root: scripts/browser-test.sh)',
    );
  }
  return value;
}

export const env = {
  shop: required('E2E_SHOP_URL').replace(/\/$/, ''),
  ingest: required('E2E_INGEST_URL').replace(/\/$/, ''),
  worker: required('E2E_WORKER_URL').replace(/\/$/, ''),
  statsKey: required('E2E_STATS_KEY'),
  /** project -> write key, e.g. "journey=wk_...,restart=wk_...,default=wk_..." */
  writeKeys: Object.fromEntries(required('E2E_WRITE_KEYS').split(',').map((pair) => pair.split('=').reverse())),
  ingestPidFile: required('E2E_INGEST_PIDFILE'),
  ingestStart: required('E2E_INGEST_START'),
  artifacts: process.env.E2E_ARTIFACTS || 'target/browser-artifacts',
  chromium: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
};

export async function launch() {
  return chromium.launch({
    executablePath: env.chromium,
    args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
}

/**
 * A browser context as a person's browser: headless Chromium names itself "HeadlessChrome",
 * which the gateway's bot list flags (its events are stored but counted nowhere), so the
 * shoppers present the same Chromium's ordinary user agent.
 */
export function shopperContext(browser, options = {}) {
  const userAgent = `Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/${browser.version()} Safari/537.36`;
  return browser.newContext({ userAgent, ...options });
}

/** The shop's URL for `project`, fast flushes and short retries so the tests take seconds. */
export function shopUrl(project, path = '/', extra = {}) {
  const q = new URLSearchParams({ endpoint: env.ingest, key: env.writeKeys[project], flush: '1000', retryMax: '2000', ...extra });
  return `${env.shop}${path}?${q}`;
}

/** GET on the stats API with the test's key; throws on a non-2xx answer, naming it. */
export async function stats(path) {
  const res = await fetch(env.worker + path, { headers: { Authorization: `Bearer ${env.statsKey}` } });
  const text = await res.text();
  if (!res.ok) throw new Error(`GET ${path}: ${res.status} ${text}`);
  return JSON.parse(text);
}

/** Calls `probe` until `done(value)` holds or `ms` pass; returns the last value either way. */
export async function poll(probe, done, ms = 30000, every = 250) {
  const until = Date.now() + ms;
  let value = await probe();
  while (!done(value) && Date.now() < until) {
    await sleep(every);
    value = await probe();
  }
  return value;
}

export async function ready(url, ms = 60000) {
  const up = await poll(
    () => fetch(url).then((r) => r.ok, () => false),
    (ok) => ok,
    ms,
  );
  if (!up) throw new Error(`${url} did not answer 200 within ${ms / 1000}s`);
}

// ---- the gateway, which the restart test stops and starts --------------------------------------

export function gatewayPid() {
  return Number(readFileSync(env.ingestPidFile, 'utf8').trim());
}

/** kill -9: no graceful shutdown, as when the host dies. */
export async function killGateway() {
  const pid = gatewayPid();
  process.kill(pid, 'SIGKILL');
  await poll(
    () => fetch(env.ingest + '/health').then(() => true, () => false),
    (answering) => !answering,
    10000,
  );
}

export async function startGateway() {
  const r = spawnSync(env.ingestStart, { stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`${env.ingestStart} failed (${r.status})`);
  await ready(env.ingest + '/ready');
}

// ---- the page -----------------------------------------------------------------------------------

/**
 * Clicks `selector` with the mouse at a point inside it and returns where that is on the page
 * (page x/y = viewport point + scroll), as the test's own record of the click. It never
 * scrolls (scrolling is an event of its own): the element must be in view.
 */
export async function clickAt(page, selector, dx = 7, dy = 5) {
  const box = await page.locator(selector).boundingBox();
  const viewport = page.viewportSize();
  if (!box) throw new Error(`${selector} is not visible`);
  if (box.y < 0 || box.y + box.height > viewport.height) throw new Error(`${selector} is out of view: scroll first`);
  const x = Math.round(box.x + Math.min(dx, box.width / 2));
  const y = Math.round(box.y + Math.min(dy, box.height / 2));
  const scroll = await page.evaluate(() => ({ x: window.scrollX, y: window.scrollY, path: location.pathname }));
  await page.mouse.click(x, y);
  return { selector, path: scroll.path, x: x + Math.round(scroll.x), y: y + Math.round(scroll.y) };
}

/** Every event id the page posted to the gateway (fetches and beacons, failed ones too). */
export function recordSends(context) {
  const sent = { requests: 0, ids: [] };
  context.on('request', (req) => {
    if (req.method() !== 'POST' || !req.url().startsWith(env.ingest)) return;
    try {
      const body = JSON.parse(req.postData() || '{}');
      sent.requests += 1;
      for (const e of body.events || []) sent.ids.push(e.event_id);
    } catch {
      /* not ours */
    }
  });
  return sent;
}

/** A tally of what the test did: counts by event type and the (type, path) of each event. */
export class Tally {
  constructor() {
    this.events = [];
  }
  add(type, path, n = 1) {
    for (let i = 0; i < n; i++) this.events.push({ type, path });
  }
  counts() {
    const c = {};
    for (const e of this.events) c[e.type] = (c[e.type] || 0) + 1;
    return c;
  }
  types() {
    return Object.keys(this.counts()).sort();
  }
}

export function artifactsDir() {
  mkdirSync(env.artifacts, { recursive: true });
  return env.artifacts;
}

export { sleep };
