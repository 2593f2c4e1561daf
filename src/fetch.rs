//! Small HTTP GETs of documents other parties serve (NIP-11 relay information, LNURL-pay
//! documents): no redirects, no proxies, a deadline for the whole exchange and a cap on
//! the body, so a slow or huge answer costs little.
//!
//! A URL a stranger published (an LNURL in a profile) is fetched with [`get_public`]:
//! only from public unicast addresses. A host name is resolved once, by the client's
//! own resolver, which drops every address that is not public, and the connection goes
//! to an address it kept (no second lookup a name's owner could answer differently);
//! an address literal is checked before the request. So a publisher cannot aim the
//! service at its operator's network (loopback, private, link-local, CGNAT, ...).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0} is not a public address")]
    NotPublic(String),
    #[error("not a URL: {0}")]
    BadUrl(String),
}

/// Whether `ip` is a public unicast address: not unspecified, loopback, private
/// (RFC 1918, unique local), link-local, shared (CGNAT), multicast, broadcast,
/// documentation, benchmarking or reserved, nor an IPv4-mapped, -compatible, NAT64,
/// 6to4 or Teredo form of one.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0
        || a == 10
        || a == 127
        || (a == 100 && (64..128).contains(&b))
        || (a == 169 && b == 254)
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 0 && (c == 0 || c == 2))
        || (a == 192 && b == 88 && c == 99)
        || (a == 192 && b == 168)
        || (a == 198 && (18..20).contains(&b))
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
        || a >= 224)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let embedded =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    match s {
        // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated); :: and ::1.
        [0, 0, 0, 0, 0, 0xffff, hi, lo] => is_public_v4(embedded(hi, lo)),
        [0, 0, 0, 0, 0, 0, _, _] => false,
        // NAT64 64:ff9b::a.b.c.d.
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => is_public_v4(embedded(hi, lo)),
        // 6to4 2002:a.b.c.d::/48.
        [0x2002, hi, lo, ..] => is_public_v4(embedded(hi, lo)),
        // Teredo 2001::/32 and documentation 2001:db8::/32.
        [0x2001, 0, ..] | [0x2001, 0xdb8, ..] => false,
        // Global unicast is 2000::/3; the rest is local, multicast or reserved.
        [first, ..] => (first & 0xe000) == 0x2000,
    }
}

/// Resolves names like the system does, keeping only public addresses.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = all.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(Box::new(FetchError::NotPublic(host))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

fn build(public_only: bool) -> Result<reqwest::Client, FetchError> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_max_idle_per_host(0)
        .user_agent(concat!("nostr-sync/", env!("CARGO_PKG_VERSION")));
    if public_only {
        builder = builder.dns_resolver(Arc::new(PublicOnly));
    }
    Ok(builder.build()?)
}

/// The clients every fetch shares: any address, and public addresses only.
fn client(public_only: bool) -> Result<&'static reqwest::Client, FetchError> {
    static ANY: OnceLock<reqwest::Client> = OnceLock::new();
    static PUBLIC: OnceLock<reqwest::Client> = OnceLock::new();
    let cell = if public_only { &PUBLIC } else { &ANY };
    if let Some(c) = cell.get() {
        return Ok(c);
    }
    let c = build(public_only)?;
    Ok(cell.get_or_init(|| c))
}

/// GETs `url` with `accept`, reading at most `max` bytes within `timeout` altogether.
/// For URLs the operator gave (a relay's NIP-11 document).
pub async fn get(
    url: &str,
    accept: &str,
    timeout: Duration,
    max: usize,
) -> Result<String, FetchError> {
    fetch(client(false)?, url, accept, timeout, max).await
}

/// `get` for a URL a stranger published: public addresses only, unless
/// `allow_private` (`aggregates.lnurl_allow_private`: tests and private deployments).
pub async fn get_public(
    url: &str,
    accept: &str,
    timeout: Duration,
    max: usize,
    allow_private: bool,
) -> Result<String, FetchError> {
    if allow_private {
        return get(url, accept, timeout, max).await;
    }
    let parsed = url::Url::parse(url).map_err(|_| FetchError::BadUrl(url.to_owned()))?;
    let literal = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        Some(url::Host::Domain(_)) => None,
        None => return Err(FetchError::BadUrl(url.to_owned())),
    };
    if let Some(ip) = literal.filter(|ip| !is_public(*ip)) {
        return Err(FetchError::NotPublic(ip.to_string()));
    }
    fetch(client(true)?, url, accept, timeout, max).await
}

async fn fetch(
    client: &reqwest::Client,
    url: &str,
    accept: &str,
    timeout: Duration,
    max: usize,
) -> Result<String, FetchError> {
    let mut response = client
        .get(url)
        .header("Accept", accept)
        .timeout(timeout)
        .send()
        .await?
        .error_for_status()?;
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(FetchError::TooLarge(max));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > max {
            return Err(FetchError::TooLarge(max));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6890's special-purpose registries, and the IPv6 forms of IPv4 addresses.
    #[test]
    fn only_public_unicast_addresses_are_public() {
        let cases = [
            ("1.1.1.1", true),
            ("8.8.8.8", true),
            ("100.63.255.255", true),
            ("100.128.0.1", true),
            ("0.0.0.0", false),
            ("0.1.2.3", false),
            ("127.0.0.1", false),
            ("10.0.0.1", false),
            ("172.16.0.1", false),
            ("172.31.255.255", false),
            ("172.32.0.1", true),
            ("192.168.1.1", false),
            ("169.254.169.254", false),
            ("100.64.0.1", false),
            ("192.0.0.8", false),
            ("192.0.2.1", false),
            ("198.18.0.1", false),
            ("198.51.100.1", false),
            ("203.0.113.1", false),
            ("224.0.0.1", false),
            ("240.0.0.1", false),
            ("255.255.255.255", false),
            ("2606:4700::1111", true),
            ("::", false),
            ("::1", false),
            ("::ffff:127.0.0.1", false),
            ("::ffff:10.0.0.1", false),
            ("::ffff:1.1.1.1", true),
            ("::127.0.0.1", false),
            ("64:ff9b::a00:1", false),
            ("64:ff9b::101:101", true),
            ("2002:7f00:1::", false),
            ("2002:101:101::", true),
            ("2001::1", false),
            ("2001:db8::1", false),
            ("fc00::1", false),
            ("fd12:3456::1", false),
            ("fe80::1", false),
            ("ff02::1", false),
        ];
        for (ip, want) in cases {
            assert_eq!(is_public(ip.parse().unwrap()), want, "{ip}");
        }
    }
}
