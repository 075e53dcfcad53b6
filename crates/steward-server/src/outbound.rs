//! Where this server's own outgoing requests may go: webhook deliveries
//! and Streamable HTTP MCP upstreams.
//!
//! Both go to URLs that a tenant's admin chooses, so without a check a
//! tenant could have this server fetch an address only it reaches: above
//! all a cloud's instance metadata service (`169.254.169.254`), which
//! hands out the host's credentials. Every address a name resolves to is
//! checked when the connection is made (not only when the URL is saved,
//! which a name's later answers would get around), and an IP written in
//! the URL is checked before the request.
//!
//! Refused by default: link-local addresses (which hold the metadata
//! services), the unspecified, broadcast, multicast and reserved ranges,
//! and the metadata addresses some clouds put elsewhere. Loopback and
//! private networks are allowed, since MCP servers usually live there; an
//! operator who hosts tenants that must not reach them adds the ranges to
//! `[outbound] deny`. `[outbound] allow` makes exceptions to both.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// `[outbound]` in the configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundConfig {
    /// Networks refused on top of the built-in ones (CIDR, e.g. `10.0.0.0/8`).
    pub deny: Vec<String>,
    /// Networks allowed even when a deny range covers them.
    pub allow: Vec<String>,
}

/// Ranges refused unless `allow` names them.
const BUILT_IN_DENY: &[&str] = &[
    "0.0.0.0/8",          // "this network"; 0.0.0.0 reaches the host itself
    "169.254.0.0/16",     // link-local: AWS, GCP, Azure, OCI metadata
    "100.100.100.200/32", // Alibaba Cloud metadata
    "192.0.0.0/24",       // IETF protocol assignments (includes 192.0.0.192, OCI)
    "224.0.0.0/4",        // multicast
    "240.0.0.0/4",        // reserved, and the broadcast address
    "::/128",             // unspecified
    "fe80::/10",          // link-local
    "fd00:ec2::254/128",  // AWS metadata over IPv6
    "ff00::/8",           // multicast
];

/// The checked rules, built once at start.
#[derive(Debug, Clone)]
pub struct Outbound {
    deny: Arc<Vec<IpNet>>,
    allow: Arc<Vec<IpNet>>,
}

impl Default for Outbound {
    fn default() -> Self {
        Outbound::new(&OutboundConfig::default()).unwrap_or_else(|_| unreachable!())
    }
}

fn parse(list: &[String], key: &str) -> Result<Vec<IpNet>, String> {
    list.iter()
        .map(|s| {
            let s = s.trim();
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    format!(
                        "outbound.{key}: {s:?} is not a network (CIDR like 10.0.0.0/8) or an IP"
                    )
                })
        })
        .collect()
}

impl Outbound {
    /// Check `config`'s ranges; a range that does not parse is named.
    pub fn new(config: &OutboundConfig) -> Result<Outbound, String> {
        let built_in: Vec<String> = BUILT_IN_DENY.iter().map(|s| (*s).to_owned()).collect();
        let mut deny = parse(&built_in, "deny")?;
        deny.extend(parse(&config.deny, "deny")?);
        Ok(Outbound {
            deny: Arc::new(deny),
            allow: Arc::new(parse(&config.allow, "allow")?),
        })
    }

    /// Why `ip` may not be reached, if it may not. An IPv6 address that
    /// carries an IPv4 one (mapped, compatible, NAT64, 6to4) is refused if
    /// either is.
    pub fn refusal(&self, ip: IpAddr) -> Option<String> {
        let ip = ip.to_canonical();
        let carried = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        [Some(ip), carried].into_iter().flatten().find_map(|ip| {
            if self.allow.iter().any(|n| n.contains(&ip)) {
                return None;
            }
            let net = self.deny.iter().find(|n| n.contains(&ip))?;
            Some(format!(
                "{ip} is in {net}, where this server sends no requests \
                 (the [outbound] deny list; an operator may allow it with [outbound] allow)"
            ))
        })
    }

