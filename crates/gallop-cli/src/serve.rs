//! `gallop serve`: the HTTP service over the job store and result storage, with a worker
//! inside unless `--no-worker` (then `gallop worker` processes run the jobs).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gallop_server::ServerConfig;
use gallop_server::config::{DEFAULT_ADDR, UploadQuota};
use gallop_server::connections::ConnectionLimits;

use crate::serving::ServingArgs;
use crate::state::StateArgs;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    state: StateArgs,
    /// The engines (or upstream routes) of each model id and the worker's slots; with
    /// --no-worker they still tell which ids are served, so give every process the same.
    #[command(flatten)]
    serving: ServingArgs,
    /// Only answer requests: `gallop worker` processes sharing --database-url (and
    /// --storage-url) run the jobs.
    #[arg(long)]
    no_worker: bool,
    /// A file holding the 32-byte link-signing key as 64 hex digits; every API process of one
    /// service needs the same key. Default: GALLOP_SIGNING_KEY, else DATA_DIR/signing.key.
    #[arg(long)]
    signing_key_file: Option<PathBuf>,
    /// Answer result links with a redirect to a presigned URL of the bucket (s3:// storage),
    /// so video bytes do not pass through this process.
    #[arg(long)]
    presign_downloads: bool,
    /// Address to listen on (HOST:PORT).
    #[arg(long, default_value = DEFAULT_ADDR)]
    addr: SocketAddr,
    /// Base of the absolute URLs handed out (result videos). Default: http://ADDR.
    #[arg(long)]
    public_url: Option<String>,
    /// Seconds a synchronous /ai/run waits for the video before answering 408 with the request id.
    #[arg(long, default_value_t = 300)]
    sync_wait: u64,
    /// Queued jobs accepted before new ones get 429 (code 3040).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    queue_limit: u32,
    /// Queued jobs of one account (within --queue-limit): past it that account gets 429 while
    /// other accounts still queue.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    queue_limit_per_account: u32,
    /// Uploaded images one account may keep stored at once.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    upload_quota_count: u32,
    /// Bytes of uploaded images one account may keep stored at once.
    #[arg(long, default_value_t = 200 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    upload_quota_bytes: u64,
    /// Open connections; one more is answered 503 and closed.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Seconds a request's headers may take to arrive (a new connection must send them in it).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    header_read_timeout: u64,
    /// Seconds a request's body may take to arrive after its headers (408 past it).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    body_read_timeout: u64,
    /// Seconds a keep-alive connection may stay open with no request in flight.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout: u64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(url) = &args.public_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        anyhow::bail!("--public-url must start with http:// or https://, got {url:?}");
    }
    let signing_key = signing_key(args.signing_key_file.as_deref())?;
    let config = args.serving.apply(args.state.config()?)?;
    let config = ServerConfig {
        addr: args.addr,
        public_url: args.public_url,
        run_worker: !args.no_worker,
        presign_downloads: args.presign_downloads,
        signing_key,
        sync_wait: Duration::from_secs(args.sync_wait),
        queue_limit: args.queue_limit as usize,
        queue_limit_per_account: args.queue_limit_per_account as usize,
        uploads: UploadQuota {
            max_count: args.upload_quota_count,
            max_bytes: args.upload_quota_bytes,
        },
        connections: ConnectionLimits {
            max_connections: args.max_connections as usize,
            header_read_timeout: Duration::from_secs(args.header_read_timeout),
            body_read_timeout: Duration::from_secs(args.body_read_timeout),
            idle_timeout: Duration::from_secs(args.idle_timeout),
        },
        ..config
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(gallop_server::run(config))
}

/// Where the link-signing key comes from: --signing-key-file, else GALLOP_SIGNING_KEY (both 64
/// hex digits), else None (the data directory's key file).
fn signing_key(file: Option<&Path>) -> anyhow::Result<Option<[u8; 32]>> {
    let (text, source) = match file {
        Some(path) => (
            std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("--signing-key-file {}: {e}", path.display()))?,
            "--signing-key-file",
        ),
        None => match std::env::var(SIGNING_KEY_ENV) {
            Ok(text) => (text, SIGNING_KEY_ENV),
            Err(_) => return Ok(None),
        },
    };
    let key = hex::decode(text.trim())
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok());
    match key {
        Some(key) => Ok(Some(key)),
        None => anyhow::bail!(
            "{source} must hold 64 hex digits (a 32-byte key; make one with `openssl rand -hex 32`)"
        ),
    }
}

/// Every API process of one service signs links with the key in this variable.
const SIGNING_KEY_ENV: &str = "GALLOP_SIGNING_KEY";
