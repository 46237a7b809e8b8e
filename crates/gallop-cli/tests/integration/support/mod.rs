//! The harness the `gallop serve` tests share: the real binary on a free loopback port, its
//! stdout lines, and plain HTTP/1.1 requests to it.
#![allow(dead_code)] // each test binary uses part of it

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const GALLOP: &str = env!("CARGO_BIN_EXE_gallop");

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("gallop-serve-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `gallop serve` and the lines of its stdout.
pub struct Server {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    pub addr: String,
}

impl Server {
    pub fn start(data_dir: &Path, addr: &str, extra: &[&str]) -> Server {
        let child = Command::new(GALLOP)
            .args(["serve", "--addr", addr, "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Server::reading(child, addr)
    }

    /// As `start`, with `RUST_LOG=log_filter` and the log (stderr) written to `log_file`.
    pub fn start_logged(
        data_dir: &Path,
        addr: &str,
        extra: &[&str],
        log_filter: &str,
        log_file: &Path,
    ) -> Server {
        let log = std::fs::File::create(log_file).unwrap();
        let child = Command::new(GALLOP)
            .args(["serve", "--addr", addr, "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", log_filter)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        Server::reading(child, addr)
    }

    /// A started `gallop` process (stdout piped) whose stdout lines arrive on `lines`.
    pub fn reading(mut child: Child, addr: &str) -> Server {
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Server {
            child,
            lines,
            addr: addr.to_string(),
        }
    }

    /// Stdout lines up to and including the "listening" line.
    pub fn startup_lines(&self) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("no listening line; stdout so far: {seen:?}"));
            let done = line.contains("listening on");
            seen.push(line);
            if done {
                return seen;
            }
        }
    }

    pub fn kill9(&mut self) {
        self.child.kill().unwrap(); // SIGKILL: no shutdown code runs
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `gallop serve` (on a free port, data in a fresh temp dir) with `args`, which must make it
/// exit within a minute; returns its exit code and stderr.
pub fn serve_exit(args: &[&str]) -> (Option<i32>, String) {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(GALLOP)
        .args(["serve", "--addr", &free_addr(), "--data-dir"])
        .arg(data.path().join("data"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("gallop serve started with {args:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.code(), stderr)
}

pub fn free_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// One HTTP/1.1 request over a fresh connection; returns (status, body).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: &str,
    content_type: &str,
    body: &[u8],
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// `GET path` without a token (a signed link); the body of its 200 answer.
pub fn get_bytes(addr: &str, path: &str) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    assert!(
        response.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        &response[..split]
    );
    response[split + 4..].to_vec()
}

pub fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// A `width` x `height` PNG with a pattern in every channel.
pub fn png(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x * y) % 256) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// Uploads `bytes` (a PNG) and returns its `gallop://uploads/..` uri.
pub fn upload(addr: &str, token: &str, bytes: &[u8]) -> String {
    let (status, body) = http(addr, "POST", "/v1/uploads", token, "image/png", bytes);
    assert_eq!(status, 201, "{body}");
    json(&body)["uri"].as_str().unwrap().to_string()
}

/// `GET /v1/jobs/{id}`, which must answer 200.
pub fn get_job(addr: &str, token: &str, id: &str) -> serde_json::Value {
    let path = format!("/v1/jobs/{id}");
    let (status, body) = http(addr, "GET", &path, token, "application/json", b"");
    assert_eq!(status, 200, "{body}");
    json(&body)
}

pub fn token_from(lines: &[String]) -> String {
    let line = lines
        .iter()
        .find(|l| l.starts_with("GALLOP_TOKEN="))
        .unwrap_or_else(|| panic!("no token line in {lines:?}"));
    line["GALLOP_TOKEN=".len()..].to_string()
}

/// Polls `GET /v1/jobs/{id}` until the job completes; panics if it ends otherwise or takes
/// longer than `within`.
pub fn wait_completed(addr: &str, token: &str, id: &str, within: Duration) -> serde_json::Value {
    wait_ended(addr, token, id, "completed", within)
}

/// Polls `GET /v1/jobs/{id}` until the job leaves queued/running; panics unless it ends as
/// `wanted` within `within`.
pub fn wait_ended(
    addr: &str,
    token: &str,
    id: &str,
    wanted: &str,
    within: Duration,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + within;
    loop {
        let job = get_job(addr, token, id);
        if job["status"] == wanted {
            return job;
        }
        assert!(
            ["queued", "running"].contains(&job["status"].as_str().unwrap()),
            "{job}"
        );
        assert!(std::time::Instant::now() < deadline, "{job}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// An answer as `request` reads it: status, header block (lowercased names) and body.
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Answer {
    /// The value of header `name` (lowercase), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            (n.trim().eq_ignore_ascii_case(name)).then(|| v.trim())
        })
    }
}

/// One HTTP/1.1 request over a fresh connection with extra header lines (`Name: value`);
/// an error when the server is not there or drops the connection (it may have been killed).
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    token: &str,
    extra_headers: &[String],
    body: &[u8],
) -> std::io::Result<Answer> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for line in extra_headers {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response).to_string();
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no HTTP status in {text:?}")))?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok(Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    })
}
