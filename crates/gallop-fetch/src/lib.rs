//! Safe fetching of image uris: `data:` base64 URIs and http(s) through an SSRF guard.
//!
//! An http(s) fetch resolves the host itself, refuses any address that is not public (loopback,
//! private, link-local, CGNAT, multicast, unspecified, broadcast, reserved, IPv4 embedded in IPv6,
//! cloud metadata), then connects ONLY to the vetted address (reqwest's `resolve` pins it, so a
//! second DNS answer cannot swap it). Redirects are followed by hand, each hop checked the same
//! way. Bodies are streamed with a byte cap, and the whole fetch has a deadline.
//!
//! Transient failures (HTTP 5xx and 429, refused or reset connections, connect timeouts) are
//! retried with exponential backoff, each attempt from the original uri with its addresses vetted
//! again; everything else (4xx, refusals, too-big bodies, redirect limits) fails at once.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::Url;

/// Upstream's input limit.
pub const MAX_IMAGE_BYTES: usize = 20 * 1024 * 1024;

/// The longest wait between attempts, whether from the backoff or a `Retry-After` header.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(10);

/// Names that reach cloud metadata services whatever they resolve to.
const METADATA_HOSTS: [&str; 2] = ["metadata.google.internal", "metadata"];

pub type LookupFuture<'a> = Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send + 'a>>;

/// Turns a host name into addresses. Pluggable so tests can map names without DNS.
pub trait Resolver: Send + Sync {
    fn lookup<'a>(&'a self, host: &'a str) -> LookupFuture<'a>;
}

/// The operating system's resolver (`tokio::net::lookup_host`).
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn lookup<'a>(&'a self, host: &'a str) -> LookupFuture<'a> {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host, 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// A fixed name -> addresses table; unknown names fail to resolve. For tests.
pub struct StaticResolver(pub HashMap<String, Vec<IpAddr>>);

impl Resolver for StaticResolver {
    fn lookup<'a>(&'a self, host: &'a str) -> LookupFuture<'a> {
        Box::pin(async move {
            self.0
                .get(host)
                .cloned()
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such host"))
        })
    }
}

#[derive(Clone)]
pub struct FetchPolicy {
    /// Lifts the address rule (local use and tests). Metadata names stay refused.
    pub allow_private: bool,
    /// Addresses allowed even though not public (e.g. one internal image host).
    pub allowed_addrs: Vec<IpAddr>,
    pub max_bytes: usize,
    pub max_redirects: u32,
    /// Deadline of the whole fetch, redirects and retries included.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Attempts in all (at least 1) when an attempt fails transiently: HTTP 5xx or 429, a
    /// refused or reset connection, a connect timeout.
    pub attempts: u32,
    /// Wait before the second attempt, doubling before each further one (at most
    /// `MAX_RETRY_WAIT`); a `Retry-After: <seconds>` header replaces it, capped the same way.
    pub retry_backoff: Duration,
    pub resolver: Arc<dyn Resolver>,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        FetchPolicy {
            allow_private: false,
            allowed_addrs: Vec::new(),
            max_bytes: MAX_IMAGE_BYTES,
            max_redirects: 3,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            attempts: 3,
            retry_backoff: Duration::from_millis(500),
            resolver: Arc::new(SystemResolver),
        }
    }
}

/// Names the uri (shortened if it is a long data: URI) and why it was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("image uri {uri}: {reason}")]
pub struct FetchError {
    pub uri: String,
    pub reason: String,
}

impl FetchError {
    fn new(uri: &str, reason: impl Into<String>) -> FetchError {
        FetchError {
            uri: shorten(uri),
            reason: reason.into(),
        }
    }
}

/// Why an address may not be fetched from, or None when it is public.
pub fn refusal_reason(ip: IpAddr) -> Option<String> {
    match ip {
        IpAddr::V4(v4) => v4_class(v4).map(str::to_string),
        IpAddr::V6(v6) => v6_refusal(v6),
    }
}

fn v4_class(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    let class = if ip == Ipv4Addr::new(169, 254, 169, 254) {
        "a cloud metadata address"
    } else if o[0] == 0 {
        "unspecified"
    } else if ip.is_loopback() {
        "loopback"
    } else if ip.is_private() {
        "private"
    } else if ip.is_link_local() {
        "link-local"
    } else if o[0] == 100 && (o[1] & 0xC0) == 64 {
        "shared address space (CGNAT)"
    } else if ip.is_broadcast() {
        "broadcast"
    } else if ip.is_multicast() {
        "multicast"
    } else if o[0] >= 240 {
        "reserved"
    } else if o[0] == 192 && o[1] == 0 && o[2] == 0 {
        "reserved (IETF protocol assignments)"
    } else if o[0] == 198 && (o[1] & 0xFE) == 18 {
        "reserved (benchmarking)"
    } else {
        return None;
    };
    Some(class)
}

