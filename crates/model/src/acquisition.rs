//! Where a visit came from, read off an event the way the gateway receives it: the UTM
//! parameters and ad click ids of the page URL (or Segment's `context.campaign`), the
//! referrer's domain, and a channel from the rule table below. Pure functions; no I/O.
//!
//! **Channel rules**, first match wins:
//!
//! | # | when | channel |
//! |---|---|---|
//! | 1 | a paid-search click id (`gclid`, `gbraid`, `wbraid`, `msclkid`, `yclid`) | `paid_search` |
//! | 2 | a paid-social click id (`ttclid`, `li_fat_id`, `twclid`, `rdt_cid`, `sccid`, `epik`) | `paid_social` |
//! | 3 | a display click id (`dclid`) | `display` |
//! | 4 | `utm_medium` is email (`email`, `e-mail`, `e_mail`, `newsletter`) | `email` |
//! | 5 | `utm_medium` is affiliate (`affiliate`, `affiliates`, `partner`, `partners`) | `affiliate` |
//! | 6 | `utm_medium` is display (`display`, `banner`, `cpm`, `interstitial`) | `display` |
//! | 7 | `utm_medium` is paid social (`paid-social`, `paidsocial`, `paid_social`, `social-paid`, `social_paid`), or paid (`cpc`, `ppc`, `paid`) with a social `utm_source` | `paid_social` |
//! | 8 | `utm_medium` is paid search (`cpc`, `ppc`, `paid`, `paidsearch`, `paid-search`, `paid_search`, `sem`) | `paid_search` |
//! | 9 | `utm_medium` is social (`social`, `social-network`, `social_network`, `social-media`, `social_media`, `sm`), or `fbclid` is present | `organic_social` |
//! | 10 | any other `utm_medium`, or a `utm_source` that names no search engine or social network | `other_campaign` |
//! | 11 | `utm_source` alone names a search engine / a social network | `organic_search` / `organic_social` |
//! | 12 | no referrer | `direct` |
//! | 13 | the referrer's host is the page's own | `internal` |
//! | 14 | the referrer is webmail (`mail.google.com`, `outlook.live.com`, ...) | `email` |
//! | 15 | the referrer is a search engine | `organic_search` |
//! | 16 | the referrer is a social network | `organic_social` |
//! | 17 | any other referrer | `referral` |
//!
//! Media and sources compare case-insensitively. Domains are matched without `www.`: a search
//! engine is `google.*`, `bing.com`, `duckduckgo.com`, `search.yahoo.*`, `yandex.*`,
//! `baidu.com`, `ecosia.org`, `search.brave.com`, `qwant.com`, `startpage.com`,
//! `search.naver.com`, `seznam.cz`; a social network is listed in `SOCIAL`.

use std::borrow::Cow;

use serde::de::Error as _;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest UTM value, click id or domain kept (characters); longer ones are cut.
pub const MAX_VALUE_CHARS: usize = 255;

/// A channel (see the module's rule table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Direct,
    Internal,
    OrganicSearch,
    PaidSearch,
    OrganicSocial,
    PaidSocial,
    Email,
    Affiliate,
    Display,
    Referral,
    OtherCampaign,
}

impl Channel {
    pub const ALL: [Channel; 11] = [
        Channel::Direct,
        Channel::Internal,
        Channel::OrganicSearch,
        Channel::PaidSearch,
        Channel::OrganicSocial,
        Channel::PaidSocial,
        Channel::Email,
        Channel::Affiliate,
        Channel::Display,
        Channel::Referral,
        Channel::OtherCampaign,
    ];

    /// The channel named `name` ([`Self::as_str`]).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Internal => "internal",
            Self::OrganicSearch => "organic_search",
            Self::PaidSearch => "paid_search",
            Self::OrganicSocial => "organic_social",
            Self::PaidSocial => "paid_social",
            Self::Email => "email",
            Self::Affiliate => "affiliate",
            Self::Display => "display",
            Self::Referral => "referral",
            Self::OtherCampaign => "other_campaign",
        }
    }
}

/// UTM fields as Segment's `context.campaign` names them (`name` is the campaign).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Campaign {
    pub source: Option<String>,
    pub medium: Option<String>,
    pub name: Option<String>,
    pub term: Option<String>,
    pub content: Option<String>,
}

impl Campaign {
    fn is_empty(&self) -> bool {
        self.source.is_none()
            && self.medium.is_none()
            && self.name.is_none()
            && self.term.is_none()
            && self.content.is_none()
    }
}

/// An ad platform's click id from the page URL: which parameter, and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClickId {
    pub kind: &'static str,
    pub value: String,
}

