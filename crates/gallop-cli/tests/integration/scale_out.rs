//! Scale-out with the real binary: API processes (`gallop serve --no-worker`) and worker
//! processes (`gallop worker`) sharing a PostgreSQL database and an S3 bucket (a throwaway
//! cluster and an in-process S3 server, both real, on loopback).

use crate::support;

use support::*;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gallop_testkit::{TempPostgres, TempS3};

/// The environment every process of one service shares: database, bucket and keys.
fn service_env(database_url: &str, s3: &TempS3) -> Vec<(String, String)> {
    let mut env = vec![
        ("GALLOP_DATABASE_URL".to_string(), database_url.to_string()),
        ("GALLOP_STORAGE_URL".to_string(), s3.url("gallop")),
        ("GALLOP_SIGNING_KEY".to_string(), "5a".repeat(32)),
        ("GALLOP_KEY_SECRET".to_string(), "c3".repeat(32)),
    ];
    env.extend(s3.env());
    env
}

/// A `gallop` subcommand with the service's environment, stdout lines readable, its log
/// (stderr) in `log_of(data_dir)`.
fn spawn(args: &[&str], data_dir: &Path, env: &[(String, String)]) -> Server {
    let log = std::fs::File::create(log_of(data_dir)).unwrap();
    let child = Command::new(GALLOP)
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    Server::reading(child, "")
}

/// Where `spawn` writes the log of the process with this data directory.
fn log_of(data_dir: &Path) -> std::path::PathBuf {
    data_dir.with_extension("log")
}

fn api(addr: &str, dir: &Path, env: &[(String, String)]) -> Server {
    let mut server = spawn(&["serve", "--no-worker", "--addr", addr], dir, env);
    server.addr = addr.to_string();
    server
}

/// A worker process with one slot; waits for its startup line.
fn worker(dir: &Path, env: &[(String, String)]) -> Server {
    let worker = spawn(&["worker", "--workers", "1", "--lease-secs", "4"], dir, env);
    // First one line per model id (which engine serves it), then the worker's own line.
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.starts_with("gallop worker")) {
        let line = worker.lines.recv_timeout(Duration::from_secs(60));
        seen.push(line.unwrap_or_else(|_| panic!("no worker startup line; stdout: {seen:?}")));
    }
    worker
}

fn token_create(account: &str, dir: &Path, env: &[(String, String)]) -> String {
    let out = Command::new(GALLOP)
        .args(["token", "create", "--account", account, "--data-dir"])
        .arg(dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines().last().unwrap().to_string()
}

/// Submits one preview job of `seconds` through the Cloudflare shape (even i) or `/v1/jobs`
/// (odd i).
fn submit(addr: &str, account: &str, token: &str, i: usize, image: &str, seconds: u32) -> String {
    let input =
        serde_json::json!({"prompt": format!("horse {i}"), "image": image, "duration": seconds});
    let (path, body) = if i % 2 == 0 {
        (
            format!("/client/v4/accounts/{account}/ai/run"),
            serde_json::json!({"model": "alibaba/hh1-i2v", "input": input, "queueRequest": true}),
        )
    } else {
        (
            "/v1/jobs".to_string(),
            serde_json::json!({"model": "alibaba/hh1-i2v", "input": input}),
        )
    };
    let (status, answer) = http(
        addr,
        "POST",
        &path,
        token,
        "application/json",
        body.to_string().as_bytes(),
    );
    assert!([200, 202].contains(&status), "{path}: {status} {answer}");
    let answer = json(&answer);
    answer["request_id"]
        .as_str()
        .or(answer["id"].as_str())
        .unwrap_or_else(|| panic!("no job id in {answer}"))
        .to_string()
}

fn job(addr: &str, token: &str, id: &str) -> serde_json::Value {
    let (status, body) = http(
        addr,
        "GET",
        &format!("/v1/jobs/{id}"),
        token,
        "application/json",
        b"",
    );
    assert_eq!(status, 200, "{body}");
    json(&body)
}

/// Reads `GET /v1/jobs/{id}/events` until the `end` event; returns the progress steps seen.
fn progress_seen_over_sse(addr: &str, token: &str, id: &str) -> (Vec<u64>, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(180)))
        .unwrap();
    write!(
        stream,
        "GET /v1/jobs/{id}/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Accept: text/event-stream\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut steps = Vec::new();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let mut event = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            panic!("the event stream ended without an end event; steps {steps:?}");
        }
        let text = line.trim_end();
        if let Some(name) = text.strip_prefix("event: ").or(text.strip_prefix("event:")) {
            event = name.trim().to_string();
        } else if let Some(data) = text.strip_prefix("data: ").or(text.strip_prefix("data:")) {
            if event == "end" {
                return (steps, data.trim().to_string());
            }
            if let Ok(job) = serde_json::from_str::<serde_json::Value>(data)
                && let Some(step) = job["progress"]["step"].as_u64()
            {
                steps.push(step);
            }
        }
    }
}