fn v6_refusal(ip: Ipv6Addr) -> Option<String> {
    let seg = ip.segments();
    if ip == "fd00:ec2::254".parse::<Ipv6Addr>().expect("literal") {
        return Some("a cloud metadata address".into());
    }
    if ip.is_unspecified() {
        return Some("unspecified".into());
    }
    if ip.is_loopback() {
        return Some("loopback".into());
    }
    // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible): the embedded v4 address decides, and
    // any non-public one is refused as such.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_class(v4).map(|c| format!("IPv4-mapped {c} ({v4})"));
    }
    if seg[..6] == [0; 6] {
        let v4 = Ipv4Addr::from(((seg[6] as u32) << 16) | seg[7] as u32);
        return Some(format!("IPv4-compatible ({v4}); refused as deprecated"));
    }
    if (seg[0] & 0xFE00) == 0xFC00 {
        return Some("unique local (private)".into());
    }
    if (seg[0] & 0xFFC0) == 0xFE80 {
        return Some("link-local".into());
    }
    if (seg[0] & 0xFFC0) == 0xFEC0 {
        return Some("site-local (deprecated private)".into());
    }
    if (seg[0] & 0xFF00) == 0xFF00 {
        return Some("multicast".into());
    }
    // 6to4 (2002:V4::/48) and NAT64 (64:ff9b::/96) reach the embedded v4 address.
    if seg[0] == 0x2002 {
        let v4 = Ipv4Addr::from(((seg[1] as u32) << 16) | seg[2] as u32);
        return v4_class(v4).map(|c| format!("6to4 of {c} {v4}"));
    }
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let v4 = Ipv4Addr::from(((seg[6] as u32) << 16) | seg[7] as u32);
        return v4_class(v4).map(|c| format!("NAT64 of {c} {v4}"));
    }
    if seg[0] == 0x2001 && seg[1] == 0x0db8 {
        return Some("documentation-only".into());
    }
    None
}

/// Fetches the bytes of an image uri under `policy`.
pub async fn fetch_image(uri: &str, policy: &FetchPolicy) -> Result<Vec<u8>, FetchError> {
    if let Some(rest) = strip_prefix_ignore_case(uri, "data:") {
        return decode_data_uri(uri, rest, policy.max_bytes);
    }
    let deadline = Instant::now() + policy.timeout;
    let attempts = policy.attempts.max(1);
    let mut made = 0;
    loop {
        made += 1;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let failure = match tokio::time::timeout(remaining, fetch_http(uri, policy)).await {
            Ok(Ok(bytes)) => return Ok(bytes),
            Ok(Err(failure)) => failure,
            Err(_) => Failure::fatal(FetchError::new(
                uri,
                format!("timed out after {} s", policy.timeout.as_secs_f32()),
            )),
        };
        let Failure { mut error, retry } = failure;
        let wait = retry.map(|after| {
            after
                .unwrap_or_else(|| policy.retry_backoff.saturating_mul(1 << (made - 1).min(16)))
                .min(MAX_RETRY_WAIT)
        });
        // Give up when the failure is not transient, the attempts are spent, or the wait would
        // run past the deadline (the last error says more than a timeout would).
        match wait {
            Some(wait) if made < attempts && Instant::now() + wait < deadline => {
                tracing::debug!(
                    uri = %error.uri,
                    reason = %error.reason,
                    attempt = made,
                    ?wait,
                    "image fetch failed; retrying"
                );
                tokio::time::sleep(wait).await;
            }
            _ => {
                if made > 1 {
                    error.reason.push_str(&format!(" ({made} attempts)"));
                }
                return Err(error);
            }
        }
    }
}

/// One attempt's failure, and whether another attempt may succeed: `retry` is None for a final
/// failure, `Some(wait)` for a transient one (`wait` from a `Retry-After` header, if any).
struct Failure {
    error: FetchError,
    retry: Option<Option<Duration>>,
}

impl Failure {
    fn fatal(error: FetchError) -> Failure {
        Failure { error, retry: None }
    }

    fn transient(error: FetchError, retry_after: Option<Duration>) -> Failure {
        Failure {
            error,
            retry: Some(retry_after),
        }
    }

    /// Transient (no `Retry-After`) or final, as `transient` says.
    fn either(error: FetchError, transient: bool) -> Failure {
        if transient {
            Failure::transient(error, None)
        } else {
            Failure::fatal(error)
        }
    }
}

/// Errors of `send` where the server may answer next time: connect failures (refused, reset,
/// timed out, a failed TLS handshake) and a connection broken mid-request. Not builder errors.
fn transport_is_transient(e: &reqwest::Error) -> bool {
    e.is_connect() || e.is_timeout() || e.is_request() || e.is_body()
}

/// `Retry-After: <seconds>`; the HTTP-date form is ignored (the backoff applies).
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response.headers().get(reqwest::header::RETRY_AFTER)?;
    let secs: u64 = value.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs))
}

