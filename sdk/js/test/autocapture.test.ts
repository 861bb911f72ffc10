/**
 * Automatic events (page views with SPA navigation, clicks, scroll depth, form submits), the
 * selectors they carry, and the privacy switches (opt-out, Do-Not-Track, GPC).
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Client } from '../src/client';
import { describe as describeElement, selectorOf } from '../src/element';
import * as sdk from '../src/index';
import type { InitOptions, WireEvent } from '../src/types';
import { FakeGateway, MemoryStorage, tab } from './helpers';

const T0 = Date.parse('2026-11-29T10:00:00.000Z');

let gw: FakeGateway;
let local: MemoryStorage;

function start(options: Partial<InitOptions> = {}): Client {
  return sdk.init(
    { writeKey: 'wk_test', endpoint: 'http://gw.test', batchSize: 1000, ...options },
    tab(gw, { local }).env,
  );
}
async function sent(c: Client): Promise<WireEvent[]> {
  await vi.advanceTimersByTimeAsync(10);
  await c.flush();
  return gw.events();
}
function click(el: Element, at: { pageX: number; pageY: number } | null = { pageX: 120.4, pageY: 830.6 }): void {
  const ev = new MouseEvent('click', { bubbles: true, cancelable: true, detail: at ? 1 : 0, clientX: at ? 10 : 0, clientY: at ? 10 : 0 });
  if (at) {
    Object.defineProperty(ev, 'pageX', { value: at.pageX });
    Object.defineProperty(ev, 'pageY', { value: at.pageY });
  }
  el.dispatchEvent(ev);
}

beforeEach(() => {
  vi.useFakeTimers({ now: T0 });
  gw = new FakeGateway();
  local = new MemoryStorage();
  history.replaceState(null, '', '/');
  document.title = 'Home';
  document.body.innerHTML = '';
});
afterEach(() => {
  sdk.shutdown();
  vi.useRealTimers();
  vi.unstubAllGlobals();
});

describe('page views', () => {
  it('one at start, then one per SPA navigation (pushState, replaceState, popstate), with the previous URL as referrer', async () => {
    const c = start();
    await vi.advanceTimersByTimeAsync(1);
    history.pushState({}, '', '/cart?step=1');
    document.title = 'Cart'; // a router sets the title after pushState: still seen
    await vi.advanceTimersByTimeAsync(1);
    history.replaceState({}, '', '/cart?step=1'); // same URL: not a new page
    await vi.advanceTimersByTimeAsync(1);
    history.replaceState({}, '', '/cart?step=2');
    await vi.advanceTimersByTimeAsync(1);
    history.pushState({}, '', '/cart?step=2#totals'); // a fragment only: same page
    await vi.advanceTimersByTimeAsync(1);
    // Back button: the browser moves the location itself (not through our wrappers), then fires popstate.
    History.prototype.replaceState.call(history, null, '', '/cart?step=1');
    window.dispatchEvent(new PopStateEvent('popstate'));
    await vi.advanceTimersByTimeAsync(1);
    const views = (await sent(c)).filter((e) => e.event_type === 'page_view');
    const origin = location.origin;
    expect(views.map((v) => v.page!.url)).toEqual([`${origin}/`, `${origin}/cart?step=1`, `${origin}/cart?step=2`, `${origin}/cart?step=1`]);
    expect(views[1].page).toEqual({ url: `${origin}/cart?step=1`, path: '/cart', title: 'Cart', referrer: `${origin}/` });
    expect(views[2].page!.referrer).toBe(`${origin}/cart?step=1`);
    expect(views[3].page!.referrer).toBe(`${origin}/cart?step=2`); // the previous page view
  });

  it('the app’s own history wrappers keep working, and shutdown restores the originals', async () => {
    const original = history.pushState;
    start();
    expect(history.pushState).not.toBe(original);
    history.pushState({ a: 1 }, '', '/x');
    expect(location.pathname).toBe('/x');
    expect(history.state).toEqual({ a: 1 });
    sdk.shutdown();
    expect(history.pushState).toBe(original);
  });

  it('can be switched off alone', async () => {
    const c = start({ autocapture: { pageViews: false } });
    history.pushState({}, '', '/elsewhere');
    click(document.body);
    const events = await sent(c);
    expect(events.map((e) => e.event_type)).toEqual(['click']);
  });
});

describe('clicks', () => {
  it('carry tag, id, classes, label, a stable selector and page x/y (rounded), on the page they happened on', async () => {
    document.body.innerHTML = `
      <main id="shop"><ul class="products">
        <li class="product card"><button class="btn primary active" data-sku="A">Add <b>to cart</b></button></li>
        <li class="product card"><button class="btn primary css-1x9f3k2">  Add
            to   cart </button></li>
      </ul></main>`;
    history.replaceState(null, '', '/products');
    const c = start({ autocapture: { pageViews: false } });
    const second = document.querySelectorAll('button')[1];
    click(second.firstChild as unknown as Element); // a text node inside the button
    const [ev] = await sent(c);
    expect(ev.event_type).toBe('click');
    expect(ev.page!.path).toBe('/products');
    expect(ev.element).toEqual({
      tag: 'button',
      classes: ['btn', 'primary', 'css-1x9f3k2'],
      text: 'Add to cart',
      selector: '#shop > ul.products > li.product.card:nth-of-type(2) > button.btn.primary',
      x: 120,
      y: 831,
    });
    expect(document.querySelector(ev.element!.selector)).toBe(second);
  });

  it('a click inside a link or button is about that element; its href without query', async () => {
    document.body.innerHTML = `<nav><a id="to-cart" href="/cart?session=secret#x"><span><img alt="">Cart</span></a></nav>`;
    const c = start({ autocapture: { pageViews: false } });
    click(document.querySelector('img')!);
    const [ev] = await sent(c);
    expect(ev.element).toMatchObject({ tag: 'a', id: 'to-cart', selector: '#to-cart', text: 'Cart' });
    expect(ev.properties).toEqual({ href: `${location.origin}/cart` });
  });

  it('never records what was typed: no text for inputs, textareas or plain content', async () => {
    document.body.innerHTML = `
      <form><input id="email" type="email" value="jane@example.com"><textarea id="note">private note</textarea>
      <input id="go" type="submit" value="Pay now"></form><p id="para">jane@example.com wrote this</p>`;
    const c = start({ autocapture: { pageViews: false, forms: false } });
    document.querySelector('form')!.addEventListener('submit', (e) => e.preventDefault());
    click(document.getElementById('email')!);
    click(document.getElementById('note')!);
    click(document.getElementById('para')!);
    click(document.getElementById('go')!);
    const events = await sent(c);
    expect(events.map((e) => e.element!.text)).toEqual([undefined, undefined, undefined, 'Pay now']);
    expect(JSON.stringify(gw.sent)).not.toContain('jane@example.com');
    expect(JSON.stringify(gw.sent)).not.toContain('private note');
  });

  it('keyboard and script clicks have no coordinates; data-insightflow-ignore opts an element out', async () => {
    document.body.innerHTML = `<button id="k">Go</button><div data-insightflow-ignore><button id="secret">Hidden</button></div>`;
    const c = start({ autocapture: { pageViews: false } });
    click(document.getElementById('k')!, null);
    click(document.getElementById('secret')!);
    const events = await sent(c);
    expect(events).toHaveLength(1);
    expect(events[0].element).not.toHaveProperty('x');
    expect(events[0].element).not.toHaveProperty('y');
  });
});

describe('selectors', () => {
  it('prefer a stable id or data-testid, skip generated ids and state classes, and stay short', () => {
    document.body.innerHTML = `
      <div id=":r1:"><section><div class="grid"><div class="row"><div class="col"><div class="cell">
        <span class="is-active label">x</span></div></div></div></div></section></div>
      <div data-testid="checkout"><button class="hover">Pay</button></div>`;
    const span = document.querySelector('span')!;
    expect(selectorOf(span)).toBe('div.grid > div.row > div.col > div.cell > span.label');
    expect(document.querySelector(selectorOf(span))).toBe(span);
    const pay = document.querySelector('[data-testid=checkout] button')!;
    expect(selectorOf(pay)).toBe('div[data-testid="checkout"] > button');
    expect(describeElement(pay).classes).toEqual(['hover']);
  });
});

describe('scroll depth', () => {
  it('reports 25/50/75/100 % once per page view', async () => {
    Object.defineProperty(document.documentElement, 'scrollHeight', { value: 4000, configurable: true });
    vi.stubGlobal('innerHeight', 1000);
    const c = start({ autocapture: { pageViews: true, clicks: false } });
    await vi.advanceTimersByTimeAsync(1);
    const scrollTo = async (y: number) => {
      vi.stubGlobal('scrollY', y);
      window.dispatchEvent(new Event('scroll'));
      await vi.advanceTimersByTimeAsync(300);
    };
    await scrollTo(1100); // 52 %: 25 and 50
    await scrollTo(900); // back up: nothing new
    await scrollTo(3000); // 100 %
    await scrollTo(3000);
    history.pushState({}, '', '/next'); // a new page view starts over
    await vi.advanceTimersByTimeAsync(1);
    await scrollTo(0);
    await scrollTo(2000); // 75 %
    const events = (await sent(c)).filter((e) => e.event_type === 'scroll');
    expect(events.map((e) => [e.page!.path, (e.properties as { depth: number }).depth])).toEqual([
      ['/', 25],
      ['/', 50],
      ['/', 75],
      ['/', 100],
      ['/next', 25],
      ['/next', 50],
      ['/next', 75],
    ]);
    expect(events[1].properties).toMatchObject({ max_px: 2100, page_height: 4000 });
    delete (document.documentElement as unknown as Record<string, unknown>).scrollHeight;
  });
});

describe('form submits', () => {
  it('carry the form’s id, name, method, action path and field count, never values', async () => {
    document.body.innerHTML = `
      <form id="checkout" name="checkout" class="form" method="POST" action="/pay?token=abc">
        <input name="card" value="4111111111111111"><input name="email" value="jane@example.com">
        <button type="submit">Pay</button></form>`;
    const c = start({ autocapture: { pageViews: false, clicks: false } });
    const form = document.querySelector('form')!;
    form.addEventListener('submit', (e) => e.preventDefault());
    form.dispatchEvent(new Event('submit', { bubbles: true, cancelable: true }));
    const [ev] = await sent(c);
    expect(ev.event_type).toBe('form_submit');
    expect(ev.element).toMatchObject({ tag: 'form', id: 'checkout', selector: '#checkout' });
    expect(ev.properties).toEqual({ form_id: 'checkout', form_name: 'checkout', method: 'post', action: '/pay', fields: 3 });
    const wire = JSON.stringify(gw.sent);
    expect(wire).not.toContain('4111');
    expect(wire).not.toContain('jane@');
    expect(wire).not.toContain('token=abc');
  });
});

describe('privacy', () => {
  it('optOut forgets the queue and sends nothing, across reloads, until optIn', async () => {
    let c = start({ autocapture: false });
    c.track('before');
    c.optOut();
    c.track('while_out');
    expect(c.stats().queued).toBe(0);
    c = start({ autocapture: false }); // a reload
    c.track('still_out');
    click(document.body);
    expect(await sent(c)).toEqual([]);
    sdk.optIn();
    c.track('back');
    expect((await sent(c)).map((e) => e.event_type)).toEqual(['back']);
  });

  it('optOut before init (a consent banner) is kept', async () => {
    vi.stubGlobal('localStorage', local);
    sdk.optOut();
    const c = start({ autocapture: false });
    c.track('x');
    expect(await sent(c)).toEqual([]);
  });

  it.each([
    ['navigator.doNotTrack = "1"', () => vi.spyOn(navigator, 'doNotTrack', 'get').mockReturnValue('1')],
    ['navigator.globalPrivacyControl = true', () => Object.defineProperty(navigator, 'globalPrivacyControl', { value: true, configurable: true })],
  ])('with respectDoNotTrack, %s sends nothing; without it, events flow', async (_, signal) => {
    signal();
    try {
      let c = start({ respectDoNotTrack: true });
      c.track('x');
      click(document.body);
      c.identify('u1');
      expect(await sent(c)).toEqual([]);
      c = start({ respectDoNotTrack: false, autocapture: false });
      c.track('x');
      expect((await sent(c)).map((e) => e.event_type)).toEqual(['x']);
    } finally {
      delete (navigator as unknown as Record<string, unknown>).globalPrivacyControl;
    }
  });
});

describe('the global API', () => {
  it('is inert before init and routes to the client after', async () => {
    expect(sdk.getAnonymousId()).toBeNull();
    sdk.track('ignored');
    await sdk.flush();
    const c = start({ autocapture: false });
    sdk.identify(7, { plan: 'pro' });
    sdk.track('custom_thing', { a: 1 });
    sdk.page();
    sdk.trackPurchase({ order_id: 'o1', total: 9.5, currency: 'EUR' });
    expect(sdk.getUserId()).toBe('7');
    expect(sdk.getSessionId()).toBe(c.getSessionId());
    expect(sdk.stats()!.queued).toBe(4);
    await sdk.flush();
    expect(gw.events().map((e) => e.event_type)).toEqual(['identify', 'custom_thing', 'page_view', 'purchase']);
  });
});
