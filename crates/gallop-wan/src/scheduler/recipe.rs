//! The sampling recipe's settings beyond steps and guidance: which scheduler, its shift and an
//! explicit timestep list, and named presets for published step distillations.

use std::fmt;
use std::str::FromStr;

use crate::error::ensure;

use super::{
    FlowMatchEulerConfig, FlowMatchEulerScheduler, Scheduler, UniPcConfig, UniPcScheduler,
};

/// `--scheduler`: the flow-matching sampler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum SchedulerKind {
    /// diffusers' `UniPCMultistepScheduler` as Wan ships it (flow prediction, order 2, bh2).
    UniPc,
    /// diffusers' `FlowMatchEulerDiscreteScheduler` (the step-distilled LoRAs' sampler).
    Euler,
}

impl FromStr for SchedulerKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "unipc" => Ok(Self::UniPc),
            "euler" => Ok(Self::Euler),
            _ => Err(format!("must be unipc or euler, got {s:?}")),
        }
    }
}

impl TryFrom<String> for SchedulerKind {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<SchedulerKind> for String {
    fn from(k: SchedulerKind) -> String {
        k.to_string()
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::UniPc => "unipc",
            Self::Euler => "euler",
        })
    }
}

/// Changes to the checkpoint's scheduler: each None keeps what `scheduler_config.json` says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScheduleSettings {
    pub scheduler: Option<SchedulerKind>,
    pub shift: Option<f64>,
    /// Training timesteps (0..=num_train_timesteps, decreasing), one per step, before the shift:
    /// each becomes the unshifted sigma `t / num_train_timesteps` (diffusers'
    /// `set_timesteps(sigmas=...)`), so the model sees the shifted timesteps.
    pub timesteps: Option<Vec<f64>>,
}

/// Timesteps must be in (0, T] and strictly decreasing; the message names `field`.
pub fn check_timesteps(field: &str, timesteps: &[f64], train: usize) -> crate::Result<()> {
    ensure!(
        !timesteps.is_empty(),
        "{field} must list at least one timestep"
    );
    let train = train as f64;
    for (i, &t) in timesteps.iter().enumerate() {
        ensure!(
            t > 0.0 && t <= train,
            "{field}: timestep {t} must be in (0, {train}]"
        );
        ensure!(
            i == 0 || t < timesteps[i - 1],
            "{field} must be strictly decreasing ({} then {t})",
            timesteps[i - 1]
        );
    }
    Ok(())
}

impl Scheduler {
    /// The checkpoint's scheduler with `settings` applied.
    pub fn with_settings(self, settings: &ScheduleSettings) -> crate::Result<Self> {
        let train = self.num_train_timesteps();
        let shift = settings.shift.unwrap_or(self.shift());
        ensure!(shift > 0.0, "shift must be positive, got {shift}");
        let mut scheduler = match settings.scheduler {
            None => self,
            Some(SchedulerKind::UniPc) => Self::UniPc(UniPcScheduler::new(UniPcConfig {
                num_train_timesteps: train,
                prediction_type: "flow_prediction".into(),
                use_flow_sigmas: true,
                flow_shift: shift,
                ..UniPcConfig::default()
            })?),
            Some(SchedulerKind::Euler) => {
                Self::FlowMatchEuler(FlowMatchEulerScheduler::new(FlowMatchEulerConfig {
                    num_train_timesteps: train,
                    shift,
                    ..FlowMatchEulerConfig::default()
                })?)
            }
        };
        if settings.shift.is_some() {
            match &mut scheduler {
                Self::UniPc(s) => s.set_shift(shift)?,
                Self::FlowMatchEuler(s) => s.set_shift(shift)?,
            }
        }
        if let Some(timesteps) = &settings.timesteps {
            check_timesteps("timesteps", timesteps, train)?;
            let sigmas = timesteps.iter().map(|t| t / train as f64).collect();
            match &mut scheduler {
                Self::UniPc(s) => s.fix_sigmas(sigmas),
                Self::FlowMatchEuler(s) => s.fix_sigmas(sigmas),
            }
        }
        Ok(scheduler)
    }

    pub fn num_train_timesteps(&self) -> usize {
        match self {
            Self::UniPc(s) => s.config().num_train_timesteps,
            Self::FlowMatchEuler(s) => s.config().num_train_timesteps,
        }
    }

    pub fn shift(&self) -> f64 {
        match self {
            Self::UniPc(s) => s.config().flow_shift,
            Self::FlowMatchEuler(s) => s.config().shift,
        }
    }

