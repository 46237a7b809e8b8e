//! Scheduler traces against diffusers (fixtures from scripts/fixtures/schedulers.py): identical
//! sigma and timestep sequences; every step output on fixed model outputs within 1e-6 of diffusers
//! in float32 (the pipelines' dtype) and within 1e-12 of diffusers run in float64 (the algorithm).
//!
//! In float32 gallop computes the UniPC coefficients op by op as diffusers does. Its outputs equal
//! those of diffusers with torch.log and torch.expm1 swapped for correctly rounded ones (measured:
//! the same error at all 536 steps). What is left is torch's float32 log, which is MKL's vsLn: one
//! ulp off the correctly rounded value in ~7% of inputs (4 to 6 of the 100 logs of a 50-step
//! schedule); such an ulp moves a lambda by ~1.2e-7, so h by ~2e-6 relative, and that step's
//! output by up to ~1e-6. Measured here: float32 worst 9.8e-7 (UniPC, shift 3, 50 steps), float64
//! worst 2.1e-15, Euler exact.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, IndexOp, Tensor};
use gallop_wan::scheduler::Scheduler;
use gallop_wan::testing::relative_error;

const STEPS: [usize; 5] = [1, 2, 4, 10, 50];

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/scheduler")
        .join(case)
}

fn load(case: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(case).join("trace.safetensors"), &Device::Cpu).unwrap()
}

fn as_f32(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32).unwrap().to_vec1().unwrap()
}

/// Max |a-b| / max|b| in float64 (the shared helper works in float32, too coarse for 1e-12).
fn relative_error_f64(a: &Tensor, b: &Tensor) -> f64 {
    let a: Vec<f64> = a.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f64> = b.flatten_all().unwrap().to_vec1().unwrap();
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    diff / b.iter().map(|y| y.abs()).fold(1e-300, f64::max)
}

/// Run every step count of one case and compare schedule and trajectories with diffusers'.
fn check_case(case: &str) {
    let trace = load(case);
    let mut scheduler = Scheduler::from_dir(&fixture(case)).unwrap();
    for n in STEPS {
        let key = |k: &str| trace[&format!("steps{n}.{k}")].clone();
        scheduler.set_timesteps(n).unwrap();
        assert_eq!(
            scheduler.sigmas(),
            as_f32(&key("sigmas")),
            "{case} n={n}: sigmas"
        );
        assert_eq!(
            scheduler.timesteps(),
            as_f32(&key("timesteps")),
            "{case} n={n}: timesteps"
        );
        for (prefix, tol) in [("", 1e-6), ("f64.", 1e-12)] {
            scheduler.set_timesteps(n).unwrap();
            let outputs = key(&format!("{prefix}model_outputs"));
            let samples = key(&format!("{prefix}samples"));
            let mut sample = samples.i(0).unwrap();
            for i in 0..n {
                sample = scheduler.step(&outputs.i(i).unwrap(), &sample).unwrap();
                let expected = samples.i(i + 1).unwrap();
                let err = if prefix.is_empty() {
                    relative_error(&sample, &expected).unwrap() as f64
                } else {
                    relative_error_f64(&sample, &expected)
                };
                if std::env::var("TRACE_ERR").is_ok() {
                    eprintln!("{case} n={n} {prefix}step {i}: {err:e}");
                }
                assert!(
                    err < tol,
                    "{case} n={n} {prefix}step {i}: relative error {err:e} >= {tol:e}"
                );
            }
            assert!(
                scheduler.step(&outputs.i(0).unwrap(), &sample).is_err(),
                "{case}: a step past the end must fail"
            );
        }
    }
}

#[test]
fn unipc_matches_diffusers_for_shifts_1_3_5_12() {
    for shift in ["1", "3", "5", "12"] {
        check_case(&format!("unipc_shift{shift}"));
    }
}

#[test]
fn flow_match_euler_matches_diffusers_for_shifts_1_3_5_12() {
    for shift in ["1", "3", "5", "12"] {
        check_case(&format!("euler_shift{shift}"));
    }
}

#[test]
fn unipc_variants_match_diffusers() {
    for case in [
        "unipc_bh1_shift5",
        "unipc_nocorrector1_shift3",
        "unipc_sigmamin_shift3",
        "unipc_order1_shift3",
    ] {
        check_case(case);
    }
}

#[test]
fn wan_default_schedule_starts_just_below_one_and_ends_at_zero() {
    let mut s = Scheduler::from_dir(&fixture("unipc_shift5")).unwrap();
    s.set_timesteps(50).unwrap();
    assert_eq!(s.timesteps().len(), 50);
    assert_eq!(s.sigmas().len(), 51);
    assert!(s.sigmas()[0] < 1.0 && s.sigmas()[0] > 0.999);
    assert_eq!(*s.sigmas().last().unwrap(), 0.0);
    assert_eq!(s.timesteps()[0], 999.0);
}

#[test]
fn unsupported_configs_are_rejected_naming_the_field() {
    let err = Scheduler::from_json(r#"{"_class_name": "DDIMScheduler"}"#).unwrap_err();
    assert!(err.to_string().contains("_class_name"), "{err}");
    let err = Scheduler::from_json(
        r#"{"_class_name": "UniPCMultistepScheduler", "prediction_type": "epsilon", "use_flow_sigmas": true}"#,
    )
    .unwrap_err();
    assert!(err.to_string().contains("prediction_type"), "{err}");
    let err = Scheduler::from_json(
        r#"{"_class_name": "UniPCMultistepScheduler", "prediction_type": "flow_prediction", "use_flow_sigmas": true, "solver_order": 3}"#,
    )
    .unwrap_err();
    assert!(err.to_string().contains("solver_order"), "{err}");
    let err = Scheduler::from_json(
        r#"{"_class_name": "FlowMatchEulerDiscreteScheduler", "use_dynamic_shifting": true}"#,
    )
    .unwrap_err();
    assert!(err.to_string().contains("use_dynamic_shifting"), "{err}");
    let mut s =
        Scheduler::from_json(r#"{"_class_name": "FlowMatchEulerDiscreteScheduler"}"#).unwrap();
    assert!(s.set_timesteps(0).is_err());
    let x = Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();
    assert!(
        s.step(&x, &x).is_err(),
        "step before set_timesteps must fail"
    );
}
