//! Stats API keys: bearer tokens scoped to projects and to what they may do (read; admin also
//! writes funnels), each with its own rate limit; and a limit on failed attempts per client.
//!
//! Read keys are configured here only ([stats] api_keys); the gateway's write keys are a
//! different list, so a write key never grants read access. Presented tokens are compared in
//! constant time (`insightflow_runtime::secret`). With no keys configured the API is open
//! (only with `stats.allow_open`, development): no authentication, no rate limit, and a
//! request that names no project reads the `default` project.

use std::future::{ready, Ready};
use std::net::IpAddr;

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use anyhow::Context;
use insightflow_model::ProjectId;
use insightflow_runtime::net::rate_limit_key;
use insightflow_runtime::secret::{KeyId, Secrets};

use super::error::ApiError;
use super::limits::ApiLimitMetrics;
use super::stats::ProjectQuery;
use super::token_buckets::TokenBuckets;
use super::ApiState;
use crate::StatsSettings;

/// The project used by an open API when the request names none.
const OPEN_DEFAULT_PROJECT: &str = "default";
/// Shortest token accepted in `stats.api_keys`.
const MIN_TOKEN_CHARS: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Projects {
    All,
    Only(Vec<ProjectId>),
}

/// What a key may do: read stats, or also create, change and delete funnels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Read,
    Admin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Grant {
    projects: Projects,
    scope: Scope,
}

impl Grant {
    /// `project1|project2` or `*`, then optionally `:read` or `:admin`.
    fn parse(n: usize, text: &str) -> anyhow::Result<Self> {
        let (projects, scope) = match text.rsplit_once(':') {
            Some((projects, "admin")) => (projects, Scope::Admin),
            Some((projects, "read")) => (projects, Scope::Read),
            Some((_, other)) => {
                anyhow::bail!("stats.api_keys[{n}]: unknown scope `{other}` (use :read or :admin)")
            }
            None => (text, Scope::Read),
        };
        let projects = if projects.trim() == "*" {
            Projects::All
        } else {
            let list = projects
                .split('|')
                .map(|p| ProjectId::parse(p.trim()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow::anyhow!("stats.api_keys[{n}]: {}", e.reason))?;
            anyhow::ensure!(!list.is_empty(), "stats.api_keys[{n}] names no project");
            Projects::Only(list)
        };
        Ok(Self { projects, scope })
    }

    fn allows(&self, project: &ProjectId) -> bool {
        match &self.projects {
            Projects::All => true,
            Projects::Only(list) => list.contains(project),
        }
    }

    /// The project a request means when it names none: the key's only project.
    fn sole_project(&self) -> Option<&ProjectId> {
        match &self.projects {
            Projects::Only(list) if list.len() == 1 => list.first(),
            _ => None,
        }
    }
}

/// The configured keys, their rate limits, and the failed-attempt limit per client.
pub struct StatsAccess {
    keys: Secrets<Grant>,
    per_key: TokenBuckets<KeyId>,
    failures: TokenBuckets<IpAddr>,
    metrics: Option<ApiLimitMetrics>,
}

impl StatsAccess {
    /// Parses `token=project1|project2[:admin]` entries; fails at boot on a malformed one.
    pub fn from_settings(settings: &StatsSettings) -> anyhow::Result<Self> {
        let mut entries = Vec::with_capacity(settings.api_keys.len());
        for (n, entry) in settings.api_keys.iter().enumerate() {
            let (token, grant) = entry.split_once('=').with_context(|| {
                format!("stats.api_keys[{n}] is not `token=project|...[:admin]`")
            })?;
            let token = token.trim();
            anyhow::ensure!(
                token.chars().count() >= MIN_TOKEN_CHARS,
                "stats.api_keys[{n}]: the token must have at least {MIN_TOKEN_CHARS} characters \
                 (e.g. `openssl rand -hex 16`)"
            );
            anyhow::ensure!(
                !entries.iter().any(|(t, _)| t == token),
                "stats.api_keys[{n}]: the same token is configured twice"
            );
            entries.push((token.to_owned(), Grant::parse(n, grant)?));
        }
        anyhow::ensure!(
            settings.rate_limit_per_second > 0 && settings.rate_limit_burst > 0,
            "stats.rate_limit_per_second and stats.rate_limit_burst must be positive"
        );
        anyhow::ensure!(
            settings.failed_auth_per_minute > 0,
            "stats.failed_auth_per_minute must be positive"
        );
        let failures_per_minute = f64::from(settings.failed_auth_per_minute);
        Ok(Self {
            keys: Secrets::new(entries),
            per_key: TokenBuckets::new(
                f64::from(settings.rate_limit_per_second),
                f64::from(settings.rate_limit_burst),
            ),
            failures: TokenBuckets::new(failures_per_minute / 60.0, failures_per_minute),
            metrics: None,
        })
    }

