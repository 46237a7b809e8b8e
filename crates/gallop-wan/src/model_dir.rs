//! A diffusers model directory: `model_index.json` names the pipeline class and which component
//! folders exist (`transformer/`, `transformer_2/`, `vae/`, `text_encoder/`, `tokenizer/`,
//! `image_encoder/`, `image_processor/`, `scheduler/`), as the `Wan-AI/*-Diffusers` repos ship.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Context, bail, ensure};
use serde_json::Value;

/// Which pipeline recipe a checkpoint is saved for (`_class_name` of `model_index.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineClass {
    /// `WanPipeline`: text to video (also TI2V-5B used text-only, and T2V-A14B).
    TextToVideo,
    /// `WanImageToVideoPipeline`: TI2V-5B (expand_timesteps), Wan2.1-I2V (CLIP), I2V-A14B.
    ImageToVideo,
    /// `WanVACEPipeline`: reference images (r2v) through VACE control blocks.
    Vace,
}

impl PipelineClass {
    pub fn parse(name: &str) -> crate::Result<Self> {
        Ok(match name {
            "WanPipeline" => Self::TextToVideo,
            "WanImageToVideoPipeline" => Self::ImageToVideo,
            "WanVACEPipeline" => Self::Vace,
            other => bail!(
                "model_index.json: `_class_name` {other:?} is not supported: expected WanPipeline, \
                 WanImageToVideoPipeline or WanVACEPipeline"
            ),
        })
    }
}

/// `model_index.json`, read and checked against the folders on disk.
#[derive(Debug, Clone)]
pub struct ModelIndex {
    pub dir: PathBuf,
    pub class: PipelineClass,
    /// A14B: the fraction of `num_train_timesteps` at and above which `transformer` (the
    /// high-noise expert) runs; below it `transformer_2`.
    pub boundary_ratio: Option<f64>,
    /// TI2V-5B: one timestep per token, the clean first-frame latent blended in.
    pub expand_timesteps: bool,
    /// Component name -> (library, class), for the components the checkpoint has.
    pub components: BTreeMap<String, (String, String)>,
}

impl ModelIndex {
    /// Read `DIR/model_index.json`; every named component must have its folder.
    pub fn read(dir: &Path) -> crate::Result<Self> {
        let path = dir.join("model_index.json");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "{} is not a diffusers model directory: cannot read {}",
                dir.display(),
                path.display()
            )
        })?;
        let json: Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let obj = json
            .as_object()
            .with_context(|| format!("{}: must hold a JSON object", path.display()))?;
        let class_name = obj
            .get("_class_name")
            .and_then(Value::as_str)
            .with_context(|| format!("{}: field `_class_name` is missing", path.display()))?;
        let class = PipelineClass::parse(class_name)?;
        let boundary_ratio = match obj.get("boundary_ratio") {
            None | Some(Value::Null) => None,
            Some(v) => {
                let r = v.as_f64().with_context(|| {
                    format!("{}: `boundary_ratio` must be a number", path.display())
                })?;
                ensure!(
                    r > 0.0 && r < 1.0,
                    "{}: `boundary_ratio` must be between 0 and 1, got {r}",
                    path.display()
                );
                Some(r)
            }
        };
        let expand_timesteps = match obj.get("expand_timesteps") {
            None | Some(Value::Null) => false,
            Some(v) => v.as_bool().with_context(|| {
                format!(
                    "{}: `expand_timesteps` must be true or false",
                    path.display()
                )
            })?,
        };
        let mut components = BTreeMap::new();
        for (name, value) in obj {
            if name.starts_with('_') {
                continue;
            }
            // Components are [library, class]; [null, null] means absent.
            if let Some([lib, cls]) = value.as_array().map(Vec::as_slice)
                && let (Some(lib), Some(cls)) = (lib.as_str(), cls.as_str())
            {
                components.insert(name.clone(), (lib.to_string(), cls.to_string()));
            }
        }
        let index = Self {
            dir: dir.to_path_buf(),
            class,
            boundary_ratio,
            expand_timesteps,
            components,
        };
        for name in [
            "transformer",
            "vae",
            "scheduler",
            "text_encoder",
            "tokenizer",
        ] {
            ensure!(
                index.has(name),
                "{}: component `{name}` is missing; a Wan pipeline needs transformer, vae, \
                 scheduler, text_encoder and tokenizer",
                path.display()
            );
        }
        if index.boundary_ratio.is_some() {
            ensure!(
                index.has("transformer_2"),
                "{}: `boundary_ratio` is set, so component `transformer_2` (the low-noise expert) is required",
                path.display()
            );
        }
        for name in index.components.keys() {
            let folder = dir.join(name);
            ensure!(
                folder.is_dir(),
                "{}: component `{name}` is listed but its folder {} does not exist",
                path.display(),
                folder.display()
            );
        }
        Ok(index)
    }

    pub fn has(&self, component: &str) -> bool {
        self.components.contains_key(component)
    }

    /// The folder of a component.
    pub fn component_dir(&self, component: &str) -> PathBuf {
        self.dir.join(component)
    }
}
