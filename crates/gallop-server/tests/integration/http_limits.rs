//! What an unauthenticated or slow client can hold: `/metrics` keeps one label for invented
//! methods, slow or idle connections are dropped at their timeouts while other clients are
//! served, and connections past the cap are answered 503 and closed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use gallop_server::connections::ConnectionLimits;
use reqwest::{Method, StatusCode};

use crate::http_support::*;

/// The `/metrics` lines without their values: the set of series.
fn series(metrics: &str) -> Vec<String> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.rsplit_once(' ').map_or(l, |(name, _)| name).to_string())
        .collect()
}

async fn metrics(server: &TestServer) -> String {
    let response = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_junk_methods_leave_metrics_the_same_size() {
    let server = TestServer::start().await;
    let junk = |i: usize| Method::from_bytes(format!("JUNK{i:05}").as_bytes()).unwrap();
    // A junk request on a route and off any, and a scrape, first: the series they add are
    // the fixed set the 10,000 must not grow.
    for (path, status) in [
        ("/v1/jobs", StatusCode::METHOD_NOT_ALLOWED),
        ("/no/such/route", StatusCode::NOT_FOUND),
    ] {
        let response = server
            .client
            .request(junk(99_999), server.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status);
    }
    metrics(&server).await;
    let before = metrics(&server).await;

    let tasks: Vec<_> = (0..4)
        .map(|t| {
            let client = server.client.clone();
            let base = server.base.clone();
            tokio::spawn(async move {
                for i in (t..10_000).step_by(4) {
                    let path = if i % 2 == 0 {
                        "/v1/jobs"
                    } else {
                        "/no/such/route"
                    };
                    let status = client
                        .request(junk(i), format!("{base}{path}"))
                        .send()
                        .await
                        .unwrap()
                        .status();
                    assert!(status.is_client_error(), "{status}");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let after = metrics(&server).await;
    assert_eq!(series(&before), series(&after), "no series was added");
    // Only counter digits may differ: 10,000 more requests add at most 5 digits a series.
    let grown = after.len() as i64 - before.len() as i64;
    assert!(
        (0..=16).contains(&grown),
        "/metrics grew {grown} bytes:\n{after}"
    );
    assert!(after.contains("method=\"other\""), "{after}");
    assert!(!after.contains("JUNK"), "{after}");
    server.server.shutdown().await;
}

fn short_limits() -> ConnectionLimits {
    ConnectionLimits {
        max_connections: 64,
        header_read_timeout: Duration::from_secs(1),
        body_read_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
    }
}

/// Sends `bytes` one at a time, `gap` apart, until the server closes the connection; returns
/// how long that took (None if it never did within `give_up`) and what the server answered.
fn trickle(
    addr: &str,
    bytes: &[u8],
    gap: Duration,
    give_up: Duration,
) -> (Option<Duration>, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(gap)).unwrap();
    let start = Instant::now();
    let mut answer = Vec::new();
    for byte in bytes.iter().cycle() {
        if start.elapsed() > give_up {
            return (None, String::from_utf8_lossy(&answer).into_owned());
        }
        if stream.write_all(&[*byte]).is_err() {
            break;
        }
        let mut buf = [0u8; 4096];
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    // Whatever the server still sends before it closes.
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let _ = stream.read_to_end(&mut answer);
    (
        Some(start.elapsed()),
        String::from_utf8_lossy(&answer).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_clients_are_dropped_at_their_timeouts_while_others_are_served() {
    let server = TestServer::start_with(|c| c.connections = short_limits()).await;
    let addr = server.server.addr.to_string();
    let token = server.token.clone();

    // Headers one byte every 200 ms, never finishing: dropped at the 1 s header timeout.
    let slow_headers = {
        let addr = addr.clone();
        tokio::task::spawn_blocking(move || {
            trickle(
                &addr,
                b"GET /v1/models HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                Duration::from_millis(200),
                Duration::from_secs(15),
            )
        })
    };
    // Whole headers, then a body one byte every 200 ms: 408 at the 1 s body timeout.
    let slow_body = {
        let addr = addr.clone();
        let head = format!(
            "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
        );
        tokio::task::spawn_blocking(move || {
            let mut stream = TcpStream::connect(&addr).unwrap();
            stream.write_all(head.as_bytes()).unwrap();
            trickle_on(stream, Duration::from_millis(200), Duration::from_secs(15))
        })
    };
    // Meanwhile other clients are answered at once.
    let start = Instant::now();
    let mut served = 0;
    while start.elapsed() < Duration::from_millis(1500) {
        let (status, _, _) = server.get("/v1/models").await;
        assert_eq!(status, StatusCode::OK);
        served += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served >= 5, "only {served} requests were served meanwhile");

    let (took, _) = slow_headers.await.unwrap();
    let took = took.expect("the slow-header client was dropped");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "dropped after {took:?}"
    );
    let (took, answer) = slow_body.await.unwrap();
    let took = took.expect("the slow-body client was dropped");
    assert!(took < Duration::from_secs(4), "dropped after {took:?}");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("3007"), "{answer}");

    // A connection that sends nothing, and a keep-alive one left idle after a request.
    let (silent, idle) = tokio::task::spawn_blocking(move || {
        (closed_after(TcpStream::connect(&addr).unwrap()), {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            closed_after(s)
        })
    })
    .await
    .unwrap();
    assert!(
        silent < Duration::from_secs(4),
        "silent connection kept {silent:?}"
    );
    assert!(
        idle < Duration::from_secs(4),
        "idle connection kept {idle:?}"
    );
    server.server.shutdown().await;
}

/// Trickles zeros into an open stream (see `trickle`).
fn trickle_on(
    mut stream: TcpStream,
    gap: Duration,
    give_up: Duration,
) -> (Option<Duration>, String) {
    stream.set_read_timeout(Some(gap)).unwrap();
    let start = Instant::now();
    let mut answer = Vec::new();
    loop {
        if start.elapsed() > give_up {
            return (None, String::from_utf8_lossy(&answer).into_owned());
        }
        let mut buf = [0u8; 4096];
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
        if stream.write_all(b"0").is_err() {
            break;
        }
    }
    (
        Some(start.elapsed()),
        String::from_utf8_lossy(&answer).into_owned(),
    )
}

/// Reads until the server closes the connection; how long that took (at most 10 s).
fn closed_after(mut stream: TcpStream) -> Duration {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let start = Instant::now();
    let mut sink = Vec::new();
    let _ = stream.read_to_end(&mut sink);
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_past_the_cap_are_answered_503_and_closed() {
    let server = TestServer::start_with(|c| {
        c.connections = ConnectionLimits {
            max_connections: 3,
            header_read_timeout: Duration::from_secs(30),
            ..short_limits()
        }
    })
    .await;
    let addr = server.server.addr.to_string();
    let held: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let answer = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer);
            answer
        }
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    assert!(answer.contains("\"code\":3040"), "{answer}");
    // A slot frees when a held connection closes.
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _, _) = server.get("/v1/models").await;
    assert_eq!(status, StatusCode::OK);
    server.server.shutdown().await;
}
