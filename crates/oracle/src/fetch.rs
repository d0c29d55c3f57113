//! Fetching sources: the host allowlist, HTTPS through rustls with the system's roots (plain HTTP
//! only to hosts the configuration names), a timeout and a size cap per source, no redirects, a
//! response cache per account and source with a TTL, and a rate limit per account and host.
//!
//! The cache and the host budgets are per account (the owner a request acts for): a cached answer
//! would tell one account that another asked the same thing a moment ago, and one account's
//! fetches to a host would otherwise use up every other account's.
//!
//! This module holds the only HTTP client in any Cloister service: the oracle is the one service
//! whose spec declares `network_access`, and it refuses to start without it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use reqwest::Url;
use runtime::clock::now_ms;
use runtime::rate::{Limiter, Rate};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::address::{self, Listed};
use crate::request::{Method, Source};

/// Account and host pairs (and, in the service, accounts) with a rate-limit bucket before idle ones
/// are forgotten.
pub(crate) const LIMITED_KEYS: usize = 4096;

/// The most responses the cache holds; the oldest go first.
const CACHE_ENTRIES: usize = 256;

/// Where a source may be fetched from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct HostPolicy {
    /// Hosts that may be fetched over HTTPS.
    https: Vec<String>,
    /// Hosts that may also be fetched over plain HTTP (tests use loopback servers).
    http: Vec<String>,
    /// The addresses and ranges either list names: the only non-public addresses that may be reached.
    listed: Vec<Listed>,
}

impl HostPolicy {
    pub(crate) fn new(https: &[String], http: &[String]) -> HostPolicy {
        let listed = https
            .iter()
            .chain(http)
            .filter_map(|p| Listed::parse(p)?.ok())
            .collect();
        HostPolicy {
            https: https.to_vec(),
            http: http.to_vec(),
            listed,
        }
    }

    /// Checks a pattern as the configuration gives it: `*`, `host`, `*.domain`, `host:port`, or an
    /// address or range (`127.0.0.1`, `10.0.0.0/8:8080`, `[fd00::]/8`).
    pub(crate) fn check_pattern(p: &str) -> Result<(), runtime::Veto> {
        if let Some(address) = Listed::parse(p) {
            return address.map(|_| ()).map_err(runtime::Veto::from);
        }
        let host = p.strip_prefix("*.").unwrap_or(p);
        let host = match host.rsplit_once(':') {
            Some((h, port)) if !h.contains(':') || h.starts_with('[') => {
                port.parse::<u16>()
                    .map_err(|_| format!("{p:?}: {port:?} is not a port"))?;
                h
            }
            _ => host,
        };
        if p == "*" {
            return Ok(());
        }
        let valid = !host.is_empty()
            && host.len() <= 253
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
        if valid {
            Ok(())
        } else {
            Err(format!(
                "{p:?} is not a host pattern (write \"api.example.com\", \"*.example.com\", \"127.0.0.1:8080\" or \"*\")"
            )
            .into())
        }
    }

    /// Whether `url` may be fetched; the error says which setting would allow it.
    pub(crate) fn check(&self, url: &Url) -> Result<(), String> {
        let host = url
            .host_str()
            .ok_or_else(|| format!("{url} has no host"))?
            .to_ascii_lowercase();
        let port = url.port_or_known_default().unwrap_or(0);
        let ip = ip_of(url);
        let matches = |list: &[String]| {
            list.iter().any(|p| match (Listed::parse(p), ip) {
                (Some(Ok(listed)), Some(ip)) => listed.holds((ip, port).into()),
                (Some(_), _) => false,
                (None, _) => pattern_matches(p, &host, port),
            })
        };
        match url.scheme() {
            "https" if matches(&self.https) || matches(&self.http) => Ok(()),
            "https" => Err(format!(
                "host {host} is not in [services.oracle] allowed_hosts"
            )),
            "http" if matches(&self.http) => Ok(()),
            "http" => Err(format!(
                "plain HTTP to {host} is not allowed: use https, or add the host to [services.oracle] plain_http_hosts"
            )),
            other => Err(format!("scheme {other:?} is not fetched: use https")),
        }
    }

