//! `gallop serve`: the HTTP service over the job store, the worker and result storage, with the
//! Wan checkpoints that serve each model id (`--config` or `--model-dir`), or the motion preview
//! when none is configured.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use gallop_api::ModelId;

use gallop_server::config::{DEFAULT_ADDR, UploadQuota};
use gallop_server::connections::ConnectionLimits;
use gallop_server::upstreams::{UpstreamRoute, UpstreamRoutes};
use gallop_server::{EngineMap, ServerConfig};
use gallop_wan::WanSettings;

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on (HOST:PORT).
    #[arg(long, default_value = DEFAULT_ADDR)]
    addr: SocketAddr,
    /// Holds the job database, inputs, results and the link-signing key.
    #[arg(long, default_value = "gallop-data")]
    data_dir: PathBuf,
    /// Base of the absolute URLs handed out (result videos). Default: http://ADDR.
    #[arg(long)]
    public_url: Option<String>,
    /// Let image uris reach loopback and private addresses (local use and tests only).
    #[arg(long)]
    allow_private_fetch: bool,
    /// Answer a result link with a redirect (307) to a presigned URL of the S3 bucket, valid no
    /// longer than the link, so videos do not pass through this process. Local storage streams.
    #[arg(long)]
    presign_downloads: bool,
    /// Jobs generated at the same time.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    workers: u32,
    /// Seconds a synchronous /ai/run waits for the video before answering 408 with the request id.
    #[arg(long, default_value_t = 300)]
    sync_wait: u64,
    /// Seconds one job may run before it fails with code `timeout`.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    job_timeout: u64,
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
    /// Attempts a job gets before it fails with its last error: an attempt that fails on the
    /// server's side, or that the process did not live to finish (kill -9, a crash), uses one.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    max_attempts: u32,
    /// Seconds before a job's second attempt; each further one waits twice as long (at most
    /// 300 s), so a job that keeps failing, or keeps the process crashing, does not spin.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=300))]
    retry_backoff: u64,
    /// Seconds a keep-alive connection may stay open with no request in flight.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout: u64,
    /// A TOML file naming what serves each model id: a Wan checkpoint (and its settings: the
    /// keys are the engine flags' names, `guidance_2` for --guidance-2) or an upstream Model
    /// Studio endpoint (`upstream = "NAME"` over an `[upstreams.NAME]` table); ids it does not
    /// name are refused. See README.md.
    #[arg(long, conflicts_with = "model_dir")]
    config: Option<PathBuf>,
    /// One Wan checkpoint (--model-dir) and its settings; it serves the model id its pipeline
    /// supports (WanImageToVideoPipeline: alibaba/hh1-i2v, WanVACEPipeline: alibaba/hh1.1-r2v).
    /// Without --model-dir or --config the motion preview serves every id (and says so).
    #[command(flatten)]
    wan: WanSettings,
}

/// What the operator configured: the engine for each id with a checkpoint, and the ids routed
/// upstream. Both empty: the preview serves every id.
struct Configured {
    served: Vec<gallop_registry::Served>,
    routes: Vec<(ModelId, UpstreamRoute)>,
}

fn configured(args: &Args) -> anyhow::Result<Configured> {
    // With --config, the settings go per model in the file.
    gallop_registry::refuse_settings_without_checkpoint(&args.wan, &Default::default())?;
    let (checkpoints, routes) = match (&args.config, &args.wan.model_dir) {
        (Some(path), _) => {
            let config = gallop_registry::read_config(path)?;
            (config.checkpoints, config.upstreams)
        }
        (None, Some(_)) => (
            vec![gallop_registry::shorthand(args.wan.clone())?],
            Vec::new(),
        ),
        (None, None) => (Vec::new(), Vec::new()),
    };
    Ok(Configured {
        served: gallop_registry::load(checkpoints)?,
        routes,
    })
}

/// The startup line of an id served upstream; it names the key sources, never a key.
fn upstream_line(model: ModelId, route: &UpstreamRoute) -> String {
    let unified = match (&route.unified_key, &route.key_env) {
        (Some(_), Some(var)) => format!("the server's own key from {var} (Unified)"),
        _ => "no server key (only accounts that store their own)".to_string(),
    };
    format!(
        "{model}: {} at {}; accounts' own keys (BYOK), else {unified}",
        route.describe(),
        route.upstream.base_url()
    )
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(url) = &args.public_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        anyhow::bail!("--public-url must start with http:// or https://, got {url:?}");
    }
    let Configured { served, routes } = configured(&args)?;
    let compute: HashMap<ModelId, String> = served
        .iter()
        .filter_map(|s| Some((s.model, s.compute.clone()?)))
        .collect();
    let summaries: HashMap<ModelId, Vec<String>> = served
        .iter()
        .map(|s| (s.model, s.summary.clone()))
        .collect();
    let engines: Vec<_> = served.into_iter().map(|s| (s.model, s.engine)).collect();
    // Once anything is configured, ids it does not name are not served (never the preview).
    let engines = match routes.is_empty() {
        true => EngineMap::configured(engines),
        false => EngineMap::only(engines),
    };
    let upstreams = UpstreamRoutes::new(routes);
    for (model, info) in engines.infos() {
        if let Some(route) = upstreams.route_for(model) {
            println!("{}", upstream_line(model, route));
            continue;
        }
        match info {
            Some(info) if info.engine == "preview" => {
                println!("{model}: motion preview (no checkpoint configured; not the neural model)")
            }
            Some(info) => println!(
                "{model}: {} engine, checkpoint {}{}",
                info.engine,
                info.checkpoint.unwrap_or_default(),
                compute
                    .get(&model)
                    .map(|c| format!(", on {c}"))
                    .unwrap_or_default()
            ),
            None => {
                println!("{model}: not served (no checkpoint configured; requests are refused)")
            }
        }
        for line in summaries.get(&model).into_iter().flatten() {
            println!("  {line}");
        }
    }
    let config = ServerConfig {
        engines,
        upstreams,
        addr: args.addr,
        data_dir: args.data_dir,
        public_url: args.public_url,
        allow_private_fetch: args.allow_private_fetch,
        presign_downloads: args.presign_downloads,
        workers: args.workers as usize,
        sync_wait: Duration::from_secs(args.sync_wait),
        job_timeout: Duration::from_secs(args.job_timeout),
        queue_limit: args.queue_limit as usize,
        queue_limit_per_account: args.queue_limit_per_account as usize,
        uploads: UploadQuota {
            max_count: args.upload_quota_count,
            max_bytes: args.upload_quota_bytes,
        },
        max_attempts: args.max_attempts,
        retry_backoff: Duration::from_secs(args.retry_backoff),
        connections: ConnectionLimits {
            max_connections: args.max_connections as usize,
            header_read_timeout: Duration::from_secs(args.header_read_timeout),
            body_read_timeout: Duration::from_secs(args.body_read_timeout),
            idle_timeout: Duration::from_secs(args.idle_timeout),
        },
        ..ServerConfig::default()
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(gallop_server::run(config))
}
