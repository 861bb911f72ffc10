//! What the gateway keeps of a sender, by configuration (`[privacy]`), before anything
//! reaches Kafka: the client IP in full, truncated to its network (IPv4 /24, IPv6 /48) or not
//! at all; and whether a browser's Global Privacy Control (`Sec-GPC: 1`) or Do-Not-Track
//! (`DNT: 1`) signal means its events are not collected. Rate limits always use the full
//! address, which is never stored by them.

use std::net::IpAddr;

use actix_web::HttpRequest;
use serde::Deserialize;

/// How much of the client IP is stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IpPolicy {
    /// As seen (the socket peer, or the client a trusted proxy names).
    #[default]
    Full,
    /// The network: the last octet of IPv4 and the last 80 bits of IPv6 zeroed.
    Truncated,
    /// Nothing.
    None,
}

impl IpPolicy {
    /// The address as stored under this policy.
    pub fn stored(self, ip: IpAddr) -> Option<String> {
        match self {
            Self::Full => Some(ip.to_string()),
            Self::Truncated => Some(match ip {
                IpAddr::V4(v4) => {
                    let [a, b, c, _] = v4.octets();
                    IpAddr::from([a, b, c, 0]).to_string()
                }
                IpAddr::V6(v6) => {
                    let s = v6.segments();
                    IpAddr::from([s[0], s[1], s[2], 0, 0, 0, 0, 0]).to_string()
                }
            }),
            Self::None => None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct PrivacySettings {
    pub ip: IpPolicy,
    /// Requests with `Sec-GPC: 1` are answered without collecting their events.
    pub honor_gpc: bool,
    /// Requests with `DNT: 1` are answered without collecting their events.
    pub honor_dnt: bool,
}

impl PrivacySettings {
    /// Why the request's events are not collected (`gpc`, `dnt`), if they are not.
    pub fn not_collected(&self, req: &HttpRequest) -> Option<&'static str> {
        let set = |name: &str| {
            req.headers()
                .get(name)
                .is_some_and(|v| v.as_bytes().trim_ascii() == b"1")
        };
        if self.honor_gpc && set("sec-gpc") {
            Some("gpc")
        } else if self.honor_dnt && set("dnt") {
            Some("dnt")
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn addresses_are_kept_whole_truncated_or_not_at_all() {
        let v4: IpAddr = "203.0.113.77".parse().unwrap();
        let v6: IpAddr = "2001:db8:abcd:12:34:56:78:9a".parse().unwrap();
        assert_eq!(IpPolicy::Full.stored(v4).as_deref(), Some("203.0.113.77"));
        assert_eq!(
            IpPolicy::Truncated.stored(v4).as_deref(),
            Some("203.0.113.0")
        );
        assert_eq!(
            IpPolicy::Truncated.stored(v6).as_deref(),
            Some("2001:db8:abcd::")
        );
        assert_eq!(IpPolicy::None.stored(v6), None);
    }

    #[test]
    fn signals_count_only_when_honoured_and_set() {
        let gpc = TestRequest::default()
            .insert_header(("Sec-GPC", "1"))
            .to_http_request();
        let dnt = TestRequest::default()
            .insert_header(("DNT", "1"))
            .to_http_request();
        let off = TestRequest::default()
            .insert_header(("DNT", "0"))
            .to_http_request();
        let ignoring = PrivacySettings::default();
        assert_eq!(ignoring.not_collected(&gpc), None);
        let honouring = PrivacySettings {
            honor_gpc: true,
            honor_dnt: true,
            ..PrivacySettings::default()
        };
        assert_eq!(honouring.not_collected(&gpc), Some("gpc"));
        assert_eq!(honouring.not_collected(&dnt), Some("dnt"));
        assert_eq!(honouring.not_collected(&off), None);
    }
}
