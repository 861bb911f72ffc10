// The Sources panel's figures (src/sources.ts): the requests, reading `/breakdown`, ranking by
// visitors, shares, labels and the notes. Expected rows come from the events the test makes
// up, counted here on their own (sets of people per value), never from the code under test.
import assert from "node:assert/strict";
import { test } from "node:test";
import { percent } from "../src/format";
import {
  type BreakdownValue,
  channelLabel,
  countryLabel,
  NO_GEO,
  parseBreakdown,
  sourceList,
  sourceRequests,
  visitorsOf,
} from "../src/sources";

/** A page view: who, and the dimension's value on it (null: none). */
type View = [person: string, value: string | null];

/** What `/breakdown?by=<dimension>` answers over these page views: per value, events and
 * distinct people, ordered as the API orders them (events, then value). */
function breakdownAnswer(views: View[]): { values: { value: string | null; events: number; unique_users: number }[] } {
  const byValue = new Map<string | null, { events: number; people: Set<string> }>();
  for (const [person, value] of views) {
    const entry = byValue.get(value) ?? { events: 0, people: new Set<string>() };
    entry.events += 1;
    entry.people.add(person);
    byValue.set(value, entry);
  }
  const values = [...byValue].map(([value, e]) => ({ value, events: e.events, unique_users: e.people.size }));
  values.sort((a, b) => b.events - a.events || String(a.value).localeCompare(String(b.value)));
  return { values };
}

/** The answer of the visitors request (`by=$event_type` among page views): one row. */
function visitorsAnswer(views: View[]): unknown {
  const people = new Set(views.map(([person]) => person));
  return { values: people.size === 0 ? [] : [{ value: "page_view", events: views.length, unique_users: people.size }] };
}

function read(kind: "channel" | "country", views: View[]) {
  const values = parseBreakdown(JSON.parse(JSON.stringify(breakdownAnswer(views))));
  const visitors = visitorsOf(parseBreakdown(visitorsAnswer(views)));
  return sourceList(kind, values, visitors);
}

test("the requests: page views by channel without internal pages, by country, and visitors once each", () => {
  assert.deepEqual(sourceRequests("channel"), {
    values: { event_type: "page_view", by: "$channel", filter: "$channel!=internal", limit: 1000 },
    visitors: { event_type: "page_view", by: "$event_type", filter: "$channel!=internal" },
  });
  assert.deepEqual(sourceRequests("country"), {
    values: { event_type: "page_view", by: "$country", filter: undefined, limit: 1000 },
    visitors: { event_type: "page_view", by: "$event_type", filter: undefined },
  });
});

test("channels are ranked by visitors, not by events, with shares of all visitors", () => {
  // eve makes the most events from one referral; dave came twice, through two channels.
  const views: View[] = [
    ["alice", "organic_search"],
    ["alice", "organic_search"],
    ["alice", "organic_search"],
    ["bob", "direct"],
    ["carol", "direct"],
    ["dave", "organic_search"],
    ["dave", "email"],
    ["eve", "referral"],
    ["eve", "referral"],
    ["eve", "referral"],
    ["eve", "referral"],
    ["eve", "referral"],
  ];
  assert.equal(breakdownAnswer(views).values[0].value, "referral", "the API's first value is the one with most events");
  const list = read("channel", views);
  assert.equal(list.visitors, 5);
  assert.deepEqual(
    list.rows.map((r) => [r.value, r.label, r.users, r.shareText]),
    [
      ["direct", "Direct", 2, "40%"],
      ["organic_search", "Organic search", 2, "40%"],
      ["email", "Email", 1, "20%"],
      ["referral", "Referral", 1, "20%"],
    ],
  );
  assert.deepEqual(
    list.rows.map((r) => r.share),
    [2 / 5, 2 / 5, 1 / 5, 1 / 5],
  );
  assert.equal(list.more, 0);
  assert.equal(list.note, null);
  assert.equal(list.caption, "share of the 5 visitors who arrived (one who came through two channels counts in both)");
});

