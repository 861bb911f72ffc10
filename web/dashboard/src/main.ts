// The live dashboard: served by the worker at /ui/, reading the stats API of the same origin
// with the key the user pastes (kept in sessionStorage, for this tab only).
//
// Where each figure comes from:
// - online users: `/online` once (it also checks the key), then every `/live` frame;
// - events by type and `events-total`: `/counts` (MySQL minute rollups, the last 24 h; the
//   total is the sum of the counts, which is `/counts`'s own `total`). A `/live` frame whose
//   all-time counts grew adds the difference at once, and `/counts` is read again within a
//   second to replace the estimate with the exact figures;
// - events per minute: `/timeseries?bucket=minute` (the last hour), the current minute kept
//   up to date from each frame's `current_minute`;
// - sources: `/breakdown` of page views by `$channel` (landing pages only) and by `$country`,
//   ranked by unique visitors, with their shares (sources.ts);
// - hot pages `/pages/hot`, the heatmap `/heatmap` of the hottest page (or the one picked),
//   the first funnel's `/funnels/{id}/analysis` or, with no funnel, `/conversion`
//   page_view -> purchase: read again when live updates show new events of their kind, no
//   more often than their `minMs`, and every `maxMs` regardless as their windows slide.

import "./style.css";
import {
  ApiError,
  type Conversion,
  type Counts,
  type FunnelAnalysis,
  type Funnels,
  type Heatmap,
  type HotPages,
  type LiveStats,
  type Online,
  type Series,
  type SeriesBucket,
  type Sessions,
  StatsClient,
} from "./api";
import { SeriesChart } from "./chart";
import { parseBreakdown, type SourceKind, sourceList, sourceRequests, visitorsOf } from "./sources";
import { Backoff, LiveStream, retryDelayMs } from "./sse";
import { View } from "./view";

const KEY_STORAGE = "insightflow.stats-key";
const PROJECT_STORAGE = "insightflow.project";
const HEATMAP_CELL_PX = 25;

type PanelName =
  | "online"
  | "counts"
  | "timeseries"
  | "hotPages"
  | "sessions"
  | "sources"
  | "heatmap"
  | "funnel";

interface PanelSpec {
  title: string;
  /** Read again no sooner than this after live updates made it stale. */
  minMs: number;
  /** Read again at least this often (its window slides). */
  maxMs: number;
  /** Only once that panel has rendered (the heatmap needs the hottest page). */
  after?: PanelName;
  /** Only while this holds (`/online` is polled only while the stream is down). */
  when?: () => boolean;
  load: (signal: AbortSignal) => Promise<void>;
}

interface Panel extends PanelSpec {
  name: PanelName;
  rendered: boolean;
  stale: boolean;
  running: boolean;
  loadedAt: number;
  notBefore: number;
  backoff: Backoff;
}

class Session {
  private readonly abort = new AbortController();
  private readonly live: LiveStream;
  private readonly chart: SeriesChart;
  private readonly panels: Map<PanelName, Panel>;
  private ticker: ReturnType<typeof setInterval> | null = null;
  private stopped = false;
  private ready = false;
  private liveConnected = false;
  /** Counts by type over the last 24 h, as shown. */
  private counts: Record<string, number> = {};
  /** All-time counts of the previous `/live` frame. */
  private allTime: Record<string, number> | null = null;
  private buckets: SeriesBucket[] | null = null;
  private hotPaths: string[] = [];
  /** The page picked for the heatmap; null: the hottest. */
  private heatmapChoice: string | null = null;
  private heatmapShown: string | null = null;

