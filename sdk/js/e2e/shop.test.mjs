// The demo shop in real headless Chromium against the real gateway and worker: what a shopper
// does is found in the stats API exactly once (counts, the user's path, the click heatmap),
// also when the gateway is killed and restarted meanwhile. Expected figures come from the
// test's own record of what it did, never from the system's copy.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  Tally,
  clickAt,
  env,
  killGateway,
  launch,
  poll,
  recordSends,
  shopUrl,
  shopperContext,
  sleep,
  startGateway,
  stats,
} from './support.mjs';

const TYPES = ['page_view', 'click', 'scroll', 'form_submit', 'purchase', 'cart_add', 'cart_remove', 'identify'];

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

/** Counts by type for `project` since `from`, every type listed (zeros too). */
async function counts(project, from) {
  const q = new URLSearchParams({ from: new Date(from - 120000).toISOString(), types: TYPES.join(',') });
  const answer = await stats(`/api/v1/projects/${project}/counts?${q}`);
  const nonzero = Object.fromEntries(Object.entries(answer.counts).filter(([, n]) => n > 0));
  return { total: answer.total, counts: nonzero };
}

/**
 * Every event of one user, oldest first. The project goes in the query: in the path form
 * (/projects/{project}/users/{id}/events) the worker reads the project as the user id.
 */
async function userEvents(project, distinctId) {
  const events = [];
  let cursor = '';
  for (;;) {
    const q = new URLSearchParams({ project, limit: '500', ...(cursor ? { cursor } : {}) });
    const page = await stats(`/api/v1/users/${encodeURIComponent(distinctId)}/events?${q}`);
    events.push(...page.events);
    if (!page.next_cursor) break;
    cursor = page.next_cursor;
  }
  return events.reverse();
}

/** Waits until the stats API holds exactly the tally, then a little longer to catch late doubles. */
async function expectCounts(project, from, tally) {
  const expected = tally.counts();
  const same = (c) => JSON.stringify(sorted(c.counts)) === JSON.stringify(sorted(expected));
  let got = await poll(() => counts(project, from), same, 45000);
  assert.deepEqual(sorted(got.counts), sorted(expected), 'event counts by type (stats API vs what the test did)');
  await sleep(3000); // a resent or duplicated event would arrive by now
  got = await counts(project, from);
  assert.deepEqual(sorted(got.counts), sorted(expected), 'counts changed after settling: an event arrived twice');
  assert.equal(got.total, tally.events.length);
}

const sorted = (o) => Object.fromEntries(Object.entries(o).sort(([a], [b]) => a.localeCompare(b)));

/** The scroll milestones the SDK should report for the current scroll position (independent of its code). */
async function milestonesReached(page) {
  const percent = await page.evaluate(() => {
    const height = Math.max(document.documentElement.scrollHeight, document.body.scrollHeight);
    return Math.min(100, Math.round(((window.scrollY + window.innerHeight) / height) * 100));
  });
  return [25, 50, 75, 100].filter((m) => percent >= m);
}

