//! Realistic synthetic events, in the shape browser SDKs send them: a mix of page views,
//! clicks with element data, product views, cart changes, searches and purchases with
//! properties, about 500 bytes each, spread over many users and sessions.
//!
//! Generation is deterministic for a seed, so the raw-stores baseline can rebuild exactly the
//! events a pre-filled topic holds.

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use insightflow_model::{parse_batch, ClientInfo, Event, Limits, ProjectId, RawBody, RequestClock};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// Browsers as the gateway would describe them after parsing the user agent.
const AGENTS: [(&str, &str, &str, &str, &str); 5] = [
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        "Chrome", "124.0.0.0", "Windows 10", "desktop",
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
        "Safari", "17.4", "Mac OSX", "desktop",
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
        "Safari", "17.4", "iPhone", "mobile",
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
        "Chrome", "124.0.0.0", "Android", "mobile",
    ),
    (
        "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
        "Firefox", "125.0", "Linux", "desktop",
    ),
];

const LOCALES: [(&str, &str); 4] = [
    ("en-US", "America/New_York"),
    ("de-DE", "Europe/Berlin"),
    ("fr-FR", "Europe/Paris"),
    ("en-IN", "Asia/Kolkata"),
];

const SEARCHES: [&str; 6] = [
    "running shoes",
    "wireless headphones",
    "coffee grinder",
    "rain jacket",
    "desk lamp",
    "yoga mat",
];

pub struct EventGenerator {
    rng: StdRng,
    users: u64,
    products: u64,
    /// Event times are spread over this many seconds before "now".
    spread_seconds: i64,
    with_event_ids: bool,
}