impl ClickId {
    /// The known click-id parameter named `kind`.
    pub fn known_kind(kind: &str) -> Option<&'static str> {
        PAID_SEARCH_IDS
            .iter()
            .chain(&PAID_SOCIAL_IDS)
            .chain(&DISPLAY_IDS)
            .chain(std::iter::once(&FBCLID))
            .find(|k| **k == kind)
            .copied()
    }
}

/// Where the visit came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acquisition {
    /// The UTM fields: from the page URL, or from `context.campaign` where the URL has none.
    pub campaign: Campaign,
    pub click_id: Option<ClickId>,
    /// The referrer's host, lower case, without `www.`.
    pub referrer_domain: Option<String>,
    pub channel: Channel,
}

/// The wire form of an [`Acquisition`] in the Kafka payload (flat, named as the columns):
/// `{"channel": .., "utm_source": .., "utm_medium": .., "utm_campaign": .., "utm_term": ..,
/// "utm_content": .., "click_id_type": .., "click_id": .., "referrer_domain": ..}`, absent
/// values left out. [`crate::PayloadWriter`] writes the same bytes.
#[derive(Deserialize)]
struct AcquisitionWire {
    channel: String,
    #[serde(default)]
    utm_source: Option<String>,
    #[serde(default)]
    utm_medium: Option<String>,
    #[serde(default)]
    utm_campaign: Option<String>,
    #[serde(default)]
    utm_term: Option<String>,
    #[serde(default)]
    utm_content: Option<String>,
    #[serde(default)]
    click_id_type: Option<String>,
    #[serde(default)]
    click_id: Option<String>,
    #[serde(default)]
    referrer_domain: Option<String>,
}

impl<'de> Deserialize<'de> for Acquisition {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let w = AcquisitionWire::deserialize(deserializer)?;
        let channel = Channel::parse(&w.channel)
            .ok_or_else(|| D::Error::custom(format!("unknown channel {:?}", w.channel)))?;
        let click_id = match (w.click_id_type, w.click_id) {
            (Some(kind), Some(value)) => Some(ClickId {
                kind: ClickId::known_kind(&kind)
                    .ok_or_else(|| D::Error::custom(format!("unknown click id type {kind:?}")))?,
                value: clip(&value),
            }),
            _ => None,
        };
        let clipped = |v: Option<String>| v.map(|v| clip(&v));
        Ok(Self {
            campaign: Campaign {
                source: clipped(w.utm_source),
                medium: clipped(w.utm_medium),
                name: clipped(w.utm_campaign),
                term: clipped(w.utm_term),
                content: clipped(w.utm_content),
            },
            click_id,
            referrer_domain: clipped(w.referrer_domain),
            channel,
        })
    }
}

impl Serialize for Acquisition {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fields = self.fields();
        let mut map = serializer.serialize_map(None)?;
        for (name, value) in fields {
            if let Some(v) = value {
                map.serialize_entry(name, v)?;
            }
        }
        map.end()
    }
}

