//! LoRA adapters for the Wan transformer, merged into the weights as they load (a step then
//! costs nothing extra). Reads the key formats users have:
//!
//! - diffusers / PEFT: `transformer.blocks.0.attn1.to_q.lora_A.weight` / `lora_B.weight`
//!   (`lora_B.bias` too), scaled by `lora_alpha / rank` when the file's `lora_adapter_metadata`
//!   gives an alpha, else by 1;
//! - original Wan, lightx2v, ComfyUI: `diffusion_model.blocks.0.self_attn.q.lora_down.weight` /
//!   `lora_up.weight` (or `lora_A` / `lora_B`) with `.alpha` (scale `alpha / rank`, else 1), and
//!   whole-tensor deltas `.diff` (weight) and `.diff_b` (bias);
//! - kohya / musubi-tuner: `lora_unet_blocks_0_self_attn_q.lora_down.weight` with `.alpha`.
//!
//! Every delta is `strength * scale * up @ down` (or `strength * diff`), added to the f32 weight
//! before it is converted to the dtype it is held in. Nothing in a file is ignored: a key of
//! no known form, a module the checkpoint does not have and a shape that does not fit are
//! refused, naming the key and the file.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use candle_core::{DType, Tensor};

use crate::transformer::keys;
use crate::weights::TensorFile;

/// One `--lora PATH[:STRENGTH]` (or a `loras` entry of the config).
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoraSpec {
    pub path: PathBuf,
    #[serde(default = "unit_strength")]
    pub strength: f64,
}

fn unit_strength() -> f64 {
    1.0
}

impl FromStr for LoraSpec {
    type Err = String;

    /// `PATH` or `PATH:STRENGTH`; a path that itself ends in `:text` that is not a number is
    /// taken whole.
    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("must be PATH or PATH:STRENGTH, got an empty value".into());
        }
        let (path, strength) = match s.rsplit_once(':') {
            Some((path, strength)) if !path.is_empty() => match strength.parse::<f64>() {
                Ok(v) if v.is_finite() => (path, v),
                Ok(_) => {
                    return Err(format!(
                        "strength must be a finite number, got {strength:?}"
                    ));
                }
                Err(_) => (s, 1.0),
            },
            _ => (s, 1.0),
        };
        Ok(Self {
            path: PathBuf::from(path),
            strength,
        })
    }
}

/// Why a LoRA file was refused; each names the file and, where one is at fault, the key.
#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    #[error("LoRA {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error(
        "LoRA {path} is not a LoRA: none of its {count} tensors is a lora_A/lora_B, \
         lora_down/lora_up, .diff or .diff_b tensor (first: {first:?})"
    )]
    NotALora {
        path: PathBuf,
        count: usize,
        first: String,
    },
    #[error(
        "LoRA {path}: key {key:?} is not a LoRA tensor of a known form \
         (expected .lora_A/.lora_B/.lora_down/.lora_up .weight, .alpha, .diff or .diff_b)"
    )]
    UnknownKey { path: PathBuf, key: String },
    #[error(
        "LoRA {path}: key {key:?} matches no module of the {component} \
         (it would change {target:?}, which the checkpoint does not have)"
    )]
    NoModule {
        path: PathBuf,
        key: String,
        component: String,
        target: String,
    },
    #[error(
        "LoRA {path}: key {key:?} has shape {got:?}, which does not fit {target:?} of shape {expected:?}: {rule}"
    )]
    Shape {
        path: PathBuf,
        key: String,
        target: String,
        got: Vec<usize>,
        expected: Vec<usize>,
        rule: &'static str,
    },
    #[error("LoRA {path}: key {key:?} has no matching {missing} tensor")]
    Unpaired {
        path: PathBuf,
        key: String,
        missing: &'static str,
    },
}

/// The key convention a file uses (reported in the summary line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoraFormat {
    /// `transformer.` (or bare) diffusers module names, `lora_A` / `lora_B`.
    Diffusers,
    /// `diffusion_model.` original Wan names (lightx2v, ComfyUI), `lora_down` / `lora_up` or
    /// `lora_A` / `lora_B`, `.alpha`, `.diff`, `.diff_b`.
    OriginalWan,
    /// `lora_unet_` with underscores for dots (kohya, musubi-tuner).
    Kohya,
}

