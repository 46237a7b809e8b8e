//! diffusers' `UniPCMultistepScheduler` in the configuration Wan ships: flow prediction on flow
//! sigmas with a shift, data (x0) prediction, B(h) variants, the UniC corrector after every step
//! but the first, and lower order at the end. The sigma schedule is float64 as numpy builds it,
//! stored as float32 as diffusers stores it. The step coefficients are computed op by op in the
//! tensors' float type, as diffusers does (see `unipc_coefficients`), and applied in that dtype.

use crate::error::{Context, bail, ensure};
use candle_core::{DType, Tensor};
use serde::Deserialize;

use super::numpy::{linspace, shift_sigma};
use super::unipc_coefficients::{Coefficients, Step, coefficients};
use super::{div_scalar, scale};

/// The `scheduler_config.json` fields this scheduler reads; the rest are ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct UniPcConfig {
    pub num_train_timesteps: usize,
    pub solver_order: usize,
    pub prediction_type: String,
    pub predict_x0: bool,
    pub solver_type: String,
    pub lower_order_final: bool,
    pub disable_corrector: Vec<usize>,
    pub use_flow_sigmas: bool,
    pub flow_shift: f64,
    pub final_sigmas_type: String,
    pub thresholding: bool,
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    pub use_beta_sigmas: bool,
    pub use_dynamic_shifting: bool,
    pub shift_terminal: Option<f64>,
    pub solver_p: Option<serde_json::Value>,
}

impl Default for UniPcConfig {
    /// diffusers' constructor defaults.
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            solver_order: 2,
            prediction_type: "epsilon".into(),
            predict_x0: true,
            solver_type: "bh2".into(),
            lower_order_final: true,
            disable_corrector: Vec::new(),
            use_flow_sigmas: false,
            flow_shift: 1.0,
            final_sigmas_type: "zero".into(),
            thresholding: false,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            use_dynamic_shifting: false,
            shift_terminal: None,
            solver_p: None,
        }
    }
}

impl UniPcConfig {
    /// Reject every setting this port does not implement, naming the field and the rule.
    fn validate(&self) -> crate::Result<()> {
        ensure!(
            self.prediction_type == "flow_prediction",
            "UniPC config: prediction_type {:?} is not supported: only \"flow_prediction\"",
            self.prediction_type
        );
        ensure!(
            self.use_flow_sigmas,
            "UniPC config: use_flow_sigmas must be true (only flow sigmas are supported)"
        );
        ensure!(
            self.predict_x0,
            "UniPC config: predict_x0 must be true with flow_prediction"
        );
        ensure!(
            matches!(self.solver_order, 1 | 2),
            "UniPC config: solver_order {} is not supported: must be 1 or 2",
            self.solver_order
        );
        ensure!(
            matches!(
                self.solver_type.as_str(),
                "bh1" | "bh2" | "midpoint" | "heun" | "logrho"
            ),
            "UniPC config: solver_type {:?} is not supported: must be \"bh1\" or \"bh2\"",
            self.solver_type
        );
        ensure!(
            matches!(self.final_sigmas_type.as_str(), "zero" | "sigma_min"),
            "UniPC config: final_sigmas_type {:?} must be \"zero\" or \"sigma_min\"",
            self.final_sigmas_type
        );
        ensure!(
            self.num_train_timesteps > 0,
            "UniPC config: num_train_timesteps must be positive"
        );
        ensure!(
            self.flow_shift > 0.0,
            "UniPC config: flow_shift must be positive, got {}",
            self.flow_shift
        );
        for (name, on) in [
            ("thresholding", self.thresholding),
            ("use_karras_sigmas", self.use_karras_sigmas),
            ("use_exponential_sigmas", self.use_exponential_sigmas),
            ("use_beta_sigmas", self.use_beta_sigmas),
            ("use_dynamic_shifting", self.use_dynamic_shifting),
            (
                "shift_terminal",
                self.shift_terminal.is_some_and(|v| v != 0.0),
            ),
            (
                "solver_p",
                self.solver_p.as_ref().is_some_and(|v| !v.is_null()),
            ),
        ] {
            ensure!(
                !on,
                "UniPC config: {name} is not supported: must be unset or false"
            );
        }
        Ok(())
    }

