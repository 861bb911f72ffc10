// What the page shows. Elements carrying a figure get their `data-testid` only once they hold
// real data, so a test waiting for `[data-testid=online-users]` never reads a placeholder.
// Text only (textContent): nothing from the API is ever parsed as HTML, and the page runs
// under Trusted Types with no policy.

import type { Conversion, FunnelAnalysis, Heatmap, HotPages, Sessions } from "./api";
import { percent } from "./format";
import { drawHeatmap } from "./heatmap";
import type { SourceList } from "./sources";
import type { LiveStatus } from "./sse";

function byId<T extends HTMLElement>(id: string): T {
  const element = document.getElementById(id);
  if (!element) throw new Error(`the page has no #${id}`);
  return element as T;
}

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attributes: Record<string, string> = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  element.append(...children);
  return element;
}

function duration(seconds: number | null): string {
  if (seconds === null) return "–";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172_800) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86_400).toFixed(1)} d`;
}

/** A bar whose length is `share` of the row (CSSOM, which the CSP allows, not a style
 * attribute). */
function bar(share: number): HTMLElement {
  const fill = el("span", { class: "fill" });
  fill.style.width = `${Math.max(0, Math.min(1, share)) * 100}%`;
  return el("span", { class: "bar", "aria-hidden": "true" }, fill);
}

export class View {
  readonly form = byId<HTMLFormElement>("connect-form");
  readonly keyInput = byId<HTMLInputElement>("stats-key");
  readonly projectInput = byId<HTMLInputElement>("project");
  readonly heatmapSelect = byId<HTMLSelectElement>("heatmap-page");
  readonly timeseries = byId<HTMLElement>("timeseries");
  private readonly dashboard = byId<HTMLElement>("dashboard");
  private readonly error = byId<HTMLElement>("error");
  private readonly notice = byId<HTMLElement>("notice");
  private readonly liveStatus = byId<HTMLElement>("live-status");
  private readonly online = byId<HTMLElement>("online-users");
  private readonly total = byId<HTMLElement>("events-total");
  private readonly asOf = byId<HTMLElement>("as-of");
  private readonly counts = byId<HTMLUListElement>("counts");
  private readonly hotPages = byId<HTMLOListElement>("hot-pages");
  private readonly sessions = byId<HTMLElement>("sessions");
  private readonly entryPages = byId<HTMLOListElement>("entry-pages");
  private readonly heatmap = byId<HTMLCanvasElement>("heatmap");
  private readonly heatmapElements = byId<HTMLTableElement>("heatmap-elements");
  private readonly funnel = byId<HTMLElement>("funnel");
  private readonly funnelTitle = byId<HTMLElement>("funnel-title");
  private readonly sources = byId<HTMLElement>("sources");
  private readonly sourceLists = {
    channel: {
      list: byId<HTMLOListElement>("sources-channels"),
      note: byId<HTMLElement>("sources-channels-note"),
      caption: byId<HTMLElement>("sources-channels-caption"),
      testid: "sources-channels",
    },
    country: {
      list: byId<HTMLOListElement>("sources-countries"),
      note: byId<HTMLElement>("sources-countries-note"),
      caption: byId<HTMLElement>("sources-countries-caption"),
      testid: "sources-countries",
    },
  };
  private readonly countRows = new Map<string, { row: HTMLLIElement; fill: HTMLElement; value: HTMLElement }>();
  private noticeTimer: ReturnType<typeof setTimeout> | null = null;
  private lastHeatmap: Heatmap | null = null;

  /** Back to the state before any connection: nothing shown, no figure marked. */
  reset(): void {
    delete document.body.dataset.ready;
    this.dashboard.hidden = true;
    this.clearError();
    this.hideNotice();
    this.setLive({ state: "stopped", error: null });
    for (const element of [this.online, this.total]) {
      element.removeAttribute("data-testid");
      element.textContent = "–";
    }
    this.asOf.textContent = "\u00a0";
    this.counts.replaceChildren();
    this.countRows.clear();
    this.hotPages.replaceChildren();
    this.hotPages.removeAttribute("data-testid");
    this.heatmap.removeAttribute("data-testid");
    this.heatmapSelect.replaceChildren();
    this.heatmapElements.replaceChildren();
    this.funnel.replaceChildren();
    this.funnel.removeAttribute("data-testid");
    this.timeseries.removeAttribute("data-testid");
    this.sources.removeAttribute("data-testid");
    for (const part of Object.values(this.sourceLists)) {
      part.list.replaceChildren();
      part.list.removeAttribute("data-testid");
      part.note.textContent = "";
      part.note.hidden = true;
      part.caption.textContent = "";
    }
    this.lastHeatmap = null;
  }

  showDashboard(): void {
    this.dashboard.hidden = false;
  }

  markReady(): void {
    document.body.dataset.ready = "true";
  }

  showError(message: string): void {
    this.error.textContent = message;
    this.error.setAttribute("data-testid", "error");
    this.error.hidden = false;
  }

  clearError(): void {
    this.error.textContent = "";
    this.error.removeAttribute("data-testid");
    this.error.hidden = true;
  }

  /** A short notice (a cap of the API, a passing failure), gone after `forMs`; `detail`
   * (the API's reason) as its tooltip. */
  showNotice(message: string, detail: string, forMs = 8000): void {
    this.notice.textContent = message;
    this.notice.title = detail;
    this.notice.setAttribute("data-testid", "notice");
    this.notice.hidden = false;
    if (this.noticeTimer !== null) clearTimeout(this.noticeTimer);
    this.noticeTimer = setTimeout(() => this.hideNotice(), Math.max(4000, forMs));
  }

  private hideNotice(): void {
    if (this.noticeTimer !== null) clearTimeout(this.noticeTimer);
    this.noticeTimer = null;
    this.notice.textContent = "";
    this.notice.removeAttribute("data-testid");
    this.notice.hidden = true;
  }

  setLive(status: LiveStatus): void {
    const [text, css, title] = (() => {
      switch (status.state) {
        case "connecting":
          return ["connecting", "status-wait", "opening the /live stream"];
        case "live":
          return ["live", "status-live", "receiving /live updates every second"];
        case "waiting":
          return [`reconnecting in ${status.seconds} s`, "status-wait", status.reason];
        case "stopped":
          return ["off", "status-off", status.error?.message ?? "not connected"];
      }
    })();
    if (this.liveStatus.textContent !== text) this.liveStatus.textContent = text;
    this.liveStatus.className = css;
    this.liveStatus.title = title;
  }

  setOnline(users: number): void {
    this.online.textContent = String(users);
    this.online.setAttribute("data-testid", "online-users");
  }

  setAsOf(at: string, exact: boolean): void {
    const time = new Date(at);
    const label = Number.isNaN(time.getTime()) ? at : time.toLocaleTimeString();
    this.asOf.textContent = `live update ${label}${exact ? "" : " (Redis rebuilding: partial)"}`;
  }

  /** Counts by type over the last 24 h, with their sum as the total. */
  setCounts(counts: Record<string, number>): void {
    const entries = Object.entries(counts).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
    const most = entries.reduce((m, [, n]) => Math.max(m, n), 0);
    let total = 0;
    for (const [type, n] of entries) {
      total += n;
      let row = this.countRows.get(type);
      if (!row) {
        const value = el("span", { class: "value", "data-testid": `count-${type}` });
        const fillBar = bar(0);
        row = {
          row: el("li", {}, el("span", { class: "label" }, type), fillBar, value),
          fill: fillBar.firstElementChild as HTMLElement,
          value,
        };
        this.countRows.set(type, row);
      }
      row.value.textContent = String(n);
      row.fill.style.width = `${most > 0 ? (n / most) * 100 : 0}%`;
      this.counts.append(row.row); // moves it into sorted position
    }
    for (const [type, row] of this.countRows) {
      if (!(type in counts)) {
        row.row.remove();
        this.countRows.delete(type);
      }
    }
    this.total.textContent = String(total);
    this.total.setAttribute("data-testid", "events-total");
  }

  markTimeseries(): void {
    this.timeseries.setAttribute("data-testid", "timeseries");
  }

  setHotPages(answer: HotPages): void {
    const most = answer.pages.reduce((m, p) => Math.max(m, p.views), 0);
    const items = answer.pages.map((p) =>
      el(
        "li",
        { title: p.path },
        el("span", { class: "label path" }, p.path),
        bar(most > 0 ? p.views / most : 0),
        el("span", { class: "value" }, String(p.views)),
      ),
    );
    this.hotPages.replaceChildren(...items);
    // No pages: the list stays empty (one `li` per page, never a placeholder `li`); the
    // stylesheet says so with `:empty::before`.
    this.hotPages.setAttribute("data-testid", "hot-pages");
  }

  setSessions(answer: Sessions): void {
    const set = (id: string, text: string) => {
      byId<HTMLElement>(id).textContent = text;
    };
    set("sessions-count", String(answer.sessions));
    set("sessions-bounce", answer.sessions > 0 ? percent(answer.bounce_rate) : "–");
    set("sessions-median", duration(answer.median_duration_seconds));
    set("sessions-average", duration(answer.average_duration_seconds));
    set("sessions-pages", answer.sessions > 0 ? answer.pages_per_session.toFixed(2) : "–");
    this.sessions.setAttribute("data-testid", "sessions");
    const most = answer.entry_pages.reduce((m, p) => Math.max(m, p.sessions), 0);
    this.entryPages.replaceChildren(
      ...answer.entry_pages.slice(0, 5).map((p) =>
        el(
          "li",
          { title: p.path },
          el("span", { class: "label path" }, p.path),
          bar(most > 0 ? p.sessions / most : 0),
          el("span", { class: "value" }, String(p.sessions)),
        ),
      ),
    );
  }

  /** Visitors by channel and by country: one `li` per value (`data-value`: the API's value,
   * empty for none), or a note saying why there is none. */
  setSources(channels: SourceList, countries: SourceList): void {
    const parts = [
      [this.sourceLists.channel, channels],
      [this.sourceLists.country, countries],
    ] as const;
    for (const [part, answer] of parts) {
      part.list.replaceChildren(
        ...answer.rows.map((row) =>
          el(
            "li",
            { title: row.value ?? "no value", "data-value": row.value ?? "" },
            el("span", { class: "label" }, row.label),
            bar(row.share),
            el("span", { class: "value" }, String(row.users)),
            el("span", { class: "detail" }, `${row.shareText} of visitors`),
          ),
        ),
      );
      part.list.setAttribute("data-testid", part.testid);
      part.note.textContent = answer.note ?? "";
      part.note.title = answer.noteDetail ?? "";
      part.note.hidden = answer.note === null;
      part.caption.textContent = answer.caption;
    }
    this.sources.setAttribute("data-testid", "sources");
  }

  /** The heatmap's page choice: the hot pages, `selected` chosen. */
  setHeatmapPages(paths: string[], selected: string | null): void {
    const options = paths.map((path) => el("option", { value: path }, path));
    if (selected !== null && !paths.includes(selected)) options.unshift(el("option", { value: selected }, selected));
    if (options.length === 0) options.push(el("option", { value: "" }, "no pages yet"));
    this.heatmapSelect.replaceChildren(...options);
    this.heatmapSelect.value = selected ?? "";
  }

  setHeatmap(heatmap: Heatmap | null): void {
    this.lastHeatmap = heatmap;
    drawHeatmap(this.heatmap, heatmap);
    this.heatmap.setAttribute("data-testid", "heatmap");
    const rows = (heatmap?.elements ?? []).slice(0, 8).map((e) =>
      el(
        "tr",
        {},
        el("td", { class: "selector" }, e.selector ?? "(no selector)"),
        el("td", { class: "text" }, e.text ?? ""),
        el("td", { class: "value" }, `${e.clicks} clicks`),
        el("td", { class: "value" }, `${e.unique_users} users`),
      ),
    );
    this.heatmapElements.replaceChildren(...rows);
  }

  redrawHeatmap(): void {
    if (this.heatmap.hasAttribute("data-testid")) drawHeatmap(this.heatmap, this.lastHeatmap);
  }

  setFunnel(analysis: FunnelAnalysis): void {
    const first = analysis.steps[0]?.users ?? 0;
    this.funnelTitle.textContent = `Funnel “${analysis.funnel.name}”, last 7 days (${analysis.mode})`;
    const steps = analysis.steps.map((s) => {
      const filter = s.property ? ` (${s.property} = ${JSON.stringify(s.value)})` : "";
      return el(
        "li",
        {},
        el("span", { class: "label" }, `${s.step}. ${s.event_type}${filter}`),
        bar(first > 0 ? s.users / first : 0),
        el("span", { class: "value" }, `${s.users} users`),
        el(
          "span",
          { class: "detail" },
          s.step === 1
            ? "entered"
            : `${percent(s.conversion_from_previous)} of previous, ${s.drop_off} dropped, median ${duration(s.median_seconds_from_previous)}`,
        ),
      );
    });
    this.funnel.replaceChildren(
      el("ol", { class: "bars funnel-steps" }, ...steps),
      el("p", { class: "caption" }, `Overall conversion: ${percent(analysis.overall_conversion)}`),
    );
    this.funnel.setAttribute("data-testid", "funnel");
  }

  /** No funnel is defined: the A -> B conversion instead. */
  setConversion(conversion: Conversion): void {
    this.funnelTitle.textContent = `Conversion ${conversion.start_event} → ${conversion.end_event}, last 24 h`;
    const steps = [
      [conversion.start_event, conversion.start_users, 1],
      [conversion.end_event, conversion.converted_users, conversion.conversion_rate],
    ] as const;
    this.funnel.replaceChildren(
      el(
        "ol",
        { class: "bars funnel-steps" },
        ...steps.map(([type, users, share], i) =>
          el(
            "li",
            {},
            el("span", { class: "label" }, `${i + 1}. ${type}`),
            bar(share),
            el("span", { class: "value" }, `${users} users`),
            el("span", { class: "detail" }, i === 0 ? "entered" : `${percent(share)} converted`),
          ),
        ),
      ),
      el(
        "p",
        { class: "caption" },
        `No funnel is defined for this project (POST /api/v1/funnels with an admin key). ` +
          `Median time to convert: ${duration(conversion.median_seconds_to_convert)}.`,
      ),
    );
    this.funnel.setAttribute("data-testid", "funnel");
  }
}
