//! Stats API keys: bearer tokens scoped to projects, each with its own rate limit.
//!
//! Read keys are configured here only ([stats] api_keys); the gateway's write keys are a
//! different list, so a write key never grants read access. With no keys configured the API
//! is open (development): no authentication, no rate limit, and a request that names no
//! project reads the `default` project.

use std::collections::HashMap;
use std::future::{ready, Ready};
use std::sync::Mutex;
use std::time::Instant;

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use anyhow::Context;
use insightflow_model::ProjectId;

use super::stats::{ApiError, ProjectQuery};
use super::ApiState;
use crate::settings::StatsSettings;

/// The project used by an open API when the request names none.
const OPEN_DEFAULT_PROJECT: &str = "default";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Grant {
    AllProjects,
    Projects(Vec<ProjectId>),
}

impl Grant {
    fn allows(&self, project: &ProjectId) -> bool {
        match self {
            Self::AllProjects => true,
            Self::Projects(list) => list.contains(project),
        }
    }

    /// The project a request means when it names none: the key's only project.
    fn sole_project(&self) -> Option<&ProjectId> {
        match self {
            Self::Projects(list) if list.len() == 1 => list.first(),
            _ => None,
        }
    }
}

/// The configured keys and their rate limiters.
pub struct StatsAccess {
    grants: HashMap<String, Grant>,
    limiter: RateLimiter,
}

impl StatsAccess {
    /// Parses `token=project1|project2` pairs; fails at boot on a malformed one.
    pub fn from_settings(settings: &StatsSettings) -> anyhow::Result<Self> {
        let mut grants = HashMap::new();
        for (n, entry) in settings.api_keys.iter().enumerate() {
            let (token, projects) = entry
                .split_once('=')
                .with_context(|| format!("stats.api_keys[{n}] is not `token=project|...`"))?;
            let token = token.trim();
            anyhow::ensure!(
                token.len() >= 8,
                "stats.api_keys[{n}]: the token must have at least 8 characters"
            );
            let grant = if projects.trim() == "*" {
                Grant::AllProjects
            } else {
                let list = projects
                    .split('|')
                    .map(|p| ProjectId::parse(p.trim()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| anyhow::anyhow!("stats.api_keys[{n}]: {}", e.reason))?;
                anyhow::ensure!(!list.is_empty(), "stats.api_keys[{n}] names no project");
                Grant::Projects(list)
            };
            grants.insert(token.to_owned(), grant);
        }
        anyhow::ensure!(
            settings.rate_limit_per_second > 0 && settings.rate_limit_burst > 0,
            "stats.rate_limit_per_second and stats.rate_limit_burst must be positive"
        );
        Ok(Self {
            grants,
            limiter: RateLimiter::new(
                f64::from(settings.rate_limit_per_second),
                f64::from(settings.rate_limit_burst),
            ),
        })
    }

    pub fn is_open(&self) -> bool {
        self.grants.is_empty()
    }

    /// Authenticates, resolves the project, checks the scope and spends one token of the
    /// key's rate limit, in that order: 401, then 400, then 429, then 403.
    fn authorize(
        &self,
        authorization: Option<&str>,
        requested: Option<&str>,
    ) -> Result<ProjectId, ApiError> {
        let parse = |p: &str| {
            ProjectId::parse(p).map_err(|e| ApiError::BadRequest {
                field: "project",
                reason: e.reason,
            })
        };
        if self.is_open() {
            return parse(requested.unwrap_or(OPEN_DEFAULT_PROJECT));
        }
        let token = authorization
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or(ApiError::Unauthorized)?;
        let (key, grant) = self
            .grants
            .get_key_value(token)
            .ok_or(ApiError::Unauthorized)?;
        let project = match requested {
            Some(p) => parse(p)?,
            None => grant.sole_project().cloned().ok_or_else(|| {
                ApiError::bad(
                    "project",
                    "name the project in the path (/api/v1/projects/{project}/...) or as ?project=",
                )
            })?,
        };
        self.limiter.check(key)?;
        if grant.allows(&project) {
            Ok(project)
        } else {
            Err(ApiError::Forbidden(project.as_str().to_owned()))
        }
    }
}

/// A token bucket per key. Keys come from configuration, so the map is bounded.
struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    fn new(per_second: f64, burst: f64) -> Self {
        Self {
            per_second,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn check(&self, key: &str) -> Result<(), ApiError> {
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (tokens, last) = buckets.entry(key.to_owned()).or_insert((self.burst, now));
        let refill = now.duration_since(*last).as_secs_f64() * self.per_second;
        *tokens = (*tokens + refill).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - *tokens) / self.per_second).ceil().max(1.0);
            Err(ApiError::RateLimited {
                retry_after_seconds: wait as u64,
            })
        }
    }
}

