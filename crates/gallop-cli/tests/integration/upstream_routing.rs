//! Models routed upstream, end to end with no mocks: gallop A serves `alibaba/hh1-i2v` and
//! `alibaba/hh1.1-r2v` through `[upstreams.alibaba]`, and the upstream is a second `gallop
//! serve` (B), whose Model Studio API is the real implementation. B's API keys are B's tokens,
//! one per B account, so B's task list per token shows which key A used for what.
//!
//! B fetches the images A passes on from a loopback image host run here, which can hold a
//! request until the test lets it go: that keeps B's task running for as long as a test needs
//! (to kill a process mid-poll, or to cancel).

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{GALLOP, Server, free_addr, get_bytes, http, json as parse};

// ---- the image host ----

/// Serves a 480x400 PNG at any path; a path starting `/held` waits until released, one
/// starting `/missing` answers 404.
struct ImageHost {
    addr: String,
    released: Arc<Mutex<bool>>,
}

impl ImageHost {
    fn start() -> ImageHost {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let released = Arc::new(Mutex::new(false));
        let png = Arc::new(png(480, 400));
        let flag = released.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (png, flag) = (png.clone(), flag.clone());
                std::thread::spawn(move || serve_image(stream, &png, &flag));
            }
        });
        ImageHost { addr, released }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn release(&self) {
        *self.released.lock().unwrap() = true;
    }
}

fn serve_image(mut stream: TcpStream, png: &[u8], released: &Mutex<bool>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut first = String::new();
    if reader.read_line(&mut first).is_err() {
        return;
    }
    let path = first.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
        line.clear();
    }
    if path.starts_with("/held") {
        while !*released.lock().unwrap() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let head = match path.starts_with("/missing") {
        true => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
        false => format!(
            "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            png.len()
        ),
    };
    let _ = stream.write_all(head.as_bytes());
    if !path.starts_with("/missing") {
        let _ = stream.write_all(png);
    }
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 200) as u8])
    });
    let mut bytes = std::io::Cursor::new(Vec::new());
    image.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
    bytes.into_inner()
}

// ---- the two gallops ----

/// Creates a token of `account` in `data_dir` with `gallop token create`.
fn token(data_dir: &Path, account: &str) -> String {
    let out = Command::new(GALLOP)
        .args(["token", "create", "--account", account, "--data-dir"])
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    stdout.lines().last().unwrap().trim().to_string()
}

/// Upstream B: the preview engine, fetching from loopback.
fn start_b(dir: &Path, addr: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--allow-private-fetch"];
    args.extend_from_slice(extra);
    let server = Server::start(dir, addr, &args);
    server.startup_lines();
    server
}

/// Gallop A, routing both ids to B; its stdout and stderr (debug logs) append to `log`, so
/// they can be searched for keys across restarts.
struct GallopA {
    child: Child,
    addr: String,
    log: PathBuf,
}

const UNIFIED_ENV: &str = "GALLOP_TEST_UNIFIED_KEY";

