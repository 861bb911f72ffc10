//! Breakdowns of a whole figure by one or two dimensions (`by=`, `by2=`): a time series per
//! value (or pair of values), a funnel or a conversion per value. The dimension is any of the filter syntax's (`filters.rs`); the
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
use super::filters::{push_types, Dimension, Filter};
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
pub const BY2_PARAM: (&str, &str) = (
    "by2",
    "A second dimension with `by`: one figure per pair of values",
);
pub const BY_LIMIT_PARAM: (&str, &str) = (
    "by_limit",
    "Values (or pairs) shown with `by`: 1..20, default 5",
);

/// A segment's values, one per dimension (`None`: the events without a value).
pub type Values = Vec<Option<String>>;

/// `by=`, `by2=` and `by_limit=`, when a breakdown was asked for.
#[derive(Debug, Clone)]
pub struct Segmentation {
    /// One or two.
    pub dimensions: Vec<Dimension>,
    /// As sent, echoed in the answer.
    pub by: String,
    pub by2: Option<String>,
    pub limit: u32,
}

impl Segmentation {
    pub fn parse(
        by: Option<&str>,
        by2: Option<&str>,
        limit: Option<&str>,
    ) -> Result<Option<Self>, ApiError> {
        let Some(by) = given(by) else {
            for (field, value) in [("by2", by2), ("by_limit", limit)] {
                if value.is_some() {
                    return Err(ApiError::bad(field, "is only taken with `by`"));
                }
            }
            return Ok(None);
        };
        let mut dimensions = vec![Dimension::parse("by", by)?];
        let by2 = given(by2);
        if let Some(by2) = by2 {
            dimensions.push(Dimension::parse("by2", by2)?);
        }
        Ok(Some(Self {
            dimensions,
            by: by.to_owned(),
            by2: by2.map(str::to_owned),
            limit: params::limit("by_limit", limit, DEFAULT_SEGMENTS, MAX_SEGMENTS)?,
        }))
    }

    /// `filter` narrowed to the segment `values`.
    pub fn narrow(&self, filter: &Filter, values: &Values) -> Filter {
        self.dimensions
            .iter()
            .zip(values)
            .fold(filter.clone(), |f, (d, v)| f.and_value(d, v.as_deref()))
    }

    /// A segment as JSON: `value` (and `value2` with two dimensions), then `figures`' fields.
    pub fn segment(&self, values: &Values, figures: serde_json::Value) -> serde_json::Value {
        let mut segment = serde_json::json!({ "value": values[0] });
        if let Some(v2) = values.get(1) {
            segment["value2"] = serde_json::json!(v2);
        }
        if let (Some(out), serde_json::Value::Object(fields)) = (segment.as_object_mut(), figures) {
            out.extend(fields);
        }
        segment
    }

    /// Adds `by` (and `by2`) and the segments to an answer.
    pub fn answer(&self, answer: &mut serde_json::Value, segments: Vec<serde_json::Value>) {
        answer["by"] = serde_json::json!(self.by);
        if let Some(by2) = &self.by2 {
            answer["by2"] = serde_json::json!(by2);
        }
        answer["segments"] = serde_json::json!(segments);
    }

    /// The dimensions' values as `v1`, `v2` columns of a query.
    fn push_values(&self, q: &mut sqlx::QueryBuilder<'_, sqlx::MySql>) {
        for (i, dimension) in self.dimensions.iter().enumerate() {
            if i > 0 {
                q.push(", ");
            }
            dimension.push_sql(q);
            q.push(format!(" AS v{}", i + 1));
        }
    }