    /// The addresses `url` may be fetched from: its own address if it spells one, else what its
    /// name resolves to, each checked (a name with one inward address is refused whole). The
    /// connection goes to these addresses and no others: nothing is resolved a second time.
    pub(crate) async fn addresses(&self, url: &Url) -> Result<Vec<SocketAddr>, String> {
        let port = url.port_or_known_default().unwrap_or(0);
        let host = url.host_str().unwrap_or_default();
        let addrs: Vec<SocketAddr> = match ip_of(url) {
            Some(ip) => vec![(ip, port).into()],
            None if host.is_empty() => return Err(format!("{url} has no host")),
            None => tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| format!("{host} does not resolve: {e}"))?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(format!("{host} resolves to no address"));
        }
        for addr in &addrs {
            address::check(&self.listed, host, *addr)?;
        }
        Ok(addrs)
    }
}

/// The address `url` spells, if it spells one. The URL parser has already turned every IPv4 form
/// (`2130706433`, `0x7f.1`, `0177.0.0.1`) into dotted decimal, so a name never parses as one.
fn ip_of(url: &Url) -> Option<std::net::IpAddr> {
    url.host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

fn pattern_matches(pattern: &str, host: &str, port: u16) -> bool {
    if pattern == "*" {
        return true;
    }
    let pattern = pattern.to_ascii_lowercase();
    let (name, want_port) = match pattern.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.starts_with('[') => (h.to_owned(), p.parse().ok()),
        _ => (pattern.clone(), None),
    };
    if want_port.is_some_and(|p: u16| p != port) {
        return false;
    }
    let name = name.trim_start_matches('[').trim_end_matches(']');
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match name.strip_prefix("*.") {
        Some(domain) => host.ends_with(&format!(".{domain}")),
        None => host == name,
    }
}

/// A fetched answer.
#[derive(Debug, Clone)]
pub(crate) struct Fetched {
    pub(crate) status: u16,
    pub(crate) body: Arc<[u8]>,
    pub(crate) fetched_at_ms: u64,
    pub(crate) cached: bool,
}

/// Why a source could not be fetched, with what is known of the answer.
#[derive(Debug, Clone)]
pub(crate) struct FetchError {
    pub(crate) message: String,
    pub(crate) status: Option<u16>,
    pub(crate) body: Option<Arc<[u8]>>,
    pub(crate) fetched_at_ms: Option<u64>,
}

impl FetchError {
    fn new(message: impl Into<String>) -> FetchError {
        FetchError {
            message: message.into(),
            status: None,
            body: None,
            fetched_at_ms: None,
        }
    }
}

/// The fetch settings in force for one request.
#[derive(Debug, Clone)]
pub(crate) struct FetchLimits {
    pub(crate) policy: HostPolicy,
    pub(crate) timeout: Duration,
    pub(crate) max_body: usize,
    pub(crate) cache_ttl: Duration,
    pub(crate) host_rate_per_second: f64,
}

struct CacheEntry {
    at: Instant,
    fetched: Fetched,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<String, CacheEntry>,
    order: VecDeque<String>,
}

/// The HTTP client with its cache and host limits. Shared by the incarnation's requests.
pub(crate) struct Fetcher {
    /// TLS with the system's roots, made once; each fetch gets a client of its own that can reach
    /// only the addresses checked for it.
    tls: rustls::ClientConfig,
    cache: Mutex<Cache>,
    hosts: Limiter,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher").finish_non_exhaustive()
    }
}