impl EventGenerator {
    pub fn new(seed: u64, users: u64, with_event_ids: bool) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            users: users.max(1),
            products: 500,
            spread_seconds: 120,
            with_event_ids,
        }
    }

    /// One SDK event. `now` anchors the event time (a little in the past).
    pub fn next_event(&mut self, now: DateTime<Utc>) -> Value {
        let rng = &mut self.rng;
        // A skewed choice of user: a few heavy users, a long tail.
        let u: f64 = rng.random();
        let user = ((u * u) * self.users as f64) as u64;
        let identified = user % 10 < 7;
        let session = format!("s{user:07}-{}", rng.random_range(0..3u8));
        let product = rng.random_range(0..self.products);
        let (ua, ..) = AGENTS[(user % AGENTS.len() as u64) as usize];
        let (locale, timezone) = LOCALES[(user % LOCALES.len() as u64) as usize];
        let time = now - TimeDelta::milliseconds(rng.random_range(0..self.spread_seconds * 1000));
        let roll = rng.random_range(0..100u8);
        let (event_type, path, title) = match roll {
            0..=49 => {
                let page = rng.random_range(0..40u8);
                (
                    "page_view",
                    format!("/category/{page}/items"),
                    format!("Category {page} - Example Shop"),
                )
            }
            50..=74 => (
                "click",
                format!("/products/{product}"),
                format!("Product {product} - Example Shop"),
            ),
            75..=84 => (
                "product_view",
                format!("/products/{product}"),
                format!("Product {product} - Example Shop"),
            ),
            85..=90 => (
                "search",
                "/search".to_owned(),
                "Search - Example Shop".to_owned(),
            ),
            91..=95 => (
                "cart_add",
                format!("/products/{product}"),
                format!("Product {product} - Example Shop"),
            ),
            96..=97 => ("cart_remove", "/cart".to_owned(), "Cart".to_owned()),
            _ => (
                "purchase",
                "/checkout/complete".to_owned(),
                "Thank you - Example Shop".to_owned(),
            ),
        };
        let mut event = json!({
            "event_type": event_type,
            "session_id": session,
            "timestamp": time.to_rfc3339_opts(SecondsFormat::Millis, true),
            "page": {
                "url": format!("https://shop.example.com{path}"),
                "path": path,
                "title": title,
                "referrer": "https://www.google.com/",
            },
            "context": {
                "library": {"name": "insightflow-js", "version": "1.4.2"},
                "screen": {"width": 1920, "height": 1080},
                "locale": locale,
                "timezone": timezone,
                "user_agent": ua,
            },
        });
        if identified {
            event["user_id"] = json!(format!("user_{user:07}"));
        } else {
            event["anonymous_id"] = json!(format!("anon_{user:07}"));
        }
        match event_type {
            "click" => {
                event["element"] = json!({
                    "tag": "button",
                    "id": format!("add-to-cart-{product}"),
                    "classes": "btn btn-primary add-to-cart",
                    "text": "Add to cart",
                    "selector": format!("#product-{product} button.add-to-cart"),
                    "x": rng.random_range(0..1920),
                    "y": rng.random_range(0..4000),
                });
            }
            "product_view" | "cart_add" | "cart_remove" => {
                event["properties"] = json!({
                    "product_id": format!("sku-{product:05}"),
                    "price": (product % 90 + 10) as f64 - 0.01,
                    "currency": "EUR",
                    "category": format!("category-{}", product % 40),
                });
            }
            "search" => {
                event["properties"] = json!({
                    "query": SEARCHES[rng.random_range(0..SEARCHES.len())],
                    "results": rng.random_range(0..200),
                });
            }
            "purchase" => {
                event["properties"] = json!({
                    "order_id": format!("order-{}", rng.random::<u32>()),
                    "revenue": rng.random_range(10..500) as f64 + 0.99,
                    "currency": "EUR",
                    "items": [{"product_id": format!("sku-{product:05}"), "quantity": rng.random_range(1..4)}],
                    "coupon": "SPRING10",
                });
                event["user_properties"] =
                    json!({"plan": "member", "orders": rng.random_range(1..20)});
            }
            _ => {}
        }
        if self.with_event_ids {
            let bytes: [u8; 16] = rng.random();
            event["event_id"] = json!(uuid::Builder::from_random_bytes(bytes)
                .into_uuid()
                .to_string());
        }
        event
    }

    /// A request body of `n` events in the canonical batch shape.
    pub fn batch_body(&mut self, n: usize, now: DateTime<Utc>) -> Vec<u8> {
        let events: Vec<Value> = (0..n).map(|_| self.next_event(now)).collect();
        let body = json!({
            "sent_at": now.to_rfc3339_opts(SecondsFormat::Millis, true),
            "events": events,
        });
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

/// Validates and enriches a body the way the gateway does (the user agent described from a
/// fixed table rather than parsed), giving the events the gateway would publish.
pub fn validated_events(
    body: &[u8],
    project: &ProjectId,
    received_at: DateTime<Utc>,
) -> anyhow::Result<Vec<Event>> {
    let limits = Limits::default();
    let text = std::str::from_utf8(body)?;
    let raw = RawBody::parse(text, &limits).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let sent_at = raw.sent_at().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let clock = RequestClock::new(received_at, sent_at, limits.max_future_seconds);
    let clients: Vec<Arc<ClientInfo>> = AGENTS
        .iter()
        .map(|(ua, browser, version, os, device)| {
            Arc::new(ClientInfo {
                ip: Some("127.0.0.1".to_owned()),
                user_agent: Some((*ua).to_owned()),
                browser: Some((*browser).to_owned()),
                browser_version: Some((*version).to_owned()),
                os: Some((*os).to_owned()),
                device_type: Some((*device).to_owned()),
                ..ClientInfo::default()
            })
        })
        .collect();
    let fallback = Arc::new(ClientInfo::default());
    let outcome = parse_batch(&raw, project, &clock, &limits, |agent| {
        agent
            .and_then(|a| AGENTS.iter().position(|(ua, ..)| *ua == a))
            .map_or_else(|| fallback.clone(), |i| clients[i].clone())
    });
    anyhow::ensure!(
        outcome.rejected.is_empty(),
        "generated events were rejected: {:?}",
        outcome.rejected
    );
    Ok(outcome.accepted)
}

/// The Kafka payload of an event, byte for byte what the gateway's producer writes.
pub fn kafka_payload(event: &Event) -> Vec<u8> {
    serde_json::to_vec(event).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_events_validate_and_weigh_about_500_bytes() {
        let mut generator = EventGenerator::new(7, 1000, true);
        let now = Utc::now();
        let body = generator.batch_body(200, now);
        let project = ProjectId::parse("default").expect("valid project");
        let events = validated_events(&body, &project, now).expect("valid events");
        assert_eq!(events.len(), 200);
        let average = body.len() / 200;
        assert!(
            (300..900).contains(&average),
            "average event is {average} bytes"
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_events() {
        let now = Utc::now();
        let a = EventGenerator::new(1, 100, true).batch_body(10, now);
        let b = EventGenerator::new(1, 100, true).batch_body(10, now);
        assert_eq!(a, b);
    }
}