    /// bh1 uses B(h) = h; bh2 (and the legacy names diffusers maps to it) uses e^h - 1.
    fn is_bh1(&self) -> bool {
        self.solver_type == "bh1"
    }
}

/// UniPC state: the schedule plus the last converted model outputs and the sample before the
/// last predictor, which the corrector needs.
#[derive(Debug, Clone)]
pub struct UniPcScheduler {
    config: UniPcConfig,
    sigmas: Vec<f32>,
    timesteps: Vec<f32>,
    step_index: usize,
    /// Converted (x0) outputs, oldest first; `None` until filled.
    model_outputs: Vec<Option<Tensor>>,
    lower_order_nums: usize,
    this_order: usize,
    last_sample: Option<Tensor>,
    /// An explicit schedule (unshifted sigmas, one per step) that `set_timesteps` uses.
    fixed_sigmas: Option<Vec<f64>>,
}

impl UniPcScheduler {
    pub fn new(config: UniPcConfig) -> crate::Result<Self> {
        config.validate()?;
        let order = config.solver_order;
        Ok(Self {
            config,
            sigmas: Vec::new(),
            timesteps: Vec::new(),
            step_index: 0,
            model_outputs: vec![None; order],
            lower_order_nums: 0,
            this_order: 1,
            last_sample: None,
            fixed_sigmas: None,
        })
    }

    /// Another flow shift than the config's.
    pub fn set_shift(&mut self, shift: f64) -> crate::Result<()> {
        ensure!(shift > 0.0, "shift must be positive, got {shift}");
        self.config.flow_shift = shift;
        Ok(())
    }

    /// Run this explicit schedule: unshifted sigmas (`timestep / num_train_timesteps`), one per
    /// step, as diffusers' `set_timesteps(sigmas=...)` takes them.
    pub fn fix_sigmas(&mut self, sigmas: Vec<f64>) {
        self.fixed_sigmas = Some(sigmas);
    }

    pub fn config(&self) -> &UniPcConfig {
        &self.config
    }

    pub fn timesteps(&self) -> &[f32] {
        &self.timesteps
    }

    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// Flow sigmas `linspace(1, 1/T, n+1)[:-1]`, shifted, the first nudged below 1 so log(alpha)
    /// stays finite; timesteps are `sigma * T` truncated to integers as diffusers' int64 cast does.
    pub fn set_timesteps(&mut self, num_inference_steps: usize) -> crate::Result<()> {
        ensure!(
            num_inference_steps > 0,
            "num_inference_steps must be at least 1"
        );
        let train = self.config.num_train_timesteps as f64;
        let unshifted = match &self.fixed_sigmas {
            Some(fixed) => {
                ensure!(
                    fixed.len() == num_inference_steps,
                    "steps ({num_inference_steps}) must equal the number of timesteps given ({})",
                    fixed.len()
                );
                fixed.clone()
            }
            None => {
                linspace(1.0, 1.0 / train, num_inference_steps + 1)[..num_inference_steps].to_vec()
            }
        };
        let mut sigmas: Vec<f64> = unshifted
            .iter()
            .map(|&s| shift_sigma(self.config.flow_shift, s))
            .collect();
        if (sigmas[0] - 1.0).abs() < 1e-6 {
            sigmas[0] -= 1e-6;
        }
        self.timesteps = sigmas.iter().map(|&s| (s * train) as i64 as f32).collect();
        let last = match self.config.final_sigmas_type.as_str() {
            "sigma_min" => *sigmas.last().context("empty schedule")?,
            _ => 0.0,
        };
        self.sigmas = sigmas.iter().chain([&last]).map(|&s| s as f32).collect();
        self.step_index = 0;
        self.model_outputs = vec![None; self.config.solver_order];
        self.lower_order_nums = 0;
        self.this_order = 1;
        self.last_sample = None;
        Ok(())
    }

