//! Loading component weights from the diffusers layout: one `*.safetensors` file or shards listed
//! in `*.safetensors.index.json`, memory-mapped, any float dtype read as the compute dtype.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;

/// The weight files of one component folder: the shards an index names, else every safetensors file.
pub fn weight_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut index = None;
    let mut singles = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if name.ends_with(".safetensors.index.json") {
            index = Some(path);
        } else if name.ends_with(".safetensors") {
            singles.push(path);
        }
    }
    if let Some(index) = index {
        let text = std::fs::read_to_string(&index)?;
        let json: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", index.display()))?;
        let map = json["weight_map"]
            .as_object()
            .with_context(|| format!("{} has no weight_map", index.display()))?;
        let mut files: Vec<PathBuf> = map
            .values()
            .filter_map(|v| v.as_str())
            .map(|f| dir.join(f))
            .collect();
        files.sort();
        files.dedup();
        return Ok(files);
    }
    if singles.is_empty() {
        bail!("no .safetensors weights in {}", dir.display());
    }
    singles.sort();
    Ok(singles)
}

/// A VarBuilder over the component's weights, memory-mapped; tensors convert to `dtype` on read.
pub fn var_builder(
    dir: &Path,
    dtype: DType,
    device: &Device,
) -> anyhow::Result<VarBuilder<'static>> {
    let files = weight_files(dir)?;
    // SAFETY: the files are not modified while mapped; that is the contract of a model directory.
    Ok(unsafe { VarBuilder::from_mmaped_safetensors(&files, dtype, device)? })
}

/// Read a component's `config.json` into its serde config type.
pub fn read_config<T: serde::de::DeserializeOwned>(dir: &Path) -> anyhow::Result<T> {
    let path = dir.join("config.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}