fn decode_data_uri(uri: &str, rest: &str, max_bytes: usize) -> Result<Vec<u8>, FetchError> {
    let Some((meta, payload)) = rest.split_once(',') else {
        return Err(FetchError::new(uri, "data URI has no ','"));
    };
    if !meta.to_ascii_lowercase().ends_with(";base64") {
        return Err(FetchError::new(uri, "data URI must be base64 (;base64,)"));
    }
    // Base64 is 4 chars per 3 bytes: refuse before decoding a huge payload.
    if payload.len() / 4 * 3 > max_bytes + 3 {
        return Err(FetchError::new(
            uri,
            format!("image is larger than {max_bytes} bytes"),
        ));
    }
    let compact: String = payload.chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| FetchError::new(uri, format!("data URI is not valid base64: {e}")))?;
    if bytes.len() > max_bytes {
        return Err(FetchError::new(
            uri,
            format!("image is larger than {max_bytes} bytes"),
        ));
    }
    Ok(bytes)
}

/// One attempt: the uri and its redirects, each hop vetted.
async fn fetch_http(uri: &str, policy: &FetchPolicy) -> Result<Vec<u8>, Failure> {
    let fatal = |at: &str, reason: String| Failure::fatal(FetchError::new(at, reason));
    let mut url = Url::parse(uri).map_err(|e| fatal(uri, format!("not a URL: {e}")))?;
    let mut redirects = 0;
    loop {
        let here = url.as_str().to_string();
        let (host, addr) = vet(&url, policy).await.map_err(|r| fatal(&here, r))?;
        let client = pinned_client(&host, addr, policy).map_err(|r| fatal(&here, r))?;
        let response = client.get(url.clone()).send().await.map_err(|e| {
            Failure::either(
                FetchError::new(&here, describe(&e)),
                transport_is_transient(&e),
            )
        })?;
        let status = response.status();
        if status.is_redirection() {
            redirects += 1;
            if redirects > policy.max_redirects {
                return Err(fatal(
                    uri,
                    format!("more than {} redirects; refused", policy.max_redirects),
                ));
            }
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| fatal(&here, format!("HTTP {status} without Location")))?;
            url = url
                .join(location)
                .map_err(|e| fatal(&here, format!("bad redirect {location:?}: {e}")))?;
            continue;
        }
        if !status.is_success() {
            let error = FetchError::new(&here, format!("HTTP status {status}"));
            return Err(
                if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                    Failure::transient(error, retry_after(&response))
                } else {
                    Failure::fatal(error)
                },
            );
        }
        return read_capped(response, policy.max_bytes)
            .await
            .map_err(|(reason, transient)| {
                Failure::either(FetchError::new(&here, reason), transient)
            });
    }
}

/// Checks scheme, host name and every resolved address; returns the host and the one address
/// to connect to.
async fn vet(url: &Url, policy: &FetchPolicy) -> Result<(String, SocketAddr), String> {
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(format!(
            "scheme {} is not allowed (http, https)",
            url.scheme()
        ));
    }
    let port = url
        .port_or_known_default()
        .ok_or_else(|| "URL has no port".to_string())?;
    let host = url
        .host_str()
        .ok_or_else(|| "URL has no host".to_string())?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    if METADATA_HOSTS.contains(&name.as_str()) {
        return Err(format!("host {host} is a cloud metadata service; refused"));
    }
    let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => policy
            .resolver
            .lookup(&name)
            .await
            .map_err(|e| format!("cannot resolve host {host}: {e}"))?,
    };
    if addrs.is_empty() {
        return Err(format!("host {host} resolved to no address"));
    }
    // Every answer must pass: a name with one public and one private address is refused.
    for ip in &addrs {
        if policy.allow_private || policy.allowed_addrs.contains(ip) {
            continue;
        }
        if let Some(class) = refusal_reason(*ip) {
            return Err(if host.parse::<IpAddr>().is_ok() {
                format!("address {ip} is {class}; refused")
            } else {
                format!("host {host} resolves to {ip}, which is {class}; refused")
            });
        }
    }
    Ok((host, SocketAddr::new(addrs[0], port)))
}

/// A client that can only reach `addr` for `host`: no proxy, no automatic redirects.
fn pinned_client(
    host: &str,
    addr: SocketAddr,
    policy: &FetchPolicy,
) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(policy.connect_timeout)
        .resolve(host, addr)
        .user_agent("gallop-fetch/0.1")
        .build()
        .map_err(|e| format!("http client: {e}"))
}

/// The body, at most `max_bytes`; an error says why and whether it was transient (a broken
/// connection: no content decoding is enabled, so a read error is the transport's) rather than
/// final (too big).
async fn read_capped(
    mut response: reqwest::Response,
    max_bytes: usize,
) -> Result<Vec<u8>, (String, bool)> {
    let too_big = || {
        (
            format!("image is larger than {max_bytes} bytes; refused"),
            false,
        )
    };
    if response
        .content_length()
        .is_some_and(|n| n > max_bytes as u64)
    {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| (describe(&e), true))? {
        if body.len() + chunk.len() > max_bytes {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn describe(e: &reqwest::Error) -> String {
    let mut msg = if e.is_connect() {
        "connection failed".to_string()
    } else if e.is_timeout() {
        "timed out".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Keeps error messages short when the uri is a data: URI of megabytes.
fn shorten(uri: &str) -> String {
    const MAX: usize = 80;
    if uri.len() <= MAX {
        return uri.to_string();
    }
    let mut end = MAX;
    while !uri.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &uri[..end])
}
