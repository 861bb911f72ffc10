//! What the stats endpoints filter and break down by, in one syntax everywhere:
//!
//! - a **dimension** is an event column, `$` and its name (`$browser`, `$os`,
//!   `$device_type`, `$page_path`, `$event_name`, `$event_type`; where the visit came from:
//!   `$channel`, `$utm_source`, `$utm_medium`, `$utm_campaign`, `$utm_term`, `$utm_content`,
//!   `$click_id_type`, `$referrer_domain`; where the sender is: `$country`, `$region`, `$city`;
//!   and `$bot`, `true` or `false`), or an event property by name (`plan`, nested
//!   `address.city`);
//! - a **filter** (`filter=`) is clauses joined by `;`, each `dimension==value` or
//!   `dimension!=value`, with `|` between the values any of which may match:
//!   `filter=$device_type==mobile|tablet;plan==pro;$browser!=Safari`. Clauses all apply (AND).
//!   `!=` also keeps events that have no such value. Values are compared as text, the way
//!   `JSON_UNQUOTE` renders a property (`true`, `42`).
//!
//! **Bots** are left out of every figure: the worker keeps them out of the rollups and Redis,
//! and every query over raw events says `is_bot = 0`, unless the request sets
//! `include_bots=true` or filters on `$bot`. Either makes the figure come from the raw events.
//!
//! A filtered figure is computed from the raw events (`user_events`), not the rollups, which
//! do not keep the dimensions: the endpoints that read rollups switch source and take a turn
//! as a heavy query.

use sqlx::{MySql, QueryBuilder};

use super::error::ApiError;
use super::limits::Heavy;
use super::property::property_path;
use super::ApiState;

/// The event columns a dimension may name (`$` + the column).
pub const COLUMNS: &[&str] = &[
    "browser",
    "os",
    "device_type",
    "page_path",
    "event_name",
    "event_type",
    "channel",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "click_id_type",
    "referrer_domain",
    "country",
    "region",
    "city",
    BOT,
];

/// The dimension of the bot flag (`$bot`), as text `true` / `false`.
const BOT: &str = "bot";

/// The longest filter accepted, and the most clauses and values in it.
const MAX_FILTER_BYTES: usize = 2048;
const MAX_CLAUSES: usize = 10;
const MAX_VALUES: usize = 50;

/// The OpenAPI text of the `filter` parameter, the same on every endpoint that takes one.
pub const FILTER_PARAM: (&str, &str) = (
    "filter",
    "Only events matching every clause: `dim==v1|v2` or `dim!=v` joined by `;`; dim is a property \
     name (dot for nesting) or $browser, $os, $device_type, $page_path, $event_name, $event_type, \
     $channel, $utm_source, $utm_medium, $utm_campaign, $utm_term, $utm_content, $click_id_type, \
     $referrer_domain, $country, $region, $city, $bot (true|false)",
);

/// The OpenAPI text of the `include_bots` parameter, the same on every endpoint that filters.
pub const INCLUDE_BOTS_PARAM: (&str, &str) = (
    "include_bots",
    "true: count bots' events too (left out by default); the figure is then read from raw events",
);

/// The OpenAPI text of a dimension parameter (`by`, `by2`).
pub const DIMENSION_DOC: &str = "Property name (dot for nesting) or $browser, $os, $device_type, \
     $page_path, $event_name, $event_type, $channel, $utm_source, $utm_medium, $utm_campaign, \
     $utm_term, $utm_content, $click_id_type, $referrer_domain, $country, $region, $city, $bot";

/// An event column or a property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dimension {
    Column(&'static str),
    /// The property's JSON path (`$."address"."city"`).
    Property(String),
}