    /// One UniPC step: correct the incoming sample with this model output (UniC), then predict
    /// the next sample (UniP).
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
        ensure!(
            model_output.dims() == sample.dims(),
            "scheduler: model_output shape {:?} != sample shape {:?}",
            model_output.dims(),
            sample.dims()
        );
        let i = self.step_index;
        let use_corrector = i > 0
            && !self.config.disable_corrector.contains(&(i - 1))
            && self.last_sample.is_some();
        // Flow prediction to data prediction: x0 = x - sigma * v.
        let x0 = (sample - scale(model_output, self.sigmas[i] as f64)?)?;
        let sample = match (&self.last_sample, use_corrector) {
            (Some(last), true) => self.corrector(&x0, last, self.this_order)?,
            _ => sample.clone(),
        };
        self.model_outputs.remove(0);
        self.model_outputs.push(Some(x0));
        let remaining = self.timesteps.len() - i;
        let order = if self.config.lower_order_final {
            self.config.solver_order.min(remaining)
        } else {
            self.config.solver_order
        };
        self.this_order = order.min(self.lower_order_nums + 1);
        let prev = self.predictor(&sample, self.this_order)?;
        self.last_sample = Some(sample);
        if self.lower_order_nums < self.config.solver_order {
            self.lower_order_nums += 1;
        }
        self.step_index += 1;
        Ok(prev)
    }

    /// The converted output `back` steps before the newest (0 = newest).
    fn output(&self, back: usize) -> crate::Result<&Tensor> {
        self.model_outputs
            .iter()
            .rev()
            .nth(back)
            .and_then(|m| m.as_ref())
            .context("scheduler: missing an earlier model output")
    }

    /// The coefficients of one update, computed in the float type diffusers would use: float64
    /// for float64 tensors, float32 otherwise (its sigmas are float32).
    fn coefficients(&self, step: Step, dtype: DType) -> Coefficients {
        match dtype {
            DType::F64 => coefficients::<f64>(step),
            _ => coefficients::<f32>(step),
        }
    }

    /// UniP: extrapolate from the sample at sigma[i] to sigma[i+1].
    fn predictor(&self, x: &Tensor, order: usize) -> crate::Result<Tensor> {
        let i = self.step_index;
        let step = Step {
            sigma_t: self.sigmas[i + 1],
            sigma_s0: self.sigmas[i],
            sigma_s1: (order == 2).then(|| self.sigmas[i - 1]),
            bh1: self.config.is_bh1(),
            corrector: false,
        };
        let c = self.coefficients(step, x.dtype());
        let m0 = self.output(0)?;
        let x_t_ = (scale(x, c.sample_weight)? - scale(m0, c.x0_weight)?)?;
        match (c.rk, c.rhos.as_slice()) {
            (None, []) => Ok(x_t_),
            (Some(rk), &[rho]) => {
                let d1 = div_scalar(&(self.output(1)? - m0)?, rk)?;
                Ok((x_t_ - scale(&scale(&d1, rho)?, c.residual_weight)?)?)
            }
            _ => bail!("scheduler: predictor order {order} is not supported"),
        }
    }

    /// UniC: refine the sample the last predictor produced, now that its model output is known;
    /// the corrected sample is rebuilt from the sample before that predictor.
    fn corrector(
        &self,
        model_t: &Tensor,
        last_sample: &Tensor,
        order: usize,
    ) -> crate::Result<Tensor> {
        let i = self.step_index;
        let step = Step {
            sigma_t: self.sigmas[i],
            sigma_s0: self.sigmas[i - 1],
            sigma_s1: (order == 2).then(|| self.sigmas[i - 2]),
            bh1: self.config.is_bh1(),
            corrector: true,
        };
        let c = self.coefficients(step, last_sample.dtype());
        let m0 = self.output(0)?;
        let x_t_ = (scale(last_sample, c.sample_weight)? - scale(m0, c.x0_weight)?)?;
        let d1_t = (model_t - m0)?;
        let correction = match (c.rk, c.rhos.as_slice()) {
            (None, &[rho_t]) => scale(&d1_t, rho_t)?,
            (Some(rk), &[rho_1, rho_t]) => {
                let d1 = div_scalar(&(self.output(1)? - m0)?, rk)?;
                (scale(&d1, rho_1)? + scale(&d1_t, rho_t)?)?
            }
            _ => bail!("scheduler: corrector order {order} is not supported"),
        };
        Ok((x_t_ - scale(&correction, c.residual_weight)?)?)
    }
}