describe('the demo shop, end to end', () => {
  it('a shopper’s clicks, navigation, scroll and purchase are stored once, with click coordinates for the heatmap', async (t) => {
    const project = 'journey';
    const from = Date.now();
    const context = await shopperContext(browser, { viewport: { width: 1280, height: 720 } });
    const sent = recordSends(context);
    const page = await context.newPage();
    const tally = new Tally();
    const clicks = [];
    const click = async (selector, type) => {
      const c = await clickAt(page, selector);
      clicks.push({ ...c, element: type });
      tally.add('click', c.path);
      return c;
    };

    await page.goto(shopUrl(project));
    await page.waitForFunction(() => window.InsightFlow && document.querySelector('.add-to-cart'));
    tally.add('page_view', '/');

    await click('#product-tee-navy .add-to-cart', 'tee');
    tally.add('cart_add', '/');
    await click('#product-cap-red .add-to-cart', 'cap');
    tally.add('cart_add', '/');
    await click('#product-tee-navy .add-to-cart', 'tee');
    tally.add('cart_add', '/');

    await page.evaluate(() => window.scrollTo(0, document.documentElement.scrollHeight));
    const reached = await milestonesReached(page);
    assert.ok(reached.length > 0, 'the products page is taller than the viewport');
    tally.add('scroll', '/', reached.length);
    await sleep(600); // the SDK measures scroll 250 ms after it stops
    await page.evaluate(() => window.scrollTo(0, 0));
    await sleep(600);

    await click('#nav-cart', 'nav-cart');
    await page.waitForSelector('#checkout');
    tally.add('page_view', '/cart/');
    await click('#line-cap-red .remove', 'remove');
    tally.add('cart_remove', '/cart/');
    await page.fill('input[name=name]', 'Jane Shopper');
    await page.fill('input[name=email]', 'jane@example.com');
    await click('#place-order', 'order');
    tally.add('form_submit', '/cart/');
    tally.add('purchase', '/cart/');
    await page.waitForSelector('#order-id');
    tally.add('page_view', '/thanks/');

    const anonymousId = await page.evaluate(() => window.InsightFlow.getAnonymousId());
    const orderId = await page.textContent('#order-id');
    // Closing the tab: visibilitychange + pagehide make the SDK send what waits (keepalive fetch / sendBeacon).
    await page.close({ runBeforeUnload: true });

    await expectCounts(project, from, tally);

    // The user's path: every event once, on the page it happened on.
    const path = await userEvents(project, anonymousId);
    assert.equal(path.length, tally.events.length, 'events in the user path');
    const ids = path.map((e) => e.event_id);
    assert.equal(new Set(ids).size, ids.length, 'no event id twice');
    const key = (e) => `${e.type ?? e.event_type} ${e.path ?? e.page_path}`;
    assert.deepEqual(path.map(key).sort(), tally.events.map(key).sort(), 'the (type, page) of every event');
    assert.deepEqual(
      path.filter((e) => e.event_type === 'page_view').map((e) => e.page_path),
      ['/', '/cart/', '/thanks/'],
      'page views in order',
    );
    // Everything the browser put on the wire while the page was open is stored. (What it sends
    // as the tab closes is not reported to the test, so this is a subset check.)
    const stored = new Set(ids);
    assert.deepEqual([...new Set(sent.ids)].filter((id) => !stored.has(id)), [], 'ids sent by the browser but not stored');
    t.diagnostic(`${stored.size - new Set(sent.ids).size} of ${stored.size} events left with the closing tab`);
    const purchase = await stats(`/api/v1/projects/${project}/events?event_type=purchase&limit=10`);
    assert.equal(purchase.events.length, 1);
    const user = await stats(`/api/v1/users/${encodeURIComponent(anonymousId)}?project=${project}`);
    assert.equal(user.total_events, tally.events.length);
    assert.ok(orderId.startsWith('o-'));

    // The heatmap of "/": the grid is exactly the test's own clicks there, cell by cell.
    const cell = 50;
    const heatmap = await stats(`/api/v1/projects/${project}/heatmap?page=/&cell=${cell}&limit=50`);
    const expectedCells = {};
    for (const c of clicks.filter((c) => c.path === '/')) {
      const k = `${Math.floor(c.x / cell)},${Math.floor(c.y / cell)}`;
      expectedCells[k] = (expectedCells[k] || 0) + 1;
    }
    const gotCells = Object.fromEntries(heatmap.grid.cells.map((c) => [`${c.x},${c.y}`, c.clicks]));
    assert.deepEqual(sorted(gotCells), sorted(expectedCells), 'heatmap cells of / (API vs the test’s own clicks)');
    // Its elements: clicks per element, and each selector finds that element in the shop again.
    const verify = await context.newPage();
    await verify.route((url) => url.href.startsWith(env.ingest), (route) => route.abort());
    await verify.goto(shopUrl(project));
    await verify.waitForSelector('.add-to-cart');
    const found = {};
    for (const el of heatmap.elements) {
      const what = await verify.evaluate((selector) => {
        const nodes = document.querySelectorAll(selector);
        if (nodes.length !== 1) return `${nodes.length} matches`;
        const n = nodes[0];
        return n.id || n.closest('article')?.id || n.tagName;
      }, el.selector);
      found[what] = el.clicks;
    }
    assert.deepEqual(sorted(found), sorted({ 'product-tee-navy': 2, 'product-cap-red': 1, 'nav-cart': 1 }), 'heatmap elements');
    await context.close();
  });

  it('with the gateway killed and restarted mid-session (and a reload while it is down), every event is stored exactly once', async () => {
    const project = 'restart';
    const from = Date.now();
    // Tall enough that every button is in view: the test scrolls nothing, so the SDK reports no scroll.
    const context = await shopperContext(browser, { viewport: { width: 1280, height: 1000 } });
    const sent = recordSends(context);
    const page = await context.newPage();
    const tally = new Tally();
    const click = async (selector) => tally.add('click', (await clickAt(page, selector)).path);
    let restarted = false;
    try {
      await page.goto(shopUrl(project, '/', { flush: '500', retryMax: '1500' }));
      await page.waitForFunction(() => window.InsightFlow && document.querySelector('.add-to-cart'));
      tally.add('page_view', '/');
      // The gateway took the first page view before it goes.
      await poll(() => counts(project, from), (c) => c.counts.page_view === 1, 20000);

      await killGateway();
      await click('#product-tee-navy .add-to-cart');
      tally.add('cart_add', '/');
      await click('#product-hoodie-grey .add-to-cart');
      tally.add('cart_add', '/');
      await click('#product-cap-red .add-to-cart');
      tally.add('cart_add', '/');
      await click('#nav-cart');
      await page.waitForSelector('#checkout');
      tally.add('page_view', '/cart/');
      await sleep(1500); // a few failed sends and retries

      await page.reload(); // the page goes while its events are unsent: they wait in localStorage
      await page.waitForSelector('#checkout');
      tally.add('page_view', '/cart/');
      await click('#line-hoodie-grey .remove');
      tally.add('cart_remove', '/cart/');
      await sleep(2500);
      const queued = await page.evaluate(() => window.InsightFlow.stats());
      assert.equal(queued.queued, tally.events.length - 1, 'every event since the kill is queued in the page');

      await startGateway();
      restarted = true;
      await click('#nav-products');
      await page.waitForSelector('.add-to-cart');
      tally.add('page_view', '/');
      await click('#product-bag-canvas .add-to-cart');
      tally.add('cart_add', '/');
      await poll(() => page.evaluate(() => window.InsightFlow.stats().queued), (n) => n === 0, 20000);
      const anonymousId = await page.evaluate(() => window.InsightFlow.getAnonymousId());
      await page.close({ runBeforeUnload: true });

      await expectCounts(project, from, tally);
      const path = await userEvents(project, anonymousId);
      const ids = path.map((e) => e.event_id);
      assert.equal(ids.length, tally.events.length, 'events stored for the user');
      assert.equal(new Set(ids).size, ids.length, 'no event id twice');
      assert.deepEqual([...new Set(sent.ids)].sort(), [...ids].sort(), 'every id the browser sent, and only those, is stored');
      assert.ok(sent.ids.length > ids.length, 'events were sent again after the failures (same ids)');
    } finally {
      if (!restarted) await startGateway().catch(() => {}); // leave the gateway up for the next test
      await context.close();
    }
  });
});
