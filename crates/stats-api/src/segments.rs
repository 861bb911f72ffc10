//! Breakdowns of a whole figure by one dimension (`by=`): a time series per value, a funnel or
//! a conversion per value. The dimension is any of the filter syntax's (`filters.rs`); the
//! values shown are the `by_limit` most frequent, by events (time series) or by people who
//! entered (funnels, conversion).
//!
//! Who belongs to which value: an event belongs to its own value (time series). A person in a
//! funnel or conversion belongs to the value of their first entry event in the range (the
//! first step's event): a visitor who landed from an email campaign and then browsed internal
//! pages is in the `email` segment for the whole funnel, which is what "conversion by channel"
//! asks. Segments then partition the people, and each is analysed like the whole.

use std::collections::HashMap;

use chrono::NaiveDateTime;
use sqlx::MySqlPool;

use super::error::ApiError;
use super::filters::{Dimension, Filter};
use super::params;

/// The most values a breakdown shows, and the default.
const MAX_SEGMENTS: u32 = 20;
const DEFAULT_SEGMENTS: u32 = 5;

/// The OpenAPI text of `by` and `by_limit` on the endpoints that segment a whole figure.
pub const BY_PARAM: (&str, &str) = (
    "by",
    "Break the figure down by one dimension (a property, or $channel, $country, $device_type, \
     ... as in filter): one figure per value, the most frequent first",
);
pub const BY_LIMIT_PARAM: (&str, &str) = ("by_limit", "Values shown with `by`: 1..20, default 5");

/// `by=` and `by_limit=`, when a breakdown was asked for.
#[derive(Debug, Clone)]
pub struct Segmentation {
    pub dimension: Dimension,
    /// As sent, echoed in the answer.
    pub by: String,
    pub limit: u32,
}

impl Segmentation {
    pub fn parse(by: Option<&str>, limit: Option<&str>) -> Result<Option<Self>, ApiError> {
        let Some(by) = by.map(str::trim).filter(|b| !b.is_empty()) else {
            if limit.is_some() {
                return Err(ApiError::bad("by_limit", "is only taken with `by`"));
            }
            return Ok(None);
        };
        Ok(Some(Self {
            dimension: Dimension::parse("by", by)?,
            by: by.to_owned(),
            limit: params::limit("by_limit", limit, DEFAULT_SEGMENTS, MAX_SEGMENTS)?,
        }))
    }

    /// The `limit` values of the dimension with the most events of `types` (all when empty)
    /// the filter accepts in `[from, to)`; `None` is the events without a value.
    pub async fn top_values(
        &self,
        db: &MySqlPool,
        project: &str,
        (from, to): (NaiveDateTime, NaiveDateTime),
        types: &[String],
        filter: &Filter,
    ) -> Result<Vec<Option<String>>, ApiError> {
        let mut q = sqlx::QueryBuilder::<sqlx::MySql>::new("SELECT ");
        self.dimension.push_sql(&mut q);
        q.push(" AS v FROM user_events WHERE project = ")
            .push_bind(project)
            .push(" AND event_time >= ")
            .push_bind(from)
            .push(" AND event_time < ")
            .push_bind(to);
        if !types.is_empty() {
            q.push(" AND event_type IN (");
            let mut list = q.separated(", ");
            for t in types {
                list.push_bind(t.as_str());
            }
            q.push(")");
        }
        filter.push_sql(&mut q);
        q.push(" GROUP BY v ORDER BY COUNT(*) DESC, v LIMIT ")
            .push_bind(self.limit);
        let values: Vec<Option<Vec<u8>>> = q.build_query_scalar().fetch_all(db).await?;
        Ok(values.into_iter().map(text).collect())
    }

    /// Per person who did `entry_type` in `[from, to)` (among the events the filter accepts),
    /// the dimension's value at their first such event.
    pub async fn entry_values(
        &self,
        db: &MySqlPool,
        project: &str,
        entry_type: &str,
        (from, to): (NaiveDateTime, NaiveDateTime),
        filter: &Filter,
    ) -> Result<HashMap<String, Option<String>>, ApiError> {
        let mut q = sqlx::QueryBuilder::<sqlx::MySql>::new("SELECT distinct_id, ");
        self.dimension.push_sql(&mut q);
        q.push(" AS v FROM user_events WHERE project = ")
            .push_bind(project)
            .push(" AND event_type = ")
            .push_bind(entry_type)
            .push(" AND event_time >= ")
            .push_bind(from)
            .push(" AND event_time < ")
            .push_bind(to);
        filter.push_sql(&mut q);
        q.push(" ORDER BY event_time DESC, id DESC");
        let rows: Vec<(Vec<u8>, Option<Vec<u8>>)> = q.build_query_as().fetch_all(db).await?;
        // Newest first: the last write per person is their first entry.
        let mut first = HashMap::with_capacity(rows.len());
        for (who, value) in rows {
            first.insert(String::from_utf8_lossy(&who).into_owned(), text(value));
        }
        Ok(first)
    }

    /// `people` split by their entry value, the `limit` largest segments first (ties by
    /// value); people without an entry are in no segment.
    pub fn partition<T>(
        &self,
        people: HashMap<String, T>,
        entry: &HashMap<String, Option<String>>,
    ) -> Vec<(Option<String>, HashMap<String, T>)> {
        let mut segments: HashMap<Option<String>, HashMap<String, T>> = HashMap::new();
        for (who, data) in people {
            if let Some(value) = entry.get(&who) {
                segments.entry(value.clone()).or_default().insert(who, data);
            }
        }
        let mut segments: Vec<_> = segments.into_iter().collect();
        segments.sort_by(|(a, x), (b, y)| y.len().cmp(&x.len()).then_with(|| a.cmp(b)));
        segments.truncate(self.limit as usize);
        segments
    }
}

fn text(value: Option<Vec<u8>>) -> Option<String> {
    value.map(|v| String::from_utf8_lossy(&v).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn people_are_split_by_entry_value_largest_first() {
        let by = Segmentation::parse(Some("$channel"), Some("2"))
            .unwrap()
            .unwrap();
        let people: HashMap<String, u8> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|p| (p.to_string(), 0))
            .collect();
        let entry: HashMap<String, Option<String>> = [
            ("a", Some("email")),
            ("b", Some("direct")),
            ("c", Some("direct")),
            ("d", None),
        ]
        .iter()
        .map(|(p, v)| (p.to_string(), v.map(str::to_owned)))
        .collect();
        let segments = by.partition(people, &entry);
        let shape: Vec<(Option<&str>, usize)> = segments
            .iter()
            .map(|(v, people)| (v.as_deref(), people.len()))
            .collect();
        // direct (2), then the ties by value: None sorts before Some("email"); "e" entered not.
        assert_eq!(shape, [(Some("direct"), 2), (None, 1)]);
    }

    #[test]
    fn bad_breakdowns_are_400s_on_their_field() {
        assert!(Segmentation::parse(None, None).unwrap().is_none());
        for (by, limit, field) in [
            (Some("$nope"), None, "by"),
            (Some("$channel"), Some("0"), "by_limit"),
            (Some("$channel"), Some("21"), "by_limit"),
            (None, Some("3"), "by_limit"),
        ] {
            let err = Segmentation::parse(by, limit).unwrap_err();
            assert!(
                format!("{err:?}").contains(field),
                "{by:?} {limit:?}: {err:?}"
            );
        }
    }
}
