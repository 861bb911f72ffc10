//! Who sent a request: client IP (honouring X-Forwarded-For only from trusted proxies) and the
//! parsed user agent, cached because browsers repeat the same few strings endlessly.

use crate::bots::BotRules;
use crate::geo::{GeoDb, Location};
use crate::privacy::IpPolicy;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use actix_web::http::header::{self, HeaderName};
use actix_web::HttpRequest;
use insightflow_model::{columns, ClientInfo};
use ipnet::IpNet;
use quick_cache::sync::Cache;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The parts of a [`ClientInfo`] that depend only on the user-agent string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Agent {
    browser: Option<String>,
    browser_version: Option<String>,
    os: Option<String>,
    device_type: Option<String>,
    /// A crawler by the parser, or a bot by the pattern list ([`BotRules`]).
    bot: bool,
}

/// What the request's address says of its sender, learned before the address is minimised.
#[derive(Debug, Clone, Default)]
struct Origin {
    /// The address as events carry it (`privacy.ip`).
    ip: Option<String>,
    location: Location,
    /// In `bots.ignore_ips`.
    bot: bool,
}

pub struct ClientResolver {
    agents: Cache<String, Arc<Agent>>,
    trusted_proxies: Vec<IpNet>,
    ip_policy: IpPolicy,
    bots: BotRules,
    geo: Option<Arc<GeoDb>>,
}

impl ClientResolver {
    pub fn new(trusted_proxies: Vec<IpNet>, cache_capacity: usize) -> Self {
        Self {
            agents: Cache::new(cache_capacity),
            trusted_proxies,
            ip_policy: IpPolicy::Full,
            bots: BotRules::default(),
            geo: None,
        }
    }

    /// Which senders are bots (`bots.*`).
    pub fn with_bots(self, bots: BotRules) -> Self {
        Self { bots, ..self }
    }

    /// Where client addresses are (`geo.database`); without one, events carry no location.
    pub fn with_geo(self, geo: Option<Arc<GeoDb>>) -> Self {
        Self { geo, ..self }
    }

    /// How much of the client IP the events carry (`privacy.ip`).
    pub fn with_ip_policy(self, ip_policy: IpPolicy) -> Self {
        Self { ip_policy, ..self }
    }

    /// The request's sender, shared by all of its events.
    pub fn for_request(&self, req: &HttpRequest) -> Arc<ClientInfo> {
        let origin = self.origin(self.client_ip(req));
        Arc::new(self.describe(origin, request_agent(req)))
    }

    /// Location and the IP rule read off the full address, then the address as stored.
    fn origin(&self, ip: Option<IpAddr>) -> Origin {
        let Some(ip) = ip else {
            return Origin::default();
        };
        Origin {
            ip: self.ip_policy.stored(ip),
            location: self
                .geo
                .as_ref()
                .map(|geo| geo.locate(ip))
                .unwrap_or_default(),
            bot: self.bots.is_ignored_ip(ip),
        }
    }

