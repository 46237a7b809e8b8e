//! Which engine serves each model id. The mapping of the product's ids to Wan pipelines lives
//! here, with the engines that serve them, so the model math never names an id.
//!
//! The operator names a checkpoint per id in a TOML file (`gallop serve --config FILE`) or one
//! checkpoint for the id its pipeline serves (`--model-dir DIR`); either way every entry is a
//! [`WanSettings`], the same struct the flags fill. Everything is checked against each
//! checkpoint's `model_index.json` before any weights load, so a wrong file fails in a second,
//! naming the key:
//!
//! ```toml
//! [models."alibaba/hh1-i2v"]
//! model_dir = "/models/Wan2.2-I2V-A14B-Diffusers"   # relative: from this file's folder
//! steps = 40          # optional; the checkpoint family's recipe otherwise
//! guidance = 3.5      # optional
//! guidance_2 = 3.5    # optional; two-expert (A14B) checkpoints only
//! device = "cuda:0"   # optional: cpu (default), cuda or cuda:N; CUDA builds only
//! dtype = "bf16"      # optional: f32 (default), bf16 or f16 (on the CPU: weights held, f32 compute)
//! quantize = "fp8"    # optional: int8 or fp8 matrices made at load
//! recipe = "lightning-4step"  # optional: a distillation's steps, guidance and schedule
//! loras = [{ path = "loras/high_noise.safetensors", strength = 1.0 }]  # relative: from this file
//! loras_2 = [{ path = "loras/low_noise.safetensors" }]   # A14B's low-noise expert
//! # also: scheduler = "euler" | "unipc", shift = 5.0, timesteps = [1000, 750, 500, 250],
//! #       release_text_encoder = true
//!
//! [models."alibaba/hh1.1-r2v"]
//! model_dir = "/models/Wan2.1-VACE-14B-diffusers"
//! ```
//!
//! Top-level keys, before any table, choose the H.264 encoder of every video ([`encoder`]):
//! `encoder = "ffmpeg"`, `ffmpeg = "/usr/bin/ffmpeg"`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use gallop_api::ModelId;
use gallop_engine::{Engine, Task};
use gallop_upstream::UpstreamRoute;
use gallop_wan::engine::{CheckedSettings, class_for, class_name, task_of};
use gallop_wan::model_dir::ModelIndex;
use gallop_wan::pipeline::WanPipeline;
use gallop_wan::settings::SettingError;
use gallop_wan::{WanDebug, WanEngine, WanSettings};

pub use encoder::{EncoderName, EncoderSettings, Spelling};
use file::ModelEntry;

pub mod encoder;
mod file;
mod upstream;

/// A configuration that cannot be served, or a checkpoint that failed to load. The message
/// names the flag (`--device: ...`) or the key (`models."alibaba/hh1-i2v".steps ...`).
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Config(String),
    #[error("loading {dir} for {model}: {source}")]
    Load {
        dir: PathBuf,
        model: ModelId,
        source: gallop_wan::Error,
    },
}

type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// One model id's checkpoint, checked, weights not loaded yet.
#[derive(Debug)]
pub struct Checkpoint {
    pub model: ModelId,
    pub checked: CheckedSettings,
}

impl Checkpoint {
    pub fn settings(&self) -> &WanSettings {
        &self.checked.settings
    }

    pub fn dir(&self) -> &Path {
        &self.checked.index.dir
    }
}

/// What a `--config` file serves: checkpoints, and ids routed to an upstream endpoint; and the
/// encoder it names (not yet opened: the caller weighs it against the flags).
#[derive(Debug)]
pub struct Config {
    pub checkpoints: Vec<Checkpoint>,
    pub upstreams: Vec<(ModelId, UpstreamRoute)>,
    pub encoder: EncoderSettings,
}

/// Reads and checks a `--config` file; `api_key_env` variables are read from the environment.
pub fn read_config(path: &Path) -> Result<Config> {
    read_config_with_env(path, &|var| std::env::var(var).ok())
}