    pub fn kind(&self) -> SchedulerKind {
        match self {
            Self::UniPc(_) => SchedulerKind::UniPc,
            Self::FlowMatchEuler(_) => SchedulerKind::Euler,
        }
    }
}

/// A published step distillation's sampling settings (`recipe = "..."`).
#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    pub steps: usize,
    /// 1 turns classifier-free guidance off: one transformer pass per step.
    pub guidance: f64,
    pub schedule: ScheduleSettings,
}

/// The presets: name, what it is for.
pub const RECIPES: [(&str, &str); 2] = [
    (
        "lightx2v-4step",
        "lightx2v step/CFG distillation (Wan2.1 lightx2v LoRAs and distilled checkpoints): 4 steps, \
         guidance 1, flow-match Euler, shift 5, timesteps 1000/750/500/250",
    ),
    (
        "lightning-4step",
        "Wan2.2-Lightning (one LoRA per A14B expert, or TI2V-5B): the same 4-step schedule",
    ),
];

/// `--recipe` / `recipe = "..."`: a preset by name ([`RECIPES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum RecipeName {
    Lightx2v4Step,
    Lightning4Step,
}

impl RecipeName {
    /// The preset's settings. Both published 4-step distillations sample the same way.
    pub fn recipe(self) -> Recipe {
        Recipe {
            steps: 4,
            guidance: 1.0,
            schedule: ScheduleSettings {
                scheduler: Some(SchedulerKind::Euler),
                shift: Some(5.0),
                timesteps: Some(vec![1000.0, 750.0, 500.0, 250.0]),
            },
        }
    }
}

impl FromStr for RecipeName {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "lightx2v-4step" => Ok(Self::Lightx2v4Step),
            "lightning-4step" => Ok(Self::Lightning4Step),
            _ => Err(format!(
                "unknown recipe {name:?}: expected one of {}",
                RECIPES.map(|(n, _)| n).join(", ")
            )),
        }
    }
}

impl TryFrom<String> for RecipeName {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<RecipeName> for String {
    fn from(r: RecipeName) -> String {
        r.to_string()
    }
}

impl fmt::Display for RecipeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Lightx2v4Step => "lightx2v-4step",
            Self::Lightning4Step => "lightning-4step",
        })
    }
}

impl FromStr for Recipe {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        name.parse::<RecipeName>().map(RecipeName::recipe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unipc() -> Scheduler {
        Scheduler::from_json(
            r#"{"_class_name": "UniPCMultistepScheduler", "prediction_type": "flow_prediction",
                "use_flow_sigmas": true, "flow_shift": 3.0}"#,
        )
        .unwrap()
    }

    #[test]
    fn a_timestep_list_gives_the_shifted_schedule() {
        let recipe: Recipe = "lightx2v-4step".parse().unwrap();
        let mut s = unipc().with_settings(&recipe.schedule).unwrap();
        assert_eq!((s.kind(), s.shift()), (SchedulerKind::Euler, 5.0));
        s.set_timesteps(4).unwrap();
        // shift 5: 1 -> 1, 0.75 -> 0.9375, 0.5 -> 0.8333, 0.25 -> 0.625.
        let t: Vec<f32> = s.timesteps().to_vec();
        assert_eq!(t[0], 1000.0);
        assert!(
            (t[1] - 937.5).abs() < 1e-3 && (t[3] - 625.0).abs() < 1e-3,
            "{t:?}"
        );
        assert_eq!(*s.sigmas().last().unwrap(), 0.0);
        assert!(
            s.set_timesteps(3)
                .unwrap_err()
                .to_string()
                .contains("steps (3)")
        );
    }

    #[test]
    fn bad_settings_are_refused_naming_the_rule() {
        let err =
            |settings: ScheduleSettings| unipc().with_settings(&settings).unwrap_err().to_string();
        let timesteps = |t: Vec<f64>| ScheduleSettings {
            timesteps: Some(t),
            ..Default::default()
        };
        assert!(err(timesteps(vec![500.0, 750.0])).contains("strictly decreasing"));
        assert!(err(timesteps(vec![1001.0])).contains("(0, 1000]"));
        assert!(err(timesteps(vec![])).contains("at least one"));
        let shift = ScheduleSettings {
            shift: Some(0.0),
            ..Default::default()
        };
        assert!(err(shift).contains("shift must be positive"));
        assert!(
            "turbo"
                .parse::<Recipe>()
                .unwrap_err()
                .contains("lightx2v-4step")
        );
        assert!(
            "ddim"
                .parse::<SchedulerKind>()
                .unwrap_err()
                .contains("unipc or euler")
        );
    }
}
