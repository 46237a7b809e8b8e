//! The SSRF guard: the address-class matrix (classifier), and end-to-end fetches against loopback
//! servers started here. Nothing in this file sends traffic to a non-loopback address: refused
//! addresses are refused before connecting, and every name the tests resolve maps to loopback.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use gallop_fetch::{FetchPolicy, StaticResolver, fetch_image, refusal_reason};

const IMAGE: &[u8] = b"\x89PNG\r\n\x1a\nnot-really-a-png-but-bytes";

/// A loopback server on `ip` that counts requests. Routes:
/// `/img` the bytes; `/to?u=URL` redirect to URL; `/chain/N` redirects N more times then the
/// image; `/big` 21 MB with Content-Length; `/big-stream` 21 MB chunked; `/slow` waits 10 s.
struct TestServer {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl TestServer {
    async fn start(ip: &str) -> TestServer {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let app = Router::new()
            .route("/img", get(|| async { IMAGE }))
            .route(
                "/to",
                get(
                    |axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>| async move {
                        redirect(&q["u"])
                    },
                ),
            )
            .route(
                "/chain/{n}",
                get(|Path(n): Path<u32>| async move {
                    if n == 0 {
                        IMAGE.into_response()
                    } else {
                        redirect(&format!("/chain/{}", n - 1))
                    }
                }),
            )
            .route("/big", get(|| async { vec![7u8; 21 * 1024 * 1024] }))
            .route(
                "/big-stream",
                get(|| async {
                    let chunks = (0..21).map(|_| Ok::<_, std::io::Error>(vec![7u8; 1024 * 1024]));
                    Body::from_stream(futures_util::stream::iter(chunks))
                }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    IMAGE
                }),
            )
            .layer(axum::middleware::from_fn(
                move |req: axum::extract::Request, next: axum::middleware::Next| {
                    let counter = counter.clone();
                    async move {
                        counter.fetch_add(1, Ordering::SeqCst);
                        next.run(req).await
                    }
                },
            ));
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        TestServer { addr, hits }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn redirect(to: &str) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, to.to_string())]).into_response()
}

fn strict() -> FetchPolicy {
    FetchPolicy::default()
}

fn open() -> FetchPolicy {
    FetchPolicy {
        allow_private: true,
        ..FetchPolicy::default()
    }
}

fn resolver(map: &[(&str, &str)]) -> Arc<StaticResolver> {
    let mut table = HashMap::new();
    for (name, ip) in map {
        table
            .entry(name.to_string())
            .or_insert_with(Vec::new)
            .push(ip.parse::<IpAddr>().unwrap());
    }
    Arc::new(StaticResolver(table))
}

