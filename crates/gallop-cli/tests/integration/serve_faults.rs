//! Faults under a real `gallop serve`: the disk filling up while a result is written, the job
//! database locked by another process, and kill -9 / restart cycles during a stream of
//! submissions. Accepted jobs complete exactly once; meanwhile the server answers with clear
//! errors and does not exit.

use crate::support;

use support::*;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn job_body(uri: &str) -> Vec<u8> {
    serde_json::json!({"model": "alibaba/hh1-i2v", "input": {"image": uri, "duration": 3}})
        .to_string()
        .into_bytes()
}

fn submit(addr: &str, token: &str, uri: &str) -> String {
    let (status, body) = http(
        addr,
        "POST",
        "/v1/jobs",
        token,
        "application/json",
        &job_body(uri),
    );
    assert_eq!(status, 202, "{body}");
    json(&body)["id"].as_str().unwrap().to_string()
}

fn alive(server: &mut Server) -> bool {
    server.child.try_wait().unwrap().is_none()
}

/// A small tmpfs mounted over `dir` for as long as it lives (mounting needs root, which the
/// developers' machines and CI have).
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mounting a {size} tmpfs on {} (this test needs root): {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk(dir.to_path_buf())
    }

    /// Writes `name` until the filesystem has no room left.
    fn fill(&self, name: &str) -> PathBuf {
        use std::io::Write;
        let path = self.0.join(name);
        let mut file = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 64 * 1024];
        loop {
            match file.write_all(&block) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc_enospc()) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
        let _ = file.sync_all();
        path
    }
}

/// ENOSPC on Linux.
fn libc_enospc() -> i32 {
    28
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_disk_full_while_the_result_is_written_fails_that_attempt_and_the_job_completes_later() {
    let dir = TempDir::new("disk-full");
    let data = dir.0.join("data");
    // Results are written under objects/results: that is the disk that fills up.
    let disk = SmallDisk::mount(&data.join("objects").join("results"), "16m");
    let log = dir.0.join("serve.log");
    let addr = free_addr();
    let args = ["--workers", "1", "--retry-backoff", "2"];
    let mut server = Server::start_logged(&data, &addr, &args, "info", &log);
    let token = token_from(&server.startup_lines());
    let uri = upload(&addr, &token, &png(480, 360));
    let filler = disk.fill("filler");

    let id = submit(&addr, &token, &uri);
    // The attempt renders, then cannot store its MP4: the log says why, the job waits to retry.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("No space left on device") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no disk-full error logged:\n{text}"
        );
        assert!(alive(&mut server), "the server exited:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Meanwhile it serves: the job is readable and waits for another attempt, new jobs queue.
    let job = get_job(&addr, &token, &id);
    assert!(
        ["queued", "running"].contains(&job["status"].as_str().unwrap()),
        "{job}"
    );
    let second = submit(&addr, &token, &uri);

    std::fs::remove_file(&filler).unwrap();
    let done = wait_completed(&addr, &token, &id, Duration::from_secs(180));
    assert!(done["attempt"].as_u64().unwrap() >= 2, "{done}");
    let video = done["result"]["video"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!video.is_empty(), "{done}");
    wait_completed(&addr, &token, &second, Duration::from_secs(180));
    assert!(alive(&mut server));
    // The failed write left nothing behind: the small disk holds the two results, whole.
    let mut files = Vec::new();
    for job in std::fs::read_dir(&disk.0).unwrap() {
        for file in std::fs::read_dir(job.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            let mp4 = std::fs::read(&path).unwrap();
            assert_eq!(&mp4[4..8], b"ftyp", "{}", path.display());
            files.push(path);
        }
    }
    assert_eq!(files.len(), 2, "{files:?}");
    drop(server);
    drop(disk);
}

#[test]
fn a_database_locked_by_another_process_is_answered_503_and_work_resumes_after() {
    let dir = TempDir::new("db-locked");
    let addr = free_addr();
    let mut server = Server::start(&dir.0, &addr, &["--workers", "1"]);
    let token = token_from(&server.startup_lines());
    let uri = upload(&addr, &token, &png(480, 360));
    let before = submit(&addr, &token, &uri);
    wait_completed(&addr, &token, &before, Duration::from_secs(120));

    // Another process (this test) takes the database's write lock and keeps it.
    let locker = rusqlite::Connection::open(dir.0.join("gallop.db")).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let started = Instant::now();
    let answer = request(&addr, "POST", "/v1/jobs", &token, &[], &job_body(&uri)).unwrap();
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert!(
        answer.body.contains("locked") && answer.body.contains("database"),
        "{}",
        answer.body
    );
    let retry: u64 = answer.header("retry-after").unwrap().parse().unwrap();
    assert!(retry >= 1, "{}", answer.head);
    assert!(started.elapsed() < Duration::from_secs(30));
    // Reads go on (the database is in WAL mode), and the process is still there.
    assert_eq!(get_job(&addr, &token, &before)["status"], "completed");
    assert!(alive(&mut server));

    locker.execute_batch("ROLLBACK").unwrap();
    drop(locker);
    let after = submit(&addr, &token, &uri);
    wait_completed(&addr, &token, &after, Duration::from_secs(120));
}

const CYCLES: usize = 50;
/// Jobs the background client submits, spread over the cycles.
const STREAM: usize = 4;

/// What the submitting clients met while the server was being killed.
#[derive(Default, Debug)]
struct Met {
    /// Every id each Idempotency-Key was answered with.
    ids: HashMap<String, Vec<String>>,
    /// Keys whose answer was a replay: a submission the kill cut off had been stored.
    replayed: u32,
    /// Connections refused or dropped (the server dead or starting).
    no_answer: u32,
    /// 429 and 503 answers (queue full, database busy during recovery).
    throttled: u32,
}

/// Submits `body` under Idempotency-Key `key` until the server accepts it, whether it is
/// dead, restarting or busy meanwhile; records the answer in `met`.
fn submit_until_accepted(addr: &str, token: &str, body: &[u8], key: &str, met: &Mutex<Met>) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "{key} was never accepted");
        let header = format!("Idempotency-Key: {key}");
        let answer = request(addr, "POST", "/v1/jobs", token, &[header], body);
        let mut met = met.lock().unwrap();
        match answer {
            Ok(a) if a.status == 202 => {
                let id = json(&a.body)["id"].as_str().unwrap().to_string();
                met.ids.entry(key.to_string()).or_default().push(id);
                if a.header("idempotent-replayed") == Some("true") {
                    met.replayed += 1;
                }
                return;
            }
            Ok(a) => {
                assert!(
                    a.status == 429 || a.status == 503,
                    "{key}: {} {}",
                    a.status,
                    a.body
                );
                met.throttled += 1;
            }
            Err(_) => met.no_answer += 1,
        }
        drop(met);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A client submitting `STREAM` jobs one after the other over the cycles, each under its own
