//! Who sent a request: client IP (honouring X-Forwarded-For only from trusted proxies) and the
//! parsed user agent, cached because browsers repeat the same few strings endlessly.

use std::net::IpAddr;
use std::sync::Arc;

use actix_web::http::header;
use actix_web::HttpRequest;
use insightflow_model::ClientInfo;
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

/// Longer user agents are not worth caching or parsing in full.
const MAX_USER_AGENT_BYTES: usize = 512;

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
            .map(truncate_user_agent);
        let ip = self.client_ip(req).map(|ip| ip.to_string());
        Arc::new(self.describe(ip, user_agent))
    }

    /// A sender described by another user agent (an event's `context.user_agent`), same IP.
    pub fn with_user_agent(&self, base: &ClientInfo, user_agent: &str) -> Arc<ClientInfo> {
        Arc::new(self.describe(base.ip.clone(), Some(truncate_user_agent(user_agent))))
    }

    fn describe(&self, ip: Option<String>, user_agent: Option<&str>) -> ClientInfo {
        let agent = user_agent.map(|ua| self.agent(ua)).unwrap_or_default();
        ClientInfo {
            ip,
            user_agent: user_agent.map(str::to_owned),
            browser: agent.browser.clone(),
            browser_version: agent.browser_version.clone(),
            os: agent.os.clone(),
            device_type: agent.device_type.clone(),
        }
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

fn truncate_user_agent(ua: &str) -> &str {
    if ua.len() <= MAX_USER_AGENT_BYTES {
        return ua;
    }
    let mut end = MAX_USER_AGENT_BYTES;
    while !ua.is_char_boundary(end) {
        end -= 1;
    }
    &ua[..end]
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
