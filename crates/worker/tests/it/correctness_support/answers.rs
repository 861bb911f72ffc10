//! Reading the stats API's answers and comparing them with the expected ones.

use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::BTreeMap;

use super::dataset::utc;
use super::expected::{Bucket, Local};

/// A query-string time.
pub fn q(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The effective range an answer echoes.
pub fn range_of(body: &Value) -> (DateTime<Utc>, DateTime<Utc>) {
    let t = |v: &Value| utc(v.as_str().unwrap_or_else(|| panic!("a range: {body}")));
    (t(&body["range"]["from"]), t(&body["range"]["to"]))
}

/// Every summary figure of `figures` is above zero.
pub fn nonzero(figures: &Value, what: &str) {
    for name in ["events", "page_views", "unique_users", "sessions"] {
        assert!(
            figures[name].as_u64() > Some(0),
            "the data set gives {what} some {name}: {figures}"
        );
    }
}

/// The API's buckets, checked to be contiguous and to total their counts.
pub fn buckets_of(body: &Value) -> Vec<Bucket> {
    let buckets: Vec<Bucket> = body["buckets"]
        .as_array()
        .unwrap_or_else(|| panic!("buckets: {body}"))
        .iter()
        .map(|b| {
            let counts: BTreeMap<String, i64> =
                serde_json::from_value(b["counts"].clone()).expect("counts");
            let bucket = Bucket {
                start: Local::parse(b["start"].as_str().expect("start")),
                end: Local::parse(b["end"].as_str().expect("end")),
                counts,
            };
            assert_eq!(b["total"].as_i64(), Some(bucket.total()), "{b}");
            bucket
        })
        .collect();
    for pair in buckets.windows(2) {
        assert_eq!(pair[0].end, pair[1].start, "buckets are contiguous");
    }
    buckets
}

/// Compares a series bucket by bucket, naming the first that differs.
pub fn same_series(what: &str, got: &[Bucket], expected: &[Bucket]) {
    assert!(
        expected.iter().any(|b| b.total() > 0),
        "{what}: the data set puts events in the range"
    );
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        assert_eq!(g, e, "{what}: bucket {i} ({} .. {})", e.start, e.end);
    }
    assert_eq!(got.len(), expected.len(), "{what}: buckets");
}

/// A median in seconds as the API gives it (`null` when nobody reached the step).
pub fn same_seconds(got: &Value, expected: Option<f64>, context: &Value) {
    match expected {
        None => assert!(got.is_null(), "no median expected: {context}"),
        Some(e) => assert!(
            got.as_f64().is_some_and(|g| (g - e).abs() < 1e-6),
            "median {e} expected: {context}"
        ),
    }
}
