//! Where the oracle may connect, decided on addresses, not names.
//!
//! A host pattern lets a *name* through; what the connection reaches is the address the name
//! resolves to (or the address the URL spells, in any of its forms: `2130706433`, `0x7f.1`,
//! `[::ffff:127.0.0.1]` are all 127.0.0.1 once parsed). Every address outside the public internet
//! (loopback, private, link-local, shared, documentation, benchmarking, multicast, reserved,
//! unspecified, unique-local, and IPv6 forms that embed such an IPv4 address: mapped, compatible,
//! NAT64 and 6to4) is refused unless the operator listed that exact address or a range holding it
//! in a host list (`"127.0.0.1"`, `"10.0.0.0/8:8080"`, `"[fd00::]/8"`); a name or a wildcard
//! pattern never lets one through. The fetcher connects only to the addresses checked here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// An address or range the operator listed, with the port it is limited to, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Listed {
    net: IpAddr,
    prefix: u8,
    port: Option<u16>,
}

impl Listed {
    /// Parses an address pattern: `ADDR[/LEN][:PORT]`, IPv6 in brackets (`[::1]/128:8080`).
    /// `None` if `pattern` names a host rather than an address; `Some(Err)` if it tries to be an
    /// address and is not one.
    pub(crate) fn parse(pattern: &str) -> Option<Result<Listed, String>> {
        let (body, port) = split_port(pattern)?;
        let (addr, prefix) = match body.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (body, None),
        };
        let addr = addr.trim_start_matches('[').trim_end_matches(']');
        let ip: IpAddr = match addr.parse() {
            Ok(ip) => ip,
            // A name (or a name pattern): not ours to judge.
            Err(_) if prefix.is_none() && !addr.contains(':') => return None,
            Err(_) => return Some(Err(format!("{pattern:?}: {addr:?} is not an IP address"))),
        };
        let bits = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(len) => match len.parse::<u8>() {
                Ok(n) if n <= bits => n,
                _ => {
                    return Some(Err(format!(
                        "{pattern:?}: /{len} is not a prefix length of 0 to {bits}"
                    )));
                }
            },
        };
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(p) => Some(p),
                Err(_) => return Some(Err(format!("{pattern:?}: {p:?} is not a port"))),
            },
        };
        Some(Ok(Listed {
            net: ip,
            prefix,
            port,
        }))
    }

    /// Whether `addr` is inside this listing (its range, and its port if it has one).
    pub(crate) fn holds(&self, addr: SocketAddr) -> bool {
        if self.port.is_some_and(|p| p != addr.port()) {
            return false;
        }
        match (self.net, canonical(addr.ip())) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                same_prefix(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                same_prefix(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

/// `pattern` split into its address part and its port, if the pattern can be an address at all.
fn split_port(pattern: &str) -> Option<(&str, Option<&str>)> {
    if pattern == "*" || pattern.starts_with("*.") {
        return None;
    }
    if pattern.starts_with('[') {
        // `[v6]`, `[v6]:port`, `[v6]/len`, `[v6]/len:port`.
        let close = pattern.find(']')?;
        let rest = &pattern[close + 1..];
        return Some(match rest.rfind(':') {
            Some(i) => (&pattern[..close + 1 + i], Some(&rest[i + 1..])),
            None => (pattern, None),
        });
    }
    match pattern.matches(':').count() {
        0 => Some((pattern, None)),
        1 => pattern.split_once(':').map(|(a, p)| (a, Some(p))),
        // A bare IPv6 address or range, without a port.
        _ => Some((pattern, None)),
    }
}

fn same_prefix(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let whole = usize::from(prefix / 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    let rest = prefix % 8;
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        a[whole] & mask == b[whole] & mask
    }
}

/// An IPv6 address that only carries an IPv4 one (mapped or compatible) is that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => match compatible(v6) {
                Some(v4) => IpAddr::V4(v4),
                None => ip,
            },
        },
        v4 => v4,
    }
}

/// `::a.b.c.d`, the deprecated IPv4-compatible form (but not `::` and `::1` themselves).
fn compatible(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let o = v6.octets();
    (o[..12] == [0; 12] && v6 != Ipv6Addr::UNSPECIFIED && v6 != Ipv6Addr::LOCALHOST)
        .then(|| Ipv4Addr::new(o[12], o[13], o[14], o[15]))
}