#[test]
fn classifier_refuses_every_non_public_class() {
    let refused = [
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("169.254.1.1", "link-local"),
        ("169.254.169.254", "cloud metadata"),
        ("100.64.0.1", "CGNAT"),
        ("100.127.255.255", "CGNAT"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("192.0.0.8", "reserved"),
        ("198.18.0.1", "reserved"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fc00::1", "unique local"),
        ("fd12:3456::1", "unique local"),
        ("fd00:ec2::254", "cloud metadata"),
        ("fe80::1", "link-local"),
        ("febf::1", "link-local"),
        ("fec0::1", "site-local"),
        ("ff02::1", "multicast"),
        ("::ffff:127.0.0.1", "IPv4-mapped loopback"),
        ("::ffff:10.0.0.1", "IPv4-mapped private"),
        ("::ffff:169.254.169.254", "IPv4-mapped a cloud metadata"),
        ("::ffff:100.64.0.1", "IPv4-mapped shared address space"),
        ("::127.0.0.1", "IPv4-compatible"),
        ("::8.8.8.8", "IPv4-compatible"),
        ("2002:0a00:0001::1", "6to4 of private 10.0.0.1"),
        ("2002:7f00:0001::1", "6to4 of loopback"),
        ("64:ff9b::10.0.0.1", "NAT64 of private"),
        ("64:ff9b::127.0.0.1", "NAT64 of loopback"),
        ("2001:db8::1", "documentation"),
    ];
    for (ip, class) in refused {
        let reason = refusal_reason(ip.parse().unwrap())
            .unwrap_or_else(|| panic!("{ip} must be refused ({class})"));
        assert!(
            reason.contains(class),
            "{ip}: reason {reason:?} should say {class:?}"
        );
    }
    let public = [
        "8.8.8.8",
        "1.1.1.1",
        "172.32.0.1",
        "172.15.255.255",
        "100.128.0.1",
        "100.63.255.255",
        "169.253.255.255",
        "223.255.255.255",
        "2606:4700:4700::1111",
        "::ffff:8.8.8.8",
        "2002:0808:0808::1",
        "64:ff9b::8.8.8.8",
    ];
    for ip in public {
        assert_eq!(refusal_reason(ip.parse().unwrap()), None, "{ip} is public");
    }
}

#[tokio::test]
async fn loopback_literals_are_refused_and_nothing_is_fetched() {
    let server = TestServer::start("127.0.0.1").await;
    let port = server.addr.port();
    let cases = [
        (
            format!("http://127.0.0.1:{port}/img"),
            "address 127.0.0.1 is loopback; refused",
        ),
        (
            format!("http://localhost:{port}/img"),
            "which is loopback; refused",
        ),
        (
            format!("http://[::ffff:127.0.0.1]:{port}/img"),
            "IPv4-mapped loopback",
        ),
        (format!("http://0.0.0.0:{port}/img"), "unspecified; refused"),
        (format!("http://[::1]:{port}/img"), "loopback; refused"),
        (
            format!("http://2130706433:{port}/img"),
            "address 127.0.0.1 is loopback; refused",
        ),
        (
            format!("http://0x7f.1:{port}/img"),
            "address 127.0.0.1 is loopback; refused",
        ),
    ];
    for (uri, reason) in &cases {
        let err = fetch_image(uri, &strict()).await.expect_err(uri);
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("image uri {uri}: ")) || msg.starts_with("image uri http://"),
            "{msg}"
        );
        assert!(msg.contains(reason), "{uri}: {msg}");
    }
    assert_eq!(server.hits(), 0, "the guard let a request through");
    // Exactly the documented message shape.
    let uri = format!("http://127.0.0.1:{port}/a.png");
    assert_eq!(
        fetch_image(&uri, &strict()).await.unwrap_err().to_string(),
        format!("image uri {uri}: address 127.0.0.1 is loopback; refused")
    );
    // The same server is reachable when private fetching is allowed: the refusal was the guard.
    assert_eq!(
        fetch_image(&server.url("/img"), &open()).await.unwrap(),
        IMAGE
    );
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn a_name_that_resolves_to_a_private_address_is_refused() {
    let server = TestServer::start("127.0.0.1").await;
    let port = server.addr.port();
    let policy = FetchPolicy {
        // One public and one loopback answer: any bad answer refuses the name.
        resolver: resolver(&[
            ("images.test", "127.0.0.1"),
            ("mixed.test", "127.0.0.1"),
            ("mixed.test", "8.8.8.8"),
        ]),
        ..strict()
    };
    for name in ["images.test", "mixed.test"] {
        let uri = format!("http://{name}:{port}/img");
        let msg = fetch_image(&uri, &policy).await.unwrap_err().to_string();
        assert!(
            msg.contains(&format!(
                "host {name} resolves to 127.0.0.1, which is loopback; refused"
            )),
            "{msg}"
        );
    }
    let msg = fetch_image("http://nowhere.test/img", &policy)
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.contains("cannot resolve host nowhere.test"), "{msg}");
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn metadata_names_are_refused_even_when_private_is_allowed() {
    let server = TestServer::start("127.0.0.1").await;
    let port = server.addr.port();
    let policy = FetchPolicy {
        resolver: resolver(&[("metadata.google.internal", "127.0.0.1")]),
        ..open()
    };
    for uri in [
        format!("http://metadata.google.internal:{port}/img"),
        format!("http://METADATA.google.internal.:{port}/img"),
    ] {
        let msg = fetch_image(&uri, &policy).await.unwrap_err().to_string();
        assert!(msg.contains("cloud metadata service; refused"), "{msg}");
    }
    assert_eq!(server.hits(), 0);
}

#[tokio::test]
async fn a_redirect_to_loopback_is_refused_at_the_second_hop() {
    // The first hop is an address the policy explicitly allows (127.0.0.2); the redirect target
    // (127.0.0.1, or a name resolving to it) is not, and must never see a request.
    let first = TestServer::start("127.0.0.2").await;
    let target = TestServer::start("127.0.0.1").await;
    let policy = FetchPolicy {
        allowed_addrs: vec!["127.0.0.2".parse().unwrap()],
        resolver: resolver(&[("good.test", "127.0.0.2"), ("evil.test", "127.0.0.1")]),
        ..strict()
    };
    let good = format!("http://good.test:{}", first.addr.port());
    // The allowed first hop alone works.
    assert_eq!(
        fetch_image(&format!("{good}/img"), &policy).await.unwrap(),
        IMAGE
    );

    for to in [
        target.url("/img"),
        format!("http://evil.test:{}/img", target.addr.port()),
        format!("http://[::1]:{}/img", target.addr.port()),
    ] {
        let uri = format!("{good}/to?u={to}");
        let msg = fetch_image(&uri, &policy).await.unwrap_err().to_string();
        assert!(msg.contains("loopback; refused"), "{to}: {msg}");
        assert!(
            msg.contains(to.split('/').nth(2).unwrap()),
            "error names the hop: {msg}"
        );
    }
    assert_eq!(target.hits(), 0, "a redirect reached the loopback target");
    assert_eq!(first.hits(), 4);
}

#[tokio::test]
async fn at_most_three_redirects() {
    let server = TestServer::start("127.0.0.1").await;
    assert_eq!(
        fetch_image(&server.url("/chain/3"), &open()).await.unwrap(),
        IMAGE
    );
    let msg = fetch_image(&server.url("/chain/4"), &open())
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.contains("more than 3 redirects; refused"), "{msg}");
    // 4 hops for the first fetch, then 4 before giving up (the 5th is never requested).
    assert_eq!(server.hits(), 8);
}

