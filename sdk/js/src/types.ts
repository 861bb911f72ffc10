import type { ElementInfo } from './element';

/** Which automatic events to capture; each is on unless switched off. */
export interface AutocaptureOptions {
  /** A page view at start and on every SPA navigation (pushState, replaceState, popstate). */
  pageViews?: boolean;
  /** Clicks: selector, tag, id, classes, a short label and page x/y (the heatmap's input). */
  clicks?: boolean;
  /** Scroll depth milestones 25/50/75/100 % per page view. */
  scroll?: boolean;
  /** Form submits: the form's id, name, method, action path and field count; never values. */
  forms?: boolean;
}

export interface InitOptions {
  /** The project's write key (public: it names a project, it protects nothing). */
  writeKey: string;
  /** The gateway, e.g. `https://ingest.example` (`/api/v1/events` is appended), or a full events URL. */
  endpoint: string;
  /** Send as soon as this many events wait (default 10). */
  batchSize?: number;
  /** Send waiting events at least this often (default 5000 ms). */
  flushIntervalMs?: number;
  /** At most this many events kept unsent; the oldest are dropped and counted beyond it (default 1000). */
  maxQueue?: number;
  /** `false` switches every automatic event off; an object switches them one by one. */
  autocapture?: boolean | AutocaptureOptions;
  /** Send nothing when the browser says Do-Not-Track or Global Privacy Control (default false). */
  respectDoNotTrack?: boolean;
  /** Log what the SDK does, and every refused or dropped event, to the console. */
  debug?: boolean;
  /** First retry delay (default 1000 ms), doubled per failure up to `retryMaxMs` (default 60000 ms). */
  retryBaseMs?: number;
  retryMaxMs?: number;
  /** Inactivity after which a new session starts (default 30 minutes). */
  sessionTimeoutMs?: number;
  /** Called once for every batch of events the SDK gave up on (refused by the gateway, or dropped when the queue was full). */
  onDiscard?: (report: DiscardReport) => void;
}

export interface DiscardReport {
  /** `rejected`: the gateway refused these events one by one (their field and reason given);
   *  `refused`: it refused the whole request (4xx); `queue_full`: dropped unsent, oldest first. */
  reason: 'rejected' | 'refused' | 'queue_full';
  events: Array<{ event_id: string; event_type: string; field?: string; reason?: string }>;
  /** For `refused`: the HTTP status and the gateway's error body. */
  status?: number;
  error?: { error?: string; field?: string; reason?: string };
}

export interface PageInfo {
  url: string;
  path: string;
  title?: string;
  referrer?: string;
}

/** One event in the gateway's canonical shape (docs/INGEST.md, "Canonical event"). */
export interface WireEvent {
  event_id: string;
  event_type: string;
  event_name?: string;
  user_id?: string;
  anonymous_id: string;
  session_id: string;
  timestamp: string;
  page?: PageInfo;
  element?: ElementInfo;
  properties?: Record<string, unknown>;
  user_properties?: Record<string, unknown>;
  context: {
    library: { name: string; version: string };
    screen?: { width: number; height: number };
    locale?: string;
    timezone?: string;
  };
}

export interface Order {
  order_id: string | number;
  /** The order's total, in `currency`. */
  total?: number;
  currency?: string;
  items?: Array<{ id?: string | number; sku?: string; name?: string; price?: number; quantity?: number; [k: string]: unknown }>;
  [k: string]: unknown;
}

export interface QueueStats {
  /** Events not yet acknowledged by the gateway (persisted). */
  queued: number;
  /** Events dropped unsent because the queue was full, since this tab's queue began. */
  dropped: number;
  /** Events the gateway refused. */
  refused: number;
}
