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

use crate::lora::LoraSpec;
use crate::model_dir::{ModelIndex, PipelineClass};
use crate::pipeline::PipelineChanges;
use crate::quant::Quantize;
use crate::scheduler::{RecipeName, ScheduleSettings, Scheduler, SchedulerKind, check_timesteps};

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
    /// A LoRA merged into the transformer as it loads (for Wan2.2 A14B: the high-noise
    /// expert), as PATH or PATH:STRENGTH [default strength: 1.0]; repeat to stack several.
    /// Diffusers/PEFT, original Wan/lightx2v, ComfyUI and kohya/musubi keys are read.
    #[arg(long = "lora", value_name = "PATH[:STRENGTH]")]
    #[serde(default)]
    pub loras: Vec<LoraSpec>,
    /// Two-expert (Wan2.2 A14B) checkpoints only: a LoRA for the low-noise expert
    /// (transformer_2), as --lora; Lightning ships one file per expert.
    #[arg(long = "lora-2", value_name = "PATH[:STRENGTH]")]
    #[serde(default)]
    pub loras_2: Vec<LoraSpec>,
    /// Hold the transformers' and the text encoder's matrices as int8 or fp8 (e4m3), one scale
    /// per output channel, made at load; each is widened per use. Published fp8 files load as
    /// they are without it.
    #[arg(long, value_name = "int8|fp8")]
    pub quantize: Option<Quantize>,
    /// A published step distillation's sampling settings: lightx2v-4step or lightning-4step
    /// (4 steps, guidance 1, euler, shift 5, timesteps 1000,750,500,250). --steps, --guidance,
    /// --scheduler, --shift and --timesteps given beside it win.
    #[arg(long)]
    pub recipe: Option<RecipeName>,
    /// The sampler: unipc or euler (flow-match Euler) [default: the checkpoint's
    /// scheduler_config.json; with --recipe, the recipe's].
    #[arg(long, value_name = "unipc|euler")]
    pub scheduler: Option<SchedulerKind>,
    /// The flow-matching shift of the noise schedule [default: the checkpoint's scheduler
    /// config; with --recipe, the recipe's].
    #[arg(long)]
    pub shift: Option<f64>,
    /// An explicit schedule: training timesteps, one per step, decreasing, in (0, 1000]
    /// (comma separated: 1000,750,500,250); --steps defaults to their count.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub timesteps: Option<Vec<f64>>,
    /// Drop the text encoder after each prompt is encoded and read it back from disk only for
    /// a prompt not among the last 16 (less memory between runs, a slower new prompt).
    #[arg(long)]
    #[serde(default)]
    pub release_text_encoder: bool,
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
        let flag = match self.key {
            "loras" => "--lora".to_string(),
            "loras_2" => "--lora-2".to_string(),
            key => format!("--{}", key.replace('_', "-")),
        };
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
    /// With --quantize: `cpu, int8 weights (f32 compute)`, `cuda:0, bf16, fp8 weights`.
    pub fn compute(&self) -> String {
        match (self.device, self.dtype, self.quantize) {
            (ComputeDevice::Cpu, _, Some(q)) => {
                format!("{}, {q} weights (f32 compute)", self.device)
            }
            (ComputeDevice::Cpu, ComputeDtype::Bf16 | ComputeDtype::F16, None) => {
                format!("{}, {} weights (f32 compute)", self.device, self.dtype)
            }
            (device, dtype, Some(q)) => format!("{device}, {dtype}, {q} weights"),
            (device, dtype, None) => format!("{device}, {dtype}"),
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
        self.check_schedule(index)?;
        self.check_loras(index)
    }

    /// The shift and the timestep list against the checkpoint's scheduler, and the list's
    /// length against the steps.
    fn check_schedule(&self, index: &ModelIndex) -> Result<(), SettingError> {
        if let Some(shift) = self.shift.filter(|s| !(s.is_finite() && *s > 0.0)) {
            let message = format!("shift must be a finite number > 0, got {shift}");
            return Err(SettingError::new("shift", message));
        }
        let Some(timesteps) = &self.timesteps else {
            return Ok(());
        };
        let scheduler = Scheduler::from_dir(&index.component_dir("scheduler"))
            .map_err(|e| SettingError::new("timesteps", format!("timesteps: {e}")))?;
        check_timesteps("timesteps", timesteps, scheduler.num_train_timesteps())
            .map_err(|e| SettingError::new("timesteps", e.to_string()))?;
        match self.steps {
            Some(steps) if steps != timesteps.len() => Err(SettingError::new(
                "timesteps",
                format!(
                    "timesteps lists {} timesteps but steps is {steps}: give one per step (or \
                     leave steps out)",
                    timesteps.len()
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Every LoRA file exists with a finite strength; low-noise LoRAs need a low-noise expert.
    /// Their keys and shapes are checked against the transformer as it loads.
    fn check_loras(&self, index: &ModelIndex) -> Result<(), SettingError> {
        if !self.loras_2.is_empty() && !index.has("transformer_2") {
            let message = format!(
                "loras_2 is for the low-noise expert of two-expert checkpoints (Wan2.2 A14B: \
                 transformer_2), which {} does not have; use loras",
                index.dir.display()
            );
            return Err(SettingError::new("loras_2", message));
        }
        for (key, loras) in [("loras", &self.loras), ("loras_2", &self.loras_2)] {
            for lora in loras {
                let file = lora.path.display();
                if !lora.strength.is_finite() {
                    let message = format!("{key}: {file}: strength must be a finite number");
                    return Err(SettingError::new(key, message));
                }
                if !lora.path.is_file() {
                    let message = format!("{key}: {file} is not a file");
                    return Err(SettingError::new(key, message));
                }
            }
        }
        Ok(())
    }

    /// Steps a run takes when given: --steps, else the timestep list's count, else the
    /// recipe's; None leaves the checkpoint family's.
    pub fn steps_setting(&self) -> Option<usize> {
        self.steps
            .or(self.timesteps.as_ref().map(Vec::len))
            .or(self.recipe.map(|r| r.recipe().steps))
    }

    /// The guidance scale when given: --guidance, else the recipe's.
    pub fn guidance_setting(&self) -> Option<f64> {
        self.guidance.or(self.recipe.map(|r| r.recipe().guidance))
    }

    /// The scheduler changes: each explicit setting over the recipe's. A recipe's timestep
    /// list is dropped when --steps asks for another count (the sampler spaces them then).
    pub fn schedule(&self) -> ScheduleSettings {
        let recipe = self.recipe.map(|r| r.recipe());
        let base = recipe.clone().map(|r| r.schedule).unwrap_or_default();
        let recipe_timesteps = base
            .timesteps
            .filter(|t| self.steps.is_none_or(|steps| steps == t.len()));
        ScheduleSettings {
            scheduler: self.scheduler.or(base.scheduler),
            shift: self.shift.or(base.shift),
            timesteps: self.timesteps.clone().or(recipe_timesteps),
        }
    }

    /// What loading changes in the checkpoint's weights and scheduler.
    pub fn changes(&self) -> PipelineChanges {
        PipelineChanges {
            loras: self.loras.clone(),
            loras_2: self.loras_2.clone(),
            quantize: self.quantize,
            schedule: self.schedule(),
            release_text_encoder: self.release_text_encoder,
        }
    }

    /// Whether two settings load the same weights (so one loaded pipeline can serve both).
    pub fn loads_like(&self, other: &Self) -> bool {
        self.device == other.device
            && self.dtype == other.dtype
            && self.changes() == other.changes()
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
        match self.guidance_setting() {
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
