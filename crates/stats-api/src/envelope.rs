//! The one envelope of every stats answer: the project, the range the figures cover (when
//! the endpoint takes one), the endpoint's own fields, whether the figures are exact, where
//! they come from (`source`), whether Redis was whole (`redis`, only when it was not), and how
//! fresh they are (`as_of`).
//!
//! The endpoint's fields sit beside the envelope's (flattened), so an answer reads
//! `{"project": ..., "range": ..., "counts": ..., "exact": true, "as_of": ...}`.

use actix_web::HttpResponse;
use serde::Serialize;

use super::auth::Project;
use super::filters::Filter;
use super::params::TimeRange;
use super::stats::AsOf;
use super::RedisGeneration;

/// `{"from": ..., "to": ...}`: the effective range, after rounding to minutes or hours.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RangeEcho {
    pub from: chrono::DateTime<chrono::Utc>,
    pub to: chrono::DateTime<chrono::Utc>,
}

impl From<TimeRange> for RangeEcho {
    fn from(range: TimeRange) -> Self {
        Self {
            from: range.from,
            to: range.to,
        }
    }
}

/// An answer: the envelope's fields and the endpoint's `data`.
#[derive(Debug, Serialize)]
pub struct Answer<T> {
    pub project: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range: Option<RangeEcho>,
    /// The `filter=` the figures were computed under, as sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    #[serde(flatten)]
    pub data: T,
    pub exact: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<&'static str>,
    /// The generation marker's state when Redis was not whole (`lost`, `rebuilding`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<&'static str>,
    pub as_of: AsOf,
}

impl Answer<()> {
    /// An exact answer about `project`, as fresh as `as_of`; add what applies, then `with`
    /// the endpoint's data.
    pub fn about(project: &Project, as_of: AsOf) -> Self {
        Self::about_project(project.as_str(), as_of)
    }

    fn about_project(project: &str, as_of: AsOf) -> Self {
        Self {
            project: project.to_owned(),
            range: None,
            filter: None,
            data: (),
            exact: true,
            source: None,
            redis: None,
            as_of,
        }
    }

    pub fn range(self, range: TimeRange) -> Self {
        Self {
            range: Some(range.into()),
            ..self
        }
    }

    /// The figures count only the events `filter` accepts.
    pub fn filter(self, filter: &Filter) -> Self {
        Self {
            filter: filter.echo(),
            ..self
        }
    }

    pub fn source(self, source: &'static str) -> Self {
        Self {
            source: Some(source),
            ..self
        }
    }

    /// The answer holds Redis figures read in this generation: not exact unless Redis was
    /// whole, and then it says what Redis was.
    pub fn redis(self, generation: RedisGeneration) -> Self {
        if generation.is_ready() {
            return self;
        }
        Self {
            exact: false,
            redis: Some(generation.as_str()),
            ..self
        }
    }

    /// The figures are estimates (the data says how good): never exact, whatever Redis was.
    pub fn estimated(self) -> Self {
        Self {
            exact: false,
            ..self
        }
    }

    pub fn with<T: Serialize>(self, data: T) -> Answer<T> {
        Answer {
            project: self.project,
            range: self.range,
            filter: self.filter,
            data,
            exact: self.exact,
            source: self.source,
            redis: self.redis,
            as_of: self.as_of,
        }
    }
}

impl<T: Serialize> Answer<T> {
    /// 200 with the answer as JSON.
    pub fn ok(&self) -> HttpResponse {
        HttpResponse::Ok().json(self)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn the_envelope_sits_beside_the_data_and_redis_loss_makes_it_inexact() {
        let as_of = AsOf {
            newest_event_time: None,
            applied_events: 3,
            positions: BTreeMap::new(),
        };
        let answer = Answer::about_project("shop", as_of)
            .source("redis")
            .redis(RedisGeneration::Lost)
            .with(serde_json::json!({"total": 3}));
        let value = serde_json::to_value(&answer).expect("json");
        assert_eq!(value["project"], "shop");
        assert_eq!(value["total"], 3);
        assert_eq!(value["exact"], false);
        assert_eq!(value["redis"], "lost");
        assert_eq!(value["as_of"]["applied_events"], 3);
        assert!(value.get("range").is_none(), "{value}");
    }
}
