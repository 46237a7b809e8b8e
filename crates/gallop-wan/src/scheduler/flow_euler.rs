//! diffusers' `FlowMatchEulerDiscreteScheduler` (static shift, deterministic): Euler steps along
//! the flow, `x += (sigma_next - sigma) * v`.

use crate::error::ensure;
use candle_core::{DType, Tensor};
use serde::Deserialize;

use super::numpy::{linspace, shift_sigma};
use super::scale;

/// The `scheduler_config.json` fields this scheduler reads; the rest are ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct FlowMatchEulerConfig {
    pub num_train_timesteps: usize,
    pub shift: f64,
    pub use_dynamic_shifting: bool,
    pub invert_sigmas: bool,
    pub shift_terminal: Option<f64>,
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    pub use_beta_sigmas: bool,
    pub stochastic_sampling: bool,
}

impl Default for FlowMatchEulerConfig {
    /// diffusers' constructor defaults.
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            shift: 1.0,
            use_dynamic_shifting: false,
            invert_sigmas: false,
            shift_terminal: None,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            stochastic_sampling: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct FlowMatchEulerScheduler {
    config: FlowMatchEulerConfig,
    /// The training schedule's ends after the constructor's float32 shift.
    sigma_max: f64,
    sigma_min: f64,
    sigmas: Vec<f32>,
    timesteps: Vec<f32>,
    step_index: usize,
    /// An explicit schedule (unshifted sigmas, one per step) that `set_timesteps` uses.
    fixed_sigmas: Option<Vec<f64>>,
}

impl FlowMatchEulerScheduler {
    pub fn new(config: FlowMatchEulerConfig) -> crate::Result<Self> {
        ensure!(
            config.num_train_timesteps > 0,
            "FlowMatchEuler config: num_train_timesteps must be positive"
        );
        ensure!(
            config.shift > 0.0,
            "FlowMatchEuler config: shift must be positive, got {}",
            config.shift
        );
        for (name, on) in [
            ("use_dynamic_shifting", config.use_dynamic_shifting),
            ("invert_sigmas", config.invert_sigmas),
            (
                "shift_terminal",
                config.shift_terminal.is_some_and(|v| v != 0.0),
            ),
            ("use_karras_sigmas", config.use_karras_sigmas),
            ("use_exponential_sigmas", config.use_exponential_sigmas),
            ("use_beta_sigmas", config.use_beta_sigmas),
            ("stochastic_sampling", config.stochastic_sampling),
        ] {
            ensure!(
                !on,
                "FlowMatchEuler config: {name} is not supported: must be unset or false"
            );
        }
        // The constructor shifts the training sigmas t/T in float32; set_timesteps spans their
        // ends and shifts again (diffusers applies the shift twice; so must we).
        let train = config.num_train_timesteps as f32;
        let shift = config.shift as f32;
        let shift32 = |s: f32| shift * s / (1.0 + (shift - 1.0) * s);
        let sigma_max = shift32(1.0) as f64; // t/T at t = T
        let sigma_min = shift32(1.0 / train) as f64;
        Ok(Self {
            config,
            sigma_max,
            sigma_min,
            sigmas: Vec::new(),
            timesteps: Vec::new(),
            step_index: 0,
            fixed_sigmas: None,
        })
    }

    /// Another shift than the config's (the training ends are shifted again, as diffusers'
    /// constructor would with that shift).
    pub fn set_shift(&mut self, shift: f64) -> crate::Result<()> {
        let fixed = self.fixed_sigmas.take();
        let config = FlowMatchEulerConfig {
            shift,
            ..self.config.clone()
        };
        *self = Self::new(config)?;
        self.fixed_sigmas = fixed;
        Ok(())
    }

    /// Run this explicit schedule: unshifted sigmas (`timestep / num_train_timesteps`), one per
    /// step, as diffusers' `set_timesteps(sigmas=...)` takes them.
    pub fn fix_sigmas(&mut self, sigmas: Vec<f64>) {
        self.fixed_sigmas = Some(sigmas);
    }

    pub fn config(&self) -> &FlowMatchEulerConfig {
        &self.config
    }

    pub fn timesteps(&self) -> &[f32] {
        &self.timesteps
    }

    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    pub fn set_timesteps(&mut self, num_inference_steps: usize) -> crate::Result<()> {
        ensure!(
            num_inference_steps > 0,
            "num_inference_steps must be at least 1"
        );
        if let Some(fixed) = &self.fixed_sigmas {
            ensure!(
                fixed.len() == num_inference_steps,
                "steps ({num_inference_steps}) must equal the number of timesteps given ({})",
                fixed.len()
            );
            // diffusers takes given sigmas as float32 and shifts them in float32.
            let shift = self.config.shift as f32;
            let sigmas: Vec<f32> = fixed
                .iter()
                .map(|&s| {
                    let s = s as f32;
                    shift * s / (1.0 + (shift - 1.0) * s)
                })
                .collect();
            return Ok(self.use_sigmas(sigmas));
        }
        let train = self.config.num_train_timesteps as f64;
        let sigmas: Vec<f32> = linspace(
            self.sigma_max * train,
            self.sigma_min * train,
            num_inference_steps,
        )
        .into_iter()
        .map(|t| shift_sigma(self.config.shift, t / train) as f32)
        .collect();
        self.use_sigmas(sigmas);
        Ok(())
    }

    /// Timesteps `sigma * T` (float32) and the sigmas with a final 0.
    fn use_sigmas(&mut self, sigmas: Vec<f32>) {
        let train32 = self.config.num_train_timesteps as f32;
        self.timesteps = sigmas.iter().map(|&s| s * train32).collect();
        self.sigmas = sigmas.into_iter().chain([0.0]).collect();
        self.step_index = 0;
    }

    pub fn step(&mut self, model_output: &Tensor, sample: &Tensor) -> crate::Result<Tensor> {
        ensure!(
            !self.timesteps.is_empty(),
            "scheduler: call set_timesteps before step"
        );
        ensure!(
            self.step_index < self.timesteps.len(),
            "scheduler: all {} steps are done",
            self.timesteps.len()
        );
        let i = self.step_index;
        // Exact in float64; rounds to the same float32 as diffusers' float32 subtraction.
        let dt = self.sigmas[i + 1] as f64 - self.sigmas[i] as f64;
        // diffusers upcasts the sample to float32 (rounding a float64 one), adds the update in
        // the wider of the two dtypes and returns the model output's dtype.
        let update = scale(model_output, dt)?;
        let wide = if model_output.dtype() == DType::F64 {
            DType::F64
        } else {
            DType::F32
        };
        let sample = sample.to_dtype(DType::F32)?.to_dtype(wide)?;
        let prev = (sample + update.to_dtype(wide)?)?.to_dtype(model_output.dtype())?;
        self.step_index += 1;
        Ok(prev)
    }
}
