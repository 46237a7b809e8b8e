//! The Wan diffusion transformer (diffusers `WanTransformer3DModel` and
//! `WanVACETransformer3DModel`), f32 on CPU, any device via candle.

mod attention;
mod block;
mod config;
mod embeddings;
mod fused;
pub mod keys;
mod layers;
mod model;
mod rope;

use std::collections::HashMap;
use std::path::Path;

use crate::error::Context;
use candle_core::{DType, Device, Tensor};

pub use attention::{AttentionTiling, attention};
pub use config::{TransformerClass, TransformerConfig};
pub use layers::Linear;
pub use model::{TransformerInputs, WanTransformer, WeightChanges};

/// `gallop debug forward --component transformer`: inputs named as diffusers' forward arguments,
/// output `sample`. Runs in f32 on the CPU.
pub fn debug_forward(model_dir: &Path, inputs: &Path, output: &Path) -> crate::Result<()> {
    let device = Device::Cpu;
    let model = WanTransformer::load(model_dir, DType::F32, &device)?;
    let tensors = candle_core::safetensors::load(inputs, &device)
        .with_context(|| format!("reading {}", inputs.display()))?;
    let inputs = inputs_from_tensors(tensors)?;
    let sample = model.forward(&inputs)?;
    let out: HashMap<String, Tensor> = [("sample".to_string(), sample)].into();
    candle_core::safetensors::save(&out, output)
        .with_context(|| format!("writing {}", output.display()))?;
    Ok(())
}

/// Build the forward arguments from tensors named as diffusers names them.
pub fn inputs_from_tensors(mut t: HashMap<String, Tensor>) -> crate::Result<TransformerInputs> {
    const KNOWN: [&str; 6] = [
        "hidden_states",
        "timestep",
        "encoder_hidden_states",
        "encoder_hidden_states_image",
        "control_hidden_states",
        "control_hidden_states_scale",
    ];
    if let Some(unknown) = t.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        crate::error::bail!("unknown transformer input {unknown:?}: expected one of {KNOWN:?}");
    }
    let mut required = |name: &str| {
        t.remove(name)
            .with_context(|| format!("transformer input {name:?} is missing"))
    };
    let hidden_states = required("hidden_states")?.to_dtype(DType::F32)?;
    let timestep = required("timestep")?.to_dtype(DType::F32)?;
    let encoder_hidden_states = required("encoder_hidden_states")?.to_dtype(DType::F32)?;
    let optional = |t: &mut HashMap<String, Tensor>, name: &str| -> crate::Result<Option<Tensor>> {
        Ok(match t.remove(name) {
            Some(x) => Some(x.to_dtype(DType::F32)?),
            None => None,
        })
    };
    Ok(TransformerInputs {
        encoder_hidden_states_image: optional(&mut t, "encoder_hidden_states_image")?,
        control_hidden_states: optional(&mut t, "control_hidden_states")?,
        control_hidden_states_scale: optional(&mut t, "control_hidden_states_scale")?,
        hidden_states,
        timestep,
        encoder_hidden_states,
    })
}