/// What kind of address outside the public internet `ip` is, or `None` for a public address.
pub(crate) fn non_public(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => non_public_v6(v6),
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "an unspecified (\"this network\") address",
        (10, _, _) | (172, 16..=31, _) | (192, 168, _) => "a private address",
        (100, 64..=127, _) => "a shared (carrier-grade NAT) address",
        (127, _, _) => "a loopback address",
        (169, 254, _) => "a link-local address",
        (192, 0, 0) => "an IETF protocol address",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "a documentation address",
        (198, 18..=19, _) => "a benchmarking address",
        (224..=239, _, _) => "a multicast address",
        (240..=255, _, _) => "a reserved or broadcast address",
        _ => return None,
    })
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    let o = ip.octets();
    if ip.is_unspecified() {
        return Some("an unspecified address");
    }
    if ip.is_loopback() {
        return Some("a loopback address");
    }
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) reach the IPv4 address they embed.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return non_public_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    if s[0] == 0x2002 {
        return non_public_v4(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    Some(match s[0] {
        0x0100 if s[1..4] == [0, 0, 0] => "a discard-only address",
        0x2001 if s[1] == 0x0db8 => "a documentation address",
        0x2001 if s[1] == 0 => "a Teredo tunnel address",
        0x2001 if s[1] < 0x0200 => "an IETF protocol address",
        x if x & 0xfe00 == 0xfc00 => "a unique-local address",
        x if x & 0xffc0 == 0xfe80 => "a link-local address",
        x if x & 0xffc0 == 0xfec0 => "a site-local address",
        x if x & 0xff00 == 0xff00 => "a multicast address",
        _ => return None,
    })
}

/// Whether the oracle may connect to `addr`: a public address, or one the operator listed.
pub(crate) fn check(listed: &[Listed], host: &str, addr: SocketAddr) -> Result<(), String> {
    let Some(kind) = non_public(addr.ip()) else {
        return Ok(());
    };
    if listed.iter().any(|l| l.holds(addr)) {
        return Ok(());
    }
    let shown = canonical(addr.ip());
    let what = if host.trim_start_matches('[').trim_end_matches(']') == shown.to_string() {
        format!("{shown} is {kind}")
    } else {
        format!("{host} is {shown}, {kind}")
    };
    Err(format!(
        "{what}: the oracle connects only to public addresses unless \
         [services.oracle] allowed_hosts or plain_http_hosts lists that address or its range \
         (for example \"{shown}\" or \"{shown}:{port}\")",
        port = addr.port()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    #[test]
    fn every_inward_form_is_refused() {
        for (addr, kind) in [
            ("127.0.0.1:80", "loopback"),
            ("127.1.2.3:80", "loopback"),
            ("[::1]:80", "loopback"),
            ("[::ffff:127.0.0.1]:80", "loopback"),
            ("[::127.0.0.1]:80", "loopback"),
            ("[64:ff9b::7f00:1]:80", "loopback"),
            ("[2002:7f00:1::]:80", "loopback"),
            ("169.254.169.254:80", "link-local"),
            ("[fe80::1]:80", "link-local"),
            ("10.1.2.3:80", "private"),
            ("172.16.0.1:80", "private"),
            ("192.168.1.1:80", "private"),
            ("[::ffff:192.168.1.1]:80", "private"),
            ("100.64.0.1:80", "shared"),
            ("192.0.2.1:80", "documentation"),
            ("[2001:db8::1]:80", "documentation"),
            ("198.18.0.1:80", "benchmarking"),
            ("224.0.0.1:80", "multicast"),
            ("[ff02::1]:80", "multicast"),
            ("255.255.255.255:80", "broadcast"),
            ("0.0.0.0:80", "unspecified"),
            ("[::]:80", "unspecified"),
            ("[fd00::1]:80", "unique-local"),
        ] {
            let err = check(&[], "h", sa(addr)).expect_err(addr);
            assert!(err.contains(kind), "{addr}: {err}");
        }
        for public in ["93.184.216.34:443", "[2606:4700::1111]:443", "8.8.8.8:53"] {
            assert_eq!(check(&[], "h", sa(public)), Ok(()), "{public}");
        }
    }

    #[test]
    fn only_the_listed_address_range_and_port_get_through() {
        let listed: Vec<Listed> = ["127.0.0.1", "10.0.0.0/8:8080", "[fd00::]/8"]
            .iter()
            .map(|p| Listed::parse(p).expect("an address").expect("valid"))
            .collect();
        assert_eq!(check(&listed, "h", sa("127.0.0.1:9999")), Ok(()));
        assert_eq!(
            check(&listed, "h", sa("[::ffff:127.0.0.1]:1")),
            Ok(()),
            "the mapped form is the same address"
        );
        assert!(check(&listed, "h", sa("127.0.0.2:80")).is_err());
        assert_eq!(check(&listed, "h", sa("10.9.8.7:8080")), Ok(()));
        assert!(
            check(&listed, "h", sa("10.9.8.7:22")).is_err(),
            "port limited"
        );
        assert!(
            check(&listed, "h", sa("11.0.0.1:8080")).is_ok(),
            "public anyway"
        );
        assert_eq!(check(&listed, "h", sa("[fd12::1]:443")), Ok(()));
        assert!(check(&listed, "h", sa("[fe80::1]:443")).is_err());
    }

    #[test]
    fn address_patterns_parse_and_names_are_left_alone() {
        for name in [
            "*",
            "*.example.com",
            "example.com",
            "example.com:443",
            "localhost",
        ] {
            assert_eq!(Listed::parse(name), None, "{name}");
        }
        for bad in [
            "10.0.0.0/33",
            "[::1]/129",
            "10.0.0.1:port",
            "[::zz]",
            "10.0.0.0/x",
        ] {
            assert!(matches!(Listed::parse(bad), Some(Err(_))), "{bad}");
        }
        assert_eq!(
            Listed::parse("[::1]/128:8080"),
            Some(Ok(Listed {
                net: IpAddr::V6(Ipv6Addr::LOCALHOST),
                prefix: 128,
                port: Some(8080)
            }))
        );
    }
}
