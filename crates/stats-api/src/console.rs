//! The live dashboard (`web/dashboard`), built by `build.rs` and embedded in the binary:
//! `GET /ui/` and its assets. The page is static and needs no key; it reads the stats API of
//! this origin with the key the user pastes, so it is served beside the API and nowhere else.
//!
//! Every answer carries a strict Content-Security-Policy (nothing but this origin, no inline
//! script or style, Trusted Types with no policy) and `nosniff`. Assets have a content hash
//! in their name and are cached as immutable; the page itself is revalidated by its ETag.

use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Compress;
use actix_web::{guard, web, HttpRequest, HttpResponse};

/// One built file of the dashboard.
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    /// The name carries a content hash: the bytes behind it never change.
    pub immutable: bool,
    pub etag: &'static str,
    pub body: &'static [u8],
}

/// The dashboard's files, as `build.rs` found them in its output.
pub static ASSETS: &[Asset] = include!(concat!(env!("OUT_DIR"), "/dashboard_assets.rs"));

pub const INDEX: &str = "index.html";

/// Scripts, styles, images and requests from this origin only; no plugin, no `<base>`, no
/// form posting anywhere, no framing; DOM injection sinks refused (Trusted Types, no policy).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; font-src 'self'; object-src 'none'; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'; \
    require-trusted-types-for 'script'; trusted-types 'none'";

/// `/ui`, `/ui/` and `/ui/{file}`, GET and HEAD, compressed when the client accepts it.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let get_or_head = || web::route().guard(guard::Any(guard::Get()).or(guard::Head()));
    cfg.service(
        web::scope("/ui")
            .wrap(Compress::default())
            .route("", get_or_head().to(to_index))
            .route("/", get_or_head().to(index))
            .route("/{file}", get_or_head().to(asset))
            .default_service(web::to(not_found)),
    );
}

/// `/ui` -> `/ui/`, so the page's relative asset and API addresses resolve under it.
async fn to_index(request: HttpRequest) -> HttpResponse {
    let location = match request.query_string() {
        "" => "/ui/".to_owned(),
        query => format!("/ui/?{query}"),
    };
    secured(&mut HttpResponse::PermanentRedirect())
        .insert_header((header::LOCATION, location))
        .finish()
}

async fn index(request: HttpRequest) -> HttpResponse {
    serve(&request, INDEX)
}

async fn asset(request: HttpRequest, file: web::Path<String>) -> HttpResponse {
    serve(&request, &file)
}

async fn not_found() -> HttpResponse {
    secured(&mut HttpResponse::NotFound())
        .content_type("text/plain; charset=utf-8")
        .body("not found\n")
}

pub fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|asset| asset.name == name)
}

fn serve(request: &HttpRequest, name: &str) -> HttpResponse {
    let Some(asset) = find(name) else {
        return secured(&mut HttpResponse::NotFound())
            .content_type("text/plain; charset=utf-8")
            .body("not found\n");
    };
    let cache = if asset.immutable {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let unchanged = request
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .map(str::trim)
                .any(|tag| tag == "*" || weak(tag) == weak(asset.etag))
        });
    let mut response = if unchanged {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    secured(&mut response)
        .insert_header((header::ETAG, asset.etag))
        .insert_header((header::CACHE_CONTROL, cache));
    if unchanged {
        return response.finish();
    }
    response
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        ))
        .body(asset.body)
}

/// An entity tag without its weakness mark: `If-None-Match` compares weakly.
fn weak(tag: &str) -> &str {
    tag.trim_start_matches("W/")
}

/// The headers every dashboard answer carries.
fn secured(response: &mut actix_web::HttpResponseBuilder) -> &mut actix_web::HttpResponseBuilder {
    response
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header(("Cross-Origin-Opener-Policy", "same-origin"))
        .insert_header(("Cross-Origin-Resource-Policy", "same-origin"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_every_asset_it_names_are_embedded() {
        let page = std::str::from_utf8(find(INDEX).expect("index.html").body).expect("UTF-8");
        for asset in ASSETS.iter().filter(|a| a.name != INDEX) {
            assert!(asset.immutable, "{} is served as immutable", asset.name);
            assert!(
                page.contains(&format!("\"{}\"", asset.name)),
                "index.html names {}",
                asset.name
            );
        }
        assert!(!page.contains("<script>"), "no inline script");
        assert!(!page.contains("style="), "no inline style");
    }
}
