//! Which Wan checkpoint serves each model id: `gallop serve --config FILE` (TOML) or the
//! one-checkpoint shorthand `--model-dir DIR`. Everything is checked against each checkpoint's
//! `model_index.json` before any weights load, so a wrong file fails in a second, naming the key:
//!
//! ```toml
//! [models."alibaba/hh1-i2v"]
//! model_dir = "/models/Wan2.2-I2V-A14B-Diffusers"   # relative: from this file's folder
//! steps = 40          # optional; the checkpoint family's recipe otherwise
//! guidance = 3.5      # optional
//! guidance_2 = 3.5    # optional; two-expert (A14B) checkpoints only
//! device = "cuda:0"   # optional: cpu (default), cuda or cuda:N; CUDA builds only
//! dtype = "bf16"      # optional: f32 (default), bf16 or f16 (on the CPU: weights held, f32 compute)
//!
//! [models."alibaba/hh1.1-r2v"]
//! model_dir = "/models/Wan2.1-VACE-14B-diffusers"
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, anyhow, ensure};
use gallop_api::ModelId;
use gallop_engine::Engine;
use gallop_wan::engine::{check_compute, check_settings, class_name, model_served_by};
use gallop_wan::model_dir::{ModelIndex, PipelineClass};
use gallop_wan::{WanEngine, WanSettings};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    models: BTreeMap<String, Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    model_dir: PathBuf,
    steps: Option<usize>,
    guidance: Option<f64>,
    guidance_2: Option<f64>,
    device: Option<String>,
    dtype: Option<String>,
}

/// One model id's checkpoint, checked, weights not loaded yet.
#[derive(Debug)]
pub struct Checkpoint {
    pub model: ModelId,
    pub dir: PathBuf,
    pub settings: WanSettings,
}

/// Reads and checks a `--config` file.
pub fn read_config(path: &Path) -> anyhow::Result<Vec<Checkpoint>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--config: cannot read {}", path.display()))?;
    let file: ConfigFile =
        toml::from_str(&text).map_err(|e| anyhow!("--config {}: {e}", path.display()))?;
    ensure!(
        !file.models.is_empty(),
        "--config {}: `models` names no checkpoint; add a [models.\"MODEL-ID\"] table with \
         model_dir, or serve without --config for the motion preview",
        path.display()
    );
    let base = path.parent().unwrap_or(Path::new("."));
    file.models
        .into_iter()
        .map(|(id, entry)| {
            let key = format!("models.\"{id}\"");
            let model = ModelId::parse(&id).with_context(|| {
                format!(
                    "--config {}: {key}: unknown model id; the ids are {}",
                    path.display(),
                    ModelId::ALL.map(|m| m.as_str()).join(", ")
                )
            })?;
            let at_key = |e: anyhow::Error| anyhow!("--config {}: {key}.{e:#}", path.display());
            let settings = WanSettings {
                steps: entry.steps,
                guidance: entry.guidance,
                guidance_2: entry.guidance_2,
                device: parse_key("device", entry.device.as_deref()).map_err(at_key)?,
                dtype: parse_key("dtype", entry.dtype.as_deref()).map_err(at_key)?,
                ..Default::default()
            };
            let dir = base.join(&entry.model_dir);
            check(model, &dir, settings).map_err(at_key)
        })
        .collect()
}

/// A key's value parsed, or its default when absent; errors begin with the key.
fn parse_key<T: std::str::FromStr<Err = String> + Default>(
    key: &str,
    value: Option<&str>,
) -> anyhow::Result<T> {
    value.map_or(Ok(T::default()), |v| {
        v.parse().map_err(|e| anyhow!("{key}: {e}"))
    })
}

/// `--model-dir DIR`: the checkpoint serves the one id its pipeline class supports.
pub fn shorthand(dir: &Path, settings: WanSettings) -> anyhow::Result<Checkpoint> {
    // Named as the flags (`--device: ...`); check() repeats it harmlessly.
    check_compute(&settings).map_err(|e| anyhow!("--{e:#}"))?;
    let index = ModelIndex::read(dir).map_err(|e| anyhow!("--model-dir: {e:#}"))?;
    let model = model_served_by(index.class).with_context(|| {
        format!(
            "--model-dir {}: a {} checkpoint serves no model here: {}",
            dir.display(),
            class_name(index.class),
            needs_list()
        )
    })?;
    check(model, dir, settings).map_err(|e| anyhow!("--model-dir: {e:#}"))
}

/// The pipeline class each id needs, for messages.
fn needs_list() -> String {
    ModelId::ALL
        .map(|m| format!("{m} needs a {}", class_name(needed_class(m))))
        .join(", ")
}

fn needed_class(model: ModelId) -> PipelineClass {
    [PipelineClass::ImageToVideo, PipelineClass::Vace]
        .into_iter()
        .find(|&c| model_served_by(c) == Some(model))
        .expect("every model id has a pipeline class")
}

