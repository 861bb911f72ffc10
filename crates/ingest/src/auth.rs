//! Write keys -> projects. A key may arrive as HTTP Basic user name (Segment's SDKs), an
//! `X-Write-Key` header, a `?key=` query parameter (navigator.sendBeacon cannot set headers)
//! or a `write_key` body field.
//!
//! Presented keys are compared with every configured key in constant time
//! ([`Secrets`]): the time an answer takes does not tell how much of a guess was right.

use actix_web::http::header;
use actix_web::HttpRequest;
use base64::Engine;
use insightflow_model::ProjectId;
use insightflow_runtime::secret::{KeyId, Secrets};

use crate::error::IngestError;

/// Who is writing: the project, and the key that proved it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub project: ProjectId,
    /// The per-write-key rate limiter's bucket; `None` when no key was presented.
    pub write_key: Option<KeyBucket>,
}

/// What the per-write-key rate limiter counts a request under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyBucket {
    /// A configured key, by its position (never the secret itself).
    Configured(KeyId),
    /// No keys are configured: the string presented, which proves nothing.
    Unverified(String),
}

pub struct WriteKeys {
    keys: Secrets<ProjectId>,
    default_project: ProjectId,
}

impl WriteKeys {
    /// `keys`: (secret, project) pairs, as `AuthSettings::key_list` reads them.
    pub fn new(keys: Vec<(String, ProjectId)>, default_project: ProjectId) -> Self {
        Self {
            keys: Secrets::new(keys),
            default_project,
        }
    }

    /// No keys configured (`auth.allow_open`): every request writes to the default project.
    pub fn is_open(&self) -> bool {
        self.keys.is_empty()
    }

    /// The project a request writes to. With no keys configured every request goes to the
    /// default project; otherwise an unknown or missing key is refused.
    pub fn authenticate(
        &self,
        req: &HttpRequest,
        body_key: Option<&str>,
    ) -> Result<ProjectId, IngestError> {
        self.identify(req, body_key).map(|caller| caller.project)
    }

    /// The project and the write key presented (if any), for per-key rate limiting.
    pub fn identify(
        &self,
        req: &HttpRequest,
        body_key: Option<&str>,
    ) -> Result<Caller, IngestError> {
        let key = header_key(req)
            .or_else(|| query_key(req))
            .or(body_key.map(str::to_owned));
        if self.keys.is_empty() {
            return Ok(Caller {
                project: self.default_project.clone(),
                write_key: key.map(KeyBucket::Unverified),
            });
        }
        let key = key.ok_or(IngestError::Unauthorized("a write key is required"))?;
        match self.keys.find(&key) {
            Some((id, project)) => Ok(Caller {
                project: project.clone(),
                write_key: Some(KeyBucket::Configured(id)),
            }),
            None => Err(IngestError::Unauthorized("unknown write key")),
        }
    }
}

fn header_key(req: &HttpRequest) -> Option<String> {
    if let Some(key) = req
        .headers()
        .get("x-write-key")
        .and_then(|v| v.to_str().ok())
    {
        return Some(key.trim().to_owned());
    }
    let basic = req
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(basic.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    // Segment sends "writeKey:" (key as user name, empty password).
    let user = decoded.split(':').next().unwrap_or_default();
    (!user.is_empty()).then(|| user.to_owned())
}

fn query_key(req: &HttpRequest) -> Option<String> {
    req.query_string()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| *name == "key")
        .map(|(_, value)| value.to_owned())
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    fn keys() -> WriteKeys {
        WriteKeys::new(
            vec![
                ("wk_live".to_owned(), ProjectId::parse("shop").unwrap()),
                ("wk_blog".to_owned(), ProjectId::parse("blog").unwrap()),
            ],
            ProjectId::parse("default").unwrap(),
        )
    }

    #[test]
    fn every_key_location_is_accepted() {
        let basic = base64::engine::general_purpose::STANDARD.encode("wk_live:");
        let requests = [
            TestRequest::default().insert_header(("Authorization", format!("Basic {basic}"))),
            TestRequest::default().insert_header(("X-Write-Key", "wk_live")),
            TestRequest::default().uri("/api/v1/events?key=wk_live"),
        ];
        for req in requests {
            assert_eq!(
                keys()
                    .authenticate(&req.to_http_request(), None)
                    .unwrap()
                    .as_str(),
                "shop"
            );
        }
        let req = TestRequest::default().to_http_request();
        assert_eq!(
            keys().authenticate(&req, Some("wk_live")).unwrap().as_str(),
            "shop"
        );
    }

    #[test]
    fn missing_and_unknown_keys_are_refused_when_keys_are_configured() {
        let req = TestRequest::default().to_http_request();
        assert!(matches!(
            keys().authenticate(&req, None),
            Err(IngestError::Unauthorized(_))
        ));
        let wrong = TestRequest::default()
            .insert_header(("X-Write-Key", "nope"))
            .to_http_request();
        assert!(matches!(
            keys().authenticate(&wrong, None),
            Err(IngestError::Unauthorized(_))
        ));
        let open = WriteKeys::new(Vec::new(), ProjectId::parse("default").unwrap());
        assert_eq!(open.authenticate(&req, None).unwrap().as_str(), "default");
    }

    #[test]
    fn each_configured_key_is_its_own_bucket_and_no_bucket_holds_the_secret() {
        let request = |key: &str| {
            TestRequest::default()
                .insert_header(("X-Write-Key", key))
                .to_http_request()
        };
        let live = keys().identify(&request("wk_live"), None).unwrap();
        let blog = keys().identify(&request("wk_blog"), None).unwrap();
        assert_eq!(live.project.as_str(), "shop");
        assert_eq!(blog.project.as_str(), "blog");
        assert_eq!(live.write_key, Some(KeyBucket::Configured(KeyId(0))));
        assert_eq!(blog.write_key, Some(KeyBucket::Configured(KeyId(1))));
        // A prefix or an extension of a key is another key, and unknown.
        for near in ["wk_liv", "wk_live_", "WK_LIVE", ""] {
            assert!(
                keys().identify(&request(near), None).is_err(),
                "{near:?} is not a key"
            );
        }
        // With no keys configured, the presented string is only a rate-limit bucket.
        let open = WriteKeys::new(Vec::new(), ProjectId::parse("default").unwrap());
        assert_eq!(
            open.identify(&request("anything"), None).unwrap().write_key,
            Some(KeyBucket::Unverified("anything".to_owned()))
        );
        assert_eq!(
            open.identify(&TestRequest::default().to_http_request(), None)
                .unwrap()
                .write_key,
            None
        );
    }
}