/** A small deterministic generator (mulberry32), so a failure can be replayed. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

test("the top 10 countries of many, by visitors, the unknown country ranked after a tie", () => {
  const countries = ["FR", "DE", "US", "IN", "BR", "JP", "GB", "ES", "IT", "NL", "SE", "PL", "CA", "MX", null];
  for (const seed of [1, 2, 3, 42, 1234]) {
    const next = random(seed);
    const views: View[] = [];
    for (let i = 0; i < 600; i++) {
      // Skewed: low indexes are more frequent, people repeat, a person may travel.
      const country = countries[Math.floor(next() ** 2 * countries.length)];
      views.push([`p${Math.floor(next() * 150)}`, country]);
    }
    // Independently: the people of each country, then the best ten by picking the largest
    // remaining each time (ties: a known country first, then by code).
    const people = new Map<string | null, Set<string>>();
    for (const [person, country] of views) {
      if (!people.has(country)) people.set(country, new Set());
      people.get(country)?.add(person);
    }
    const everyone = new Set(views.map(([person]) => person)).size;
    const left = [...people].map(([country, set]) => ({ country, users: set.size }));
    const expected: [string | null, number, number][] = [];
    while (expected.length < 10 && left.length > 0) {
      let best = 0;
      for (let i = 1; i < left.length; i++) {
        const [a, b] = [left[i], left[best]];
        const better =
          a.users > b.users ||
          (a.users === b.users &&
            ((a.country !== null && b.country === null) ||
              (a.country !== null && b.country !== null && a.country < b.country)));
        if (better) best = i;
      }
      const [pick] = left.splice(best, 1);
      expected.push([pick.country, pick.users, pick.users / everyone]);
    }

    const list = read("country", views);
    assert.equal(list.visitors, everyone, `seed ${seed}: visitors`);
    assert.deepEqual(
      list.rows.map((r) => [r.value, r.users, r.share]),
      expected,
      `seed ${seed}: rows`,
    );
    assert.equal(list.more, people.size - 10, `seed ${seed}: values not listed`);
    assert.equal(list.caption, `share of the ${everyone} visitors; ${people.size - 10} more not listed`);
  }
});

test("a project without geo data: every country unknown says so, and lists nothing", () => {
  const views: View[] = [
    ["alice", null],
    ["bob", null],
    ["bob", null],
  ];
  const list = read("country", views);
  assert.deepEqual(list.rows, []);
  assert.equal(list.note, "no location data (geo.database not set)");
  assert.equal(NO_GEO, "no location data (geo.database not set)");
  assert.match(list.noteDetail ?? "", /geo\.database/);
  assert.equal(list.visitors, 2);

  // Channels without a value are only unknown, not a missing database.
  const channels = read("channel", views);
  assert.deepEqual(
    channels.rows.map((r) => [r.value, r.label, r.users, r.shareText]),
    [[null, "unknown", 2, "100%"]],
  );
  assert.equal(channels.note, null);
});

test("some visitors located, some not: the unknown ones are a row of their own", () => {
  const list = read("country", [
    ["alice", "FR"],
    ["bob", null],
    ["carol", "DE"],
    ["carol", "DE"],
  ]);
  assert.deepEqual(
    list.rows.map((r) => [r.label, r.users, r.shareText]),
    [
      ["Germany (DE)", 1, "33%"],
      ["France (FR)", 1, "33%"],
      ["unknown", 1, "33%"],
    ],
  );
});

test("no page views in the range: a note for both lists, no rows", () => {
  for (const kind of ["channel", "country"] as const) {
    const list = read(kind, []);
    assert.deepEqual(list.rows, [], kind);
    assert.equal(list.visitors, 0, kind);
    assert.equal(list.note, "no page views in the last 24 h", kind);
    assert.equal(list.caption, "", kind);
  }
  // A value with no visitors left (its events gone from the window) is no row either.
  const stale: BreakdownValue[] = [{ value: "direct", unique_users: 0 }];
  assert.equal(sourceList("channel", stale, 0).note, "no page views in the last 24 h");
});

test("a share never passes 100%, even if the visitors were read before new ones arrived", () => {
  const list = sourceList("channel", [{ value: "direct", unique_users: 3 }], 2);
  assert.equal(list.rows[0].share, 1);
  assert.equal(list.rows[0].shareText, "100%");
  assert.equal(list.caption, "share of the 2 visitors who arrived (one who came through two channels counts in both)");
  assert.equal(sourceList("country", [{ value: "FR", unique_users: 1 }], 1).caption, "share of the 1 visitor");
});

test("labels: channels in words, countries by name and code", () => {
  assert.equal(channelLabel("organic_search"), "Organic search");
  assert.equal(channelLabel("other_campaign"), "Other campaign");
  assert.equal(channelLabel("direct"), "Direct");
  assert.equal(channelLabel("a_new_channel"), "A new channel");
  assert.equal(channelLabel(null), "unknown");
  assert.equal(countryLabel("FR"), "France (FR)");
  assert.equal(countryLabel("JP"), "Japan (JP)");
  assert.equal(countryLabel("XX"), "XX", "a code with no name reads as the code");
  assert.equal(countryLabel("F1"), "F1", "not a region code: as it came");
  assert.equal(countryLabel(null), "unknown");
});

test("reading /breakdown: its values, or an error naming what is wrong", () => {
  const answer = {
    project: "shop",
    by: "$channel",
    values: [
      { value: "direct", events: 4, unique_users: 3 },
      { value: null, events: 1, unique_users: 1 },
    ],
  };
  assert.deepEqual(parseBreakdown(answer), [
    { value: "direct", unique_users: 3 },
    { value: null, unique_users: 1 },
  ]);
  assert.equal(visitorsOf(parseBreakdown({ values: [] })), 0);
  assert.throws(() => parseBreakdown({ error: "busy" }), /without a values list/);
  assert.throws(() => parseBreakdown(null), /without a values list/);
  assert.throws(() => parseBreakdown({ values: [{ value: 7, unique_users: 1 }] }), /values\[0\]\.value/);
  assert.throws(() => parseBreakdown({ values: [{ value: "x", unique_users: "2" }] }), /values\[0\]\.unique_users/);
  assert.throws(() => parseBreakdown({ values: [{ value: "x", unique_users: 1.5 }] }), /values\[0\]\.unique_users/);
  assert.throws(() => parseBreakdown({ values: [null] }), /values\[0\]\.value/);
});

test("percentages: whole, with a decimal under 10%", () => {
  assert.equal(percent(0.4), "40%");
  assert.equal(percent(1 / 3), "33%");
  assert.equal(percent(0.05), "5.0%");
  assert.equal(percent(1 / 150), "0.7%");
  assert.equal(percent(0), "0%");
  assert.equal(percent(1), "100%");
});
