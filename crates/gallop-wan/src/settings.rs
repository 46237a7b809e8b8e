//! How an operator runs a Wan checkpoint, declared once: `gallop generate` and `gallop serve`
//! flatten [`WanSettings`] into their flags (`--model-dir`, `--steps`, ...), the serve config
//! file reads the same struct per model id (`model_dir = ...`, `steps = ...`), and
//! [`WanSettings::check`] validates it once against the checkpoint, with errors that name the
//! setting so each caller can say it as its flag or its key. Debug-only overrides (exact size,
//! frame count, initial noise, frame dumps) are [`WanDebug`], kept apart.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use candle_core::{DType, Device};
use serde::Deserialize;

use crate::model_dir::{ModelIndex, PipelineClass};

/// The operator's settings for one Wan checkpoint. `None` means the checkpoint family's recipe
/// ([`crate::engine::Family`]).
#[derive(Debug, Clone, Default, PartialEq, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WanSettings {
    /// A Wan checkpoint in the diffusers layout (a folder with model_index.json). Without it
    /// the motion preview runs: camera moves over your images, not the neural model.
    #[arg(long)]
    pub model_dir: Option<PathBuf>,
    /// Denoising steps [default: the checkpoint family's recipe: 50; Wan2.2-I2V-A14B 40].
    #[arg(long)]
    pub steps: Option<usize>,
    /// Classifier-free guidance scale; 1 or less turns guidance off (one transformer pass per
    /// step) [default: the family's recipe: 5.0; Wan2.2-I2V-A14B 3.5].
    #[arg(long)]
    pub guidance: Option<f64>,
    /// Two-expert (Wan2.2 A14B) checkpoints only: the low-noise expert's guidance scale
    /// [default: --guidance when given, else the family's recipe, 3.5].
    #[arg(long)]
    pub guidance_2: Option<f64>,
    /// VACE (reference-to-video) checkpoints only: the weight of the reference hints
    /// [default: 1.0].
    #[arg(long)]
    pub conditioning_scale: Option<f64>,
    /// Where the checkpoint computes: cpu, cuda (GPU 0) or cuda:N; CUDA needs a build with
    /// `--features cuda`.
    #[arg(long, default_value_t)]
    #[serde(default)]
    pub device: ComputeDevice,
    /// The float type of the transformer and the text and image encoders: f32, bf16 or f16. On
    /// the CPU bf16/f16 is the type their weight matrices are held in (half the memory; they
    /// compute in f32); on CUDA the type they compute in.
    #[arg(long, default_value_t)]
    #[serde(default)]
    pub dtype: ComputeDtype,
}

/// Debug and test overrides of `gallop generate` (hidden flags), never part of a served model.
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
pub struct WanDebug {
    /// Generate and output exactly this width (with --height); the public minimum image size
    /// does not apply then.
    #[arg(long, requires = "height", hide = true)]
    pub width: Option<u32>,
    /// Exact height (with --width).
    #[arg(long, requires = "width", hide = true)]
    pub height: Option<u32>,
    /// Generate and output exactly this many frames (4n + 1), sent 1:1 with no fps resampling.
    #[arg(long, hide = true)]
    pub num_frames: Option<u32>,
    /// Initial noise from this safetensors file (tensor `latents`, the shape diffusers'
    /// prepare_latents makes).
    #[arg(long, hide = true)]
    pub init_noise: Option<PathBuf>,
    /// Write the decoded frames (tensor `frames`, f32 [F, H, W, 3] in [0, 1]) to this
    /// safetensors file, before the watermark and encoding.
    #[arg(skip)]
    pub dump_frames: Option<PathBuf>,
}

impl WanDebug {
    /// Whether any override is set.
    pub fn is_set(&self) -> bool {
        self != &Self::default()
    }

    /// The exact generation size, when both sides are given.
    pub fn size(&self) -> Option<(usize, usize)> {
        self.width
            .zip(self.height)
            .map(|(w, h)| (w as usize, h as usize))
    }
}

/// A setting that breaks a rule. The message begins with the setting's name as the config file
/// spells it (`guidance_2 needs ...`, `device: cuda:0 needs CUDA ...`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct SettingError {
    pub key: &'static str,
    pub message: String,
}

impl SettingError {
    pub fn new(key: &'static str, message: String) -> Self {
        Self { key, message }
    }

    /// The message as the command line says it: `--device: cuda:0 needs CUDA ...`,
    /// `--guidance-2: guidance_2 needs ...`.
    pub fn as_flag(&self) -> String {
        let flag = format!("--{}", self.key.replace('_', "-"));
        match self.message.strip_prefix(&format!("{}:", self.key)) {
            Some(rest) => format!("{flag}:{rest}"),
            None => format!("{flag}: {}", self.message),
        }
    }
}