  constructor(
    private readonly client: StatsClient,
    private readonly view: View,
  ) {
    this.chart = new SeriesChart(view.timeseries);
    this.live = new LiveStream(client, {
      stats: (frame) => this.onLive(frame),
      serverError: (reason) => this.view.showNotice(`Live stream: ${reason}; it goes on`, reason),
      status: (status) => {
        if (this.stopped) return;
        this.liveConnected = status.state === "live";
        this.view.setLive(status);
        if (status.state === "stopped" && status.error) this.fail(status.error);
      },
    });
    const specs: Record<PanelName, PanelSpec> = {
      online: {
        title: "Online users",
        minMs: 5000,
        maxMs: 5000,
        when: () => !this.liveConnected,
        load: async (signal) => {
          const online = await this.client.get<Online>("online", {}, signal);
          this.view.setOnline(online.online_users);
        },
      },
      counts: {
        title: "Events by type",
        minMs: 1000,
        maxMs: 60_000,
        load: async (signal) => {
          const answer = await this.client.get<Counts>("counts", {}, signal);
          this.counts = { ...answer.counts };
          this.view.setCounts(this.counts);
        },
      },
      timeseries: {
        title: "Events per minute",
        minMs: 60_000,
        maxMs: 60_000,
        load: async (signal) => {
          // The API's default range for minute buckets is the last hour.
          const answer = await this.client.get<Series>("timeseries", { bucket: "minute" }, signal);
          this.buckets = answer.buckets;
          this.chart.render(this.buckets);
          this.view.markTimeseries();
        },
      },
      hotPages: {
        title: "Hot pages",
        minMs: 5000,
        maxMs: 60_000,
        load: async (signal) => {
          const answer = await this.client.get<HotPages>("pages/hot", { limit: 10 }, signal);
          this.hotPaths = answer.pages.map((p) => p.path);
          this.view.setHotPages(answer);
          this.view.setHeatmapPages(this.hotPaths, this.heatmapPage());
          if (this.heatmapPage() !== this.heatmapShown) this.refresh("heatmap");
        },
      },
      sessions: {
        title: "Sessions",
        minMs: 30_000,
        maxMs: 120_000,
        load: async (signal) => {
          this.view.setSessions(await this.client.get<Sessions>("sessions", { pages: 5 }, signal));
        },
      },
      sources: {
        title: "Sources",
        minMs: 30_000,
        maxMs: 120_000,
        load: async (signal) => {
          // One after the other: four heavy queries at once would crowd the API's cap on them.
          // The values before the visitors they are shares of, so that a visitor arriving in
          // between can only make a share smaller.
          const read = async (kind: SourceKind) => {
            const requests = sourceRequests(kind);
            const values = parseBreakdown(await this.client.get<unknown>("breakdown", requests.values, signal));
            const visitors = parseBreakdown(await this.client.get<unknown>("breakdown", requests.visitors, signal));
            return sourceList(kind, values, visitorsOf(visitors));
          };
          const channels = await read("channel");
          const countries = await read("country");
          this.view.setSources(channels, countries);
        },
      },
      heatmap: {
        title: "Click heatmap",
        minMs: 10_000,
        maxMs: 120_000,
        after: "hotPages",
        load: async (signal) => {
          const page = this.heatmapPage();
          const answer =
            page === null
              ? null
              : await this.client.get<Heatmap>("heatmap", { page, cell: HEATMAP_CELL_PX }, signal);
          this.heatmapShown = page;
          this.view.setHeatmap(answer);
        },
      },
      funnel: {
        title: "Funnel",
        minMs: 30_000,
        maxMs: 120_000,
        load: async (signal) => {
          const { funnels } = await this.client.get<Funnels>("funnels", {}, signal);
          const first = funnels[0];
          if (first) {
            const path = `funnels/${encodeURIComponent(String(first.id))}/analysis`;
            this.view.setFunnel(await this.client.get<FunnelAnalysis>(path, {}, signal));
          } else {
            const params = { start_event: "page_view", end_event: "purchase" };
            this.view.setConversion(await this.client.get<Conversion>("conversion", params, signal));
          }
        },
      },
    };
    this.panels = new Map(
      (Object.entries(specs) as [PanelName, PanelSpec][]).map(([name, spec]) => [
        name,
        {
          ...spec,
          name,
          rendered: false,
          stale: false,
          running: false,
          loadedAt: 0,
          notBefore: 0,
          backoff: new Backoff(2000, 60_000),
        },
      ]),
    );
  }

