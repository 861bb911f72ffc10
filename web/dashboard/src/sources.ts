// The Sources panel's figures, without the DOM: where visitors came from (`$channel`) and
// where they are (`$country`), from `/breakdown` over page views in the page's range (the
// last 24 h, the API's default, like the other panels), bots excluded (the API's default).
//
// `/breakdown` ranks values by events; this panel ranks them by unique visitors, so it asks
// for every value (a dozen channels, at most a few hundred countries) and ranks them here.
// A value's share is of all visitors, counted once each by a second request over the same
// events: someone who arrived through two channels counts in both, so shares may add up to
// more than 100 %.

import type { Params } from "./api";
import { percent } from "./format";

export type SourceKind = "channel" | "country";

/** Values listed per dimension. */
export const SOURCES_TOP = 10;

/** `/breakdown`'s largest `limit`: more than there are channels or countries. */
const EVERY_VALUE = 1000;

const DIMENSIONS: Record<SourceKind, { by: string; filter?: string }> = {
  // A landing page's channel is where the visit came from; the pages after it are
  // `internal` (docs/STATS_API.md, "Filters and dimensions").
  channel: { by: "$channel", filter: "$channel!=internal" },
  country: { by: "$country" },
};

/** One value of a `/breakdown` answer, as this panel reads it. */
export interface BreakdownValue {
  value: string | null;
  unique_users: number;
}

/** The two `/breakdown` requests of a list: its values, and every visitor once (the one
 * value of `$event_type` among page views, under the same filter) for the shares. */
export function sourceRequests(kind: SourceKind): { values: Params; visitors: Params } {
  const { by, filter } = DIMENSIONS[kind];
  return {
    values: { event_type: "page_view", by, filter, limit: EVERY_VALUE },
    visitors: { event_type: "page_view", by: "$event_type", filter },
  };
}

/** The `values` of a `/breakdown` answer; throws on anything else, naming what is wrong
 * (the panel then says it failed instead of drawing nonsense). */
export function parseBreakdown(answer: unknown): BreakdownValue[] {
  const values = (answer as { values?: unknown } | null)?.values;
  if (!Array.isArray(values)) throw new Error("/breakdown answered without a values list");
  return values.map((item: unknown, i) => {
    const { value, unique_users } = (item ?? {}) as { value?: unknown; unique_users?: unknown };
    if (value !== null && typeof value !== "string") {
      throw new Error(`/breakdown values[${i}].value is neither a string nor null`);
    }
    if (typeof unique_users !== "number" || !Number.isInteger(unique_users) || unique_users < 0) {
      throw new Error(`/breakdown values[${i}].unique_users is not a count`);
    }
    return { value, unique_users };
  });
}

/** Visitors counted once: the answer to `sourceRequests(kind).visitors` has one value at
 * most (`page_view`), none when there were no page views. */
export function visitorsOf(values: BreakdownValue[]): number {
  return values.reduce((sum, v) => sum + v.unique_users, 0);
}

export interface SourceRow {
  /** As the API names it (`organic_search`, `FR`); null: the events had none. */
  value: string | null;
  label: string;
  users: number;
  /** Of all visitors, 0..1. */
  share: number;
  shareText: string;
}

export interface SourceList {
  rows: SourceRow[];
  visitors: number;
  /** Values ranked below the top ones, not listed. */
  more: number;
  /** What the shares are of (empty with no rows). */
  caption: string;
  /** Said instead of rows when there are none. */
  note: string | null;
  /** The note's longer explanation (a tooltip). */
  noteDetail: string | null;
}

const NO_VISITS = "no page views in the last 24 h";
export const NO_GEO = "no location data (geo.database not set)";
const NO_GEO_DETAIL =
  "No visitor has a country: the gateway has no geo.database (docs/INGEST.md), or no visitor's IP address is in it.";

/** The list a panel shows: the `top` values by visitors (ties by name, the unknown value
 * last), each with its share of `visitors`. */
export function sourceList(
  kind: SourceKind,
  values: BreakdownValue[],
  visitors: number,
  top: number = SOURCES_TOP,
): SourceList {
  const caption = (more: number) => {
    const whom = `${visitors} visitor${visitors === 1 ? "" : "s"}`;
    const of =
      kind === "channel"
        ? `share of the ${whom} who arrived (one who came through two channels counts in both)`
        : `share of the ${whom}`;
    return more > 0 ? `${of}; ${more} more not listed` : of;
  };
  const empty = (note: string, noteDetail: string | null = null): SourceList => ({
    rows: [],
    visitors,
    more: 0,
    caption: "",
    note,
    noteDetail,
  });
  const seen = values.filter((v) => v.unique_users > 0);
  if (seen.length === 0) return empty(NO_VISITS);
  if (kind === "country" && seen.every((v) => v.value === null)) return empty(NO_GEO, NO_GEO_DETAIL);
  const ranked = [...seen].sort(
    (a, b) =>
      b.unique_users - a.unique_users ||
      Number(a.value === null) - Number(b.value === null) ||
      (a.value ?? "").localeCompare(b.value ?? ""),
  );
  const rows = ranked.slice(0, top).map((v) => {
    const share = visitors > 0 ? Math.min(1, v.unique_users / visitors) : 0;
    return {
      value: v.value,
      label: kind === "channel" ? channelLabel(v.value) : countryLabel(v.value),
      users: v.unique_users,
      share,
      shareText: percent(share),
    };
  });
  const more = ranked.length - rows.length;
  return { rows, visitors, more, caption: caption(more), note: null, noteDetail: null };
}

/** `organic_search` -> "Organic search"; a channel this page does not know reads the same way. */
export function channelLabel(value: string | null): string {
  if (value === null || value === "") return "unknown";
  const words = value.replace(/_/g, " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

let regionNames: Intl.DisplayNames | null | undefined;

/** `FR` -> "France (FR)"; the code alone where the browser knows no name for it. */
export function countryLabel(value: string | null): string {
  if (value === null || value === "") return "unknown";
  if (regionNames === undefined) {
    try {
      regionNames = new Intl.DisplayNames(["en"], { type: "region", fallback: "none" });
    } catch {
      regionNames = null;
    }
  }
  let name: string | undefined;
  try {
    name = regionNames?.of(value);
  } catch {
    name = undefined; // not a well-formed region code
  }
  return name && name !== value ? `${name} (${value})` : value;
}