    /// Counts failures and refusals in `metrics`.
    pub fn with_metrics(mut self, metrics: ApiLimitMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn is_open(&self) -> bool {
        self.keys.is_empty()
    }

    /// Who made a request, for an audit line: the key's fingerprint, or `open` on an open API.
    pub fn requester(&self, project: &Project) -> String {
        project
            .key()
            .and_then(|key| self.keys.fingerprint(key))
            .unwrap_or_else(|| "open".to_owned())
    }

    /// Checks the client's failed attempts, authenticates, resolves the project, spends one
    /// token of the key's rate limit and checks the grant, in that order: 429, 401, 400,
    /// 429, 403. A client past its failed attempts gets 429 before its key is looked at.
    fn authorize(
        &self,
        client: Option<IpAddr>,
        authorization: Option<&str>,
        requested: Option<&str>,
    ) -> Result<Project, ApiError> {
        let parse = |p: &str| {
            ProjectId::parse(p).map_err(|e| ApiError::BadRequest {
                field: "project",
                reason: e.reason,
            })
        };
        if self.is_open() {
            return Ok(Project {
                id: parse(requested.unwrap_or(OPEN_DEFAULT_PROJECT))?,
                key: None,
                scope: Scope::Admin,
            });
        }
        let client = client.map(rate_limit_key);
        if let Some(client) = client {
            if let Err(retry_after_seconds) = self.failures.peek(&client) {
                return Err(ApiError::AuthLocked {
                    retry_after_seconds,
                });
            }
        }
        let found = authorization
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .and_then(|token| self.keys.find(token));
        let Some((key, grant)) = found else {
            if let Some(metrics) = &self.metrics {
                let reason = if authorization.is_some() {
                    "unknown"
                } else {
                    "missing"
                };
                metrics.auth_failures.with_label_values(&[reason]).inc();
            }
            if let Some(client) = client {
                // Spends one failure; the next request sees an empty bucket.
                let _ = self.failures.take(client);
            }
            return Err(ApiError::Unauthorized);
        };
        let project = match requested {
            Some(p) => parse(p)?,
            None => grant.sole_project().cloned().ok_or_else(|| {
                ApiError::bad(
                    "project",
                    "name the project in the path (/api/v1/projects/{project}/...) or as ?project=",
                )
            })?,
        };
        if let Err(retry_after_seconds) = self.per_key.take(key) {
            return Err(ApiError::RateLimited {
                retry_after_seconds,
            });
        }
        if grant.allows(&project) {
            Ok(Project {
                id: project,
                key: Some(key),
                scope: grant.scope,
            })
        } else {
            Err(ApiError::Forbidden(project.as_str().to_owned()))
        }
    }
}

/// The project a request may read: named in the path (`/api/v1/projects/{project}/...`) or
/// the query (`?project=`), and granted by the request's key (`None` on an open API).
#[derive(Debug, Clone)]
pub struct Project {
    id: ProjectId,
    key: Option<KeyId>,
    scope: Scope,
}

impl Project {
    pub fn as_str(&self) -> &str {
        self.id.as_str()
    }

    /// The key that granted the request (not the secret); `None` on an open API.
    pub fn key(&self) -> Option<KeyId> {
        self.key
    }
}

impl FromRequest for Project {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(extract(req))
    }
}

/// A project whose key has the admin scope: funnel writes.
#[derive(Debug, Clone)]
pub struct AdminProject(pub Project);

impl FromRequest for AdminProject {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(extract(req).and_then(|project| match project.scope {
            Scope::Admin => Ok(Self(project)),
            Scope::Read => Err(ApiError::ReadOnlyKey),
        }))
    }
}