impl Acquisition {
    /// The wire fields in order, each named as its column (`channel` always present).
    pub fn fields(&self) -> [(&'static str, Option<&str>); 9] {
        let c = &self.campaign;
        [
            ("channel", Some(self.channel.as_str())),
            ("utm_source", c.source.as_deref()),
            ("utm_medium", c.medium.as_deref()),
            ("utm_campaign", c.name.as_deref()),
            ("utm_term", c.term.as_deref()),
            ("utm_content", c.content.as_deref()),
            ("click_id_type", self.click_id.as_ref().map(|c| c.kind)),
            ("click_id", self.click_id.as_ref().map(|c| c.value.as_str())),
            ("referrer_domain", self.referrer_domain.as_deref()),
        ]
    }
}

const PAID_SEARCH_IDS: [&str; 5] = ["gclid", "gbraid", "wbraid", "msclkid", "yclid"];
const PAID_SOCIAL_IDS: [&str; 6] = ["ttclid", "li_fat_id", "twclid", "rdt_cid", "sccid", "epik"];
const DISPLAY_IDS: [&str; 1] = ["dclid"];
/// Added by Facebook to organic shares as well as ads: social, paid only if the UTM says so.
const FBCLID: &str = "fbclid";

const SEARCH_PREFIXES: [&str; 3] = ["google.", "search.yahoo.", "yandex."];
const SEARCH: [&str; 9] = [
    "bing.com",
    "duckduckgo.com",
    "baidu.com",
    "ecosia.org",
    "search.brave.com",
    "qwant.com",
    "startpage.com",
    "search.naver.com",
    "seznam.cz",
];
const SOCIAL: [&str; 24] = [
    "facebook.com",
    "fb.com",
    "instagram.com",
    "t.co",
    "twitter.com",
    "x.com",
    "linkedin.com",
    "lnkd.in",
    "reddit.com",
    "youtube.com",
    "youtu.be",
    "pinterest.com",
    "tiktok.com",
    "threads.net",
    "bsky.app",
    "mastodon.social",
    "vk.com",
    "weibo.com",
    "snapchat.com",
    "whatsapp.com",
    "wa.me",
    "t.me",
    "discord.com",
    "quora.com",
];
const WEBMAIL: [&str; 5] = [
    "mail.google.com",
    "outlook.live.com",
    "outlook.office.com",
    "mail.yahoo.com",
    "mail.proton.me",
];
/// `utm_source` values that name a search engine or a social network without a domain.
const SEARCH_SOURCES: [&str; 8] = [
    "google",
    "bing",
    "duckduckgo",
    "yahoo",
    "yandex",
    "baidu",
    "ecosia",
    "brave",
];
const SOCIAL_SOURCES: [&str; 12] = [
    "facebook",
    "fb",
    "instagram",
    "ig",
    "twitter",
    "x",
    "linkedin",
    "reddit",
    "youtube",
    "pinterest",
    "tiktok",
    "threads",
];

/// The acquisition of an event from its page URL, referrer and Segment campaign.
pub fn acquisition(
    page_url: Option<&str>,
    referrer: Option<&str>,
    segment_campaign: Option<&Campaign>,
) -> Acquisition {
    let query = page_url.map(query_pairs).unwrap_or_default();
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| clip(v.trim()))
            .filter(|v| !v.is_empty())
    };
    let from_url = Campaign {
        source: param("utm_source"),
        medium: param("utm_medium"),
        name: param("utm_campaign"),
        term: param("utm_term"),
        content: param("utm_content"),
    };
    let campaign = match segment_campaign {
        Some(c) if from_url.is_empty() => Campaign {
            source: c.source.as_deref().map(clip),
            medium: c.medium.as_deref().map(clip),
            name: c.name.as_deref().map(clip),
            term: c.term.as_deref().map(clip),
            content: c.content.as_deref().map(clip),
        },
        _ => from_url,
    };
    let click_id = PAID_SEARCH_IDS
        .iter()
        .chain(&PAID_SOCIAL_IDS)
        .chain(&DISPLAY_IDS)
        .chain(std::iter::once(&FBCLID))
        .find_map(|kind| param(kind).map(|value| ClickId { kind, value }));
    let referrer_domain = referrer.and_then(host_of);
    let page_domain = page_url.and_then(host_of);
    let channel = channel(
        &campaign,
        click_id.as_ref().map(|c| c.kind),
        referrer_domain.as_deref(),
        page_domain.as_deref(),
    );
    Acquisition {
        campaign,
        click_id,
        referrer_domain,
        channel,
    }
}

fn channel(
    campaign: &Campaign,
    click_id: Option<&str>,
    referrer: Option<&str>,
    page: Option<&str>,
) -> Channel {
    match click_id {
        Some(kind) if PAID_SEARCH_IDS.contains(&kind) => return Channel::PaidSearch,
        Some(kind) if PAID_SOCIAL_IDS.contains(&kind) => return Channel::PaidSocial,
        Some(kind) if DISPLAY_IDS.contains(&kind) => return Channel::Display,
        _ => {}
    }
    let lower = |v: &Option<String>| v.as_deref().map(str::to_ascii_lowercase);
    let (medium, source) = (lower(&campaign.medium), lower(&campaign.source));
    let social_source = source.as_deref().is_some_and(is_social_source);
    if let Some(medium) = medium.as_deref() {
        return match medium {
            "email" | "e-mail" | "e_mail" | "newsletter" => Channel::Email,
            "affiliate" | "affiliates" | "partner" | "partners" => Channel::Affiliate,
            "display" | "banner" | "cpm" | "interstitial" => Channel::Display,
            "paid-social" | "paidsocial" | "paid_social" | "social-paid" | "social_paid" => {
                Channel::PaidSocial
            }
            "cpc" | "ppc" | "paid" if social_source => Channel::PaidSocial,
            "cpc" | "ppc" | "paid" | "paidsearch" | "paid-search" | "paid_search" | "sem" => {
                Channel::PaidSearch
            }
            "social" | "social-network" | "social_network" | "social-media" | "social_media"
            | "sm" => Channel::OrganicSocial,
            _ if click_id == Some(FBCLID) => Channel::OrganicSocial,
            _ => Channel::OtherCampaign,
        };
    }
    if click_id == Some(FBCLID) {
        return Channel::OrganicSocial;
    }
    if let Some(source) = source.as_deref() {
        return if is_search_source(source) {
            Channel::OrganicSearch
        } else if social_source {
            Channel::OrganicSocial
        } else {
            Channel::OtherCampaign
        };
    }
    match referrer {
        None => Channel::Direct,
        Some(r) if Some(r) == page => Channel::Internal,
        Some(r) if WEBMAIL.contains(&r) => Channel::Email,
        Some(r) if is_search_domain(r) => Channel::OrganicSearch,
        Some(r) if is_social_domain(r) => Channel::OrganicSocial,
        Some(_) => Channel::Referral,
    }
}