    /// Check a URL's host when it is an IP address, read as the HTTP
    /// clients read it (WHATWG parsing: `http://2852039166/`, `0x7f.1`,
    /// `127.1` and a trailing dot are addresses too); a name is checked
    /// when it is resolved. A URL that does not parse is refused.
    pub fn check_url(&self, url: &str) -> Option<String> {
        let parsed = match url::Url::parse(url) {
            Ok(parsed) => parsed,
            Err(e) => return Some(format!("not a URL: {e}")),
        };
        match parsed.host()? {
            url::Host::Ipv4(ip) => self.refusal(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => self.refusal(IpAddr::V6(ip)),
            // A name ending in a dot is the same name: the resolver checks it.
            url::Host::Domain(_) => None,
        }
    }

    /// Resolve `host` and keep the addresses that may be reached; an error
    /// names the refused ones when none may.
    pub async fn resolve(&self, host: &str) -> Result<Vec<SocketAddr>, String> {
        let found: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .collect();
        let mut refused = None;
        let allowed: Vec<SocketAddr> = found
            .into_iter()
            .filter(|a| match self.refusal(a.ip()) {
                None => true,
                Some(why) => {
                    refused.get_or_insert(why);
                    false
                }
            })
            .collect();
        match (allowed.is_empty(), refused) {
            (false, _) => Ok(allowed),
            (true, Some(why)) => Err(format!("{host} resolves only to refused addresses: {why}")),
            (true, None) => Err(format!("{host} resolves to no address")),
        }
    }
}

/// The IPv4 address an IPv6 address carries by a transition scheme:
/// IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`, `64:ff9b:1::/48`)
/// and 6to4 (`2002:AABB:CCDD::/48`).
fn embedded_v4(ip: std::net::Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    let s = ip.segments();
    let last = |hi: u16, lo: u16| std::net::Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match s {
        [0, 0, 0, 0, 0, 0, hi, lo] if (hi, lo) != (0, 0) && (hi, lo) != (0, 1) => {
            Some(last(hi, lo))
        }
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(last(hi, lo)),
        [0x64, 0xff9b, 1, ..] => Some(last(s[6], s[7])),
        [0x2002, hi, lo, ..] => Some(last(hi, lo)),
        _ => None,
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Resolution for the webhooks' HTTP client.
impl reqwest::dns::Resolve for Outbound {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let rules = self.clone();
        Box::pin(async move {
            let addrs = rules.resolve(name.as_str()).await.map_err(BoxError::from)?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Resolution for the MCP gateway's HTTP client (a newer reqwest).
impl rmcp_reqwest::dns::Resolve for Outbound {
    fn resolve(&self, name: rmcp_reqwest::dns::Name) -> rmcp_reqwest::dns::Resolving {
        let rules = self.clone();
        Box::pin(async move {
            let addrs = rules.resolve(name.as_str()).await.map_err(BoxError::from)?;
            Ok(Box::new(addrs.into_iter()) as rmcp_reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(deny: &[&str], allow: &[&str]) -> Outbound {
        let own = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect();
        Outbound::new(&OutboundConfig {
            deny: own(deny),
            allow: own(allow),
        })
        .unwrap()
    }

    #[test]
    fn metadata_services_are_refused_by_default() {
        let r = Outbound::default();
        for ip in [
            "169.254.169.254",
            "::ffff:169.254.169.254",
            "fd00:ec2::254",
            "100.100.100.200",
            "0.0.0.0",
            "::",
            "255.255.255.255",
            "fe80::1",
        ] {
            assert!(r.refusal(ip.parse().unwrap()).is_some(), "{ip}");
        }
        for ip in ["127.0.0.1", "10.1.2.3", "192.168.1.1", "8.8.8.8", "::1"] {
            assert!(r.refusal(ip.parse().unwrap()).is_none(), "{ip}");
        }
    }

    #[test]
    fn operators_add_ranges_and_exceptions() {
        let r = rules(&["10.0.0.0/8", "127.0.0.1"], &["169.254.10.0/24"]);
        assert!(r.refusal("10.9.9.9".parse().unwrap()).is_some());
        assert!(r.refusal("127.0.0.1".parse().unwrap()).is_some());
        assert!(r.refusal("169.254.10.7".parse().unwrap()).is_none());
        assert!(r.refusal("169.254.169.254".parse().unwrap()).is_some());
        let bad = Outbound::new(&OutboundConfig {
            deny: vec!["10.0.0.0/33".into()],
            allow: vec![],
        })
        .unwrap_err();
        assert!(
            bad.contains("outbound.deny") && bad.contains("10.0.0.0/33"),
            "{bad}"
        );
    }

    #[test]
    fn literal_hosts_in_urls_are_checked() {
        let r = Outbound::default();
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "https://user:pw@169.254.169.254:8443/x",
            "http://[fd00:ec2::254]/",
            "http://[::ffff:a9fe:a9fe]:80/",
            // Spellings the HTTP clients read as the same address.
            "http://2852039166/",
            "http://0xa9.0xfe.0xa9.0xfe/",
            "http://0251.0376.0251.0376/",
            "http://169.254.43518/",
            "http://169.254.169.254./",
            "http://169.254.169.%32%35%34/",
            "http://\u{ff11}\u{ff16}\u{ff19}.254.169.254/",
            "http://169.254.169.254\\@example.com/",
            // IPv6 carrying the IPv4 address.
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[2002:a9fe:a9fe::1]/",
            "http://[::a9fe:a9fe]/",
            "not a url",
        ] {
            assert!(r.check_url(url).is_some(), "{url}");
        }
        let private = rules(&["127.0.0.0/8"], &[]);
        for url in [
            "http://2130706433:9/",
            "http://0x7f.1:9/",
            "http://127.1:9/",
        ] {
            assert!(private.check_url(url).is_some(), "{url}");
        }
        for url in [
            "https://hooks.slack.com/x",
            "http://127.0.0.1:9/x",
            "http://[::1]:8/",
        ] {
            assert!(r.check_url(url).is_none(), "{url}");
        }
    }

    #[tokio::test]
    async fn names_resolve_only_to_allowed_addresses() {
        let r = rules(&["127.0.0.0/8", "::1/128"], &[]);
        let err = r.resolve("localhost").await.unwrap_err();
        assert!(err.contains("refused"), "{err}");
        assert!(
            !Outbound::default()
                .resolve("localhost")
                .await
                .unwrap()
                .is_empty()
        );
    }
}