/// Checks that `dir` is a checkpoint that can serve `model` with `settings`. Errors start with
/// the key at fault (`model_dir: ...`, `guidance_2: ...`).
fn check(model: ModelId, dir: &Path, settings: WanSettings) -> anyhow::Result<Checkpoint> {
    ensure!(
        dir.is_dir(),
        "model_dir: {} is not a directory",
        dir.display()
    );
    let index = ModelIndex::read(dir).map_err(|e| anyhow!("model_dir: {e:#}"))?;
    ensure!(
        model_served_by(index.class) == Some(model),
        "model_dir: {} is a {} checkpoint, which cannot serve {model}: {model} needs a {}",
        dir.display(),
        class_name(index.class),
        class_name(needed_class(model))
    );
    // check_settings' and check_compute's messages begin with the setting's name.
    check_settings(&index, &settings)?;
    check_compute(&settings)?;
    Ok(Checkpoint {
        model,
        dir: dir.to_path_buf(),
        settings,
    })
}

/// A loaded engine for one model id, with where it computes (`cpu, f32`) for the startup lines.
pub struct Served {
    pub model: ModelId,
    pub engine: Arc<dyn Engine>,
    pub compute: String,
}

/// Loads the engines; a directory named by several ids on the same device and dtype loads once.
pub fn load(checkpoints: Vec<Checkpoint>) -> anyhow::Result<Vec<Served>> {
    Ok(load_wan(checkpoints)?
        .into_iter()
        .map(|(model, engine)| Served {
            model,
            compute: engine.compute(),
            engine: Arc::new(engine),
        })
        .collect())
}

