//! Who sent a request: client IP (honouring X-Forwarded-For only from trusted proxies) and the
//! parsed user agent, cached because browsers repeat the same few strings endlessly.

use std::net::IpAddr;
use std::sync::Arc;

use actix_web::http::header;
use actix_web::HttpRequest;
use insightflow_model::{columns, ClientInfo};
use ipnet::IpNet;
use quick_cache::sync::Cache;

/// The parts of a [`ClientInfo`] that depend only on the user-agent string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Agent {
    browser: Option<String>,
    browser_version: Option<String>,
    os: Option<String>,
    device_type: Option<String>,
}

pub struct ClientResolver {
    agents: Cache<String, Arc<Agent>>,
    trusted_proxies: Vec<IpNet>,
}

impl ClientResolver {
    pub fn new(trusted_proxies: Vec<IpNet>, cache_capacity: usize) -> Self {
        Self {
            agents: Cache::new(cache_capacity),
            trusted_proxies,
        }
    }

    /// The request's sender, shared by all of its events.
    pub fn for_request(&self, req: &HttpRequest) -> Arc<ClientInfo> {
        let user_agent = req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| columns::USER_AGENT.cut(ua));
        let ip = self.client_ip(req).map(|ip| ip.to_string());
        Arc::new(self.describe(ip, user_agent))
    }

    /// A sender described by another user agent (an event's `context.user_agent`), same IP.
    pub fn with_user_agent(&self, base: &ClientInfo, user_agent: &str) -> Arc<ClientInfo> {
        Arc::new(self.describe(base.ip.clone(), Some(columns::USER_AGENT.cut(user_agent))))
    }

    /// `user_agent` comes cut to its column: what is parsed and cached is what is stored,
    /// and the cache's keys stay bounded.
    fn describe(&self, ip: Option<String>, user_agent: Option<&str>) -> ClientInfo {
        let agent = user_agent.map(|ua| self.agent(ua)).unwrap_or_default();
        // The parser copies versions and names out of the user agent, as long as it has
        // them: fitted to their columns here, by the model's rule.
        ClientInfo {
            ip,
            user_agent: user_agent.map(str::to_owned),
            browser: agent.browser.clone(),
            browser_version: agent.browser_version.clone(),
            os: agent.os.clone(),
            device_type: agent.device_type.clone(),
        }
        .stored()
    }

    fn agent(&self, user_agent: &str) -> Arc<Agent> {
        if let Some(agent) = self.agents.get(user_agent) {
            return agent;
        }
        let agent = Arc::new(parse_agent(user_agent));
        self.agents.insert(user_agent.to_owned(), agent.clone());
        agent
    }

    /// The socket peer, or the right-most untrusted address of X-Forwarded-For when the peer
    /// is a trusted proxy (left-most entries are client-controlled and cannot be believed).
    pub fn client_ip(&self, req: &HttpRequest) -> Option<IpAddr> {
        let peer = req.peer_addr()?.ip();
        if !self.is_trusted(peer) {
            return Some(peer);
        }
        let forwarded = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok());
        let Some(forwarded) = forwarded else {
            return Some(peer);
        };
        let mut hops = forwarded
            .rsplit(',')
            .filter_map(|s| s.trim().parse::<IpAddr>().ok());
        let mut last = peer;
        for hop in hops.by_ref() {
            if !self.is_trusted(hop) {
                return Some(hop);
            }
            last = hop;
        }
        Some(last)
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }
}

fn known(value: &str) -> Option<String> {
    (!value.is_empty() && value != woothee::woothee::VALUE_UNKNOWN).then(|| value.to_owned())
}

fn parse_agent(user_agent: &str) -> Agent {
    let Some(parsed) = woothee::parser::Parser::new().parse(user_agent) else {
        return Agent {
            device_type: Some("other".to_owned()),
            ..Agent::default()
        };
    };
    let lower = user_agent.to_ascii_lowercase();
    let device_type = match parsed.category {
        "crawler" => "bot",
        "smartphone" | "mobilephone" if lower.contains("ipad") || lower.contains("tablet") => {
            "tablet"
        }
        "smartphone" | "mobilephone" => "mobile",
        "pc" if lower.contains("ipad") => "tablet",
        "pc" => "desktop",
        _ => "other",
    };
    Agent {
        browser: known(parsed.name),
        browser_version: known(parsed.version),
        os: known(parsed.os),
        device_type: Some(device_type.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    const CHROME_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
    const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1";

    #[test]
    fn user_agents_are_parsed_into_browser_os_and_device() {
        let desktop = parse_agent(CHROME_MAC);
        assert_eq!(desktop.browser.as_deref(), Some("Chrome"));
        assert_eq!(desktop.os.as_deref(), Some("Mac OSX"));
        assert_eq!(desktop.device_type.as_deref(), Some("desktop"));
        let phone = parse_agent(SAFARI_IPHONE);
        assert_eq!(phone.device_type.as_deref(), Some("mobile"));
        assert_eq!(
            parse_agent("Googlebot/2.1 (+http://www.google.com/bot.html)")
                .device_type
                .as_deref(),
            Some("bot")
        );
    }

    #[test]
    fn what_the_user_agent_yields_fits_its_columns() {
        // The parser copies the version as long as it is: 200 characters here.
        let version = "1.".repeat(100);
        let crafted = format!(
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{version} Safari/537.36 {}",
            // ASCII: a header value with other bytes is not read as text at all.
            "x".repeat(600)
        );
        let parsed = parse_agent(&crafted);
        assert!(
            parsed.browser_version.as_deref().map_or(0, str::len) > 64,
            "the parser yields the long version: {parsed:?}"
        );
        let resolver = ClientResolver::new(Vec::new(), 16);
        let request = TestRequest::default()
            .peer_addr("203.0.113.9:5000".parse().unwrap())
            .insert_header(("user-agent", crafted.as_str()))
            .to_http_request();
        for info in [
            resolver.for_request(&request),
            resolver.with_user_agent(&ClientInfo::default(), &crafted),
        ] {
            let version = info.browser_version.as_deref().unwrap();
            assert_eq!(version.chars().count(), columns::BROWSER_VERSION.width());
            assert!(crafted.contains(version));
            let user_agent = info.user_agent.as_deref().unwrap();
            assert_eq!(user_agent.chars().count(), columns::USER_AGENT.width());
            assert!(crafted.starts_with(user_agent));
            assert_eq!(info.browser.as_deref(), Some("Chrome"));
        }
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let resolver = ClientResolver::new(vec!["10.0.0.0/8".parse().unwrap()], 16);
        let direct = TestRequest::default()
            .peer_addr("203.0.113.9:5000".parse().unwrap())
            .insert_header(("x-forwarded-for", "1.2.3.4"))
            .to_http_request();
        assert_eq!(
            resolver.client_ip(&direct),
            Some("203.0.113.9".parse().unwrap())
        );
        let proxied = TestRequest::default()
            .peer_addr("10.0.0.5:5000".parse().unwrap())
            .insert_header(("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.9"))
            .to_http_request();
        assert_eq!(
            resolver.client_ip(&proxied),
            Some("198.51.100.7".parse().unwrap())
        );
    }
}