  /** Checks the key with one request (a wrong key costs one failed authentication, not one
   * per panel), then opens the stream and loads every panel. False: the key was refused. */
  async start(): Promise<boolean> {
    const connectBackoff = new Backoff(2000, 60_000);
    for (;;) {
      try {
        const online = await this.client.get<Online>("online", {}, this.abort.signal);
        if (this.stopped) return false;
        this.view.setOnline(online.online_users);
        break;
      } catch (e) {
        if (this.stopped) return false;
        if (e instanceof ApiError && e.retryable && !e.refusesKey) {
          const delay = retryDelayMs(e, connectBackoff);
          this.view.showNotice(`Connecting: ${brief(e)}; trying again in ${Math.ceil(delay / 1000)} s`, e.message, delay);
          await new Promise((resolve) => setTimeout(resolve, delay));
          if (this.stopped) return false;
          continue;
        }
        this.fail(e);
        return false;
      }
    }
    const online = this.panels.get("online");
    if (online) {
      online.rendered = true;
      online.loadedAt = Date.now();
    }
    this.view.showDashboard();
    this.live.start();
    this.tick();
    this.ticker = setInterval(() => this.tick(), 250);
    return true;
  }

  stop(): void {
    this.stopped = true;
    this.abort.abort();
    this.live.stop();
    if (this.ticker !== null) clearInterval(this.ticker);
    this.ticker = null;
    this.chart.destroy();
  }

  chooseHeatmapPage(page: string): void {
    this.heatmapChoice = page === "" ? null : page;
    this.refresh("heatmap");
  }

  resize(): void {
    this.chart.resize();
    this.view.redrawHeatmap();
  }

  private heatmapPage(): string | null {
    return this.heatmapChoice ?? this.hotPaths[0] ?? null;
  }

  private fail(error: unknown): void {
    this.stop();
    this.view.setLive({ state: "stopped", error: error instanceof ApiError ? error : null });
    this.view.showError(error instanceof Error ? error.message : String(error));
  }

  /** Marks a panel stale; `now` also skips its `minMs`. */
  private refresh(name: PanelName, now = true): void {
    const panel = this.panels.get(name);
    if (!panel) return;
    panel.stale = true;
    if (now) panel.loadedAt = 0;
  }

  private tick(): void {
    if (this.stopped) return;
    const now = Date.now();
    for (const panel of this.panels.values()) {
      if (panel.running || now < panel.notBefore) continue;
      if (panel.when && !panel.when()) continue;
      if (panel.after && !this.panels.get(panel.after)?.rendered) continue;
      const since = now - panel.loadedAt;
      if (!panel.rendered || (panel.stale && since >= panel.minMs) || since >= panel.maxMs) {
        void this.run(panel);
      }
    }
  }

  private async run(panel: Panel): Promise<void> {
    panel.running = true;
    // Cleared before the request: live updates arriving meanwhile make it stale again.
    panel.stale = false;
    try {
      await panel.load(this.abort.signal);
      if (this.stopped) return;
      panel.rendered = true;
      panel.loadedAt = Date.now();
      panel.backoff.reset();
      if (!this.ready && [...this.panels.values()].every((p) => p.rendered)) {
        this.ready = true;
        this.view.markReady();
      }
    } catch (e) {
      if (this.stopped) return;
      if (e instanceof ApiError && e.refusesKey) {
        this.fail(e);
        return;
      }
      // 429 and 503 name their Retry-After; a bug or a 400 is retried slowly.
      const retryable = !(e instanceof ApiError) || e.retryable;
      const delay = retryable ? retryDelayMs(e, panel.backoff) : 60_000;
      panel.notBefore = Date.now() + delay;
      panel.stale = true;
      const message = e instanceof Error ? e.message : String(e);
      this.view.showNotice(`${panel.title}: ${brief(e)}; trying again in ${Math.ceil(delay / 1000)} s`, message, delay);
      if (!(e instanceof ApiError)) console.error(e);
    } finally {
      panel.running = false;
    }
  }

  private onLive(frame: LiveStats): void {
    if (this.stopped) return;
    this.view.setOnline(frame.online_users);
    const exact = frame.exact !== false;
    this.view.setAsOf(frame.at, exact);
    const previous = this.allTime;
    this.allTime = frame.counts;
    if (previous) this.applyNewEvents(previous, frame.counts, exact);
    this.updateCurrentMinute(frame);
  }

