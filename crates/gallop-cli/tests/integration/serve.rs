//! `gallop serve` and `gallop token create` as a user runs them: the real binary on a loopback
//! port. The first start prints a token once; `token create` prints a token as its last line;
//! accepted jobs survive `kill -9` and a restart.

use crate::support;

use support::*;

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn first_start_prints_a_token_once_and_token_create_prints_one_last() {
    let dir = TempDir::new("tokens");
    let addr = free_addr();
    let server = Server::start(&dir.0, &addr, &[]);
    let lines = server.startup_lines();
    assert!(
        lines.iter().any(|l| l.contains("account \"local\"")),
        "{lines:?}"
    );
    let token = token_from(&lines);
    let (status, body) = http(&addr, "GET", "/v1/models", &token, "application/json", b"");
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["models"][0]["engine"], "preview");
    let (status, _) = http(&addr, "GET", "/v1/models", "wrong", "application/json", b"");
    assert_eq!(status, 401);

    // A token for another account, made while the server runs, works at once.
    let out = Command::new(GALLOP)
        .args(["token", "create", "--account", "acme", "--data-dir"])
        .arg(&dir.0)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let acme = stdout.lines().last().unwrap().trim().to_string();
    assert!(acme.len() >= 32, "{stdout}");
    let (status, body) = http(
        &addr,
        "POST",
        "/client/v4/accounts/acme/ai/run",
        &acme,
        "application/json",
        br#"{"request_id": "none"}"#,
    );
    assert_eq!(status, 404, "authenticated, and no such job: {body}");
    let (status, _) = http(
        &addr,
        "POST",
        "/client/v4/accounts/local/ai/run",
        &acme,
        "application/json",
        b"{}",
    );
    assert_eq!(status, 401, "acme's token is not valid for account local");

    // A restart with tokens in the store prints none; the old ones still work.
    drop(server);
    let server = Server::start(&dir.0, &addr, &[]);
    let lines = server.startup_lines();
    assert!(
        lines.iter().all(|l| !l.contains("GALLOP_TOKEN")),
        "{lines:?}"
    );
    let (status, _) = http(&addr, "GET", "/v1/jobs", &token, "application/json", b"");
    assert_eq!(status, 200);

    let out = Command::new(GALLOP)
        .args(["token", "create", "--account", "no spaces", "--data-dir"])
        .arg(&dir.0)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--account"));
}

#[test]
fn accepted_jobs_survive_kill_9_and_complete_after_restart() {
    let dir = TempDir::new("durable");
    let addr = free_addr();
    let mut server = Server::start(&dir.0, &addr, &["--workers", "1"]);
    let token = token_from(&server.startup_lines());

    const N: usize = 3;
    let mut ids = Vec::new();
    for _ in 0..N {
        let (status, body) = http(
            &addr,
            "POST",
            "/v1/uploads",
            &token,
            "image/png",
            &png(480, 360),
        );
        assert_eq!(status, 201, "{body}");
        let uri = json(&body)["uri"].as_str().unwrap().to_string();
        let job = serde_json::json!({
            "model": "alibaba/hh1-i2v",
            "input": {"image": uri, "duration": 3}
        });
        let (status, body) = http(
            &addr,
            "POST",
            "/v1/jobs",
            &token,
            "application/json",
            job.to_string().as_bytes(),
        );
        assert_eq!(status, 202, "{body}");
        ids.push(json(&body)["id"].as_str().unwrap().to_string());
    }
    // Kill the server mid-job, without warning.
    let start = Instant::now();
    loop {
        let (_, body) = http(
            &addr,
            "GET",
            &format!("/v1/jobs/{}", ids[0]),
            &token,
            "application/json",
            b"",
        );
        let job = json(&body);
        if job["status"] == "running" {
            break;
        }
        assert_eq!(job["status"], "queued", "{job}");
        assert!(start.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill9();

    let server = Server::start(&dir.0, &addr, &["--workers", "1"]);
    server.startup_lines();
    // The interrupted job waits out its lease (about a minute), then runs again.
    let deadline = Instant::now() + Duration::from_secs(400);
    for id in &ids {
        loop {
            let (status, body) = http(
                &addr,
                "GET",
                &format!("/v1/jobs/{id}"),
                &token,
                "application/json",
                b"",
            );
            assert_eq!(status, 200, "{body}");
            let job = json(&body);
            if job["status"] == "completed" {
                break;
            }
            assert!(
                ["queued", "running"].contains(&job["status"].as_str().unwrap()),
                "{job}"
            );
            assert!(Instant::now() < deadline, "{job}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    let (_, body) = http(
        &addr,
        "GET",
        &format!("/v1/jobs/{}", ids[0]),
        &token,
        "application/json",
        b"",
    );
    assert!(
        json(&body)["attempt"].as_u64().unwrap() >= 2,
        "the interrupted job ran again: {body}"
    );
    drop(server);
}
