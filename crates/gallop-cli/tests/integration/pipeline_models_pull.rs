//! `gallop models pull` against a loopback server that imitates the Hub's file routes
//! (`/api/models/{repo}` listing `siblings`, `/{repo}/resolve/{rev}/{file}` with `Range`):
//! every file arrives byte for byte, and a partial download resumes with a Range request.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};

const GALLOP: &str = env!("CARGO_BIN_EXE_gallop");

fn files() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "model_index.json",
            br#"{"_class_name": "WanPipeline"}"#.to_vec(),
        ),
        (
            "transformer/diffusion_pytorch_model.safetensors",
            (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect(),
        ),
        ("vae/config.json", b"{\"z_dim\": 16}".to_vec()),
    ]
}

/// Serves the fake Hub on a loopback port; records each request line and Range header.
fn fake_hub() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut range = None;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" || line.is_empty() {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("range: bytes=") {
                    range = Some(v.trim().trim_end_matches('-').parse::<usize>().unwrap());
                }
            }
            let path = request_line.split_whitespace().nth(1).unwrap().to_string();
            seen.lock().unwrap().push(format!("{path} range={range:?}"));
            let (status, body): (&str, Vec<u8>) = if path == "/api/models/org/tiny" {
                let siblings: Vec<_> = files()
                    .iter()
                    .map(|(name, _)| serde_json::json!({"rfilename": name}))
                    .collect();
                (
                    "200 OK",
                    serde_json::json!({"siblings": siblings})
                        .to_string()
                        .into_bytes(),
                )
            } else if let Some(file) = path.strip_prefix("/org/tiny/resolve/main/") {
                match files().into_iter().find(|(n, _)| *n == file) {
                    Some((_, data)) => match range {
                        Some(start) => ("206 Partial Content", data[start..].to_vec()),
                        None => ("200 OK", data),
                    },
                    None => ("404 Not Found", Vec::new()),
                }
            } else {
                ("404 Not Found", Vec::new())
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
            let _ = stream.flush();
            let mut rest = Vec::new();
            let _ = reader.read_to_end(&mut rest);
        }
    });
    (format!("http://{addr}"), log)
}

fn pull(endpoint: &str, dir: &std::path::Path) -> std::process::Output {
    Command::new(GALLOP)
        .args([
            "models",
            "pull",
            "org/tiny",
            "--endpoint",
            endpoint,
            "--dir",
        ])
        .arg(dir)
        .output()
        .unwrap()
}

#[test]
fn pull_downloads_every_file() {
    let (endpoint, log) = fake_hub();
    let dir = tempfile::tempdir().unwrap();
    let out = pull(&endpoint, dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (name, data) in files() {
        assert_eq!(
            std::fs::read(dir.path().join(name)).unwrap(),
            data,
            "{name}"
        );
        assert!(!dir.path().join(format!("{name}.part")).exists());
    }
    assert_eq!(log.lock().unwrap()[0], "/api/models/org/tiny range=None");
}

#[test]
fn pull_resumes_a_partial_file_with_range() {
    let (endpoint, log) = fake_hub();
    let dir = tempfile::tempdir().unwrap();
    let name = "transformer/diffusion_pytorch_model.safetensors";
    let data = files().into_iter().find(|(n, _)| *n == name).unwrap().1;
    std::fs::create_dir_all(dir.path().join("transformer")).unwrap();
    std::fs::write(dir.path().join(format!("{name}.part")), &data[..123_456]).unwrap();
    let out = pull(&endpoint, dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(dir.path().join(name)).unwrap(), data);
    let log = log.lock().unwrap();
    assert!(
        log.contains(&format!("/org/tiny/resolve/main/{name} range=Some(123456)")),
        "{log:?}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("resumed at 123456"));
}

#[test]
fn pull_of_a_missing_repo_fails_clearly() {
    let (endpoint, _) = fake_hub();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(GALLOP)
        .args([
            "models",
            "pull",
            "org/nope",
            "--endpoint",
            &endpoint,
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("404") && stderr.contains("/api/models/org/nope"),
        "{stderr}"
    );
}