/// `GET` of a signed link with a Range header; returns (status, body bytes).
fn get_range(addr: &str, path_and_query: &str, range: &str) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nRange: {range}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let status = head[9..12].parse().unwrap();
    let body = response[split + 4..].to_vec();
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    (status, body)
}

#[test]
fn api_and_two_workers_on_postgres_and_s3_complete_every_job_exactly_once() {
    let pg = TempPostgres::shared();
    let database_url = pg.fresh_database();
    let s3 = TempS3::start();
    let env = service_env(&database_url, &s3);
    let dir = TempDir::new("scale-out");

    let addr = free_addr();
    let api1 = api(&addr, &dir.0.join("api1"), &env);
    let local = token_from(&api1.startup_lines());
    let mut workers = vec![
        worker(&dir.0.join("worker1"), &env),
        worker(&dir.0.join("worker2"), &env),
    ];
    // Tokens are rows of the shared database: made from any machine, honoured by every API.
    let accounts = [
        ("local".to_string(), local),
        (
            "acme".to_string(),
            token_create("acme", &dir.0.join("tools"), &env),
        ),
        (
            "zebra".to_string(),
            token_create("zebra", &dir.0.join("tools"), &env),
        ),
    ];

    // Uploads land in the bucket, where the workers on other machines read them.
    let mut images = HashMap::new();
    for (account, token) in &accounts {
        let (status, body) = http(
            &addr,
            "POST",
            "/v1/uploads",
            token,
            "image/png",
            &png(480, 360),
        );
        assert_eq!(status, 201, "{body}");
        images.insert(
            account.clone(),
            json(&body)["uri"].as_str().unwrap().to_string(),
        );
    }
    let mut ids = Vec::new();
    for i in 0..20 {
        let (account, token) = &accounts[i % 3];
        ids.push((
            submit(&addr, account, token, i, &images[account], 3),
            token.clone(),
        ));
    }

    // Progress of a job some worker runs reaches SSE clients of the API process.
    let watched = ids[0].clone();
    let sse = {
        let addr = addr.clone();
        std::thread::spawn(move || progress_seen_over_sse(&addr, &watched.1, &watched.0))
    };

    // Kill a worker without warning while it runs a job.
    let start = Instant::now();
    loop {
        let running = ids
            .iter()
            .filter(|(id, token)| job(&addr, token, id)["status"] == "running")
            .count();
        if running == 2 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no job started running"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    workers[0].kill9();

    let deadline = Instant::now() + Duration::from_secs(600);
    let mut ended = Vec::new();
    for (id, token) in &ids {
        loop {
            let job = job(&addr, token, id);
            if job["status"] == "completed" {
                ended.push(job);
                break;
            }
            assert!(
                ["queued", "running"].contains(&job["status"].as_str().unwrap()),
                "{job}"
            );
            assert!(Instant::now() < deadline, "{job}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let (steps, end) = sse.join().unwrap();
    assert_eq!(end, "completed");
    assert!(
        steps.iter().any(|&s| s > 0),
        "SSE saw progress from the worker: {steps:?}"
    );

    // Exactly once: one row per submission, each completed once, each pointing at its own
    // result object in the bucket.
    let store = gallop_store_postgres::PostgresStore::connect(
        &database_url,
        gallop_server::store::StoreConfig::default(),
    )
    .unwrap();
    use gallop_server::store::JobStore;
    let counts: HashMap<_, _> = store.count_by_status().unwrap().into_iter().collect();
    assert_eq!(
        counts.get(&gallop_server::store::JobStatus::Completed),
        Some(&20),
        "{counts:?}"
    );
    let keys: HashSet<String> = ids
        .iter()
        .map(|(id, _)| store.get(id).unwrap().unwrap().result_key.unwrap())
        .collect();
    assert_eq!(keys.len(), 20);
    for key in &keys {
        let object = s3.object_path(TempS3::BUCKET, &format!("gallop/{key}"));
        assert!(object.is_file(), "{key}: no object at {}", object.display());
    }
    // The killed worker held a job (both always do while 20 wait): it ran again elsewhere.
    let attempts: Vec<u32> = ids
        .iter()
        .map(|(id, _)| store.get(id).unwrap().unwrap().attempt)
        .collect();
    assert!(attempts.iter().any(|&a| a >= 2), "attempts {attempts:?}");

    // A link signed by this API process downloads, with Range, from another one.
    let addr2 = free_addr();
    let api2 = api(&addr2, &dir.0.join("api2"), &env);
    api2.startup_lines();
    let url = ended[0]["result"]["video"].as_str().unwrap().to_string();
    let path = url.split_once(&addr).unwrap_or_else(|| panic!("{url}")).1;
    let (status, whole) = get_range(&addr2, path, "bytes=0-");
    assert!([200, 206].contains(&status), "{status}");
    let (status, part) = get_range(&addr2, path, "bytes=100-1099");
    assert_eq!(status, 206);
    assert_eq!(part, whole[100..1100]);
    assert_eq!(&whole[4..8], b"ftyp");
    drop(workers);
}

fn status_of(addr: &str, path: &str) -> u16 {
    http(addr, "GET", path, "", "application/json", b"").0
}

fn wait_for_status(addr: &str, path: &str, wanted: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while status_of(addr, path) != wanted {
        assert!(Instant::now() < deadline, "{path} never answered {wanted}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the log at `path` has a line containing `text`.
fn wait_for_log(path: &Path, text: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let log = std::fs::read_to_string(path).unwrap_or_default();
        if log.contains(text) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {text:?} in {} within {within:?}:\n{log}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Requests with a valid token while the database is down, on every auth path and shape: a
/// 503 with Retry-After (the client may retry), never 401 (the token is fine) nor 500.
fn assert_unavailable_with_a_valid_token(addr: &str, token: &str, job: &str) {
    let run = serde_json::json!({"model": "alibaba/hh1-i2v", "input": {"prompt": "horse"}});
    let cases = [
        ("GET", format!("/v1/jobs/{job}"), String::new()),
        (
            "POST",
            "/client/v4/accounts/local/ai/run".to_string(),
            run.to_string(),
        ),
        ("GET", format!("/api/v1/tasks/{job}"), String::new()),
    ];
    for (method, path, body) in cases {
        let answer = request(addr, method, &path, token, &[], body.as_bytes()).unwrap();
        assert_eq!(answer.status, 503, "{method} {path}: {}", answer.body);
        assert!(
            answer.header("retry-after").is_some(),
            "{method} {path}: {}",
            answer.head
        );
        let body = json(&answer.body);
        let message = match path.starts_with("/api/v1/") {
            // DashScope's shape: {request_id, code, message}.
            true => body["message"].as_str(),
            false => body["errors"][0]["message"].as_str(),
        };
        let message = message.unwrap_or_else(|| panic!("{method} {path}: {body}"));
        assert!(message.contains("unavailable"), "{method} {path}: {body}");
    }
}

/// Every result object under a file storage's `results/`: (job id, file name).
fn result_files(objects: &Path) -> Vec<(String, String)> {
    let mut files = Vec::new();
    for job in std::fs::read_dir(objects.join("results")).unwrap() {
        let job = job.unwrap();
        for file in std::fs::read_dir(job.path()).unwrap() {
            let name = file.unwrap().file_name().to_string_lossy().to_string();
            files.push((job.file_name().to_string_lossy().to_string(), name));
        }
    }
    files.sort();
    files
}

#[test]
fn a_database_outage_makes_the_api_unready_and_loses_no_job() {
    // A cluster of its own: this test stops it.
    let pg = TempPostgres::start();
    let database_url = pg.fresh_database();
    let dir = TempDir::new("outage");
    let objects = dir.0.join("objects");
    let env = vec![
        ("GALLOP_DATABASE_URL".to_string(), database_url.clone()),
        (
            "GALLOP_STORAGE_URL".to_string(),
            format!("file://{}", objects.display()),
        ),
        ("GALLOP_SIGNING_KEY".to_string(), "5a".repeat(32)),
    ];
    let addr = free_addr();
    let api = api(&addr, &dir.0.join("api"), &env);
    let token = token_from(&api.startup_lines());
    let worker_dir = dir.0.join("worker");
    let mut worker = worker(&worker_dir, &env);
    assert_eq!(status_of(&addr, "/readyz"), 200);

    let image = upload(&addr, &token, &png(480, 360));
    // Long enough that it is still making frames when the database goes.
    let first = submit(&addr, "local", &token, 1, &image, 8);
    let start = Instant::now();
    // Until the engine reports a step: the worker's writes before the run (lease renewal, seed)
    // are done, so the outage meets the run itself.
    loop {
        let job = job(&addr, &token, &first);
        let step = job["progress"]["step"].as_u64().unwrap_or(0);
        match job["status"].as_str() {
            Some("running") if step > 0 => break,
            Some("queued" | "running") => {}
            _ => panic!("the job ended before the outage: {job}"),
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "never ran: {job}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The database goes away while the job runs.
    pg.stop();
    wait_for_status(&addr, "/readyz", 503, Duration::from_secs(30));
    assert_eq!(
        status_of(&addr, "/healthz"),
        200,
        "the process itself is alive"
    );
    assert_unavailable_with_a_valid_token(&addr, &token, &first);
    // The job finishes during the outage: its video is stored and its completion waits.
    wait_for_log(
        &log_of(&worker_dir),
        "job store unavailable, result kept",
        Duration::from_secs(300),
    );
    assert!(
        worker.child.try_wait().unwrap().is_none(),
        "the worker died"
    );

    pg.restart();
    wait_for_status(&addr, "/readyz", 200, Duration::from_secs(60));
    let done = wait_completed(&addr, &token, &first, Duration::from_secs(120));
    assert_eq!(done["status"], "completed");
    // The worker claims again: a job submitted after the outage runs.
    let second = submit(&addr, "local", &token, 2, &image, 3);
    wait_completed(&addr, &token, &second, Duration::from_secs(300));

    // Nothing lost, nothing run twice: two rows, both completed on their first attempt, one
    // result object each.
    let store = std::thread::spawn(move || {
        gallop_store_postgres::PostgresStore::connect(
            &database_url,
            gallop_server::store::StoreConfig::default(),
        )
        .unwrap()
    })
    .join()
    .unwrap();
    use gallop_server::store::JobStore;
    let counts = store.count_by_status().unwrap();
    let total: u64 = counts.iter().map(|(_, n)| n).sum();
    assert_eq!(total, 2, "{counts:?}");
    for id in [&first, &second] {
        let row = store.get(id).unwrap().unwrap();
        assert_eq!(row.status, gallop_server::store::JobStatus::Completed);
        assert_eq!(row.attempt, 1, "{id} ran more than once");
    }
    let mut expected = vec![
        (first.clone(), "attempt-1.mp4".to_string()),
        (second.clone(), "attempt-1.mp4".to_string()),
    ];
    expected.sort();
    assert_eq!(result_files(&objects), expected);
}