/// `domain` is `listed` or one of its subdomains.
fn within(domain: &str, listed: &str) -> bool {
    domain == listed
        || domain
            .strip_suffix(listed)
            .is_some_and(|rest| rest.ends_with('.'))
}

fn is_search_domain(domain: &str) -> bool {
    SEARCH_PREFIXES.iter().any(|p| domain.starts_with(p))
        || SEARCH.iter().any(|s| within(domain, s))
}

fn is_social_domain(domain: &str) -> bool {
    SOCIAL.iter().any(|s| within(domain, s)) || domain.starts_with("pinterest.")
}

/// A `utm_source` naming a search engine (`google`, or a domain such as `google.com`).
fn is_search_source(source: &str) -> bool {
    SEARCH_SOURCES.contains(&source) || is_search_domain(source.trim_start_matches("www."))
}

fn is_social_source(source: &str) -> bool {
    SOCIAL_SOURCES.contains(&source) || is_social_domain(source.trim_start_matches("www."))
}

/// The URL's query as decoded pairs (`+` is a space, `%XX` a byte).
fn query_pairs(url: &str) -> Vec<(Cow<'_, str>, Cow<'_, str>)> {
    let Some(start) = url.find('?') else {
        return Vec::new();
    };
    let query = &url[start + 1..];
    let query = &query[..query.find('#').unwrap_or(query.len())];
    form_urlencoded::parse(query.as_bytes()).collect()
}

