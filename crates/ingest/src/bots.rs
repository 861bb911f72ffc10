//! Which senders are bots: by user agent, from the `isbot` crate's pattern list (the list
//! maintained by the `isbot` npm project, a few hundred patterns compiled into one regex) plus
//! any patterns configured in `bots.user_agents`, and by IP, from `bots.ignore_ips` (addresses
//! or CIDR networks: monitors, load testers, the office). A bot's events are still accepted and
//! stored, flagged (`client.bot`), and the worker leaves them out of every aggregate.
//!
//! The user-agent verdict is cached with the parsed agent (`client.rs`), so the regex runs once
//! per distinct user-agent string, not per request.

use std::net::IpAddr;

use ipnet::IpNet;

pub struct BotRules {
    agents: isbot::Bots,
    ignored: Vec<IpNet>,
}

impl Default for BotRules {
    fn default() -> Self {
        Self::new(&[], Vec::new())
    }
}

impl BotRules {
    /// The default pattern list plus `extra_agents` (regex patterns, matched
    /// case-insensitively anywhere in the user agent), and the ignored networks.
    pub fn new(extra_agents: &[String], ignored: Vec<IpNet>) -> Self {
        let mut agents = isbot::Bots::default();
        if !extra_agents.is_empty() {
            let patterns: Vec<&str> = extra_agents.iter().map(String::as_str).collect();
            agents.append(&patterns);
        }
        Self { agents, ignored }
    }

    /// Whether `user_agent` is a known bot's.
    pub fn is_bot_agent(&self, user_agent: &str) -> bool {
        self.agents.is_bot(user_agent)
    }

    /// Whether requests from `ip` are to be treated as a bot's (`bots.ignore_ips`).
    pub fn is_ignored_ip(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.ignored.iter().any(|net| net.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_crawlers_and_tools_are_bots_and_browsers_are_not() {
        let rules = BotRules::default();
        for bot in [
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
            "curl/8.5.0",
            "python-requests/2.31.0",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36",
        ] {
            assert!(rules.is_bot_agent(bot), "{bot}");
        }
        for browser in [
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
            "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
        ] {
            assert!(!rules.is_bot_agent(browser), "{browser}");
        }
    }

    #[test]
    fn configured_agents_and_networks_are_bots() {
        let rules = BotRules::new(
            &["acme-uptime".to_owned()],
            vec![
                "203.0.113.0/24".parse().unwrap(),
                "2001:db8::7/128".parse().unwrap(),
            ],
        );
        assert!(rules.is_bot_agent("Mozilla/5.0 acme-uptime/1.2"));
        assert!(rules.is_ignored_ip("203.0.113.9".parse().unwrap()));
        assert!(rules.is_ignored_ip("::ffff:203.0.113.9".parse().unwrap()));
        assert!(rules.is_ignored_ip("2001:db8::7".parse().unwrap()));
        assert!(!rules.is_ignored_ip("198.51.100.1".parse().unwrap()));
    }
}