impl std::fmt::Display for LoraFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Diffusers => "diffusers/PEFT keys",
            Self::OriginalWan => "original Wan/lightx2v keys",
            Self::Kohya => "kohya/musubi-tuner keys",
        })
    }
}

/// The parts of a LoRA key after its module name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Down,
    Up,
    UpBias,
    Alpha,
    Diff,
    DiffBias,
}

const SUFFIXES: [(&str, Part); 9] = [
    (".lora_A.weight", Part::Down),
    (".lora_down.weight", Part::Down),
    (".lora_B.weight", Part::Up),
    (".lora_up.weight", Part::Up),
    (".lora_B.bias", Part::UpBias),
    (".lora_up.bias", Part::UpBias),
    (".alpha", Part::Alpha),
    (".diff_b", Part::DiffBias),
    (".diff", Part::Diff),
];

/// A module's tensors in one file, by key.
#[derive(Debug, Default, Clone)]
struct ModuleKeys {
    down: Option<String>,
    up: Option<String>,
    up_bias: Option<String>,
    alpha: Option<String>,
    diff: Option<String>,
    diff_bias: Option<String>,
}

/// One change a LoRA makes to one checkpoint tensor.
#[derive(Debug, Clone)]
pub(crate) enum Delta {
    /// `scale * up @ down`.
    LowRank {
        up: String,
        down: String,
        scale: f64,
    },
    /// `scale * tensor`, the tensor shaped as the target.
    Whole { key: String, scale: f64 },
}

/// A LoRA file read and mapped onto diffusers module names (not yet onto a checkpoint).
#[derive(Debug)]
pub struct Lora {
    path: PathBuf,
    format: LoraFormat,
    file: TensorFile,
    /// diffusers module name -> its keys.
    modules: BTreeMap<String, ModuleKeys>,
    /// `lora_alpha` from diffusers' `lora_adapter_metadata`, with per-module overrides.
    metadata_alpha: Option<f64>,
    alpha_pattern: HashMap<String, f64>,
}