impl GallopA {
    fn start(dir: &Path, addr: &str, upstream: &str, unified_key: &str) -> GallopA {
        let config = dir.join("gallop.toml");
        std::fs::write(
            &config,
            format!(
                "[upstreams.alibaba]\nbase_url = \"http://{upstream}/api/v1\"\n\
                 api_key_env = \"{UNIFIED_ENV}\"\npoll_interval_secs = 0.2\npatience_secs = 120\n\n\
                 [models.\"alibaba/hh1-i2v\"]\nupstream = \"alibaba\"\n\n\
                 [models.\"alibaba/hh1.1-r2v\"]\nupstream = \"alibaba\"\n\
                 upstream_model = \"happyhorse-1.1-r2v\"\n"
            ),
        )
        .unwrap();
        let log = dir.join("a.log");
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap()
        };
        let child = Command::new(GALLOP)
            .args(["serve", "--addr", addr, "--data-dir"])
            .arg(dir.join("data"))
            .arg("--config")
            .arg(&config)
            .env(UNIFIED_ENV, unified_key)
            .env("RUST_LOG", "debug")
            .stdout(open())
            .stderr(open())
            .spawn()
            .unwrap();
        let a = GallopA {
            child,
            addr: addr.to_string(),
            log,
        };
        a.wait_for_log("listening on", Duration::from_secs(60));
        a
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for_log(&self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in A's log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for GallopA {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A and B with B's tokens: `unified` (A's own key), `alice` (A's account alice stores it).
struct Pair {
    dir: tempfile::TempDir,
    host: ImageHost,
    b: Server,
    b_dir: PathBuf,
    b_local: String,
    unified_key: String,
    alice_key: String,
    a: GallopA,
    /// Tokens of A's accounts alice, bob and carol.
    alice: String,
    bob: String,
    carol: String,
    /// Every answer A gave, to search for keys.
    answers: Vec<String>,
}

impl Pair {
    fn start(b_extra: &[&str]) -> Pair {
        let dir = tempfile::tempdir().unwrap();
        let b_dir = dir.path().join("b");
        let unified_key = token(&b_dir, "unified-up");
        let alice_key = token(&b_dir, "alice-up");
        let b_local = token(&b_dir, "local");
        let b = start_b(&b_dir, &free_addr(), b_extra);
        let a_dir = dir.path().join("a");
        std::fs::create_dir_all(&a_dir).unwrap();
        let (alice, bob, carol) = (
            token(&a_dir.join("data"), "alice"),
            token(&a_dir.join("data"), "bob"),
            token(&a_dir.join("data"), "carol"),
        );
        let a = GallopA::start(&a_dir, &free_addr(), &b.addr, &unified_key);
        Pair {
            host: ImageHost::start(),
            dir,
            b,
            b_dir,
            b_local,
            unified_key,
            alice_key,
            a,
            alice,
            bob,
            carol,
            answers: Vec::new(),
        }
    }

    fn a_dir(&self) -> PathBuf {
        self.dir.path().join("a")
    }

    /// A request to A; the answer is kept for the key search.
    fn a(&mut self, method: &str, path: &str, token: &str, body: &Value) -> (u16, Value) {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let (status, answer) = http(
            &self.a.addr,
            method,
            path,
            token,
            "application/json",
            body.as_bytes(),
        );
        self.answers.push(answer.clone());
        (status, serde_json::from_str(&answer).unwrap_or(Value::Null))
    }

    fn b(&self, method: &str, path: &str, token: &str, body: &Value) -> (u16, Value) {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let (status, answer) = http(
            &self.b.addr,
            method,
            path,
            token,
            "application/json",
            body.as_bytes(),
        );
        (status, serde_json::from_str(&answer).unwrap_or(Value::Null))
    }

    /// Submits an i2v job to A for `token`'s account; its id.
    fn submit_i2v(&mut self, token: &str, image: &str) -> String {
        let job = json!({"model": "alibaba/hh1-i2v", "input": {"image": image,
            "prompt": "a slow push-in", "duration": 3, "resolution": "720P"}});
        let (status, answer) = self.a("POST", "/v1/jobs", token, &job);
        assert_eq!(status, 202, "{answer}");
        answer["id"].as_str().unwrap().to_string()
    }

    fn a_job(&mut self, token: &str, id: &str) -> Value {
        self.a("GET", &format!("/v1/jobs/{id}"), token, &Value::Null)
            .1
    }

    /// Polls A's job until `done` holds for it.
    fn wait_a(&mut self, token: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            let job = self.a_job(token, id);
            if done(&job) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "{job}\nA's log:\n{}",
                self.a.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_completed(&mut self, token: &str, id: &str) -> Value {
        let job = self.wait_a(token, id, |j| {
            j["status"] != "queued" && j["status"] != "running"
        });
        assert_eq!(
            job["status"],
            "completed",
            "{job}\nA's log:\n{}",
            self.a.log()
        );
        job
    }

    /// The upstream task A recorded for its job, once it has one.
    fn upstream_task(&mut self, token: &str, id: &str) -> String {
        let job = self.wait_a(token, id, |j| j["engine"]["upstream_task_id"].is_string());
        job["engine"]["upstream_task_id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// B's tasks made with `key` (a B token), newest first.
    fn b_tasks(&self, key: &str) -> Vec<Value> {
        let (status, list) = self.b("GET", "/api/v1/tasks?page_size=100", key, &Value::Null);
        assert_eq!(status, 200, "{list}");
        list["data"].as_array().unwrap().clone()
    }

    /// Downloads A's result, checks it is A's own signed link and a 72-frame MP4; its bytes.
    fn a_video(&self, job: &Value) -> Vec<u8> {
        let url = job["result"]["video"].as_str().unwrap();
        assert!(
            url.starts_with(&format!("http://{}/", self.a.addr)),
            "{url}"
        );
        let path = &url[url.find("/v1/files/").unwrap()..];
        let (status, _) = http(&self.a.addr, "HEAD", path, "", "", b"");
        assert_eq!(status, 200);
        let bytes = get_bytes(&self.a.addr, path);
        let video = gallop_media::decode_mp4(&bytes).unwrap();
        assert_eq!(video.frames.len(), 72);
        bytes
    }

    /// No key appears in A's logs or in any answer A gave.
    fn assert_no_key_leaked(&self) {
        let log = self.a.log();
        assert!(
            log.contains("submitted upstream"),
            "the log is too quiet to tell:\n{log}"
        );
        for key in [&self.unified_key, &self.alice_key] {
            assert!(!log.contains(key.as_str()), "a key is in A's log");
            for answer in &self.answers {
                assert!(
                    !answer.contains(key.as_str()),
                    "a key is in an answer: {answer}"
                );
            }
        }
    }
}

/// `POST` of a Model Studio task to A, as the DashScope SDK sends it.
fn dashscope_submit(addr: &str, token: &str, body: &Value) -> (u16, Value) {
    let body = body.to_string();
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST /api/v1/services/aigc/video-generation/video-synthesis HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: Bearer {token}\r\nX-DashScope-Async: enable\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let answer = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, parse(answer))
}

fn upload(addr: &str, token: &str, bytes: &[u8]) -> String {
    let (status, body) = http(addr, "POST", "/v1/uploads", token, "image/png", bytes);
    assert_eq!(status, 201, "{body}");
    parse(&body)["uri"].as_str().unwrap().to_string()
}

// ---- the tests ----

#[test]
fn unified_and_byok_keys_each_pay_for_their_own_jobs_and_never_leak() {
    let mut p = Pair::start(&["--workers", "2"]);
    let (alice, bob, carol) = (p.alice.clone(), p.bob.clone(), p.carol.clone());
    let alice_key = p.alice_key.clone();
    let (status, answer) = p.a(
        "PUT",
        "/v1/keys/alibaba",
        &alice,
        &json!({"api_key": alice_key}),
    );
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = p.a(
        "PUT",
        "/v1/keys/alibaba",
        &carol,
        &json!({"api_key": "sk-this-key-upstream-does-not-know"}),
    );
    assert_eq!(status, 200, "{answer}");
    let (_, models) = p.a("GET", "/v1/models", &alice, &Value::Null);
    assert_eq!(
        models["models"][0]["engine"],
        "upstream alibaba (happyhorse-1.0-i2v)"
    );
    assert_eq!(models["models"][0]["keySource"], "BYOK");
    assert_eq!(
        models["models"][1]["engine"],
        "upstream alibaba (happyhorse-1.1-r2v)"
    );
    let (_, models) = p.a("GET", "/v1/models", &bob, &Value::Null);
    assert_eq!(models["models"][0]["keySource"], "Unified");

    // alice (BYOK) with a public URL, through Cloudflare's shape; bob (Unified) with an upload.
    let image = p.host.url("/photo.png");
    let run = json!({"model": "alibaba/hh1-i2v", "queueRequest": true, "input": {
        "image": image, "prompt": "a slow push-in", "duration": 3, "resolution": "720P"}});
    let (status, queued) = p.a("POST", "/client/v4/accounts/alice/ai/run", &alice, &run);
    assert_eq!(status, 200, "{queued}");
    let alice_job = queued["request_id"].as_str().unwrap().to_string();
    let uri = upload(&p.a.addr, &bob, &png(480, 400));
    let r2v = json!({"model": "alibaba/hh1.1-r2v", "input": {"images": [uri],
        "prompt": "image 1 waves", "duration": 3, "resolution": "720P", "ratio": "1:1"}});
    let (status, answer) = p.a("POST", "/v1/jobs", &bob, &r2v);
    assert_eq!(status, 202, "{answer}");
    let bob_job = answer["id"].as_str().unwrap().to_string();

    let done = p.wait_completed(&alice, &alice_job);
    assert_eq!(
        done["engine"]["engine"],
        "upstream alibaba (happyhorse-1.0-i2v)"
    );
    assert_eq!(done["engine"]["key_source"], "BYOK");
    let (_, state) = p.a(
        "POST",
        "/client/v4/accounts/alice/ai/run",
        &alice,
        &json!({"request_id": alice_job}),
    );
    assert_eq!(state["state"], "Completed", "{state}");
    assert_eq!(state["gatewayMetadata"]["keySource"], "BYOK");
    let alice_video = p.a_video(&done);
    let bob_done = p.wait_completed(&bob, &bob_job);
    assert_eq!(bob_done["engine"]["key_source"], "Unified");
    assert_eq!(
        bob_done["engine"]["engine"],
        "upstream alibaba (happyhorse-1.1-r2v)"
    );
    p.a_video(&bob_done);

    // Upstream saw each job under the key that paid for it, and only that one.
    let alices = p.b_tasks(&p.alice_key);
    assert_eq!(alices.len(), 1, "{alices:?}");
    assert_eq!(alices[0]["task_id"], done["engine"]["upstream_task_id"]);
    assert_eq!(alices[0]["model_name"], "happyhorse-1.0-i2v");
    let unified = p.b_tasks(&p.unified_key);
    assert_eq!(unified.len(), 1, "{unified:?}");
    assert_eq!(
        unified[0]["task_id"],
        bob_done["engine"]["upstream_task_id"]
    );
    assert_eq!(unified[0]["model_name"], "happyhorse-1.1-r2v");
    // The video A serves is the one upstream made.
    let task = alices[0]["task_id"].as_str().unwrap();
    let (_, b_task) = p.b(
        "GET",
        &format!("/api/v1/tasks/{task}"),
        &p.alice_key,
        &Value::Null,
    );
    // Progress is what upstream reported while it ran (each ends at its own total).
    let (_, b_job) = p.b(
        "GET",
        &format!("/v1/jobs/{task}"),
        &p.alice_key,
        &Value::Null,
    );
    assert!(b_job["progress"]["total"].as_u64().unwrap() > 0, "{b_job}");
    assert_eq!(done["progress"], b_job["progress"], "{done}");
    let b_url = b_task["output"]["video_url"].as_str().unwrap();
    let b_path = &b_url[b_url.find("/v1/files/").unwrap()..];
    assert_eq!(get_bytes(&p.b.addr, b_path), alice_video);

    // Upstream refuses the input: a task that fails InvalidParameter (its image answered 404)
    // and a submit it refuses (prompt rewriting, which B does not do) fail the job as bad input
    // naming the field as each request gave it.
    let missing = p.host.url("/missing.png");
    let job = p.submit_i2v(&bob, &missing);
    let failed = p.wait_a(&bob, &job, |j| j["status"] == "failed");
    assert_eq!(failed["error"]["code"], "bad_input", "{failed}");
    let message = failed["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!(
            "/input/image: image uri {missing}: HTTP status 404"
        )),
        "{message}"
    );
    assert!(
        message.ends_with("(refused by upstream alibaba: InvalidParameter)"),
        "{message}"
    );
    let body = json!({"model": "happyhorse-1.0-i2v", "input": {"prompt": "p", "media": [
        {"type": "first_frame", "url": image}]}, "parameters": {"prompt_extend": true,
        "duration": 3, "resolution": "720P"}});
    let (status, task) = dashscope_submit(&p.a.addr, &bob, &body);
    assert_eq!(status, 200, "{task}");
    let task = task["output"]["task_id"].as_str().unwrap().to_string();
    let failed = p.wait_a(&bob, &task, |j| j["status"] == "failed");
    assert_eq!(failed["error"]["code"], "bad_input", "{failed}");
    let message = failed["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("Bad input: /parameters/prompt_extend must be false"),
        "{message}"
    );
    let (_, answer) = p.a("GET", &format!("/api/v1/tasks/{task}"), &bob, &Value::Null);
    assert_eq!(answer["output"]["code"], "InvalidParameter", "{answer}");

    // carol's key is refused upstream: her job fails once, saying so, and nothing retries it.
    let carol_job = p.submit_i2v(&carol, &image);
    let failed = p.wait_a(&carol, &carol_job, |j| j["status"] == "failed");
    assert_eq!(failed["error"]["code"], "upstream_key", "{failed}");
    let message = failed["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("refused the API key (InvalidApiKey)"),
        "{message}"
    );
    assert!(message.contains("The job used the BYOK key"), "{message}");
    assert!(message.contains("PUT /v1/keys/alibaba"), "{message}");
    assert!(!message.contains("sk-this-key"), "{message}");
    assert_eq!(failed["attempt"], 1);
    let log = p.a.log();
    let retries = log
        .lines()
        .filter(|l| l.contains(carol_job.as_str()) && l.contains("trying again"));
    assert_eq!(retries.count(), 0, "a refused key was retried:\n{log}");
    assert!(!log.contains("sk-this-key-upstream-does-not-know"));
    p.assert_no_key_leaked();
}

#[test]
fn upstream_throttling_is_waited_out_and_the_job_completes() {
    // B takes one queued job: with its one worker held by a job and one more queued, A's
    // submit is answered 429 Throttling.RateQuota until the queued one goes.
    let mut p = Pair::start(&["--workers", "1", "--queue-limit", "1"]);
    let held = json!({"model": "alibaba/hh1-i2v", "input": {"image": p.host.url("/held-b.png"),
        "duration": 3, "resolution": "720P"}});
    let local = p.b_local.clone();
    let (status, first) = p.b("POST", "/v1/jobs", &local, &held);
    assert_eq!(status, 202, "{first}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while p
        .b(
            "GET",
            &format!("/v1/jobs/{}", first["id"].as_str().unwrap()),
            &local,
            &Value::Null,
        )
        .1["status"]
        != "running"
    {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, second) = p.b("POST", "/v1/jobs", &local, &held);
    assert_eq!(status, 202, "{second}");

    let bob = p.bob.clone();
    let image = p.host.url("/photo.png");
    let job = p.submit_i2v(&bob, &image);
    p.a.wait_for_log(
        "is throttling requests (Throttling.RateQuota)",
        Duration::from_secs(60),
    );
    assert_eq!(p.a_job(&bob, &job)["status"], "running");
    let second_id = second["id"].as_str().unwrap();
    let (status, _) = p.b(
        "POST",
        &format!("/v1/jobs/{second_id}/cancel"),
        &local,
        &Value::Null,
    );
    assert_eq!(status, 200);
    p.host.release();
    let done = p.wait_completed(&bob, &job);
    assert_eq!(done["attempt"], 1);
    p.a_video(&done);
    assert_eq!(p.b_tasks(&p.unified_key).len(), 1);
}

#[test]
fn upstream_killed_mid_poll_is_waited_for_and_a_cancel_reaches_it() {
    let mut p = Pair::start(&["--workers", "2"]);
    let bob = p.bob.clone();
    let job = p.submit_i2v(&bob, &p.host.url("/held-1.png"));
    let task = p.upstream_task(&bob, &job);
    p.b.kill9();
    p.a.wait_for_log(
        "reading the task: upstream alibaba is unavailable",
        Duration::from_secs(30),
    );
    assert_eq!(p.a_job(&bob, &job)["status"], "running");
    let addr = p.b.addr.clone();
    p.b = start_b(&p.b_dir, &addr, &["--workers", "2"]);
    p.host.release();
    let done = p.wait_completed(&bob, &job);
    assert_eq!(done["attempt"], 1);
    assert_eq!(done["engine"]["upstream_task_id"], task.as_str());
    p.a_video(&done);
    assert_eq!(p.b_tasks(&p.unified_key).len(), 1, "submitted once");

    // Cancel on A reaches B's task. The image host still answers at once now, so hold B's
    // fetch with a path it has never seen: a fresh host that holds.
    let holding = ImageHost::start();
    let job = p.submit_i2v(&bob, &holding.url("/held-2.png"));
    let task = p.upstream_task(&bob, &job);
    let (status, answer) = p.a(
        "POST",
        &format!("/v1/jobs/{job}/cancel"),
        &bob,
        &Value::Null,
    );
    assert_eq!(status, 202, "a running job's cancel is accepted: {answer}");
    let ended = p.wait_a(&bob, &job, |j| j["status"] == "cancelled");
    assert_eq!(ended["status"], "cancelled");
    let unified = p.unified_key.clone();
    let (_, b_job) = p.b("GET", &format!("/v1/jobs/{task}"), &unified, &Value::Null);
    assert_eq!(b_job["cancel_requested"], true, "{b_job}");
    holding.release();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, b_task) = p.b(
            "GET",
            &format!("/api/v1/tasks/{task}"),
            &unified,
            &Value::Null,
        );
        if b_task["output"]["task_status"] == "CANCELED" {
            break;
        }
        assert!(Instant::now() < deadline, "{b_task}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn gallop_killed_mid_poll_resumes_the_same_upstream_task() {
    let mut p = Pair::start(&["--workers", "2"]);
    let alice = p.alice.clone();
    let alice_key = p.alice_key.clone();
    let (status, _) = p.a(
        "PUT",
        "/v1/keys/alibaba",
        &alice,
        &json!({"api_key": alice_key}),
    );
    assert_eq!(status, 200);
    let job = p.submit_i2v(&alice, &p.host.url("/held-1.png"));
    let task = p.upstream_task(&alice, &job);
    p.a.kill9();
    let (addr, upstream) = (p.a.addr.clone(), p.b.addr.clone());
    p.a = GallopA::start(&p.a_dir(), &addr, &upstream, &p.unified_key);
    p.a.wait_for_log(
        "following the upstream task submitted before",
        Duration::from_secs(60),
    );
    p.host.release();
    let done = p.wait_completed(&alice, &job);
    assert_eq!(done["attempt"], 2, "one attempt before the kill, one after");
    assert_eq!(done["engine"]["upstream_task_id"], task.as_str());
    assert_eq!(done["engine"]["key_source"], "BYOK");
    p.a_video(&done);
    let tasks: HashSet<String> = p
        .b_tasks(&p.alice_key)
        .iter()
        .map(|t| t["task_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(tasks, HashSet::from([task]), "one upstream task");
    assert!(p.b_tasks(&p.unified_key).is_empty());
    p.assert_no_key_leaked();
}