impl WanSettings {
    /// Settings given without a checkpoint to apply them to (the motion preview takes none).
    pub fn without_checkpoint(&self) -> bool {
        self.model_dir.is_none() && self != &Self::default()
    }

    /// Where and in which float type the pipeline computes, for reports: `cpu, f32`,
    /// `cpu, bf16 weights (f32 compute)`, `cuda:0, bf16`.
    pub fn compute(&self) -> String {
        match (self.device, self.dtype) {
            (ComputeDevice::Cpu, ComputeDtype::Bf16 | ComputeDtype::F16) => {
                format!("{}, {} weights (f32 compute)", self.device, self.dtype)
            }
            (device, dtype) => format!("{device}, {dtype}"),
        }
    }

    /// Refuses a device this build cannot compute with, then opens it, before any weights load.
    pub fn open_device(&self) -> Result<Device, SettingError> {
        if let ComputeDevice::Cuda(_) = self.device
            && !candle_core::utils::cuda_is_available()
        {
            let message = format!(
                "device: {} needs CUDA, but this gallop was built without CUDA: rebuild with \
                 `cargo build --release --features cuda`",
                self.device
            );
            return Err(SettingError::new("device", message));
        }
        open_device(self.device)
    }

    /// Refuses settings the checkpoint cannot honour, naming the setting and the rule. Runs
    /// once, before any weights load; the device is opened separately ([`Self::open_device`]).
    pub fn check(&self, index: &ModelIndex) -> Result<(), SettingError> {
        if self.steps == Some(0) {
            return Err(SettingError::new("steps", "steps must be >= 1".into()));
        }
        for (key, value) in [("guidance", self.guidance), ("guidance_2", self.guidance_2)] {
            if let Some(v) = value.filter(|v| !(v.is_finite() && *v >= 0.0)) {
                let message = format!("{key} must be a finite number >= 0, got {v}");
                return Err(SettingError::new(key, message));
            }
        }
        if let Some(g2) = self.guidance_2 {
            self.check_guidance_2(index, g2)?;
        }
        if let Some(scale) = self.conditioning_scale {
            self.check_conditioning_scale(index, scale)?;
        }
        Ok(())
    }

    fn check_guidance_2(&self, index: &ModelIndex, g2: f64) -> Result<(), SettingError> {
        if !takes_guidance_2(index) {
            let message = format!(
                "guidance_2 needs a checkpoint with two experts (Wan2.2 A14B: transformer_2 and \
                 boundary_ratio in model_index.json); {} has one transformer",
                index.dir.display()
            );
            return Err(SettingError::new("guidance_2", message));
        }
        // diffusers turns classifier-free guidance on or off for both experts by `guidance`.
        match self.guidance {
            Some(g) if g <= 1.0 && g2 > 1.0 => Err(SettingError::new(
                "guidance_2",
                format!(
                    "guidance_2 {g2} would have no effect: guidance {g} <= 1 turns classifier-free \
                     guidance off for both experts; set guidance above 1"
                ),
            )),
            _ => Ok(()),
        }
    }

    fn check_conditioning_scale(&self, index: &ModelIndex, scale: f64) -> Result<(), SettingError> {
        let key = "conditioning_scale";
        if index.class != PipelineClass::Vace {
            let message = format!(
                "conditioning_scale weighs VACE reference hints; {} is a {:?} pipeline",
                index.dir.display(),
                index.class
            );
            return Err(SettingError::new(key, message));
        }
        if !scale.is_finite() {
            let message = format!("conditioning_scale must be a finite number, got {scale}");
            return Err(SettingError::new(key, message));
        }
        Ok(())
    }
}

/// Whether the checkpoint has two experts (Wan2.2 A14B), so takes a second guidance scale.
pub fn takes_guidance_2(index: &ModelIndex) -> bool {
    index.boundary_ratio.is_some() && index.has("transformer_2")
}

/// Opens the device, with candle's error named by the setting when it is not available.
pub fn open_device(device: ComputeDevice) -> Result<Device, SettingError> {
    match device {
        ComputeDevice::Cpu => Ok(Device::Cpu),
        ComputeDevice::Cuda(n) => Device::new_cuda(n).map_err(|e| {
            SettingError::new("device", format!("device: {device} is not available: {e}"))
        }),
    }
}

/// The device a pipeline runs on: `cpu`, `cuda` (GPU 0) or `cuda:N`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ComputeDevice {
    #[default]
    Cpu,
    Cuda(usize),
}

impl FromStr for ComputeDevice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let gpu = match s.split_once(':') {
            None if s == "cpu" => return Ok(Self::Cpu),
            None if s == "cuda" => Some(0),
            Some(("cuda", n)) => n.parse().ok(),
            _ => None,
        };
        gpu.map(Self::Cuda).ok_or_else(|| {
            format!("must be cpu, cuda or cuda:N (N the GPU index, from 0), got {s:?}")
        })
    }
}

