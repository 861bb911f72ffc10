//! The live dashboard as the worker serves it (`/ui/`, issue 15): the page and every asset
//! it names, with the content type its extension calls for, the Content-Security-Policy,
//! `nosniff` and caching headers; revalidation by ETag; 404 for anything else; and the stats
//! API still closed to requests without a key. Against the real worker on real Kafka,
//! MariaDB and Redis, like every other test here.

use crate::support;

use std::time::Duration;

use crate::support::WorkerTarget;
use insightflow_worker::Role;
use reqwest::header::{self, HeaderMap};
use reqwest::{Client, StatusCode};

const KEY: &str = "sk_console_test_key_0001";

fn header(headers: &HeaderMap, name: impl header::AsHeaderName) -> &str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// Every `src="..."` and `href="..."` of the page.
fn referenced(html: &str) -> Vec<String> {
    let mut found = Vec::new();
    for attribute in ["src=\"", "href=\""] {
        let mut rest = html;
        while let Some(at) = rest.find(attribute) {
            rest = &rest[at + attribute.len()..];
            let end = rest.find('"').expect("a closing quote");
            found.push(rest[..end].to_owned());
            rest = &rest[end..];
        }
    }
    found
}

fn assert_secured(headers: &HeaderMap, what: &str) {
    let csp = header(headers, header::CONTENT_SECURITY_POLICY);
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
    ] {
        assert!(
            csp.contains(directive),
            "{what}: CSP {csp:?} lacks {directive:?}"
        );
    }
    assert!(
        !csp.contains("unsafe-") && !csp.contains("http") && !csp.contains('*'),
        "{what}: CSP {csp:?} allows more than this origin"
    );
    assert_eq!(
        header(headers, header::X_CONTENT_TYPE_OPTIONS),
        "nosniff",
        "{what}"
    );
}

#[tokio::test]
async fn the_dashboard_page_and_its_assets_are_served_with_strict_headers() {
    support::require_services();
    let target = WorkerTarget::create().await;
    let mut settings = support::worker_settings(&target);
    // The API as deployed: keys required. The page itself needs none.
    settings.stats.allow_open = false;
    settings.stats.api_keys = vec![format!("{KEY}=default")];
    let worker = support::spawn_worker_with(settings, Role::Serve).await;
    let http = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .expect("http client");
    let url = |path: &str| format!("{}{path}", worker.address);

    // `/ui` sends the browser to `/ui/`, where relative addresses resolve.
    let redirect = http.get(url("/ui")).send().await.expect("GET /ui");
    assert_eq!(redirect.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(header(redirect.headers(), header::LOCATION), "/ui/");

    let page = http.get(url("/ui/")).send().await.expect("GET /ui/");
    assert_eq!(page.status(), StatusCode::OK);
    let headers = page.headers().clone();
    assert_eq!(
        header(&headers, header::CONTENT_TYPE),
        "text/html; charset=utf-8"
    );
    assert_secured(&headers, "/ui/");
    assert_eq!(header(&headers, header::CACHE_CONTROL), "no-cache");
    let etag = header(&headers, header::ETAG).to_owned();
    assert!(!etag.is_empty(), "the page has an ETag");
    let html = page.text().await.expect("the page");
    for contract in [
        "id=\"stats-key\"",
        "id=\"project\"",
        "value=\"default\"",
        "id=\"connect\"",
        "data-testid=\"live-status\"",
    ] {
        assert!(html.contains(contract), "the page has {contract}");
    }
    assert!(
        !html.contains("<script>") && !html.contains("style=") && !html.contains("<style"),
        "no inline script or style: the CSP would refuse them"
    );

    // Unchanged: 304 without a body.
    let again = http
        .get(url("/ui/"))
        .header(header::IF_NONE_MATCH, &etag)
        .send()
        .await
        .expect("conditional GET /ui/");
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(again.headers(), header::ETAG), etag);

    // Every asset the page names: same origin, relative, served with its type, immutable.
    let assets = referenced(&html);
    let mut kinds = Vec::new();
    for asset in &assets {
        assert!(
            !asset.contains(':') && !asset.starts_with("//") && !asset.starts_with('/'),
            "{asset} is relative to /ui/ (nothing from another origin)"
        );
        let response = http
            .get(url(&format!("/ui/{asset}")))
            .send()
            .await
            .expect("GET an asset");
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
        let extension = asset.rsplit('.').next().unwrap_or_default();
        let expected = match extension {
            "js" => "text/javascript; charset=utf-8",
            "css" => "text/css; charset=utf-8",
            "svg" => "image/svg+xml",
            other => panic!("the page names {asset}, of unexpected kind {other:?}"),
        };
        let headers = response.headers().clone();
        assert_eq!(header(&headers, header::CONTENT_TYPE), expected, "{asset}");
        assert_secured(&headers, asset);
        assert_eq!(
            header(&headers, header::CACHE_CONTROL),
            "public, max-age=31536000, immutable",
            "{asset} has a content hash in its name"
        );
        let body = response.bytes().await.expect("the asset");
        assert!(!body.is_empty(), "{asset} is not empty");
        kinds.push(extension.to_owned());
    }
    kinds.sort();
    assert_eq!(kinds, ["css", "js", "svg"], "the page loads {assets:?}");

    // Compressed for clients that accept it (the bundle is mostly uPlot: ~70 KB raw).
    let script = assets
        .iter()
        .find(|a| a.ends_with(".js"))
        .expect("a script");
    // reqwest would decompress, and drop the header, by itself.
    let raw = Client::builder().no_gzip().build().expect("http client");
    let compressed = raw
        .get(url(&format!("/ui/{script}")))
        .header(header::ACCEPT_ENCODING, "gzip")
        .send()
        .await
        .expect("GET the script gzipped");
    assert_eq!(
        header(compressed.headers(), header::CONTENT_ENCODING),
        "gzip"
    );

    // HEAD as GET, without a body.
    let head = http.head(url("/ui/")).send().await.expect("HEAD /ui/");
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(
        header(head.headers(), header::CONTENT_TYPE),
        "text/html; charset=utf-8"
    );
    assert!(head.bytes().await.expect("HEAD body").is_empty());

    // Anything else under /ui is a 404, with the same headers.
    for missing in ["/ui/nope.js", "/ui/main.js", "/ui/index.htm", "/ui/a/b.css"] {
        let response = http.get(url(missing)).send().await.expect("GET missing");
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{missing}");
        assert_secured(response.headers(), missing);
    }
    let post = http.post(url("/ui/")).send().await.expect("POST /ui/");
    assert!(
        post.status().is_client_error(),
        "POST /ui/ is refused: {}",
        post.status()
    );

    // The page is open; the data is not.
    let data = http
        .get(url("/api/v1/online?project=default"))
        .send()
        .await
        .expect("GET /online without a key");
    assert_eq!(data.status(), StatusCode::UNAUTHORIZED);
    let data = http
        .get(url("/api/v1/online?project=default"))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("GET /online with the key");
    assert_eq!(data.status(), StatusCode::OK);

    worker.stop().await;
    target.cleanup().await;
}
