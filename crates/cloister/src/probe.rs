//! `cloister probe`: one unauthenticated GET against a running runtime (its `/livez` by default),
//! exit 0 on a 2xx answer: the health check of an image that has no curl.

use std::io::{Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};

/// How long the probe waits to connect, and for the answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// `http://HOST:PORT` (a trailing slash allowed) into the address to connect to and the host.
fn parse(url: &str) -> anyhow::Result<&str> {
    let Some(rest) = url.strip_prefix("http://") else {
        bail!("{url:?}: the probe speaks plain HTTP to a local runtime; give http://HOST:PORT");
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        bail!("{url:?}: give the runtime's base URL, http://HOST:PORT, and the path separately");
    }
    Ok(authority)
}

/// The status code of the answer's status line.
fn status(head: &str) -> anyhow::Result<u16> {
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next().and_then(|c| c.parse().ok())) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") => Ok(code),
        _ => bail!("not an HTTP answer: {line:?}"),
    }
}

pub(crate) fn run(url: &str, path: &str) -> anyhow::Result<ExitCode> {
    if !path.starts_with('/') || path.contains(char::is_whitespace) {
        bail!("{path:?}: a path starts with / and has no spaces");
    }
    let authority = parse(url)?;
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {authority}"))?
        .next()
        .with_context(|| format!("{authority} resolves to no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)
        .with_context(|| format!("cannot connect to {authority}"))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .context("sending the probe")?;
    let mut head = Vec::new();
    stream
        .take(4096)
        .read_to_end(&mut head)
        .context("reading the answer")?;
    let code = status(&String::from_utf8_lossy(&head))?;
    let _ = writeln!(std::io::stdout().lock(), "{path}: {code}");
    Ok(if (200..300).contains(&code) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::{parse, status};

    #[test]
    fn urls_and_answers_are_read_or_refused() {
        assert_eq!(parse("http://127.0.0.1:8420").ok(), Some("127.0.0.1:8420"));
        assert_eq!(parse("http://localhost:8420/").ok(), Some("localhost:8420"));
        assert!(parse("https://x:1").is_err());
        assert!(parse("http://x:1/livez").is_err());
        assert_eq!(status("HTTP/1.1 200 OK\r\n").ok(), Some(200));
        assert_eq!(
            status("HTTP/1.1 503 Service Unavailable\r\n").ok(),
            Some(503)
        );
        assert!(status("SSH-2.0").is_err());
    }
}