/// The project a request may read: named in the path (`/api/v1/projects/{project}/...`) or
/// the query (`?project=`), and granted by the request's key.
#[derive(Debug, Clone)]
pub struct Project(pub ProjectId);

impl Project {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl FromRequest for Project {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(extract(req).map(Project))
    }
}

fn extract(req: &HttpRequest) -> Result<ProjectId, ApiError> {
    let state = req
        .app_data::<web::Data<ApiState>>()
        .ok_or_else(|| ApiError::Unavailable(anyhow::anyhow!("stats API state missing")))?;
    let in_path = req.match_info().get("project").map(str::to_owned);
    let in_query = web::Query::<ProjectQuery>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.into_inner().project);
    let requested = match (in_path, in_query) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::bad(
                "project",
                "the path and the query name different projects",
            ))
        }
        (Some(p), _) | (None, Some(p)) => Some(p),
        (None, None) => None,
    };
    let authorization = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    state.access.authorize(authorization, requested.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(keys: &[&str], per_second: u32, burst: u32) -> StatsAccess {
        StatsAccess::from_settings(&StatsSettings {
            rate_limit_per_second: per_second,
            rate_limit_burst: burst,
            api_keys: keys.iter().map(|k| (*k).to_owned()).collect(),
            dashboard_cache_ms: 0,
            allow_open: false,
        })
        .expect("valid keys")
    }

    #[test]
    fn keys_are_scoped_to_projects() {
        let a = access(&["sk_shop_1234=shop|blog", "sk_admin_1234=*"], 100, 100);
        assert_eq!(
            a.authorize(Some("Bearer sk_shop_1234"), Some("blog"))
                .map(|p| p.as_str().to_owned())
                .ok(),
            Some("blog".to_owned())
        );
        assert!(matches!(
            a.authorize(Some("Bearer sk_shop_1234"), Some("other")),
            Err(ApiError::Forbidden(_))
        ));
        assert!(a
            .authorize(Some("Bearer sk_admin_1234"), Some("other"))
            .is_ok());
        assert!(matches!(
            a.authorize(None, Some("shop")),
            Err(ApiError::Unauthorized)
        ));
        assert!(matches!(
            a.authorize(Some("Bearer nope"), Some("shop")),
            Err(ApiError::Unauthorized)
        ));
        assert!(matches!(
            a.authorize(Some("Bearer sk_shop_1234"), None),
            Err(ApiError::BadRequest { .. })
        ));
    }

    #[test]
    fn an_open_api_reads_the_default_project() {
        let a = access(&[], 1, 1);
        assert_eq!(
            a.authorize(None, None).map(|p| p.as_str().to_owned()).ok(),
            Some("default".to_owned())
        );
    }

    #[test]
    fn each_key_has_its_own_bucket() {
        let a = access(&["key_one_123=a", "key_two_123=a"], 1, 2);
        assert!(a.authorize(Some("Bearer key_one_123"), Some("a")).is_ok());
        assert!(a.authorize(Some("Bearer key_one_123"), Some("a")).is_ok());
        assert!(matches!(
            a.authorize(Some("Bearer key_one_123"), Some("a")),
            Err(ApiError::RateLimited {
                retry_after_seconds: 1
            })
        ));
        assert!(a.authorize(Some("Bearer key_two_123"), Some("a")).is_ok());
    }

    #[test]
    fn malformed_keys_fail_at_boot() {
        for bad in ["no_equals_sign", "short=a", "longenough=Bad Project"] {
            assert!(
                StatsAccess::from_settings(&StatsSettings {
                    rate_limit_per_second: 1,
                    rate_limit_burst: 1,
                    api_keys: vec![bad.to_owned()],
                    dashboard_cache_ms: 0,
                    allow_open: false,
                })
                .is_err(),
                "{bad}"
            );
        }
    }
}