fn load_wan(checkpoints: Vec<Checkpoint>) -> anyhow::Result<Vec<(ModelId, WanEngine)>> {
    let mut loaded = HashMap::new();
    let mut engines = Vec::new();
    for c in checkpoints {
        let same_dir = c.dir.canonicalize().unwrap_or_else(|_| c.dir.clone());
        let same = (same_dir, c.settings.device, c.settings.dtype);
        let pipeline = match loaded.get(&same) {
            Some(pipeline) => Arc::clone(pipeline),
            None => {
                let pipeline = WanEngine::load_pipeline(&c.dir, &c.settings)
                    .with_context(|| format!("loading {} for {}", c.dir.display(), c.model))?;
                tracing::info!(
                    "loaded {} for {} on {}",
                    c.dir.display(),
                    c.model,
                    c.settings.compute()
                );
                loaded.insert(same, Arc::clone(&pipeline));
                pipeline
            }
        };
        let engine = WanEngine::from_pipeline(pipeline, c.settings)?;
        engines.push((c.model, engine));
    }
    Ok(engines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gallop_wan::engine::{ComputeDevice, ComputeDtype};

    fn pipelines() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../gallop-wan/tests/fixtures/pipelines")
    }

    /// Writes `text` as a config file in a temp dir beside links to the fixture checkpoints.
    fn config(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gallop.toml");
        std::fs::write(
            &path,
            text.replace("FIXTURES", &pipelines().display().to_string()),
        )
        .unwrap();
        (dir, path)
    }

    fn error(text: &str) -> String {
        let (_dir, path) = config(text);
        format!("{:#}", read_config(&path).unwrap_err())
    }

    #[test]
    fn a_good_file_names_a_checkpoint_and_settings_per_id() {
        let (_dir, path) = config(
            r#"
            [models."alibaba/hh1-i2v"]
            model_dir = "FIXTURES/a14b/model"
            steps = 2
            guidance = 4.0
            guidance_2 = 2.0

            device = "cpu"
            dtype = "f32"

            [models."alibaba/hh1.1-r2v"]
            model_dir = "FIXTURES/vace/model"
            "#,
        );
        let checkpoints = read_config(&path).unwrap();
        assert_eq!(checkpoints.len(), 2);
        assert_eq!(checkpoints[0].model, ModelId::HhI2v);
        assert_eq!(checkpoints[0].settings.steps, Some(2));
        assert_eq!(checkpoints[0].settings.guidance_2, Some(2.0));
        assert_eq!(checkpoints[0].settings.device, ComputeDevice::Cpu);
        assert_eq!(checkpoints[0].settings.dtype, ComputeDtype::F32);
        assert_eq!(checkpoints[1].model, ModelId::HhR2v);
        assert!(checkpoints[1].dir.ends_with("vace/model"));
        assert_eq!(checkpoints[1].settings, WanSettings::default());
    }

    #[test]
    fn relative_dirs_are_from_the_files_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(pipelines().join("ti2v/model"), dir.path().join("ti2v"))
            .unwrap();
        let path = dir.path().join("serve.toml");
        std::fs::write(
            &path,
            "[models.\"alibaba/hh1-i2v\"]\nmodel_dir = \"ti2v\"\n",
        )
        .unwrap();
        let checkpoints = read_config(&path).unwrap();
        assert_eq!(checkpoints[0].dir, dir.path().join("ti2v"));
    }

    #[test]
    fn errors_name_the_key_and_the_rule() {
        for (text, wanted) in [
            (
                "[models.\"alibaba/hh2\"]\nmodel_dir = \"FIXTURES/ti2v/model\"\n",
                "models.\"alibaba/hh2\": unknown model id; the ids are alibaba/hh1-i2v, alibaba/hh1.1-r2v",
            ),
            (
                "[models.\"alibaba/hh1-i2v\"]\nmodel_dir = \"FIXTURES/nothing\"\n",
                "models.\"alibaba/hh1-i2v\".model_dir: ",
            ),
            (
                "[models.\"alibaba/hh1.1-r2v\"]\nmodel_dir = \"FIXTURES/ti2v/model\"\n",
                "models.\"alibaba/hh1.1-r2v\".model_dir: ",
            ),
            (
                "[models.\"alibaba/hh1-i2v\"]\nmodel_dir = \"FIXTURES/ti2v/model\"\nstepz = 3\n",
                "unknown field `stepz`",
            ),
            (
                "[model.\"alibaba/hh1-i2v\"]\nmodel_dir = \"FIXTURES/ti2v/model\"\n",
                "unknown field `model`",
            ),
            (
                "[models.\"alibaba/hh1-i2v\"]\nmodel_dir = \"FIXTURES/ti2v/model\"\nguidance_2 = 2.0\n",
                "models.\"alibaba/hh1-i2v\".guidance_2 needs a checkpoint with two experts",
            ),
            (
                "[models.\"alibaba/hh1-i2v\"]\nmodel_dir = \"FIXTURES/ti2v/model\"\nsteps = 0\n",
                "models.\"alibaba/hh1-i2v\".steps must be >= 1",
            ),
            (
                "[models.\"alibaba/hh1-i2v\"]\nsteps = 3\n",
                "missing field `model_dir`",
            ),
            ("models = {}\n", "`models` names no checkpoint"),
            (
                "[models.\"alibaba/hh1-i2v\"]\nmodel_dir = \"FIXTURES/ti2v/model\"\ndtype = \"fp16\"\n",
                "models.\"alibaba/hh1-i2v\".dtype: must be f32, bf16 or f16, got \"fp16\"",
            ),
            (
                "[models.\"alibaba/hh1-i2v\"]\nmodel_dir = \"FIXTURES/ti2v/model\"\ndevice = \"cuda:a\"\n",
                "models.\"alibaba/hh1-i2v\".device: must be cpu, cuda or cuda:N",
            ),
        ] {
            let err = error(text);
            assert!(err.contains(wanted), "{text}\nwanted {wanted:?} in: {err}");
        }
        assert!(
            error("[models.\"alibaba/hh1-i2v\"]\nmodel_dir = \"FIXTURES/nothing\"\n")
                .contains("is not a directory")
        );
        let err = error("[models.\"alibaba/hh1.1-r2v\"]\nmodel_dir = \"FIXTURES/ti2v/model\"\n");
        assert!(
            err.contains("is a WanImageToVideoPipeline checkpoint, which cannot serve alibaba/hh1.1-r2v: alibaba/hh1.1-r2v needs a WanVACEPipeline"),
            "{err}"
        );
    }

    #[test]
    fn a_directory_named_twice_loads_once() {
        let dir = pipelines().join("ti2v/model");
        let entry = |steps| Checkpoint {
            model: ModelId::HhI2v,
            dir: dir.clone(),
            settings: WanSettings {
                steps: Some(steps),
                ..Default::default()
            },
        };
        let engines = load_wan(vec![entry(1), entry(2)]).unwrap();
        assert!(std::ptr::eq(
            engines[0].1.pipeline(),
            engines[1].1.pipeline()
        ));
        assert_eq!((engines[0].1.steps(), engines[1].1.steps()), (1, 2));
        assert_eq!(engines[0].1.compute(), "cpu, f32");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_in_a_cpu_build_is_refused_naming_the_key_or_the_flag() {
        let err = error(
            "[models.\"alibaba/hh1-i2v\"]\nmodel_dir = \"FIXTURES/ti2v/model\"\ndevice = \"cuda\"\n",
        );
        assert!(
            err.contains("models.\"alibaba/hh1-i2v\".device: cuda:0 needs CUDA")
                && err.contains("cargo build --release --features cuda"),
            "{err}"
        );
        let settings = WanSettings {
            device: ComputeDevice::Cuda(1),
            ..Default::default()
        };
        let err = format!(
            "{:#}",
            shorthand(&pipelines().join("ti2v/model"), settings).unwrap_err()
        );
        assert!(err.starts_with("--device: cuda:1 needs CUDA"), "{err}");
    }

    #[test]
    fn the_model_dir_shorthand_serves_the_id_of_its_class() {
        let vace = shorthand(&pipelines().join("vace/model"), WanSettings::default()).unwrap();
        assert_eq!(vace.model, ModelId::HhR2v);
        let i2v = shorthand(&pipelines().join("i2v21/model"), WanSettings::default()).unwrap();
        assert_eq!(i2v.model, ModelId::HhI2v);
        let err = format!(
            "{:#}",
            shorthand(&pipelines().join("t2v/model"), WanSettings::default()).unwrap_err()
        );
        assert!(
            err.contains("a WanPipeline checkpoint serves no model here")
                && err.contains("alibaba/hh1-i2v needs a WanImageToVideoPipeline"),
            "{err}"
        );
    }
}