impl Dimension {
    /// `$column` or a property name; a bad one is a 400 on `field`.
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, ApiError> {
        match raw.strip_prefix('$') {
            Some(column) => COLUMNS
                .iter()
                .find(|c| **c == column)
                .map(|c| Self::Column(c))
                .ok_or_else(|| {
                    ApiError::bad(
                        field,
                        format!(
                            "{raw:?} is not a column: columns are {}",
                            COLUMNS
                                .iter()
                                .map(|c| format!("${c}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                }),
            None => Ok(Self::Property(property_path(field, raw)?)),
        }
    }

    /// The dimension's value as SQL text (a column, or the unquoted property).
    pub fn push_sql(&self, q: &mut QueryBuilder<'_, MySql>) {
        match self {
            Self::Column(BOT) => {
                q.push("IF(is_bot, 'true', 'false')");
            }
            Self::Column(column) => {
                q.push(*column);
            }
            Self::Property(path) => {
                q.push("JSON_UNQUOTE(JSON_EXTRACT(properties, ")
                    .push_bind(path.clone())
                    .push("))");
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Clause {
    dimension: Dimension,
    negated: bool,
    values: Vec<String>,
}

/// The clauses of a `filter=` parameter (none: every event).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    clauses: Vec<Clause>,
    /// As sent, echoed in the answer.
    raw: String,
    /// `include_bots=true`: bots' events count too.
    include_bots: bool,
}

impl Filter {
    /// Parses `filter=` and `include_bots=`; absent or empty is no filter, bots left out.
    pub fn parse(raw: Option<&str>, include_bots: Option<&str>) -> Result<Self, ApiError> {
        let include_bots = match include_bots.map(str::trim) {
            None | Some("") | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(ApiError::bad(
                    "include_bots",
                    format!("{other:?} is not true or false"),
                ))
            }
        };
        Ok(Self {
            include_bots,
            ..Self::clauses(raw)?
        })
    }

    /// The clauses of `filter=` alone.
    fn clauses(raw: Option<&str>) -> Result<Self, ApiError> {
        const FIELD: &str = "filter";
        let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else {
            return Ok(Self::default());
        };
        if raw.len() > MAX_FILTER_BYTES {
            return Err(ApiError::bad(
                FIELD,
                format!("at most {MAX_FILTER_BYTES} bytes"),
            ));
        }
        let clauses = raw
            .split(';')
            .filter(|c| !c.trim().is_empty())
            .map(|clause| {
                let (name, negated, values) = if let Some((name, values)) = clause.split_once("!=")
                {
                    (name, true, values)
                } else if let Some((name, values)) = clause.split_once("==") {
                    (name, false, values)
                } else {
                    return Err(ApiError::bad(
                        FIELD,
                        format!("{clause:?} is not `dimension==value` or `dimension!=value`"),
                    ));
                };
                let values: Vec<String> = values.split('|').map(str::to_owned).collect();
                if values.len() > MAX_VALUES {
                    return Err(ApiError::bad(
                        FIELD,
                        format!("{clause:?}: at most {MAX_VALUES} values"),
                    ));
                }
                Ok(Clause {
                    dimension: Dimension::parse(FIELD, name.trim())?,
                    negated,
                    values,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if clauses.len() > MAX_CLAUSES {
            return Err(ApiError::bad(
                FIELD,
                format!("at most {MAX_CLAUSES} clauses"),
            ));
        }
        Ok(Self {
            clauses,
            raw: raw.to_owned(),
            include_bots: false,
        })
    }

    /// Nothing beyond the default (bots left out): the rollups and Redis, which never count
    /// bots, answer it as well as the raw events.
    pub fn is_empty(&self) -> bool {
        self.clauses.is_empty() && !self.include_bots
    }

    /// Whether bots' events are in: `include_bots=true`, or a clause on `$bot`.
    pub fn counts_bots(&self) -> bool {
        self.include_bots
            || self
                .clauses
                .iter()
                .any(|c| c.dimension == Dimension::Column(BOT))
    }

    /// This filter and one more clause: `dimension == value`, or no value for `None` (a
    /// breakdown's segment, `segments.rs`).
    pub fn and_value(&self, dimension: &Dimension, value: Option<&str>) -> Self {
        let mut narrowed = self.clone();
        narrowed.clauses.push(Clause {
            dimension: dimension.clone(),
            negated: false,
            values: value.map(str::to_owned).into_iter().collect(),
        });
        narrowed
    }

    /// A turn as a heavy query when the filter makes an endpoint that reads rollups or Redis
    /// rankings read raw events instead; `None` without a filter.
    pub async fn turn(&self, state: &ApiState) -> Result<Option<Heavy>, ApiError> {
        if self.is_empty() {
            Ok(None)
        } else {
            Heavy::acquire(state).await.map(Some)
        }
    }

    /// The filter as sent; `None` when there is none.
    pub fn echo(&self) -> Option<String> {
        (!self.raw.is_empty()).then(|| self.raw.clone())
    }

    /// ` AND (...)` for each clause, to follow a `WHERE` over `user_events`, and
    /// ` AND is_bot = 0` unless the filter counts bots.
    pub fn push_sql(&self, q: &mut QueryBuilder<'_, MySql>) {
        if !self.counts_bots() {
            q.push(" AND is_bot = 0");
        }
        for clause in &self.clauses {
            if clause.values.is_empty() {
                // Only `and_value`'s segment of events without a value; parsed clauses
                // always hold a value (an empty one is "").
                q.push(" AND ");
                clause.dimension.push_sql(q);
                q.push(" IS NULL");
                continue;
            }
            q.push(" AND (");
            if clause.negated {
                clause.dimension.push_sql(q);
                q.push(" IS NULL OR ");
            }
            clause.dimension.push_sql(q);
            q.push(if clause.negated { " NOT IN (" } else { " IN (" });
            let mut list = q.separated(", ");
            for value in &clause.values {
                list.push_bind(value.clone());
            }
            q.push("))");
        }
    }
}

/// ` AND event_type IN (...)` for `types`; nothing when empty (every type).
pub fn push_types(q: &mut QueryBuilder<'_, MySql>, types: &[String]) {
    if types.is_empty() {
        return;
    }
    q.push(" AND event_type IN (");
    let mut list = q.separated(", ");
    for t in types {
        list.push_bind(t.clone());
    }
    q.push(")");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clauses_parse_into_dimensions_operators_and_values() {
        let filter = Filter::parse(
            Some("$device_type==mobile|tablet; plan==pro;$os!=iOS"),
            None,
        )
        .unwrap();
        assert_eq!(filter.clauses.len(), 3);
        assert_eq!(
            filter.clauses[0].dimension,
            Dimension::Column("device_type")
        );
        assert_eq!(filter.clauses[0].values, ["mobile", "tablet"]);
        assert_eq!(
            filter.clauses[1].dimension,
            Dimension::Property("$.\"plan\"".into())
        );
        assert!(filter.clauses[2].negated);
        assert!(Filter::parse(None, None).unwrap().is_empty());
        assert!(Filter::parse(Some(" "), None).unwrap().is_empty());
    }

    #[test]
    fn bad_filters_are_400s_on_the_filter_field() {
        for bad in [
            "$nope==1",
            "plan",
            "pl an==x",
            "a==1;b==2;c==3;d==4;e==5;f==6;g==7;h==8;i==9;j==10;k==11",
        ] {
            let err = Filter::parse(Some(bad), None).unwrap_err();
            assert!(format!("{err:?}").contains("filter"), "{bad}: {err:?}");
        }
    }

    #[test]
    fn the_sql_binds_every_value() {
        let filter = Filter::parse(Some("$os!=iOS|Android;plan==pro"), None).unwrap();
        let mut q = QueryBuilder::<MySql>::new("SELECT 1 FROM user_events WHERE project = 'p'");
        filter.push_sql(&mut q);
        assert_eq!(
            q.sql(),
            "SELECT 1 FROM user_events WHERE project = 'p' AND is_bot = 0 \
             AND (os IS NULL OR os NOT IN (?, ?)) \
             AND (JSON_UNQUOTE(JSON_EXTRACT(properties, ?)) IN (?))"
        );
    }

    #[test]
    fn bots_are_left_out_unless_asked_for() {
        let sql = |filter: &Filter| {
            let mut q = QueryBuilder::<MySql>::new("WHERE project = 'p'");
            filter.push_sql(&mut q);
            q.sql().to_owned()
        };
        let default = Filter::parse(None, None).unwrap();
        assert!(default.is_empty() && !default.counts_bots());
        assert_eq!(sql(&default), "WHERE project = 'p' AND is_bot = 0");

        let all = Filter::parse(None, Some("true")).unwrap();
        assert!(!all.is_empty(), "bots are only in the raw events");
        assert_eq!(all.echo(), None);
        assert_eq!(sql(&all), "WHERE project = 'p'");

        let only_bots = Filter::parse(Some("$bot==true"), None).unwrap();
        assert!(only_bots.counts_bots());
        assert_eq!(
            sql(&only_bots),
            "WHERE project = 'p' AND (IF(is_bot, 'true', 'false') IN (?))"
        );

        let err = Filter::parse(None, Some("yes")).unwrap_err();
        assert!(format!("{err:?}").contains("include_bots"), "{err:?}");
    }

    #[test]
    fn the_new_dimensions_are_columns() {
        for name in [
            "channel",
            "utm_campaign",
            "referrer_domain",
            "country",
            "city",
            "bot",
        ] {
            assert_eq!(
                Dimension::parse("by", &format!("${name}")).unwrap(),
                Dimension::Column(COLUMNS.iter().find(|c| **c == name).unwrap())
            );
        }
    }
}
