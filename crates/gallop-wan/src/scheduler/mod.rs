//! Diffusion schedulers as Wan uses them, read from diffusers' `scheduler_config.json`:
//! flow-matching UniPC (the Wan default) and flow-matching Euler. Sigma and timestep sequences
//! follow diffusers' arithmetic exactly (float64 where it uses numpy, float32 where it uses torch),
//! so a trajectory driven by the same model outputs lands on the same latents.

mod flow_euler;
mod numpy;
mod recipe;
mod unipc;
mod unipc_coefficients;

use std::path::Path;

use crate::error::{Context, bail};
use candle_core::Tensor;

pub use flow_euler::{FlowMatchEulerConfig, FlowMatchEulerScheduler};
pub use recipe::{RECIPES, Recipe, RecipeName, ScheduleSettings, SchedulerKind, check_timesteps};
pub use unipc::{UniPcConfig, UniPcScheduler};

/// Either scheduler, chosen by the `_class_name` of `scheduler_config.json`.
#[derive(Debug, Clone)]
pub enum Scheduler {
    UniPc(UniPcScheduler),
    FlowMatchEuler(FlowMatchEulerScheduler),
}

impl Scheduler {
    /// Read `scheduler_config.json` from a scheduler folder (or the file itself).
    pub fn from_dir(path: &Path) -> crate::Result<Self> {
        let file = if path.is_dir() {
            path.join("scheduler_config.json")
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        Self::from_json(&text).with_context(|| format!("in {}", file.display()))
    }

    /// Parse a scheduler config; `_class_name` picks the scheduler.
    pub fn from_json(text: &str) -> crate::Result<Self> {
        let value: serde_json::Value = serde_json::from_str(text)?;
        let class = value
            .get("_class_name")
            .and_then(|v| v.as_str())
            .context("scheduler config: field `_class_name` is missing")?;
        match class {
            "UniPCMultistepScheduler" => Ok(Self::UniPc(UniPcScheduler::new(
                serde_json::from_value(value)?,
            )?)),
            "FlowMatchEulerDiscreteScheduler" => Ok(Self::FlowMatchEuler(
                FlowMatchEulerScheduler::new(serde_json::from_value(value)?)?,
            )),
            other => bail!(
                "scheduler config: `_class_name` {other:?} is not supported: expected UniPCMultistepScheduler or FlowMatchEulerDiscreteScheduler"
            ),
        }
    }

    /// Build the schedule for `num_inference_steps` and reset the step state.
    pub fn set_timesteps(&mut self, num_inference_steps: usize) -> crate::Result<()> {
        match self {
            Self::UniPc(s) => s.set_timesteps(num_inference_steps),
            Self::FlowMatchEuler(s) => s.set_timesteps(num_inference_steps),
        }
    }

    /// The timesteps the transformer sees, one per step.
    pub fn timesteps(&self) -> &[f32] {
        match self {
            Self::UniPc(s) => s.timesteps(),
            Self::FlowMatchEuler(s) => s.timesteps(),
        }
    }

    /// The noise levels, one per step plus the final one.
    pub fn sigmas(&self) -> &[f32] {
        match self {
            Self::UniPc(s) => s.sigmas(),
            Self::FlowMatchEuler(s) => s.sigmas(),
        }
    }

    /// Advance one step: the model's flow prediction at the current sample gives the next sample.
    pub fn step(&mut self, model_output: &Tensor, sample: &Tensor) -> crate::Result<Tensor> {
        match self {
            Self::UniPc(s) => s.step(model_output, sample),
            Self::FlowMatchEuler(s) => s.step(model_output, sample),
        }
    }
}

/// `t * c`, with `c` rounded to the tensor's dtype first (as a 0-d tensor would be).
fn scale(t: &Tensor, c: f64) -> candle_core::Result<Tensor> {
    t.affine(c, 0.0)
}

/// `t / c` with `c` in the tensor's dtype: a true division, not a product with the reciprocal.
fn div_scalar(t: &Tensor, c: f64) -> candle_core::Result<Tensor> {
    let c = Tensor::new(c, t.device())?.to_dtype(t.dtype())?;
    t.broadcast_div(&c)
}