impl Fetcher {
    pub(crate) fn new() -> Result<Fetcher, String> {
        // Other reqwest clients in the process (the SDK's, in tests and in applications that embed
        // the stack) need a process-wide crypto provider; installing it twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls_platform_verifier::Verifier::new(provider.clone())
            .map_err(|e| format!("the system's certificate roots cannot be used: {e}"))?;
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS cannot start: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Fetcher {
            tls,
            cache: Mutex::new(Cache::default()),
            hosts: Limiter::new(LIMITED_KEYS),
        })
    }

    /// A client that connects to `addrs` for `url`'s host and nowhere else: no redirects, no
    /// proxy from the environment (the host sets the environment), no other name resolved.
    fn client_for(&self, url: &Url, addrs: &[SocketAddr]) -> Result<reqwest::Client, String> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("cloister-oracle/", env!("CARGO_PKG_VERSION")))
            .tls_backend_preconfigured(self.tls.clone());
        if ip_of(url).is_none()
            && let Some(name) = url.host_str()
        {
            builder = builder.resolve_to_addrs(name, addrs);
        }
        builder
            .build()
            .map_err(|e| format!("the HTTP client cannot start: {e}"))
    }

    /// Fetches `source` for `owner`, from `owner`'s cache when a fresh enough copy is there.
    pub(crate) async fn fetch(
        &self,
        owner: &str,
        source: &Source,
        limits: &FetchLimits,
    ) -> Result<Fetched, FetchError> {
        let url = Url::parse(&source.url)
            .map_err(|e| FetchError::new(format!("{:?} is not a URL: {e}", source.url)))?;
        limits.policy.check(&url).map_err(FetchError::new)?;
        let key = cache_key(owner, source);
        if !limits.cache_ttl.is_zero()
            && let Some(hit) = self.cached(&key, limits.cache_ttl)
        {
            return Ok(hit);
        }
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let rate = limits.host_rate_per_second;
        let per_host = Rate {
            per_second: rate,
            burst: rate.max(1.0),
        };
        let admitted = self.hosts.admit(
            &budget_key(owner, &host),
            per_host,
            Instant::now().into_std(),
        );
        if let Err(wait) = admitted {
            return Err(FetchError::new(format!(
                "host {host} is over [services.oracle] host_rate_per_second ({rate}) for this account; try again in {} ms",
                wait.as_millis().max(1)
            )));
        }
        let fetched = self.fetch_now(url, source, limits).await?;
        if !limits.cache_ttl.is_zero() && (200..300).contains(&fetched.status) {
            self.remember(key, fetched.clone());
        }
        Ok(fetched)
    }

    fn cached(&self, key: &str, ttl: Duration) -> Option<Fetched> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let entry = cache.entries.get(key)?;
        (entry.at.elapsed() < ttl).then(|| Fetched {
            cached: true,
            ..entry.fetched.clone()
        })
    }

    fn remember(&self, key: String, fetched: Fetched) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.entries.len() >= CACHE_ENTRIES
            && !cache.entries.contains_key(&key)
            && let Some(oldest) = cache.order.pop_front()
        {
            cache.entries.remove(&oldest);
        }
        cache.order.retain(|k| *k != key);
        cache.order.push_back(key.clone());
        cache.entries.insert(
            key,
            CacheEntry {
                at: Instant::now(),
                fetched,
            },
        );
    }

    async fn fetch_now(
        &self,
        url: Url,
        source: &Source,
        limits: &FetchLimits,
    ) -> Result<Fetched, FetchError> {
        let fetched_at_ms = now_ms();
        let timeout = limits.timeout;
        // Resolving counts against the source's time; the addresses are checked before any
        // connection is made, and the client can reach no others.
        let addrs = match tokio::time::timeout(timeout, limits.policy.addresses(&url)).await {
            Ok(Ok(addrs)) => addrs,
            Ok(Err(refused)) => return Err(FetchError::new(refused)),
            Err(_) => {
                return Err(FetchError::new(format!(
                    "{} did not resolve within [services.oracle] timeout_ms ({} ms)",
                    url.host_str().unwrap_or_default(),
                    timeout.as_millis()
                )));
            }
        };
        let client = self.client_for(&url, &addrs).map_err(FetchError::new)?;
        let mut request = match source.method {
            Method::Get => client.get(url),
            Method::Post => client.post(url),
        };
        for (name, value) in &source.headers {
            request = request.header(name, value);
        }
        if let Some(body) = &source.body {
            request = request.body(body.clone());
        }
        let work = async {
            let response = request
                .send()
                .await
                .map_err(|e| FetchError::new(format!("unreachable: {}", error_chain(&e))))?;
            let status = response.status().as_u16();
            if response
                .content_length()
                .is_some_and(|n| n > limits.max_body as u64)
            {
                return Err(FetchError {
                    status: Some(status),
                    fetched_at_ms: Some(fetched_at_ms),
                    ..FetchError::new(format!(
                        "the body is over [services.oracle] max_response_bytes ({})",
                        limits.max_body
                    ))
                });
            }
            let mut body = Vec::new();
            let mut stream = response.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| FetchError {
                    status: Some(status),
                    fetched_at_ms: Some(fetched_at_ms),
                    ..FetchError::new(format!("the body broke off: {}", error_chain(&e)))
                })?;
                if body.len() + chunk.len() > limits.max_body {
                    return Err(FetchError {
                        status: Some(status),
                        fetched_at_ms: Some(fetched_at_ms),
                        ..FetchError::new(format!(
                            "the body is over [services.oracle] max_response_bytes ({})",
                            limits.max_body
                        ))
                    });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Fetched {
                status,
                body: body.into(),
                fetched_at_ms,
                cached: false,
            })
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(FetchError {
                fetched_at_ms: Some(fetched_at_ms),
                ..FetchError::new(format!(
                    "no complete answer within [services.oracle] timeout_ms ({} ms)",
                    timeout.as_millis()
                ))
            }),
        }
    }
}