  /** New events since the previous frame: shown at once, then read exactly. */
  private applyNewEvents(previous: Record<string, number>, current: Record<string, number>, exact: boolean): void {
    const grown: Record<string, number> = {};
    let changed = false;
    for (const type of new Set([...Object.keys(previous), ...Object.keys(current)])) {
      const delta = (current[type] ?? 0) - (previous[type] ?? 0);
      if (delta !== 0) changed = true;
      if (delta > 0) grown[type] = delta;
    }
    if (!changed) return;
    // While Redis rebuilds its counts move for reasons other than new events: no estimate.
    if (exact && this.panels.get("counts")?.rendered) {
      for (const [type, delta] of Object.entries(grown)) this.counts[type] = (this.counts[type] ?? 0) + delta;
      this.view.setCounts(this.counts);
    }
    this.refresh("counts", false);
    this.refresh("funnel", false);
    if ("page_view" in grown) {
      this.refresh("hotPages", false);
      this.refresh("sources", false);
    }
    if ("click" in grown) this.refresh("heatmap", false);
  }

  /** The chart's current minute from the frame's `current_minute` (Redis, by event time;
   * written after MySQL, so never behind the series read before it: the larger is kept). */
  private updateCurrentMinute(frame: LiveStats): void {
    const buckets = this.buckets;
    const at = Date.parse(frame.at);
    if (!buckets || buckets.length === 0 || Number.isNaN(at)) return;
    const minute = Math.floor(at / 60_000) * 60_000;
    // The minute rolled over: new buckets at the end, as many dropped at the start.
    for (let last = Date.parse(buckets[buckets.length - 1].start); last < minute; last += 60_000) {
      buckets.push({
        start: new Date(last + 60_000).toISOString(),
        end: new Date(last + 120_000).toISOString(),
        counts: {},
        total: 0,
      });
      buckets.shift();
    }
    const bucket = buckets.find((b) => Date.parse(b.start) === minute);
    if (!bucket) return;
    let changed = false;
    for (const [type, n] of Object.entries(frame.current_minute)) {
      if (n > (bucket.counts[type] ?? 0)) {
        bucket.counts[type] = n;
        changed = true;
      }
    }
    if (!changed) return;
    bucket.total = Object.values(bucket.counts).reduce((sum, n) => sum + n, 0);
    this.chart.render(buckets);
  }
}

/** A refusal in a few words for the notice; the API's full reason goes in its tooltip. */
function brief(error: unknown): string {
  if (!(error instanceof ApiError)) return "the panel failed to render (see the console)";
  return error.status === 0 ? "the worker did not answer" : `${error.code} (HTTP ${error.status})`;
}

function storage(): Storage | null {
  try {
    return window.sessionStorage;
  } catch {
    return null; // storage disabled: the key is simply not remembered
  }
}

function boot(): void {
  const view = new View();
  let session: Session | null = null;

  const connect = async (key: string, project: string) => {
    session?.stop();
    view.reset();
    const current = new Session(new StatsClient(key, project), view);
    session = current;
    // Remembered for a reload of this tab once the API accepted it, and forgotten if not.
    if (await current.start()) {
      storage()?.setItem(KEY_STORAGE, key);
      storage()?.setItem(PROJECT_STORAGE, project);
    } else if (session === current) {
      storage()?.removeItem(KEY_STORAGE);
    }
  };

  view.form.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = view.keyInput.value.trim();
    const project = view.projectInput.value.trim() || "default";
    if (key === "") {
      view.showError("Paste a stats API key first.");
      return;
    }
    void connect(key, project);
  });
  view.heatmapSelect.addEventListener("change", () => session?.chooseHeatmapPage(view.heatmapSelect.value));
  let resizing: ReturnType<typeof setTimeout> | null = null;
  window.addEventListener("resize", () => {
    if (resizing !== null) clearTimeout(resizing);
    resizing = setTimeout(() => session?.resize(), 150);
  });

  // A reload of this tab reconnects with the key it had.
  const savedKey = storage()?.getItem(KEY_STORAGE);
  if (savedKey) {
    view.keyInput.value = savedKey;
    view.projectInput.value = storage()?.getItem(PROJECT_STORAGE) || "default";
    void connect(savedKey, view.projectInput.value);
  }
}

boot();
