//! Secrets a client puts in an image uri (`user:pass@`, `?token=`, an `api_key` in a redirect)
//! and the API token itself never show up again: not in a job's error or record through any
//! shape, not in one line of the server's log (at debug level, captured and grepped).

use crate::support;

use support::*;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::Duration;

const SECRETS: [&str; 4] = ["hunter2", "t0psecret", "s3cr3tpw", "apikeyvalue9"];

/// An image host on loopback: `/redirect` sends to a uri with credentials; anything else 404.
fn image_host() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let target = format!("http://eve:s3cr3tpw@{addr}/moved.png?api_key=apikeyvalue9");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut first = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let _ = reader.read_line(&mut first);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) <= 2 {
                    break;
                }
            }
            let answer = if first.contains("/redirect") {
                format!(
                    "HTTP/1.1 302 Found\r\nLocation: {target}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_string()
            };
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    addr
}

#[test]
fn credentials_appear_in_no_error_record_or_log_line() {
    let dir = TempDir::new("secrets");
    let log_path = dir.0.join("server.log");
    let addr = free_addr();
    let host = image_host();
    let server = Server::start_logged(
        &dir.0.join("data"),
        &addr,
        &["--allow-private-fetch"],
        "debug",
        &log_path,
    );
    let token = token_from(&server.startup_lines());
    let with_credentials = format!("http://bob:hunter2@{host}/missing.png?token=t0psecret");
    let redirect = format!("http://{host}/redirect");

    let submits = [
        (
            "/client/v4/accounts/local/ai/run?queueRequest=true".to_string(),
            serde_json::json!({"model": "alibaba/hh1-i2v", "input": {"image": with_credentials}}),
            "request_id",
        ),
        (
            "/client/v4/accounts/local/ai/run/alibaba/hh1-i2v?queueRequest=true".to_string(),
            serde_json::json!({"image": with_credentials}),
            "result",
        ),
        (
            "/v1/jobs".to_string(),
            serde_json::json!({"model": "alibaba/hh1.1-r2v", "input": {"prompt": "two", "images": [redirect, with_credentials]}}),
            "id",
        ),
    ];
    let mut ids = Vec::new();
    for (path, body, key) in &submits {
        let (status, answer) = http(
            &addr,
            "POST",
            path,
            &token,
            "application/json",
            body.to_string().as_bytes(),
        );
        assert!(status == 200 || status == 202, "{path}: {answer}");
        let answer = json(&answer);
        let id = if *key == "result" {
            &answer["result"]["request_id"]
        } else {
            &answer[*key]
        };
        ids.push(id.as_str().unwrap().to_string());
    }
    // DashScope's shape needs its async header, which `http` does not send.
    let ds_body = serde_json::json!({"model": "happyhorse-1.0-i2v", "input": {"media": [{"type": "first_frame", "url": with_credentials}]}}).to_string();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "POST /api/v1/services/aigc/video-generation/video-synthesis HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bearer {token}\r\nX-DashScope-Async: enable\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{ds_body}",
        ds_body.len()
    )
    .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
    let (_, body) = answer.split_once("\r\n\r\n").unwrap();
    ids.push(
        json(body)["output"]["task_id"]
            .as_str()
            .unwrap()
            .to_string(),
    );

    let mut seen = Vec::new();
    for id in &ids {
        let job = wait_ended(&addr, &token, id, "failed", Duration::from_secs(60));
        let error = job["error"].to_string();
        assert!(
            error.contains("REDACTED@127.0.0.1"),
            "the error still names the host: {error}"
        );
        seen.push(job.to_string());
        let (_, task) = http(
            &addr,
            "GET",
            &format!("/api/v1/tasks/{id}"),
            &token,
            "application/json",
            b"",
        );
        seen.push(task);
        let (_, poll) = http(
            &addr,
            "POST",
            "/client/v4/accounts/local/ai/run",
            &token,
            "application/json",
            serde_json::json!({"request_id": id}).to_string().as_bytes(),
        );
        seen.push(poll);
    }
    let (_, list) = http(&addr, "GET", "/v1/jobs", &token, "application/json", b"");
    seen.push(list);
    drop(server);

    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.lines().count() > 10,
        "the debug log was captured: {log}"
    );
    for text in seen.iter().map(String::as_str).chain(log.lines()) {
        for secret in SECRETS.iter().chain([&&token[4..]]) {
            assert!(!text.contains(secret), "{secret:?} echoed in: {text}");
        }
    }
}