/// The host of an absolute URL (`scheme://[user@]host[:port]/...`), lower case, without
/// `www.`; `None` for a relative URL or an empty host.
pub fn host_of(url: &str) -> Option<String> {
    let rest = &url[url.find("://")? + 3..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host = authority.rsplit('@').next().unwrap_or(authority);
    let host = if host.starts_with('[') {
        &host[..host.find(']').map_or(host.len(), |i| i + 1)]
    } else {
        host.split(':').next().unwrap_or(host)
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let host = host.strip_prefix("www.").map(str::to_owned).unwrap_or(host);
    (!host.is_empty()).then(|| clip(&host))
}

/// At most `MAX_VALUE_CHARS` characters.
fn clip(value: &str) -> String {
    match value.char_indices().nth(MAX_VALUE_CHARS) {
        Some((end, _)) => value[..end].to_owned(),
        None => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(url: &str, referrer: Option<&str>) -> Acquisition {
        acquisition(Some(url), referrer, None)
    }

    #[test]
    fn utm_parameters_are_read_decoded_and_case_insensitively() {
        let a = of(
            "https://shop.example/p?UTM_Source=Newsletter&utm_medium=email&utm_campaign=black+friday%202026&utm_term=&utm_content=hero#x",
            None,
        );
        assert_eq!(a.campaign.source.as_deref(), Some("Newsletter"));
        assert_eq!(a.campaign.name.as_deref(), Some("black friday 2026"));
        assert_eq!(a.campaign.term, None, "an empty value is no value");
        assert_eq!(a.campaign.content.as_deref(), Some("hero"));
        assert_eq!(a.channel, Channel::Email);
    }

    #[test]
    fn segment_campaign_fills_in_when_the_url_has_no_utm() {
        let segment = Campaign {
            source: Some("facebook".into()),
            medium: Some("cpc".into()),
            name: Some("spring".into()),
            ..Campaign::default()
        };
        let a = acquisition(Some("https://shop.example/"), None, Some(&segment));
        assert_eq!(a.campaign.name.as_deref(), Some("spring"));
        assert_eq!(a.channel, Channel::PaidSocial, "cpc from a social source");
        let url_wins = acquisition(
            Some("https://shop.example/?utm_source=google&utm_medium=cpc"),
            None,
            Some(&segment),
        );
        assert_eq!(url_wins.campaign.source.as_deref(), Some("google"));
        assert_eq!(url_wins.channel, Channel::PaidSearch);
    }

    #[test]
    fn the_rule_table_in_order() {
        let cases: &[(&str, Option<&str>, Channel)] = &[
            (
                "https://s.example/?gclid=abc",
                Some("https://www.google.com/"),
                Channel::PaidSearch,
            ),
            (
                "https://s.example/?msclkid=1&utm_medium=email",
                None,
                Channel::PaidSearch,
            ),
            ("https://s.example/?ttclid=1", None, Channel::PaidSocial),
            ("https://s.example/?dclid=1", None, Channel::Display),
            (
                "https://s.example/?utm_medium=Newsletter",
                None,
                Channel::Email,
            ),
            (
                "https://s.example/?utm_medium=affiliate",
                None,
                Channel::Affiliate,
            ),
            (
                "https://s.example/?utm_medium=banner",
                None,
                Channel::Display,
            ),
            (
                "https://s.example/?utm_medium=paid_social",
                None,
                Channel::PaidSocial,
            ),
            (
                "https://s.example/?utm_medium=cpc&utm_source=instagram.com",
                None,
                Channel::PaidSocial,
            ),
            (
                "https://s.example/?utm_medium=cpc&utm_source=bing",
                None,
                Channel::PaidSearch,
            ),
            (
                "https://s.example/?utm_medium=social",
                None,
                Channel::OrganicSocial,
            ),
            (
                "https://s.example/?fbclid=IwAR",
                Some("https://l.facebook.com/"),
                Channel::OrganicSocial,
            ),
            (
                "https://s.example/?utm_medium=podcast",
                None,
                Channel::OtherCampaign,
            ),
            (
                "https://s.example/?utm_source=partner-site",
                None,
                Channel::OtherCampaign,
            ),
            (
                "https://s.example/?utm_source=google",
                None,
                Channel::OrganicSearch,
            ),
            (
                "https://s.example/?utm_source=twitter",
                None,
                Channel::OrganicSocial,
            ),
            ("https://s.example/", None, Channel::Direct),
            (
                "https://www.s.example/a",
                Some("https://s.example/b"),
                Channel::Internal,
            ),
            (
                "https://s.example/",
                Some("https://mail.google.com/mail/u/0"),
                Channel::Email,
            ),
            (
                "https://s.example/",
                Some("https://www.google.co.uk/search?q=x"),
                Channel::OrganicSearch,
            ),
            (
                "https://s.example/",
                Some("https://duckduckgo.com/"),
                Channel::OrganicSearch,
            ),
            (
                "https://s.example/",
                Some("https://search.yahoo.co.jp/"),
                Channel::OrganicSearch,
            ),
            (
                "https://s.example/",
                Some("https://t.co/abc"),
                Channel::OrganicSocial,
            ),
            (
                "https://s.example/",
                Some("https://old.reddit.com/r/x"),
                Channel::OrganicSocial,
            ),
            (
                "https://s.example/",
                Some("https://news.ycombinator.com/"),
                Channel::Referral,
            ),
            (
                "https://s.example/",
                Some("https://notbing.com/"),
                Channel::Referral,
            ),
        ];
        for (url, referrer, want) in cases {
            assert_eq!(of(url, *referrer).channel, *want, "{url} from {referrer:?}");
        }
    }

    #[test]
    fn hosts_lose_scheme_credentials_port_case_and_www() {
        assert_eq!(
            host_of("https://user:pw@WWW.Example.COM:8443/x?y").as_deref(),
            Some("example.com")
        );
        assert_eq!(
            host_of("http://[2001:db8::1]:80/").as_deref(),
            Some("[2001:db8::1]")
        );
        assert_eq!(
            host_of("android-app://com.google.android.gm/").as_deref(),
            Some("com.google.android.gm")
        );
        assert_eq!(host_of("/relative/path"), None);
        assert_eq!(host_of("https:///nohost"), None);
    }

    #[test]
    fn click_ids_and_long_values_are_kept_within_bounds() {
        let long = "x".repeat(400);
        let a = of(
            &format!("https://s.example/?gclid={long}&utm_campaign={long}"),
            None,
        );
        let click = a.click_id.expect("a click id");
        assert_eq!(click.kind, "gclid");
        assert_eq!(click.value.chars().count(), MAX_VALUE_CHARS);
        assert_eq!(
            a.campaign.name.map(|n| n.chars().count()),
            Some(MAX_VALUE_CHARS)
        );
    }
}