#[tokio::test]
async fn more_than_20_mb_is_refused_with_or_without_content_length() {
    let server = TestServer::start("127.0.0.1").await;
    for path in ["/big", "/big-stream"] {
        let msg = fetch_image(&server.url(path), &open())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("larger than 20971520 bytes; refused"),
            "{path}: {msg}"
        );
    }
}

#[tokio::test]
async fn a_slow_server_times_out() {
    let server = TestServer::start("127.0.0.1").await;
    let policy = FetchPolicy {
        timeout: Duration::from_millis(300),
        ..open()
    };
    let started = Instant::now();
    let msg = fetch_image(&server.url("/slow"), &policy)
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.contains("timed out after 0.3 s"), "{msg}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "deadline not enforced"
    );
}

#[tokio::test]
async fn other_schemes_and_http_errors_are_clear() {
    let server = TestServer::start("127.0.0.1").await;
    let msg = fetch_image("file:///etc/passwd", &open())
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.contains("scheme file is not allowed"), "{msg}");
    let msg = fetch_image("ftp://x/y", &open())
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.contains("scheme ftp is not allowed"), "{msg}");
    let msg = fetch_image(&server.url("/missing"), &open())
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.contains("HTTP status 404"), "{msg}");
}

#[tokio::test]
async fn data_uris_decode_and_are_bounded() {
    let b64 = base64::engine::general_purpose::STANDARD.encode(IMAGE);
    let uri = format!("data:image/png;base64,{b64}");
    assert_eq!(fetch_image(&uri, &strict()).await.unwrap(), IMAGE);

    let msg = fetch_image("data:image/png;base64,@@@", &strict())
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.contains("not valid base64"), "{msg}");
    let msg = fetch_image("data:image/png,rawbytes", &strict())
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.contains("must be base64"), "{msg}");

    let small = FetchPolicy {
        max_bytes: 10,
        ..strict()
    };
    let msg = fetch_image(&uri, &small).await.unwrap_err().to_string();
    assert!(msg.contains("larger than 10 bytes"), "{msg}");
    // A long data: URI is shortened in the message, not echoed whole.
    let big = format!("data:image/png;base64,{}", "A".repeat(100_000));
    let msg = fetch_image(&big, &small).await.unwrap_err().to_string();
    assert!(msg.len() < 300, "message too long: {} chars", msg.len());
}
