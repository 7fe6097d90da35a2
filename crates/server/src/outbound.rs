//! Where this server may send requests on a tenant's behalf. A store's API base URL is
//! chosen by a tenant admin; without a guard it could point the server at its own loopback
//! services, the cloud metadata address (169.254.169.254) or the operator's private network
//! (server-side request forgery). A URL whose host is, or resolves to, a loopback,
//! link-local, private, unique-local or unspecified address is refused unless the
//! `allow_private_urls` setting is on (tests and the demo, whose platform stand-ins listen
//! on 127.0.0.1). The check runs when the URL is set; see docs/configuration.md.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a URL may not be used, for the caller's per-field error.
pub async fn refuse_private(url: &str, allow_private: bool) -> Option<String> {
    if allow_private {
        return None;
    }
    let uri: axum::http::Uri = match url.parse() {
        Ok(u) => u,
        Err(_) => return Some("is not a valid URL".into()),
    };
    let Some(host) = uri.host().map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned()) else {
        return Some("has no host".into());
    };
    let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
    let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(found) => found.map(|a| a.ip()).collect(),
            Err(e) => return Some(format!("host `{host}` does not resolve: {e}")),
        },
    };
    match addrs.iter().find(|ip| is_private(ip)) {
        Some(ip) => Some(format!(
            "resolves to {ip}, a loopback, link-local or private address (set allow_private_urls to permit)"
        )),
        None if addrs.is_empty() => Some(format!("host `{host}` has no address")),
        None => None,
    }
}

/// Loopback, link-local, private (RFC 1918), shared (RFC 6598), unique-local, unspecified
/// or broadcast: nothing a public API lives on.
pub fn is_private(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_private_v4(&v4),
            None => is_private_v6(v6),
        },
    }
}

fn is_private_v4(ip: &Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        // 100.64.0.0/10, carrier-grade NAT: private in practice.
        || (a == 100 && (64..128).contains(&b))
}

fn is_private_v6(ip: &Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        // fc00::/7 unique local, fe80::/10 link-local.
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn private_and_local_addresses_are_refused_unless_allowed() {
        for url in [
            "http://127.0.0.1:8080",
            "http://localhost:9000/api",
            "http://169.254.169.254/latest/meta-data",
            "http://10.1.2.3",
            "http://172.16.0.5",
            "https://192.168.1.10",
            "http://100.64.0.1",
            "http://[::1]:8080",
            "http://[fe80::1]",
            "http://[fd00::1]",
            "http://[::ffff:127.0.0.1]",
            "http://0.0.0.0",
        ] {
            assert!(refuse_private(url, false).await.is_some(), "{url} should be refused");
            assert!(refuse_private(url, true).await.is_none(), "{url} allowed by the setting");
        }
        for url in ["https://93.184.215.14", "http://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]:8443"] {
            assert_eq!(refuse_private(url, false).await, None, "{url} is public");
        }
    }
}
