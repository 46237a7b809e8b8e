//! What a process runs jobs with (`gallop serve` and `gallop worker` alike): the Wan
//! checkpoints that serve each model id (`--config` or `--model-dir`), the ids routed to an
//! upstream, or the motion preview when nothing is configured; and the worker's slots.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use gallop_api::ModelId;
use gallop_server::upstreams::{UpstreamRoute, UpstreamRoutes};
use gallop_server::{EngineMap, ServerConfig};
use gallop_wan::WanSettings;

/// What a process runs jobs with: the engine or upstream route of each model id, and the
/// worker's slots and limits. Shared by `gallop serve` and `gallop worker`.
#[derive(clap::Args)]
pub struct ServingArgs {
    /// Jobs generated at the same time.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: u32,
    /// Attempts a job gets before it fails with its last error: an attempt that fails on the
    /// server's side, or that the process did not live to finish (kill -9, a crash), uses one.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,
    /// Seconds before a job's second attempt; each further one waits twice as long (at most
    /// 300 s), so a job that keeps failing, or keeps the process crashing, does not spin.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=300))]
    pub retry_backoff: u64,
    /// Seconds a claimed job stays this worker's without a word from it (progress renews it);
    /// a worker that dies is noticed this long after its last progress, and its job runs again.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(2..=3600))]
    pub lease_secs: u64,
    /// Seconds one job may run before it fails with code `timeout`.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub job_timeout: u64,
    /// Let image uris reach loopback and private addresses (local use and tests only).
    #[arg(long)]
    pub allow_private_fetch: bool,
    /// A TOML file naming what serves each model id: a Wan checkpoint (and its settings: the
    /// keys are the engine flags' names, `guidance_2` for --guidance-2) or an upstream Model
    /// Studio endpoint (`upstream = "NAME"` over an `[upstreams.NAME]` table); ids it does not
    /// name are refused. See README.md.
    #[arg(long, conflicts_with = "model_dir")]
    pub config: Option<PathBuf>,
    /// One Wan checkpoint (--model-dir) and its settings; it serves the model id its pipeline
    /// supports (WanImageToVideoPipeline: alibaba/hh1-i2v, WanVACEPipeline: alibaba/hh1.1-r2v).
    /// Without --model-dir or --config the motion preview serves every id (and says so).
    #[command(flatten)]
    pub wan: WanSettings,
}

/// What the operator configured: the engine for each id with a checkpoint, and the ids routed
/// upstream. Both empty: the preview serves every id.
struct Configured {
    served: Vec<gallop_registry::Served>,
    routes: Vec<(ModelId, UpstreamRoute)>,
}

fn configured(args: &ServingArgs) -> anyhow::Result<Configured> {
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

impl ServingArgs {
    /// Loads what serves each model id, printing one line per id that names the engine (the
    /// motion preview, a checkpoint, or an upstream and its key sources).
    pub fn load(&self) -> anyhow::Result<(EngineMap, UpstreamRoutes)> {
        let Configured { served, routes } = configured(self)?;
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
                    println!(
                        "{model}: motion preview (no checkpoint configured; not the neural model)"
                    )
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
        Ok((engines, upstreams))
    }

    /// `config` with these engines, routes and worker settings.
    pub fn apply(&self, config: ServerConfig) -> anyhow::Result<ServerConfig> {
        let (engines, upstreams) = self.load()?;
        Ok(ServerConfig {
            engines,
            upstreams,
            allow_private_fetch: self.allow_private_fetch,
            workers: self.workers as usize,
            job_timeout: Duration::from_secs(self.job_timeout),
            lease: Duration::from_secs(self.lease_secs),
            max_attempts: self.max_attempts,
            retry_backoff: Duration::from_secs(self.retry_backoff),
            ..config
        })
    }
}