/// [`read_config`] with the environment given (tests).
pub fn read_config_with_env(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config> {
    let config_error =
        |message: String| RegistryError::Config(format!("--config {}: {message}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| {
        RegistryError::Config(format!("--config: cannot read {}: {e}", path.display()))
    })?;
    let file = file::parse(&text).map_err(config_error)?;
    if file.models.is_empty() {
        return Err(config_error(
            "`models` names no checkpoint; add a [models.\"MODEL-ID\"] table with model_dir \
             (or upstream), or serve without --config for the motion preview"
                .into(),
        ));
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let (mut checkpoints, mut routed) = (Vec::new(), Vec::new());
    for (id, entry) in file.models {
        match entry {
            ModelEntry::Checkpoint(settings) => {
                let key = format!("models.\"{id}\"");
                let checkpoint = entry_checkpoint(&id, settings, base)
                    .map_err(|e| config_error(format!("{key}{e}")))?;
                checkpoints.push(checkpoint);
            }
            ModelEntry::Upstream(entry) => routed.push((id, entry)),
        }
    }
    let upstreams = upstream::routes(&file.upstreams, routed, env).map_err(config_error)?;
    let mut encoder = file.encoder;
    // A relative path is from the file's folder, as model_dir; a bare name is looked up on PATH.
    encoder.ffmpeg = encoder.ffmpeg.map(|p| match p.components().count() > 1 {
        true => base.join(p),
        false => p,
    });
    Ok(Config {
        checkpoints,
        upstreams,
        encoder,
    })
}

/// One entry checked; the message follows the entry's key (`.steps must be ...`, `: ...`).
fn entry_checkpoint(
    id: &str,
    mut settings: WanSettings,
    base: &Path,
) -> Result<Checkpoint, String> {
    let model = ModelId::parse(id).ok_or_else(|| {
        format!(
            ": unknown model id; the ids are {}",
            ModelId::ALL.map(|m| m.as_str()).join(", ")
        )
    })?;
    let Some(dir) = settings.model_dir.take() else {
        return Err(": missing field `model_dir`".into());
    };
    settings.model_dir = Some(base.join(dir));
    for lora in settings.loras.iter_mut().chain(settings.loras_2.iter_mut()) {
        lora.path = base.join(&lora.path);
    }
    check(model, settings).map_err(|e| match e.message.starts_with(e.key) {
        true => format!(".{}", e.message),
        false => format!(".{}: {}", e.key, e.message),
    })
}

/// `--model-dir DIR` (with the other flags): the checkpoint serves the one id its pipeline
/// class does.
pub fn shorthand(settings: WanSettings) -> Result<Checkpoint> {
    let refuse = |r: SettingError| RegistryError::Config(r.as_flag());
    let dir = settings.model_dir.clone().unwrap_or_default();
    let index = ModelIndex::read(&dir).map_err(|e| refuse(model_dir_refusal(e)))?;
    let model = served_by(&index).ok_or_else(|| {
        RegistryError::Config(format!(
            "--model-dir {}: a {} checkpoint serves no model here: {}",
            dir.display(),
            class_name(index.class),
            needs_list()
        ))
    })?;
    check(model, settings).map_err(refuse)
}

/// The engine for `gallop generate`: the preview without a checkpoint, else the checkpoint,
/// which must do `model`'s task, with the run's debug overrides. Errors name the flag.
pub fn for_generate(model: ModelId, settings: WanSettings, debug: WanDebug) -> Result<Served> {
    refuse_settings_without_checkpoint(&settings, &debug)?;
    if settings.model_dir.is_none() {
        return Ok(Served::preview(model));
    }
    let checkpoint = check(model, settings).map_err(|r| RegistryError::Config(r.as_flag()))?;
    let (model, engine) = load_wan(vec![checkpoint])?.remove(0);
    Ok(Served::wan(model, engine.with_debug(debug)))
}

/// Engine settings or debug overrides given without `--model-dir` have nothing to apply to:
/// the motion preview takes none. Cheap, so callers check it before any other work.
pub fn refuse_settings_without_checkpoint(settings: &WanSettings, debug: &WanDebug) -> Result<()> {
    if settings.without_checkpoint() || (settings.model_dir.is_none() && debug.is_set()) {
        return Err(RegistryError::Config(
            "engine settings (--steps, --guidance, --device, ...) need --model-dir: without a \
             checkpoint the motion preview runs, and it takes none"
                .into(),
        ));
    }
    Ok(())
}

/// The model id a checkpoint's pipeline class serves: the id whose task it does.
fn served_by(index: &ModelIndex) -> Option<ModelId> {
    let task = task_of(index.class)?;
    ModelId::ALL.into_iter().find(|&m| Task::of(m) == task)
}

/// The pipeline class each id needs, for messages.
fn needs_list() -> String {
    ModelId::ALL
        .map(|m| format!("{m} needs a {}", class_name(class_for(Task::of(m)))))
        .join(", ")
}

fn model_dir_refusal(e: gallop_wan::Error) -> SettingError {
    SettingError::new("model_dir", format!("model_dir: {e}"))
}

/// Checks that `settings.model_dir` is a checkpoint that can serve `model` with `settings`,
/// and opens its device: the one check of every setting.
fn check(model: ModelId, settings: WanSettings) -> Result<Checkpoint, SettingError> {
    let dir = settings.model_dir.clone().unwrap_or_default();
    if !dir.is_dir() {
        let message = format!("model_dir: {} is not a directory", dir.display());
        return Err(SettingError::new("model_dir", message));
    }
    let index = ModelIndex::read(&dir).map_err(model_dir_refusal)?;
    if served_by(&index) != Some(model) {
        let message = format!(
            "model_dir: {} is a {} checkpoint, which cannot serve {model}: {model} needs a {}",
            dir.display(),
            class_name(index.class),
            class_name(class_for(Task::of(model)))
        );
        return Err(SettingError::new("model_dir", message));
    }
    let checked = settings.checked().map_err(|e| match e {
        gallop_wan::Error::Setting(s) => s,
        other => model_dir_refusal(other),
    })?;
    Ok(Checkpoint { model, checked })
}

/// A loaded engine for one model id, with where it computes (`cpu, f32`) for the startup lines;
/// None for the preview.
pub struct Served {
    pub model: ModelId,
    pub engine: Arc<dyn Engine>,
    pub compute: Option<String>,
    /// How the checkpoint samples and which LoRAs it merged ([`WanEngine::summary`]).
    pub summary: Vec<String>,
}

impl Served {
    fn preview(model: ModelId) -> Self {
        Self {
            model,
            engine: Arc::new(gallop_engine::PreviewEngine),
            compute: None,
            summary: Vec::new(),
        }
    }

    fn wan(model: ModelId, engine: WanEngine) -> Self {
        Self {
            model,
            compute: Some(engine.compute()),
            summary: engine.summary(),
            engine: Arc::new(engine),
        }
    }
}

/// Loads the engines; a directory named by several ids on the same device and dtype loads once.
pub fn load(checkpoints: Vec<Checkpoint>) -> Result<Vec<Served>> {
    let engines = load_wan(checkpoints)?;
    Ok(engines
        .into_iter()
        .map(|(m, e)| Served::wan(m, e))
        .collect())
}

fn load_wan(checkpoints: Vec<Checkpoint>) -> Result<Vec<(ModelId, WanEngine)>> {
    // Pipelines loaded so far, by folder and the settings that shaped their weights.
    let mut loaded: Vec<(PathBuf, WanSettings, Arc<WanPipeline>)> = Vec::new();
    let mut engines = Vec::new();
    for c in checkpoints {
        let (model, dir) = (c.model, c.dir().to_path_buf());
        let load_error = |source| RegistryError::Load {
            dir: dir.clone(),
            model,
            source,
        };
        let folder = dir.canonicalize().unwrap_or_else(|_| dir.clone());
        let same = loaded
            .iter()
            .find(|(f, s, _)| *f == folder && s.loads_like(c.settings()));
        let pipeline = match same {
            Some((_, _, pipeline)) => Arc::clone(pipeline),
            None => {
                let pipeline = c.checked.load_pipeline().map_err(load_error)?;
                let compute = c.settings().compute();
                tracing::info!("loaded {} for {model} on {compute}", dir.display());
                loaded.push((folder, c.settings().clone(), Arc::clone(&pipeline)));
                pipeline
            }
        };
        let engine = WanEngine::new(pipeline, c.checked).map_err(load_error)?;
        engines.push((model, engine));
    }
    Ok(engines)
}

#[cfg(test)]
mod tests;
