//! Status polls per second and latency percentiles over loopback: gallop API servers in this
//! process (one temporary data dir, preview engine), one completed job, and N concurrent clients
//! that poll it a fixed number of times in all.
//!
//! cargo run --release -p gallop-server --example poll_bench -- [CLIENTS] [TOTAL] [sqlite|postgres] [APIS]
//!
//! `postgres` runs the servers on a throwaway PostgreSQL cluster (gallop-testkit) instead of the
//! data directory's SQLite file. `APIS` (default 1) starts that many API servers on the same
//! store, each with its own port and its own store connections as separate API processes have
//! (they share this process's async runtime); clients are dealt to them in turn. Only the
//! first runs a worker.
//!
//! Client and server share the machine's cores, so the figures are a floor for the server alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gallop_server::ServerConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let clients: usize = args.next().map_or(Ok(16), |a| a.parse())?;
    let total: usize = args.next().map_or(Ok(20_000), |a| a.parse())?;
    let postgres = match args.next().as_deref() {
        None | Some("sqlite") => None,
        Some("postgres") => Some(gallop_testkit::TempPostgres::start()),
        Some(other) => anyhow::bail!("the store must be sqlite or postgres, got {other:?}"),
    };
    let apis: usize = args.next().map_or(Ok(1), |a| a.parse())?;
    anyhow::ensure!(apis >= 1, "APIS must be at least 1");

    let dir = tempfile::tempdir()?;
    let database_url = postgres.as_ref().map(|pg| pg.fresh_database());
    let mut servers = Vec::with_capacity(apis);
    for i in 0..apis {
        servers.push(
            gallop_server::start(ServerConfig {
                addr: "127.0.0.1:0".parse()?,
                data_dir: dir.path().to_path_buf(),
                database_url: database_url.clone(),
                run_worker: i == 0,
                ..ServerConfig::default()
            })
            .await?,
        );
    }
    let token = servers[0].first_token.clone().expect("fresh data dir");
    let bases: Vec<String> = servers
        .iter()
        .map(|s| format!("http://{}", s.addr))
        .collect();
    let base = bases[0].clone();
    let client = reqwest::Client::builder().no_proxy().build()?;

    // One real completed job to poll: upload an image, run it synchronously.
    let img = image::RgbImage::from_fn(480, 360, |x, y| image::Rgb([x as u8, y as u8, 128]));
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png)?;
    let upload: serde_json::Value = serde_json::from_str(
        &client
            .post(format!("{base}/v1/uploads"))
            .bearer_auth(&token)
            .body(png.into_inner())
            .send()
            .await?
            .text()
            .await?,
    )?;
    let body = serde_json::json!({
        "model": "alibaba/hh1-i2v",
        "input": {"image": upload["uri"], "duration": 3}
    });
    let done: serde_json::Value = serde_json::from_str(
        &client
            .post(format!("{base}/client/v4/accounts/local/ai/run"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await?
            .text()
            .await?,
    )?;
    anyhow::ensure!(done["state"] == "Completed", "setup job: {done}");
    let id = done["gatewayMetadata"]["requestId"]
        .as_str()
        .unwrap()
        .to_string();

    for (name, cloudflare) in [
        ("GET /v1/jobs/{id}", false),
        ("POST /ai/run {request_id}", true),
    ] {
        let started = Instant::now();
        let per_client = total / clients;
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let (client, base, token, id) = (
                    client.clone(),
                    bases[c % apis].clone(),
                    token.clone(),
                    id.clone(),
                );
                tokio::spawn(async move {
                    let mut latencies = Vec::with_capacity(per_client);
                    let poll = Arc::new(serde_json::json!({ "request_id": id }).to_string());
                    for _ in 0..per_client {
                        let t = Instant::now();
                        let request = if cloudflare {
                            client
                                .post(format!("{base}/client/v4/accounts/local/ai/run"))
                                .header("content-type", "application/json")
                                .body(poll.as_str().to_string())
                        } else {
                            client.get(format!("{base}/v1/jobs/{id}"))
                        };
                        let response = request.bearer_auth(&token).send().await.unwrap();
                        assert!(response.status().is_success(), "{}", response.status());
                        response.bytes().await.unwrap();
                        latencies.push(t.elapsed());
                    }
                    latencies
                })
            })
            .collect();
        let mut latencies: Vec<Duration> = Vec::new();
        for task in tasks {
            latencies.extend(task.await?);
        }
        let elapsed = started.elapsed();
        latencies.sort();
        let pct =
            |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
        println!(
            "{name}: {} polls by {clients} clients of {apis} API servers in {:.2} s: {:.0} polls/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            latencies.len(),
            elapsed.as_secs_f64(),
            latencies.len() as f64 / elapsed.as_secs_f64(),
            pct(0.50).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
            latencies.last().unwrap().as_secs_f64() * 1e3,
        );
    }
    for server in servers {
        server.shutdown().await;
    }
    Ok(())
}