    /// The senders of one request's events, each described once per request.
    pub fn for_events(&self, req: &HttpRequest) -> RequestClients<'_> {
        let origin = self.origin(self.client_ip(req));
        RequestClients {
            resolver: self,
            request: Arc::new(self.describe(origin.clone(), request_agent(req))),
            origin,
            by_agent: Vec::new(),
        }
    }

    /// `user_agent` comes cut to its column: what is parsed and cached is what is stored,
    /// and the cache's keys stay bounded.
    fn describe(&self, origin: Origin, user_agent: Option<&str>) -> ClientInfo {
        let agent = user_agent.map(|ua| self.agent(ua)).unwrap_or_default();
        // The parser copies versions and names out of the user agent, as long as it has
        // them: fitted to their columns here, by the model's rule.
        ClientInfo {
            ip: origin.ip,
            user_agent: user_agent.map(str::to_owned),
            browser: agent.browser.clone(),
            browser_version: agent.browser_version.clone(),
            os: agent.os.clone(),
            device_type: agent.device_type.clone(),
            country: origin.location.country,
            region: origin.location.region,
            city: origin.location.city,
            bot: agent.bot || origin.bot,
        }
        .stored()
    }

    fn agent(&self, user_agent: &str) -> Arc<Agent> {
        if let Some(agent) = self.agents.get(user_agent) {
            return agent;
        }
        let mut parsed = parse_agent(user_agent);
        parsed.bot |= self.bots.is_bot_agent(user_agent);
        let agent = Arc::new(parsed);
        self.agents.insert(user_agent.to_owned(), agent.clone());
        agent
    }

    /// The socket peer, or, when the peer is a trusted proxy, the client X-Forwarded-For
    /// names ([`Self::forwarded_client`]).
    pub fn client_ip(&self, req: &HttpRequest) -> Option<IpAddr> {
        let peer = req.peer_addr()?.ip();
        let lines = req.headers().get_all(X_FORWARDED_FOR).map(|v| v.as_bytes());
        Some(self.forwarded_client(peer, lines))
    }

    /// Walks X-Forwarded-For from the right, starting at the socket peer. Every trusted proxy
    /// appends the address it received the request from, so each hop is vouched for by the
    /// one to its right only while that one is trusted: the first untrusted hop is the
    /// client, and everything left of it is whatever the client chose to send.
    ///
    /// All header lines count, in order, as one list (RFC 9110 §5.3: a proxy may add a line
    /// instead of extending the last one). A hop that is not an address (`unknown`, an
    /// obfuscated name, garbage) ends the walk at the last trusted hop: nothing left of it
    /// is vouched for. `IP:port` and `[IPv6]:port` are read as their IP; empty list
    /// elements are not hops (RFC 9110 §5.6.1).
    pub fn forwarded_client<'a>(
        &self,
        peer: IpAddr,
        lines: impl Iterator<Item = &'a [u8]>,
    ) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.is_trusted(peer) {
            return peer;
        }
        let hops: Vec<&[u8]> = lines.flat_map(|line| line.split(|&b| b == b',')).collect();
        let mut last_trusted = peer;
        for hop in hops.into_iter().rev() {
            let hop = hop.trim_ascii();
            if hop.is_empty() {
                continue;
            }
            let Some(ip) = parse_hop(hop) else {
                return last_trusted;
            };
            if !self.is_trusted(ip) {
                return ip;
            }
            last_trusted = ip;
        }
        last_trusted
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }
}

/// Distinct `context.user_agent`s remembered per request; a request naming more describes the
/// rest once per event (the user-agent cache still spares the parse).
const AGENTS_PER_REQUEST: usize = 16;

/// The senders of one request's events: the request's own, and one per distinct
/// `context.user_agent` its events name (a server-side SDK forwarding its users' browsers).
/// Events of one sender share one description, built once: no copy of the IP, the user agent
/// and the browser fields per event, and the payload writer writes a shared one once.
pub struct RequestClients<'r> {
    resolver: &'r ClientResolver,
    request: Arc<ClientInfo>,
    /// The request's address: the same for every sender it forwards.
    origin: Origin,
    by_agent: Vec<(String, Arc<ClientInfo>)>,
}

impl RequestClients<'_> {
    /// The sender of an event that named `user_agent` (`None`: the request's own).
    pub fn for_event(&mut self, user_agent: Option<&str>) -> Arc<ClientInfo> {
        let Some(user_agent) = user_agent else {
            return Arc::clone(&self.request);
        };
        let user_agent = columns::USER_AGENT.cut(user_agent);
        // A browser SDK names the browser that sent the request: the request's own sender.
        if self.request.user_agent.as_deref() == Some(user_agent) {
            return Arc::clone(&self.request);
        }
        if let Some((_, client)) = self.by_agent.iter().find(|(ua, _)| ua == user_agent) {
            return Arc::clone(client);
        }
        let client = Arc::new(
            self.resolver
                .describe(self.origin.clone(), Some(user_agent)),
        );
        if self.by_agent.len() < AGENTS_PER_REQUEST {
            self.by_agent
                .push((user_agent.to_owned(), Arc::clone(&client)));
        }
        client
    }
}

/// The request's `User-Agent`, cut to its column.
fn request_agent(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| columns::USER_AGENT.cut(ua))
}