/// Idempotency-Key.
fn submitter(addr: String, token: String, uri: String, met: Arc<Mutex<Met>>) {
    for n in 0..STREAM {
        submit_until_accepted(&addr, &token, &job_body(&uri), &format!("stream-{n}"), &met);
        std::thread::sleep(Duration::from_millis(6000));
    }
}

/// Sends a submission under `key` and leaves without reading the answer: the caller kills the
/// server while the request is in flight.
fn send_and_leave(addr: &str, token: &str, body: &[u8], key: &str) -> std::net::TcpStream {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST /v1/jobs HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nIdempotency-Key: {key}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    stream
}

/// A xorshift step: kill moments that differ from cycle to cycle but not from run to run.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn accepted_jobs_complete_exactly_once_through_50_kill_9_restart_cycles() {
    let dir = TempDir::new("kill-cycles");
    let addr = free_addr();
    // A kill mid-job uses one of the job's attempts (the server cannot tell kill -9 from a
    // crash its job caused), and a job may be hit by every kill: more attempts than kills,
    // retried at once, so the test measures durability, not the attempt limit or the backoff
    // (store tests cover those).
    let args = [
        "--workers",
        "1",
        "--max-attempts",
        "100",
        "--retry-backoff",
        "0",
    ];
    let log = |cycle: usize| dir.0.join(format!("serve-{cycle}.log"));
    let start = |cycle: usize| Server::start_logged(&dir.0, &addr, &args, "info", &log(cycle));
    // The listening line, or the panic names the start and shows its log.
    let listening = |server: &Server, cycle: usize| {
        let lines =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| server.startup_lines()));
        lines.unwrap_or_else(|_| {
            let text = std::fs::read_to_string(log(cycle)).unwrap_or_default();
            panic!("start {cycle} never listened; its log:\n{text}")
        })
    };
    let mut server = start(0);
    let token = token_from(&listening(&server, 0));
    let mut listened = true;
    let uri = upload(&addr, &token, &png(480, 360));
    let body = job_body(&uri);

    let met = Arc::new(Mutex::new(Met::default()));
    let stream = {
        let (addr, token, uri, met) = (addr.clone(), token.clone(), uri.clone(), met.clone());
        std::thread::spawn(move || submitter(addr, token, uri, met))
    };
    // Kill at moments spread over a job's life (a preview job takes seconds): during renders
    // and result writes; one cycle in eight waits long enough for a job to complete first;
    // one in five kills right after sending a submission (it may or may not have been
    // stored: the client sends the same key again after the restart); one in five kills during
    // startup (migration, recovery of the killed process's jobs) before the server listens.
    let started = Instant::now();
    let mut seed = 0x9e37_79b9_u64;
    let (mut during_startup, mut cut_off) = (0, Vec::<String>::new());
    for cycle in 1..=CYCLES {
        let roll = next(&mut seed);
        let mut in_flight = None;
        if !listened && roll % 5 == 0 {
            std::thread::sleep(Duration::from_millis(roll % 150));
            during_startup += 1;
        } else {
            if !listened {
                listening(&server, cycle - 1);
            }
            // Keys cut off by earlier kills are sent again now that a server listens.
            for key in &cut_off {
                submit_until_accepted(&addr, &token, &body, key, &met);
            }
            cut_off.clear();
            if (roll >> 8) % 5 == 0 {
                let key = format!("cut-off-{cycle}");
                in_flight = Some(send_and_leave(&addr, &token, &body, &key));
                cut_off.push(key);
                std::thread::sleep(Duration::from_millis(roll % 40));
            } else {
                let wait = if roll % 8 == 1 {
                    2500
                } else {
                    100 + roll % 900
                };
                std::thread::sleep(Duration::from_millis(wait));
            }
        }
        server.kill9();
        drop(in_flight);
        server = start(cycle);
        listened = false;
    }
    listening(&server, CYCLES);
    for key in &cut_off {
        submit_until_accepted(&addr, &token, &body, key, &met);
    }
    let killing = started.elapsed();
    stream.join().unwrap();

    let met = std::mem::take(&mut *met.lock().unwrap());
    let jobs = met.ids.len();
    assert!(jobs > STREAM, "no submission was cut off: {:?}", met.ids);
    for (key, answered) in &met.ids {
        assert_eq!(answered.len(), 1, "{key}: {answered:?}");
        // Asked again, the key names the same job: it was not queued twice.
        let again = request(
            &addr,
            "POST",
            "/v1/jobs",
            &token,
            &[format!("Idempotency-Key: {key}")],
            &body,
        )
        .unwrap();
        assert_eq!(json(&again.body)["id"], answered[0].as_str(), "{key}");
    }
    let mut attempts = Vec::new();
    for answered in met.ids.values() {
        let job = wait_completed(&addr, &token, &answered[0], Duration::from_secs(120));
        attempts.push(job["attempt"].as_u64().unwrap());
        let video = job["result"]["video"].as_str().unwrap();
        assert!(!video.is_empty(), "{job}");
    }
    // Exactly the accepted jobs exist, each completed with a stored result: no retried
    // submission made a second row, and no job was lost.
    let db = rusqlite::Connection::open(dir.0.join("gallop.db")).unwrap();
    let count =
        |sql: &str| -> usize { db.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap() as usize };
    assert_eq!(count("SELECT COUNT(*) FROM jobs"), jobs);
    let completed =
        count("SELECT COUNT(*) FROM jobs WHERE status = 'completed' AND result_key IS NOT NULL");
    assert_eq!(completed, jobs);
    for answered in met.ids.values() {
        let key: String = db
            .query_row(
                "SELECT result_key FROM jobs WHERE id = ?1",
                [&answered[0]],
                |r| r.get(0),
            )
            .unwrap();
        let file = dir.0.join("objects").join(&key);
        assert!(
            std::fs::metadata(&file).unwrap().len() > 0,
            "{}",
            file.display()
        );
    }
    eprintln!(
        "{CYCLES} kill -9 cycles ({during_startup} during startup) in {:.1} s: {jobs} jobs \
         accepted ({} sent again after a kill cut their submission off, {} of them already \
         stored), {completed} completed, 0 lost, in {} attempts (most {}); the clients met {} \
         refused or dropped connections and {} 429/503 answers; all done after {:.1} s",
        killing.as_secs_f64(),
        jobs - STREAM,
        met.replayed,
        attempts.iter().sum::<u64>(),
        attempts.iter().max().unwrap(),
        met.no_answer,
        met.throttled,
        started.elapsed().as_secs_f64(),
    );
}
