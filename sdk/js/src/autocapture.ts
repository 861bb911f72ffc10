/**
 * Automatic events: page views (also single-page-app navigation), clicks, scroll depth and
 * form submits. Everything listens passively on the document and never reads a field's value.
 */
import type { Client } from './client';
import { clickTarget, describe } from './element';
import type { AutocaptureOptions } from './types';

const MILESTONES = [25, 50, 75, 100];

export function autocapture(client: Client, w: Window & typeof globalThis, o: AutocaptureOptions): void {
  const doc = w.document;
  const on = (target: EventTarget, type: string, fn: (e: Event) => void, opts?: AddEventListenerOptions) => {
    target.addEventListener(type, fn, opts);
    client._addCleanup(() => target.removeEventListener(type, fn, opts));
  };
  let depth = 0; // the deepest milestone reported for the current page view
  client._onPage = () => (depth = 0);

  if (o.pageViews !== false) {
    let last = '';
    // A page view when the path or query changed. Checked a task later, so a router that
    // sets document.title after pushState is seen with its new title.
    const changed = () =>
      setTimeout(() => {
        const where = w.location.pathname + w.location.search;
        if (where !== last) {
          last = where;
          client.page();
        }
      }, 0);
    const h = w.history;
    for (const name of ['pushState', 'replaceState'] as const) {
      const original = h[name];
      const wrapped = function (this: History, ...args: Parameters<History['pushState']>) {
        const result = original.apply(this, args);
        changed();
        return result;
      };
      h[name] = wrapped;
      client._addCleanup(() => {
        if (h[name] === wrapped) h[name] = original;
      });
    }
    on(w, 'popstate', changed);
    if (doc.readyState === 'loading') on(doc, 'DOMContentLoaded', changed);
    else changed();
  }

  if (o.clicks !== false) {
    on(
      doc,
      'click',
      (e) => {
        const ev = e as MouseEvent;
        const el = clickTarget(ev.target);
        if (!el) return;
        const element = describe(el);
        // Keyboard and script clicks have no position: leave them out of the heatmap.
        if ((ev.detail || ev.clientX || ev.clientY) && typeof ev.pageX === 'number') {
          element.x = Math.max(0, Math.round(ev.pageX));
          element.y = Math.max(0, Math.round(ev.pageY));
        }
        const href = (el as HTMLAnchorElement).href;
        const properties = typeof href === 'string' && href ? { href: href.split(/[?#]/)[0] } : undefined;
        client._emit('click', { element, properties });
      },
      { capture: true },
    );
  }

  if (o.scroll !== false) {
    let waiting = false;
    const measure = () => {
      waiting = false;
      const height = Math.max(doc.documentElement.scrollHeight, doc.body ? doc.body.scrollHeight : 0);
      const seen = w.scrollY + w.innerHeight;
      if (height <= w.innerHeight) return;
      const percent = Math.min(100, Math.round((seen / height) * 100));
      for (const m of MILESTONES) {
        if (percent >= m && depth < m) {
          depth = m;
          client._emit('scroll', { properties: { depth: m, max_px: Math.round(seen), page_height: height } });
        }
      }
    };
    on(
      w,
      'scroll',
      () => {
        if (!waiting) {
          waiting = true;
          setTimeout(measure, 250);
        }
      },
      { passive: true },
    );
  }

  if (o.forms !== false) {
    on(
      doc,
      'submit',
      (e) => {
        const form = e.target as HTMLFormElement;
        if (!form || form.tagName !== 'FORM' || form.closest('[data-insightflow-ignore]')) return;
        const action = form.getAttribute('action');
        client._emit('form_submit', {
          element: describe(form),
          properties: {
            form_id: form.id || undefined,
            form_name: form.getAttribute('name') || undefined,
            method: (form.getAttribute('method') || 'get').toLowerCase(),
            action: action ? action.split(/[?#]/)[0] : undefined,
            fields: form.elements.length,
          },
        });
      },
      { capture: true },
    );
  }
}