    fn group_by(&self) -> &'static str {
        if self.dimensions.len() == 2 {
            "v1, v2"
        } else {
            "v1"
        }
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
    ) -> Result<Vec<Values>, ApiError> {
        let mut q = sqlx::QueryBuilder::<sqlx::MySql>::new("SELECT ");
        self.push_values(&mut q);
        q.push(" FROM user_events WHERE project = ")
            .push_bind(project)
            .push(" AND event_time >= ")
            .push_bind(from)
            .push(" AND event_time < ")
            .push_bind(to);
        push_types(&mut q, types);
        filter.push_sql(&mut q);
        let group = self.group_by();
        q.push(format!(
            " GROUP BY {group} ORDER BY COUNT(*) DESC, {group} LIMIT "
        ))
        .push_bind(self.limit);
        let rows = q.build().fetch_all(db).await?;
        rows.iter().map(|row| self.values_of(row, 0)).collect()
    }

    /// The dimensions' values of a row, from column `from` on.
    fn values_of(&self, row: &sqlx::mysql::MySqlRow, from: usize) -> Result<Values, ApiError> {
        use sqlx::Row;
        (0..self.dimensions.len())
            .map(|i| Ok(text(row.try_get::<Option<Vec<u8>>, _>(from + i)?)))
            .collect()
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
    ) -> Result<HashMap<String, Values>, ApiError> {
        let mut q = sqlx::QueryBuilder::<sqlx::MySql>::new("SELECT distinct_id, ");
        self.push_values(&mut q);
        q.push(" FROM user_events WHERE project = ")
            .push_bind(project)
            .push(" AND event_type = ")
            .push_bind(entry_type)
            .push(" AND event_time >= ")
            .push_bind(from)
            .push(" AND event_time < ")
            .push_bind(to);
        filter.push_sql(&mut q);
        q.push(" ORDER BY event_time DESC, id DESC");
        let rows = q.build().fetch_all(db).await?;
        // Newest first: the last write per person is their first entry.
        let mut first = HashMap::with_capacity(rows.len());
        for row in rows {
            let who: Vec<u8> = sqlx::Row::try_get(&row, 0)?;
            first.insert(
                String::from_utf8_lossy(&who).into_owned(),
                self.values_of(&row, 1)?,
            );
        }
        Ok(first)
    }

    /// A figure per segment of `people` by their entry value (`entry_values`,
    /// `partition`): `figures` computes one segment's figure from its people.
    #[allow(clippy::too_many_arguments)]
    pub async fn people_segments<T: Clone>(
        &self,
        db: &MySqlPool,
        project: &str,
        entry_type: &str,
        span: (NaiveDateTime, NaiveDateTime),
        filter: &Filter,
        people: &HashMap<String, T>,
        figures: impl Fn(HashMap<String, T>) -> serde_json::Value,
    ) -> Result<Vec<serde_json::Value>, ApiError> {
        let entry = self
            .entry_values(db, project, entry_type, span, filter)
            .await?;
        Ok(self
            .partition(people.clone(), &entry)
            .into_iter()
            .map(|(values, people)| self.segment(&values, figures(people)))
            .collect())
    }

    /// `people` split by their entry value, the `limit` largest segments first (ties by
    /// value); people without an entry are in no segment.
    pub fn partition<T>(
        &self,
        people: HashMap<String, T>,
        entry: &HashMap<String, Values>,
    ) -> Vec<(Values, HashMap<String, T>)> {
        let mut segments: HashMap<Values, HashMap<String, T>> = HashMap::new();
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

/// A parameter given and not blank.
fn given(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

fn text(value: Option<Vec<u8>>) -> Option<String> {
    value.map(|v| String::from_utf8_lossy(&v).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn people_are_split_by_entry_value_largest_first() {
        let by = Segmentation::parse(Some("$channel"), None, Some("2"))
            .unwrap()
            .unwrap();
        let people: HashMap<String, u8> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|p| (p.to_string(), 0))
            .collect();
        let entry: HashMap<String, Values> = [
            ("a", Some("email")),
            ("b", Some("direct")),
            ("c", Some("direct")),
            ("d", None),
        ]
        .iter()
        .map(|(p, v)| (p.to_string(), vec![v.map(str::to_owned)]))
        .collect();
        let segments = by.partition(people, &entry);
        let shape: Vec<(Option<&str>, usize)> = segments
            .iter()
            .map(|(v, people)| (v[0].as_deref(), people.len()))
            .collect();
        // direct (2), then the ties by value: None sorts before Some("email"); "e" entered not.
        assert_eq!(shape, [(Some("direct"), 2), (None, 1)]);
    }

    #[test]
    fn a_segment_names_its_values_and_narrows_the_filter() {
        let by = Segmentation::parse(Some("$channel"), Some("$country"), None)
            .unwrap()
            .unwrap();
        let values = vec![Some("email".to_owned()), None];
        let segment = by.segment(&values, serde_json::json!({"users": 3}));
        assert_eq!(
            segment,
            serde_json::json!({"value": "email", "value2": null, "users": 3})
        );
        let narrowed = by.narrow(&Filter::default(), &values);
        let mut q = sqlx::QueryBuilder::<sqlx::MySql>::new("WHERE project = 'p'");
        narrowed.push_sql(&mut q);
        assert_eq!(
            q.sql(),
            "WHERE project = 'p' AND is_bot = 0 AND (channel IN (?)) AND country IS NULL"
        );
    }

    #[test]
    fn bad_breakdowns_are_400s_on_their_field() {
        assert!(Segmentation::parse(None, None, None).unwrap().is_none());
        for (by, by2, limit, field) in [
            (Some("$nope"), None, None, "by"),
            (Some("$channel"), Some("$nope"), None, "by2"),
            (Some("$channel"), None, Some("0"), "by_limit"),
            (Some("$channel"), None, Some("21"), "by_limit"),
            (None, None, Some("3"), "by_limit"),
            (None, Some("$country"), None, "by2"),
        ] {
            let err = Segmentation::parse(by, by2, limit).unwrap_err();
            assert!(
                format!("{err:?}").contains(field),
                "{by:?} {by2:?} {limit:?}: {err:?}"
            );
        }
    }
}