/// One X-Forwarded-For element as an address: `192.0.2.1`, `2001:db8::1`, `192.0.2.1:4711`,
/// `[2001:db8::1]:4711` or `[2001:db8::1]`. IPv4-mapped IPv6 addresses become IPv4.
fn parse_hop(hop: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(hop).ok()?;
    let ip = text
        .parse::<IpAddr>()
        .or_else(|_| text.parse::<SocketAddr>().map(|a| a.ip()))
        .or_else(|_| {
            text.strip_prefix('[')
                .and_then(|t| t.strip_suffix(']'))
                .unwrap_or_default()
                .parse::<Ipv6Addr>()
                .map(IpAddr::V6)
        })
        .ok()?;
    Some(ip.to_canonical())
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
        bot: device_type == "bot",
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
            described(&resolver, &crafted),
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

    /// What the resolver says of a request from the test address with `user_agent`.
    fn described(resolver: &ClientResolver, user_agent: &str) -> Arc<ClientInfo> {
        let request = TestRequest::default()
            .peer_addr("203.0.113.9:5000".parse().unwrap())
            .insert_header(("user-agent", user_agent))
            .to_http_request();
        resolver.for_request(&request)
    }

    #[test]
    fn bots_are_known_by_user_agent_or_by_address_and_forwarded_agents_judged_alone() {
        let resolver = ClientResolver::new(Vec::new(), 16).with_bots(BotRules::new(
            &["acme-uptime".to_owned()],
            vec!["198.51.100.0/24".parse().unwrap()],
        ));
        assert!(!described(&resolver, CHROME_MAC).bot);
        assert!(described(&resolver, "curl/8.5.0").bot);
        assert!(described(&resolver, "acme-uptime/2").bot);
        let googlebot = described(&resolver, "Googlebot/2.1 (+http://www.google.com/bot.html)");
        assert!(googlebot.bot);
        assert_eq!(googlebot.device_type.as_deref(), Some("bot"));
        // A server-side SDK's request (an HTTP library: a bot) forwarding a browser.
        let request = TestRequest::default()
            .peer_addr("203.0.113.9:5000".parse().unwrap())
            .insert_header(("user-agent", "python-requests/2.31"))
            .to_http_request();
        let mut clients = resolver.for_events(&request);
        assert!(clients.for_event(None).bot);
        assert!(!clients.for_event(Some(CHROME_MAC)).bot);
        // From an ignored network, every sender is a bot's.
        let office = TestRequest::default()
            .peer_addr("198.51.100.7:5000".parse().unwrap())
            .insert_header(("user-agent", CHROME_MAC))
            .to_http_request();
        let mut clients = resolver.for_events(&office);
        assert!(clients.for_event(None).bot);
        assert!(clients.for_event(Some(SAFARI_IPHONE)).bot);
    }

    #[test]
    fn a_request_describes_each_sender_once_and_as_the_resolver_does() {
        let resolver = ClientResolver::new(Vec::new(), 16);
        let request = TestRequest::default()
            .peer_addr("203.0.113.9:5000".parse().unwrap())
            .insert_header(("user-agent", CHROME_MAC))
            .to_http_request();
        let mut clients = resolver.for_events(&request);
        let own = clients.for_event(None);
        assert_eq!(*own, *resolver.for_request(&request));
        // The request's own browser named in the event: the request's description, shared.
        assert!(Arc::ptr_eq(&own, &clients.for_event(Some(CHROME_MAC))));
        let phone = clients.for_event(Some(SAFARI_IPHONE));
        assert_eq!(*phone, *described(&resolver, SAFARI_IPHONE));
        assert_eq!(phone.ip.as_deref(), Some("203.0.113.9"));
        assert!(Arc::ptr_eq(&phone, &clients.for_event(Some(SAFARI_IPHONE))));
        // Past the per-request memory, still the same description, built again.
        let agents: Vec<String> = (0..AGENTS_PER_REQUEST + 2)
            .map(|i| format!("Agent/{i}.0"))
            .collect();
        for agent in &agents {
            clients.for_event(Some(agent));
        }
        let last = agents.last().unwrap();
        let again = clients.for_event(Some(last));
        assert_eq!(*again, *described(&resolver, last));
        assert!(!Arc::ptr_eq(&again, &clients.for_event(Some(last))));
        // A user agent longer than its column is cut before it is compared.
        let long = format!("{CHROME_MAC} {}", "x".repeat(600));
        let cut = clients.for_event(Some(&long));
        assert_eq!(*cut, *described(&resolver, &long));
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

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// The client a request from `peer` with these X-Forwarded-For lines is counted as, with
    /// 10.0.0.0/8 and 2001:db8:ffff::/48 trusted.
    fn client(peer: &str, lines: &[&str]) -> IpAddr {
        let resolver = ClientResolver::new(
            vec![
                "10.0.0.0/8".parse().unwrap(),
                "2001:db8:ffff::/48".parse().unwrap(),
            ],
            16,
        );
        let mut request = TestRequest::default().peer_addr(SocketAddr::new(ip(peer), 5000));
        for line in lines {
            request = request.append_header(("x-forwarded-for", *line));
        }
        resolver.client_ip(&request.to_http_request()).unwrap()
    }

    #[test]
    fn every_forwarded_for_line_counts_in_order() {
        // The client sent a line of its own; the proxy added its own line after it.
        assert_eq!(
            client("10.0.0.5", &["6.6.6.6", "198.51.100.7"]),
            ip("198.51.100.7")
        );
        assert_eq!(
            client("10.0.0.5", &["6.6.6.6, 198.51.100.7", "10.0.0.8, 10.0.0.9"]),
            ip("198.51.100.7")
        );
        // Order matters: the right-most line is the nearest hop.
        assert_eq!(
            client("10.0.0.5", &["198.51.100.7", "6.6.6.6"]),
            ip("6.6.6.6")
        );
    }

    #[test]
    fn a_hop_that_is_not_an_address_ends_the_walk_at_the_last_trusted_hop() {
        for garbage in [
            "unknown",
            "_hidden",
            "not an ip",
            "1.2.3",
            "fe80::1%eth0",
            "6.6.6.6:port",
        ] {
            assert_eq!(
                client("10.0.0.5", &[&format!("6.6.6.6, {garbage}, 10.0.0.9")]),
                ip("10.0.0.9"),
                "{garbage:?} stops the walk; 6.6.6.6 beyond it is never believed"
            );
            assert_eq!(
                client("10.0.0.5", &["6.6.6.6", garbage]),
                ip("10.0.0.5"),
                "{garbage:?} next to the peer: the peer is the client"
            );
        }
        // Bytes that are not text are not an address either; other hops still parse.
        let resolver = ClientResolver::new(vec!["10.0.0.0/8".parse().unwrap()], 16);
        let lines: [&[u8]; 2] = [b"6.6.6.6, 198.51.100.7", b"\xff\xfe, 10.0.0.9"];
        assert_eq!(
            resolver.forwarded_client(ip("10.0.0.5"), lines.into_iter()),
            ip("10.0.0.9")
        );
    }

    #[test]
    fn an_all_trusted_chain_yields_its_left_most_hop() {
        assert_eq!(client("10.0.0.5", &["10.0.0.1, 10.0.0.2"]), ip("10.0.0.1"));
        assert_eq!(
            client("10.0.0.5", &[]),
            ip("10.0.0.5"),
            "no header: the peer"
        );
        assert_eq!(client("10.0.0.5", &[""]), ip("10.0.0.5"), "an empty header");
    }

    #[test]
    fn ports_brackets_empty_elements_and_mapped_addresses() {
        assert_eq!(
            client("10.0.0.5", &["198.51.100.7:4711"]),
            ip("198.51.100.7")
        );
        assert_eq!(
            client("10.0.0.5", &["[2001:db8::7]:443"]),
            ip("2001:db8::7")
        );
        assert_eq!(client("10.0.0.5", &["[2001:db8::7]"]), ip("2001:db8::7"));
        assert_eq!(client("10.0.0.5", &["2001:db8::7"]), ip("2001:db8::7"));
        assert_eq!(
            client("10.0.0.5", &["198.51.100.7, , 10.0.0.9,"]),
            ip("198.51.100.7"),
            "empty list elements are not hops"
        );
        // A trusted proxy reached over an IPv4-mapped address (a dual-stack socket) is
        // still trusted, and a mapped hop is the IPv4 client.
        assert_eq!(
            client("::ffff:10.0.0.5", &["::ffff:198.51.100.7"]),
            ip("198.51.100.7")
        );
        assert_eq!(
            client(
                "2001:db8:ffff::1",
                &["2001:db8:1::9, [2001:db8:ffff::2]:80"]
            ),
            ip("2001:db8:1::9")
        );
        // An untrusted peer's header is never read.
        assert_eq!(client("203.0.113.9", &["198.51.100.7"]), ip("203.0.113.9"));
    }
}