impl Lora {
    /// Read a LoRA file's key table (the tensors stay on disk until merged).
    pub fn open(path: &Path) -> Result<Self, LoraError> {
        let read_error = |message: String| LoraError::Read {
            path: path.to_path_buf(),
            message,
        };
        let file = TensorFile::open(path).map_err(|e| read_error(format!("{e:#}")))?;
        let names: Vec<String> = file.names().map(str::to_string).collect();
        let is_lora = names
            .iter()
            .any(|k| split_part(k).is_some_and(|(_, p)| p != Part::Alpha));
        if !is_lora {
            let mut sorted = names.clone();
            sorted.sort();
            return Err(LoraError::NotALora {
                path: path.to_path_buf(),
                count: names.len(),
                first: sorted.into_iter().next().unwrap_or_default(),
            });
        }
        let format = detect_format(&names);
        let mut modules: BTreeMap<String, ModuleKeys> = BTreeMap::new();
        for key in names {
            let unknown = || LoraError::UnknownKey {
                path: path.to_path_buf(),
                key: key.clone(),
            };
            let (module, part) = split_part(&key).ok_or_else(unknown)?;
            let module = diffusers_module(module, format).ok_or_else(unknown)?;
            let entry = modules.entry(module).or_default();
            let slot = match part {
                Part::Down => &mut entry.down,
                Part::Up => &mut entry.up,
                Part::UpBias => &mut entry.up_bias,
                Part::Alpha => &mut entry.alpha,
                Part::Diff => &mut entry.diff,
                Part::DiffBias => &mut entry.diff_bias,
            };
            if slot.is_some() {
                // Two spellings of one module's tensor (lora_A and lora_down, say).
                return Err(unknown());
            }
            *slot = Some(key);
        }
        let (metadata_alpha, alpha_pattern) = adapter_alpha(&file);
        Ok(Self {
            path: path.to_path_buf(),
            format,
            file,
            modules,
            metadata_alpha,
            alpha_pattern,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn format(&self) -> LoraFormat {
        self.format
    }

    /// How many modules the file changes.
    pub fn module_count(&self) -> usize {
        self.modules.len()
    }

    /// A tensor of the file in f32.
    pub(crate) fn tensor(&self, key: &str) -> candle_core::Result<Tensor> {
        self.file.read(key, DType::F32)
    }

    /// The changes to a checkpoint's tensors, each checked against the checkpoint: its tensor
    /// names and shapes as `shape_of` gives them (None: the checkpoint has no such tensor).
    /// `component` names the checkpoint part in errors.
    pub(crate) fn deltas(
        &self,
        component: &str,
        shape_of: &dyn Fn(&str) -> Option<Vec<usize>>,
    ) -> Result<Vec<(String, Delta)>, LoraError> {
        let mut out = Vec::new();
        for (module, keys) in &self.modules {
            out.extend(self.module_deltas(module, keys, component, shape_of)?);
        }
        Ok(out)
    }

    fn module_deltas(
        &self,
        module: &str,
        keys: &ModuleKeys,
        component: &str,
        shape_of: &dyn Fn(&str) -> Option<Vec<usize>>,
    ) -> Result<Vec<(String, Delta)>, LoraError> {
        let first_key = [
            &keys.down,
            &keys.up,
            &keys.diff,
            &keys.diff_bias,
            &keys.up_bias,
            &keys.alpha,
        ]
        .into_iter()
        .flatten()
        .next()
        .cloned()
        .unwrap_or_default();
        // The weight a module's LoRA changes: `module.weight`, or the parameter itself
        // (`modulation` -> `scale_shift_table`).
        let target = |key: &str, bias: bool| -> Result<(String, Vec<usize>), LoraError> {
            let names = match bias {
                true => vec![format!("{module}.bias")],
                false => vec![format!("{module}.weight"), module.to_string()],
            };
            names
                .iter()
                .find_map(|n| shape_of(n).map(|s| (n.clone(), s)))
                .ok_or_else(|| LoraError::NoModule {
                    path: self.path.clone(),
                    key: key.to_string(),
                    component: component.to_string(),
                    target: names[0].clone(),
                })
        };
        let mut out = Vec::new();
        let mut scale = 1.0;
        match (&keys.down, &keys.up) {
            (Some(down), Some(up)) => {
                let (name, shape) = target(down, false)?;
                let down_shape = self.file.shape(down).unwrap_or_default();
                let up_shape = self.file.shape(up).unwrap_or_default();
                let fits = shape.len() == 2
                    && down_shape.len() == 2
                    && up_shape.len() == 2
                    && down_shape[1] == shape[1]
                    && up_shape[0] == shape[0]
                    && up_shape[1] == down_shape[0];
                if !fits {
                    return Err(self.shape_error(
                        down,
                        &name,
                        [up_shape, down_shape].concat(),
                        shape,
                        "up [out, rank] and down [rank, in] must multiply to the weight's [out, in]",
                    ));
                }
                let rank = down_shape[0] as f64;
                scale = match &keys.alpha {
                    Some(alpha) => self.scalar(alpha)? / rank,
                    None => match self
                        .alpha_pattern
                        .get(module)
                        .or(self.metadata_alpha.as_ref())
                    {
                        Some(alpha) => alpha / rank,
                        None => 1.0,
                    },
                };
                out.push((
                    name,
                    Delta::LowRank {
                        up: up.clone(),
                        down: down.clone(),
                        scale,
                    },
                ));
            }
            (Some(one), None) => return Err(self.unpaired(one, "lora_up / lora_B")),
            (None, Some(one)) => return Err(self.unpaired(one, "lora_down / lora_A")),
            (None, None) => {
                if let Some(alpha) = &keys.alpha {
                    return Err(self.unpaired(alpha, "lora_down / lora_A"));
                }
            }
        }
        if let Some(diff) = &keys.diff {
            out.push(self.whole(diff, target(diff, false)?, 1.0)?);
        }
        if let Some(bias) = &keys.diff_bias {
            out.push(self.whole(bias, target(bias, true)?, 1.0)?);
        }
        if let Some(bias) = &keys.up_bias {
            // PEFT's `lora_B.bias` is scaled with the module, as its output is.
            out.push(self.whole(bias, target(bias, true)?, scale)?);
        }
        if out.is_empty() {
            return Err(self.unpaired(&first_key, "lora_down / lora_A"));
        }
        Ok(out)
    }

    fn whole(
        &self,
        key: &str,
        (name, shape): (String, Vec<usize>),
        scale: f64,
    ) -> Result<(String, Delta), LoraError> {
        let got = self.file.shape(key).unwrap_or_default();
        if got != shape {
            return Err(self.shape_error(
                key,
                &name,
                got,
                shape,
                "a whole-tensor delta has the tensor's shape",
            ));
        }
        Ok((
            name,
            Delta::Whole {
                key: key.to_string(),
                scale,
            },
        ))
    }

    fn scalar(&self, key: &str) -> Result<f64, LoraError> {
        let value = self
            .file
            .read(key, DType::F64)
            .and_then(|t| t.flatten_all()?.to_vec1::<f64>())
            .map_err(|e| LoraError::Read {
                path: self.path.clone(),
                message: format!("reading {key}: {e}"),
            })?;
        match value.as_slice() {
            [alpha] => Ok(*alpha),
            _ => Err(self.shape_error(key, key, vec![value.len()], vec![1], "alpha is one number")),
        }
    }

    fn shape_error(
        &self,
        key: &str,
        target: &str,
        got: Vec<usize>,
        expected: Vec<usize>,
        rule: &'static str,
    ) -> LoraError {
        LoraError::Shape {
            path: self.path.clone(),
            key: key.to_string(),
            target: target.to_string(),
            got,
            expected,
            rule,
        }
    }

    fn unpaired(&self, key: &str, missing: &'static str) -> LoraError {
        LoraError::Unpaired {
            path: self.path.clone(),
            key: key.to_string(),
            missing,
        }
    }
}

/// A key's module name and part, by its suffix.
fn split_part(key: &str) -> Option<(&str, Part)> {
    SUFFIXES
        .iter()
        .find_map(|(suffix, part)| key.strip_suffix(suffix).map(|m| (m, *part)))
}

fn detect_format(names: &[String]) -> LoraFormat {
    if names.iter().any(|k| k.starts_with("lora_unet_")) {
        LoraFormat::Kohya
    } else if names
        .iter()
        .any(|k| keys::strip_original_prefix(k).is_some())
    {
        LoraFormat::OriginalWan
    } else {
        LoraFormat::Diffusers
    }
}

/// A key's module name as the diffusers transformer names it; None when it cannot be one.
fn diffusers_module(module: &str, format: LoraFormat) -> Option<String> {
    let original = match format {
        LoraFormat::Diffusers => {
            let bare = ["transformer.", "base_model.model."]
                .iter()
                .find_map(|p| module.strip_prefix(p))
                .unwrap_or(module);
            return Some(bare.to_string());
        }
        LoraFormat::OriginalWan => keys::strip_original_prefix(module)?.to_string(),
        LoraFormat::Kohya => keys::dotted_from_underscores(module.strip_prefix("lora_unet_")?)?,
    };
    // Files in these formats may still spell a module the diffusers way (`attn1.to_q`).
    Some(keys::diffusers_name(&original).unwrap_or(original))
}

/// `lora_alpha` (and `alpha_pattern`) of diffusers' `lora_adapter_metadata`, if the file has it.
fn adapter_alpha(file: &TensorFile) -> (Option<f64>, HashMap<String, f64>) {
    let Some(raw) = file.metadata("lora_adapter_metadata") else {
        return (None, HashMap::new());
    };
    let Ok(json) = serde_json::from_str::<serde_json::Value>(raw) else {
        return (None, HashMap::new());
    };
    let field = |name: &str| {
        json.get(format!("transformer.{name}"))
            .or_else(|| json.get(name))
            .cloned()
    };
    let alpha = field("lora_alpha").and_then(|v| v.as_f64());
    let pattern = field("alpha_pattern")
        .and_then(|v| v.as_object().cloned())
        .map(|m| {
            m.into_iter()
                .filter_map(|(k, v)| Some((k, v.as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    (alpha, pattern)
}

/// LoRAs applied to one component, each with its strength, mapped onto that component's
/// tensors: what the weight reader merges.
#[derive(Debug, Default, Clone)]
pub struct Adapters {
    /// Checkpoint tensor name -> (LoRA, delta, strength), in the order given.
    by_tensor: HashMap<String, Vec<(Arc<Lora>, Delta, f64)>>,
    /// One line per LoRA: file, format, strength, modules touched.
    summaries: Vec<String>,
}

impl Adapters {
    /// Open each LoRA and check it against the component's tensors (`shape_of`).
    pub fn resolve(
        specs: &[LoraSpec],
        component: &str,
        shape_of: &dyn Fn(&str) -> Option<Vec<usize>>,
    ) -> Result<Self, LoraError> {
        let mut adapters = Self::default();
        for spec in specs {
            let lora = Arc::new(Lora::open(&spec.path)?);
            let deltas = lora.deltas(component, shape_of)?;
            let tensors: BTreeSet<&str> = deltas.iter().map(|(n, _)| n.as_str()).collect();
            adapters.summaries.push(format!(
                "lora {} ({}, strength {}): {} modules of the {component} ({} tensors)",
                spec.path.display(),
                lora.format(),
                spec.strength,
                lora.module_count(),
                tensors.len()
            ));
            for (name, delta) in deltas {
                adapters.by_tensor.entry(name).or_default().push((
                    lora.clone(),
                    delta,
                    spec.strength,
                ));
            }
        }
        Ok(adapters)
    }

    pub fn is_empty(&self) -> bool {
        self.by_tensor.is_empty()
    }

    /// Whether any LoRA changes the tensor `name`.
    pub fn changes(&self, name: &str) -> bool {
        self.by_tensor.contains_key(name)
    }

    pub fn summaries(&self) -> &[String] {
        &self.summaries
    }

    /// `weight` (f32) with every delta for `name` added; None when no LoRA changes it.
    pub(crate) fn merge(&self, name: &str, weight: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let Some(deltas) = self.by_tensor.get(name) else {
            return Ok(None);
        };
        let mut merged = weight.to_dtype(DType::F32)?;
        for (lora, delta, strength) in deltas {
            let change = match delta {
                Delta::LowRank { up, down, scale } => {
                    let up = lora.tensor(up)?;
                    let down = lora.tensor(down)?;
                    (up.matmul(&down)? * (scale * strength))?
                }
                Delta::Whole { key, scale } => (lora.tensor(key)? * (scale * strength))?,
            };
            merged = (merged + change.reshape(weight.shape())?)?;
        }
        Ok(Some(merged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lora_specs_parse_path_and_strength() {
        let spec: LoraSpec = "a/b.safetensors:0.5".parse().unwrap();
        assert_eq!(
            (spec.path, spec.strength),
            (PathBuf::from("a/b.safetensors"), 0.5)
        );
        let spec: LoraSpec = "a/b.safetensors".parse().unwrap();
        assert_eq!(spec.strength, 1.0);
        let spec: LoraSpec = "C:weird/path".parse().unwrap();
        assert_eq!(
            (spec.path, spec.strength),
            (PathBuf::from("C:weird/path"), 1.0)
        );
        assert!("x.safetensors:inf".parse::<LoraSpec>().is_err());
        assert!("".parse::<LoraSpec>().is_err());
    }

    #[test]
    fn module_names_of_each_format_map_to_diffusers() {
        let cases = [
            (
                "transformer.blocks.0.attn1.to_q",
                LoraFormat::Diffusers,
                "blocks.0.attn1.to_q",
            ),
            ("blocks.1.norm2", LoraFormat::Diffusers, "blocks.1.norm2"),
            (
                "diffusion_model.blocks.1.norm2",
                LoraFormat::OriginalWan,
                "blocks.1.norm3",
            ),
            (
                "diffusion_model.blocks.0.cross_attn.k_img",
                LoraFormat::OriginalWan,
                "blocks.0.attn2.add_k_proj",
            ),
            (
                "diffusion_model.head.head",
                LoraFormat::OriginalWan,
                "proj_out",
            ),
            (
                "lora_unet_blocks_3_ffn_2",
                LoraFormat::Kohya,
                "blocks.3.ffn.net.2",
            ),
            (
                "lora_unet_vace_blocks_0_before_proj",
                LoraFormat::Kohya,
                "vace_blocks.0.proj_in",
            ),
        ];
        for (module, format, expected) in cases {
            assert_eq!(
                diffusers_module(module, format).as_deref(),
                Some(expected),
                "{module}"
            );
        }
    }
}
