// The stats API as the dashboard uses it: same origin, `Authorization: Bearer <key>`, the
// project in the query. Shapes follow crates/worker/src/api/*.rs (docs/STATS_API.md).

/** The API's error body: `{"error", "field", "reason"}` (crates/worker/src/api/stats.rs). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly reason: string,
    /** From `Retry-After` (seconds or an HTTP date), when the answer had one. */
    readonly retryAfterSeconds: number | null,
  ) {
    super(reason ? `${code}: ${reason}` : code);
    this.name = "ApiError";
  }

  /** A cap of the server or a passing failure: worth trying again later. A wrong key, a
   * forbidden project or an invalid parameter is not. */
  get retryable(): boolean {
    return this.status === 0 || this.status === 408 || this.status === 429 || this.status >= 500;
  }

  /** The key is refused (401, 403, or the failed-authentication lock-out): nothing else
   * will work with it. */
  get refusesKey(): boolean {
    return (
      this.status === 401 ||
      this.status === 403 ||
      this.code === "too_many_failed_authentications"
    );
  }
}

/** `Retry-After` as seconds: delta-seconds or an HTTP date (RFC 9110 10.2.3). */
export function parseRetryAfter(raw: string | null, now: number = Date.now()): number | null {
  if (raw === null) return null;
  const trimmed = raw.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed);
  const at = Date.parse(trimmed);
  return Number.isNaN(at) ? null : Math.max(0, Math.ceil((at - now) / 1000));
}

/** Turns a refused answer into an `ApiError`, with the API's own words when it sent them. */
export async function errorOf(response: Response): Promise<ApiError> {
  let code = `http_${response.status}`;
  let reason = response.statusText;
  try {
    const body = (await response.json()) as { error?: unknown; reason?: unknown };
    if (typeof body.error === "string") code = body.error;
    if (typeof body.reason === "string") reason = body.reason;
  } catch {
    // Not JSON (a proxy's page): keep the status line.
  }
  return new ApiError(response.status, code, reason, parseRetryAfter(response.headers.get("Retry-After")));
}

export type Params = Record<string, string | number | undefined>;

export class StatsClient {
  constructor(
    private readonly key: string,
    readonly project: string,
  ) {}

  /** Relative to the page (`/ui/`), so the dashboard also works behind a path prefix. */
  url(path: string, params: Params = {}): string {
    const url = new URL(`../api/v1/${path}`, document.baseURI);
    url.searchParams.set("project", this.project);
    for (const [name, value] of Object.entries(params)) {
      if (value !== undefined) url.searchParams.set(name, String(value));
    }
    return url.toString();
  }

  /** A GET answered 2xx, or the refusal as an `ApiError` (status 0: no answer at all). */
  async fetch(path: string, params: Params = {}, init: RequestInit = {}): Promise<Response> {
    let response: Response;
    try {
      response = await fetch(this.url(path, params), {
        ...init,
        headers: { Authorization: `Bearer ${this.key}`, Accept: "application/json", ...init.headers },
        cache: "no-store",
        credentials: "omit",
      });
    } catch (e) {
      if (init.signal?.aborted) throw e;
      throw new ApiError(0, "network", "the worker did not answer", null);
    }
    if (!response.ok) throw await errorOf(response);
    return response;
  }

  async get<T>(path: string, params: Params = {}, signal?: AbortSignal): Promise<T> {
    const response = await this.fetch(path, params, { signal });
    return (await response.json()) as T;
  }
}

// Answers, reduced to the fields the dashboard reads.

export interface Online {
  online_users: number;
  seconds: number;
}

/** `/counts`: MySQL minute rollups over the range (default the last 24 h). */
export interface Counts {
  range: { from: string; to: string };
  total: number;
  counts: Record<string, number>;
}

export interface SeriesBucket {
  start: string;
  end: string;
  counts: Record<string, number>;
  total: number;
}

export interface Series {
  bucket: string;
  buckets: SeriesBucket[];
}

export interface HotPages {
  pages: { path: string; views: number }[];
}

export interface PageSessions {
  path: string;
  sessions: number;
}

/** `GET /sessions`: the sessions started in the range. */
export interface Sessions {
  sessions: number;
  bounces: number;
  bounce_rate: number;
  average_duration_seconds: number | null;
  median_duration_seconds: number | null;
  page_views: number;
  pages_per_session: number;
  entry_pages: PageSessions[];
  exit_pages: PageSessions[];
}

export interface Heatmap {
  page: string;
  elements: { selector: string | null; text: string | null; clicks: number; unique_users: number }[];
  grid: { cell_px: number; cells: { x: number; y: number; clicks: number }[] };
}

export interface FunnelStep {
  event_type: string;
  property?: string;
  value?: unknown;
}

export interface Funnel {
  id: number;
  name: string;
  steps: FunnelStep[];
  window_seconds: number;
  order_mode: string;
}

export interface Funnels {
  funnels: Funnel[];
}

export interface FunnelAnalysis {
  funnel: Funnel;
  mode: string;
  range: { from: string; to: string };
  steps: (FunnelStep & {
    step: number;
    users: number;
    conversion_from_first: number;
    conversion_from_previous: number;
    drop_off: number;
    median_seconds_from_previous: number | null;
  })[];
  overall_conversion: number;
}

export interface Conversion {
  start_event: string;
  end_event: string;
  range: { from: string; to: string };
  start_users: number;
  converted_users: number;
  conversion_rate: number;
  median_seconds_to_convert: number | null;
}

/** One `event: stats` frame of `/live` (crates/worker/src/api/live.rs). */
export interface LiveStats {
  at: string;
  online_users: number;
  online_seconds: number;
  /** All-time counts by type (Redis). */
  counts: Record<string, number>;
  /** Counts by type in the current UTC minute, by event time (Redis). */
  current_minute: Record<string, number>;
  as_of: { applied_events: number; newest_event_time: string | null };
  exact?: boolean;
  redis?: string;
}
