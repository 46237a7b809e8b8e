//! What an operator can set when starting the service. `gallop serve` fills this from its flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::connections::ConnectionLimits;
use crate::engines::EngineMap;
use crate::storage::Storage;
use crate::upstreams::UpstreamRoutes;
use gallop_engine::RenderOptions;

/// Everything `run` needs to start one gallop server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen. Port 0 picks a free port (tests).
    pub addr: SocketAddr,
    /// Holds the SQLite job store, inputs, outputs and the signing key (those of them not
    /// placed elsewhere by the fields below).
    pub data_dir: PathBuf,
    /// Where jobs live (`sqlite:///path.db` or `postgres://...`); None: `data_dir/gallop.db`.
    pub database_url: Option<String>,
    /// Where inputs and results live, opened from `--storage-url` (`Storage::from_url`: a
    /// `file:///path` or an `s3://bucket/prefix`). None: `data_dir/objects`.
    pub storage: Option<Storage>,
    /// Answer a result link with a redirect (307) to a presigned URL of the bucket, so the
    /// bytes do not pass through this process; stores that cannot presign (local files) still
    /// stream.
    pub presign_downloads: bool,
    /// Run a worker inside this process. False (`--no-worker`): this process only answers
    /// requests, and `gallop worker` processes run the jobs.
    pub run_worker: bool,
    /// The key that signs result links; every API process of one service needs the same.
    /// None: `data_dir/signing.key` (made on first use).
    pub signing_key: Option<[u8; 32]>,
    /// Base of every absolute URL the server hands out (`result.video`). None: `http://ADDR`
    /// with the port actually bound.
    pub public_url: Option<String>,
    /// Lets image uris reach loopback and private addresses (local use and tests).
    pub allow_private_fetch: bool,
    /// Jobs generated at the same time in this process.
    pub workers: usize,
    /// How long a synchronous `/ai/run` waits for the video before answering 408 with the
    /// request id, so the client can poll.
    pub sync_wait: Duration,
    /// A job running longer than this fails.
    pub job_timeout: Duration,
    /// How long a claim (or a progress write) keeps a job for this process's worker.
    pub lease: Duration,
    /// Queued (not yet running) jobs accepted before new ones get 429.
    pub queue_limit: usize,
    /// Queued jobs of one account; past it that account gets 429 while others still queue.
    pub queue_limit_per_account: usize,
    /// Uploads an account may keep stored at once.
    pub uploads: UploadQuota,
    /// Largest request body accepted (413 past it).
    pub body_limit: usize,
    /// How long a signed result URL stays valid.
    pub url_ttl: Duration,
    /// How long an uploaded image serves the account's jobs, counted from its upload.
    pub upload_ttl: Duration,
    /// Open connections and the header, body and idle timeouts of each.
    pub connections: ConnectionLimits,
    /// Attempts a job gets before it fails: an attempt that fails on our side, or that the
    /// process did not live to finish (kill -9, a crash), uses one.
    pub max_attempts: u32,
    /// Wait before a job's second attempt, doubled for each further one (at most 300 s).
    pub retry_backoff: Duration,
    /// Which engine serves each model id (`gallop serve --model-dir` or `--config`); the
    /// default, nothing configured, is the motion preview for every id, which says so.
    pub engines: EngineMap,
    /// Model ids served by an upstream Model Studio endpoint (`[upstreams.NAME]` and
    /// `upstream = "NAME"` in the `--config` file); they take precedence over `engines`.
    pub upstreams: UpstreamRoutes,
    /// How every video is rendered: the H.264 encoder (`--encoder`).
    pub render: RenderOptions,
}

pub use gallop_storage::DEFAULT_UPLOAD_TTL_SECS;

/// How many uploaded images, and how many bytes of them, one account may keep stored. An upload
/// is deleted `upload_ttl` after it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadQuota {
    pub max_count: u32,
    pub max_bytes: u64,
}

impl Default for UploadQuota {
    /// Room for an r2v request's nine references, twice over, at typical photo sizes.
    fn default() -> Self {
        UploadQuota {
            max_count: 50,
            max_bytes: 200 * 1024 * 1024,
        }
    }
}

pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";
/// Room for a few base64 data: uris of up to 20 MB images each, and no more.
pub const DEFAULT_BODY_LIMIT: usize = 30 * 1024 * 1024;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: DEFAULT_ADDR.parse().expect("default address parses"),
            data_dir: PathBuf::from("gallop-data"),
            database_url: None,
            storage: None,
            presign_downloads: false,
            run_worker: true,
            signing_key: None,
            public_url: None,
            allow_private_fetch: false,
            workers: 1,
            sync_wait: Duration::from_secs(300),
            job_timeout: Duration::from_secs(3600),
            lease: Duration::from_secs(60),
            queue_limit: 100,
            queue_limit_per_account: 20,
            uploads: UploadQuota::default(),
            body_limit: DEFAULT_BODY_LIMIT,
            url_ttl: Duration::from_secs(24 * 3600),
            upload_ttl: Duration::from_secs(DEFAULT_UPLOAD_TTL_SECS),
            connections: ConnectionLimits::default(),
            max_attempts: 3,
            retry_backoff: Duration::from_secs(5),
            engines: EngineMap::preview(),
            upstreams: UpstreamRoutes::default(),
            render: RenderOptions::default(),
        }
    }
}

/// The public base URL without a trailing slash: the configured one, or `http://` plus the bound
/// address.
pub fn public_base(configured: Option<&str>, bound: SocketAddr) -> String {
    match configured {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => format!("http://{bound}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_base_trims_slash_and_falls_back_to_bound_address() {
        let bound: SocketAddr = "127.0.0.1:4567".parse().unwrap();
        assert_eq!(
            public_base(Some("https://v.example/"), bound),
            "https://v.example"
        );
        assert_eq!(public_base(None, bound), "http://127.0.0.1:4567");
    }
}