impl fmt::Display for ComputeDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// The float type of the transformer and text/image encoders: the compute dtype on CUDA, the
/// dtype the big matrices are held in on the CPU (which computes in f32). The latents, the
/// scheduler and the VAE stay f32, as diffusers keeps them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ComputeDtype {
    #[default]
    F32,
    Bf16,
    F16,
}

impl ComputeDtype {
    pub fn dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::Bf16 => DType::BF16,
            Self::F16 => DType::F16,
        }
    }
}

impl FromStr for ComputeDtype {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            "f16" => Ok(Self::F16),
            _ => Err(format!("must be f32, bf16 or f16, got {s:?}")),
        }
    }
}

impl fmt::Display for ComputeDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
        })
    }
}

/// Reads a setting written as text (`device = "cuda:1"`) through its `FromStr`, so the file and
/// the flag accept the same values.
fn from_text<'de, D: serde::Deserializer<'de>, T: FromStr<Err = String>>(
    deserializer: D,
) -> Result<T, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(serde::de::Error::custom)
}

impl<'de> Deserialize<'de> for ComputeDevice {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        from_text(deserializer)
    }
}

impl<'de> Deserialize<'de> for ComputeDtype {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        from_text(deserializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_and_dtypes_parse_and_print_as_written() {
        assert_eq!("cpu".parse(), Ok(ComputeDevice::Cpu));
        assert_eq!("cuda".parse(), Ok(ComputeDevice::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(ComputeDevice::Cuda(3)));
        assert_eq!(ComputeDevice::Cuda(3).to_string(), "cuda:3");
        for bad in ["gpu", "cuda:", "cuda:-1", "cpu:0", "CUDA", ""] {
            let err = bad.parse::<ComputeDevice>().unwrap_err();
            assert!(
                err.starts_with("must be cpu, cuda or cuda:N"),
                "{bad}: {err}"
            );
        }
        for (text, dtype, candle) in [
            ("f32", ComputeDtype::F32, DType::F32),
            ("bf16", ComputeDtype::Bf16, DType::BF16),
            ("f16", ComputeDtype::F16, DType::F16),
        ] {
            assert_eq!(text.parse(), Ok(dtype));
            assert_eq!(dtype.to_string(), text);
            assert_eq!(dtype.dtype(), candle);
        }
        let err = "float32".parse::<ComputeDtype>().unwrap_err();
        assert_eq!(err, "must be f32, bf16 or f16, got \"float32\"");
    }

    #[test]
    fn half_precision_on_the_cpu_holds_weights_and_says_so() {
        let on = |device, dtype| WanSettings {
            device,
            dtype,
            ..Default::default()
        };
        let cpu = ComputeDevice::Cpu;
        for (dtype, report) in [
            (ComputeDtype::F32, "cpu, f32"),
            (ComputeDtype::Bf16, "cpu, bf16 weights (f32 compute)"),
            (ComputeDtype::F16, "cpu, f16 weights (f32 compute)"),
        ] {
            on(cpu, dtype).open_device().unwrap();
            assert_eq!(on(cpu, dtype).compute(), report);
        }
        // On CUDA the dtype is the compute dtype, reported as before.
        assert_eq!(
            on(ComputeDevice::Cuda(1), ComputeDtype::Bf16).compute(),
            "cuda:1, bf16"
        );
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_in_a_cpu_build_names_the_rebuild() {
        let settings = WanSettings {
            device: ComputeDevice::Cuda(0),
            dtype: ComputeDtype::Bf16,
            ..Default::default()
        };
        let err = settings.open_device().unwrap_err();
        assert_eq!(
            err.to_string(),
            "device: cuda:0 needs CUDA, but this gallop was built without CUDA: rebuild with \
             `cargo build --release --features cuda`"
        );
        assert!(err.as_flag().starts_with("--device: cuda:0 needs CUDA"));
        // A device that does not open: candle's reason, behind the setting's name.
        let err = open_device(ComputeDevice::Cuda(2)).unwrap_err().to_string();
        let reason = err.strip_prefix("device: cuda:2 is not available: ");
        assert!(reason.is_some_and(|r| !r.is_empty()), "{err}");
    }

    #[test]
    fn a_setting_error_reads_as_its_flag() {
        let err = SettingError::new("guidance_2", "guidance_2 needs two experts".into());
        assert_eq!(err.as_flag(), "--guidance-2: guidance_2 needs two experts");
        let err = SettingError::new("device", "device: cuda:0 needs CUDA".into());
        assert_eq!(err.as_flag(), "--device: cuda:0 needs CUDA");
    }
}