/// Two requests share a cache entry only when they act for the same owner and would send the same
/// bytes.
fn cache_key(owner: &str, source: &Source) -> String {
    let parts: (
        &str,
        &str,
        Method,
        &BTreeMap<String, String>,
        &Option<String>,
    ) = (
        owner,
        &source.url,
        source.method,
        &source.headers,
        &source.body,
    );
    let text = serde_json::to_string(&parts).expect("plain data serializes");
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The bucket of `owner`'s fetches to `host`. No account id or host contains a NUL.
fn budget_key(owner: &str, host: &str) -> String {
    format!("{owner}\0{host}")
}

/// An error with its causes ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).expect("url")
    }

    #[test]
    fn the_allowlist_decides_by_scheme_host_and_port() {
        let p = HostPolicy::new(
            &["api.example.com".into(), "*.prices.net".into()],
            &["127.0.0.1:9000".into()],
        );
        assert!(p.check(&url("https://api.example.com/x")).is_ok());
        assert!(p.check(&url("https://API.example.com/x")).is_ok());
        assert!(p.check(&url("https://eu.prices.net/x")).is_ok());
        assert!(p.check(&url("https://prices.net/x")).is_err());
        assert!(p.check(&url("https://api.example.com.evil.org/x")).is_err());
        let e = p
            .check(&url("http://api.example.com/x"))
            .expect_err("plain");
        assert!(e.contains("plain_http_hosts"), "{e}");
        assert!(p.check(&url("http://127.0.0.1:9000/x")).is_ok());
        assert!(p.check(&url("http://127.0.0.1:9001/x")).is_err());
        assert!(p.check(&url("file:///etc/passwd")).is_err());
        let e = p.check(&url("https://other.org/")).expect_err("not listed");
        assert!(e.contains("allowed_hosts"), "{e}");
        assert!(
            HostPolicy::new(&["*".into()], &[])
                .check(&url("https://any.where/"))
                .is_ok()
        );
    }

    #[test]
    fn host_patterns_are_checked() {
        for good in [
            "*",
            "api.example.com",
            "*.example.com",
            "127.0.0.1:8080",
            "localhost",
        ] {
            assert!(HostPolicy::check_pattern(good).is_ok(), "{good}");
        }
        for bad in ["", "http://x", "a b", "host:port", "x/y"] {
            assert!(HostPolicy::check_pattern(bad).is_err(), "{bad}");
        }
    }
}