fn extract(req: &HttpRequest) -> Result<Project, ApiError> {
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
    let client = req.peer_addr().map(|a| a.ip());
    state
        .access
        .authorize(client, authorization, requested.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOP: &str = "sk_shop_reader_0001";
    const ADMIN: &str = "sk_admin_0000000001";
    const CLIENT: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 5)));

    fn settings(keys: &[&str], per_second: u32, burst: u32) -> StatsSettings {
        StatsSettings {
            rate_limit_per_second: per_second,
            rate_limit_burst: burst,
            api_keys: keys.iter().map(|k| (*k).to_owned()).collect(),
            dashboard_cache_ms: 0,
            dashboard_max_stale_ms: 0,
            allow_open: false,
            failed_auth_per_minute: 3,
            live_streams_per_key: 1,
            live_streams_max: 1,
            heavy_queries_max: 1,
            heavy_query_wait_ms: 0,
            query_timeout_ms: 0,
            mysql_max_connections: 1,
            redis_pool_size: 1,
        }
    }

    fn access(keys: &[&str], per_second: u32, burst: u32) -> StatsAccess {
        StatsAccess::from_settings(&settings(keys, per_second, burst)).expect("valid keys")
    }

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    #[test]
    fn keys_are_scoped_to_projects() {
        let a = access(
            &[&format!("{SHOP}=shop|blog"), &format!("{ADMIN}=*:admin")],
            100,
            100,
        );
        let read =
            |token: &str, project: Option<&str>| a.authorize(None, Some(&bearer(token)), project);
        assert_eq!(read(SHOP, Some("blog")).unwrap().as_str(), "blog");
        assert!(matches!(
            read(SHOP, Some("other")),
            Err(ApiError::Forbidden(_))
        ));
        assert!(read(ADMIN, Some("other")).is_ok());
        assert!(matches!(
            a.authorize(None, None, Some("shop")),
            Err(ApiError::Unauthorized)
        ));
        assert!(matches!(
            read("sk_not_a_key_at_all", Some("shop")),
            Err(ApiError::Unauthorized)
        ));
        assert!(matches!(read(SHOP, None), Err(ApiError::BadRequest { .. })));
    }

    #[test]
    fn only_admin_keys_have_the_admin_scope() {
        let a = access(
            &[
                &format!("{SHOP}=shop"),
                &format!("{ADMIN}=shop:admin"),
                "sk_explicit_reader_1=shop:read",
            ],
            100,
            100,
        );
        let scope = |token: &str| {
            a.authorize(None, Some(&bearer(token)), Some("shop"))
                .unwrap()
                .scope
        };
        assert_eq!(scope(SHOP), Scope::Read);
        assert_eq!(scope("sk_explicit_reader_1"), Scope::Read);
        assert_eq!(scope(ADMIN), Scope::Admin);
    }

    #[test]
    fn an_open_api_reads_the_default_project() {
        let a = access(&[], 1, 1);
        assert_eq!(a.authorize(None, None, None).unwrap().as_str(), "default");
    }

    #[test]
    fn each_key_has_its_own_bucket() {
        let a = access(&["key_one_12345678=a", "key_two_12345678=a"], 1, 2);
        let one = bearer("key_one_12345678");
        assert!(a.authorize(None, Some(&one), Some("a")).is_ok());
        assert!(a.authorize(None, Some(&one), Some("a")).is_ok());
        assert!(matches!(
            a.authorize(None, Some(&one), Some("a")),
            Err(ApiError::RateLimited {
                retry_after_seconds: 1
            })
        ));
        assert!(a
            .authorize(None, Some(&bearer("key_two_12345678")), Some("a"))
            .is_ok());
    }

    #[test]
    fn a_client_that_keeps_failing_is_locked_out_even_with_a_good_key() {
        // 3 failures a minute: the 4th request of a guessing client is refused unread.
        let a = access(&[&format!("{SHOP}=shop")], 100, 100);
        for _ in 0..3 {
            assert!(matches!(
                a.authorize(CLIENT, Some("Bearer guess-guess-guess-1"), Some("shop")),
                Err(ApiError::Unauthorized)
            ));
        }
        match a.authorize(CLIENT, Some(&bearer(SHOP)), Some("shop")) {
            Err(ApiError::AuthLocked {
                retry_after_seconds,
            }) => assert!((1..=20).contains(&retry_after_seconds)),
            other => panic!("expected a lock-out, got {other:?}"),
        }
        // Another client, and the same client on IPv6 elsewhere, are unaffected.
        let other = Some("203.0.113.6".parse().unwrap());
        assert!(a
            .authorize(other, Some(&bearer(SHOP)), Some("shop"))
            .is_ok());
        // Addresses in one IPv6 /64 are one client.
        for n in 1..=3 {
            let ip = Some(format!("2001:db8:7:7::{n}").parse().unwrap());
            assert!(a.authorize(ip, None, Some("shop")).is_err());
        }
        let same_64 = Some("2001:db8:7:7:ffff::1".parse().unwrap());
        assert!(matches!(
            a.authorize(same_64, Some(&bearer(SHOP)), Some("shop")),
            Err(ApiError::AuthLocked { .. })
        ));
    }

    #[test]
    fn malformed_keys_fail_at_boot() {
        for bad in [
            "no_equals_sign_here",
            "short=a",
            "longenough_token_1=Bad Project",
            "longenough_token_1=shop:owner",
        ] {
            assert!(
                StatsAccess::from_settings(&settings(&[bad], 1, 1)).is_err(),
                "{bad}"
            );
        }
        let twice = ["same_token_123456=a", "same_token_123456=b"];
        assert!(StatsAccess::from_settings(&settings(&twice, 1, 1)).is_err());
    }
}
