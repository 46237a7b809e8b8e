//! What a process runs jobs with (`gallop serve` and `gallop worker` alike): the Wan
//! checkpoints that serve each model id (`--config` or `--model-dir`), the ids routed to an
//! upstream, or the motion preview when nothing is configured; and the worker's slots.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gallop_api::ModelId;
use gallop_engine::RenderOptions;
use gallop_media::VideoEncoder;
use gallop_registry::{EncoderSettings, Spelling};
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
    /// The H.264 encoder of every video (also the config file's top-level `encoder` and
    /// `ffmpeg` keys; give them in one place).
    #[command(flatten, next_help_heading = "H.264 encoding")]
    pub encoding: EncoderSettings,
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
    encoder: VideoEncoder,
}

fn configured(args: &ServingArgs) -> anyhow::Result<Configured> {
    // With --config, the settings go per model in the file.
    gallop_registry::refuse_settings_without_checkpoint(&args.wan, &Default::default())?;
    let flags = (args.encoding.clone(), Spelling::Flags);
    let (checkpoints, routes, encoding) = match (&args.config, &args.wan.model_dir) {
        (Some(path), _) => {
            let config = gallop_registry::read_config(path)?;
            let encoding = match (args.encoding.is_default(), config.encoder.is_default()) {
                (_, true) => flags,
                (true, false) => (config.encoder, Spelling::Keys),
                (false, false) => anyhow::bail!(
                    "--encoder/--ffmpeg and the --config file's encoder/ffmpeg keys are both set; give \
                     the encoder in one place"
                ),
            };
            (config.checkpoints, config.upstreams, encoding)
        }
        (None, Some(_)) => (
            vec![gallop_registry::shorthand(args.wan.clone())?],
            Vec::new(),
            flags,
        ),
        (None, None) => (Vec::new(), Vec::new(), flags),
    };
    // Before any weights load: a missing ffmpeg fails in a second.
    let encoder = open_encoder(&encoding.0, encoding.1, args.config.as_deref())?;
    Ok(Configured {
        served: gallop_registry::load(checkpoints)?,
        routes,
        encoder,
    })
}

/// The encoder, its errors named as the flag or as the config file's key.
fn open_encoder(
    settings: &EncoderSettings,
    spelling: Spelling,
    config: Option<&Path>,
) -> anyhow::Result<VideoEncoder> {
    settings
        .open(spelling)
        .map_err(|e| match (spelling, config) {
            (Spelling::Keys, Some(path)) => anyhow::anyhow!("--config {}: {e}", path.display()),
            _ => anyhow::Error::msg(e),
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

/// What serves each model id, and the encoder of every video.
struct Loaded {
    engines: EngineMap,
    upstreams: UpstreamRoutes,
    encoder: VideoEncoder,
}

impl ServingArgs {
    /// Loads what serves each model id, printing one line per id that names the engine (the
    /// motion preview, a checkpoint, or an upstream and its key sources).
    fn load(&self) -> anyhow::Result<Loaded> {
        let Configured {
            served,
            routes,
            encoder,
        } = configured(self)?;
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
        println!("encoder: {}", encoder.describe());
        Ok(Loaded {
            engines,
            upstreams,
            encoder,
        })
    }

    /// `config` with these engines, routes and worker settings.
    pub fn apply(&self, config: ServerConfig) -> anyhow::Result<ServerConfig> {
        let Loaded {
            engines,
            upstreams,
            encoder,
        } = self.load()?;
        Ok(ServerConfig {
            engines,
            upstreams,
            render: RenderOptions {
                encoder,
                ..RenderOptions::default()
            },
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
