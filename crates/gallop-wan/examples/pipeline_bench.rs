//! Seconds per denoising step of a whole pipeline run (CFG on, two transformer passes a step),
//! for BENCHMARKS.md. Run beside `scripts/fixtures/pipeline_bench.py` on the same model dir:
//!
//!   RAYON_NUM_THREADS=2 /usr/bin/time -v cargo run --release -p gallop-wan \
//!       --example pipeline_bench -- MODEL_DIR HEIGHT WIDTH FRAMES STEPS [DTYPE] [KEY=VALUE...]
//!
//! DTYPE is f32 (default), bf16 or f16: on the CPU the dtype the matrices are held in (f32 compute),
//! as `gallop --dtype` loads them. Extra settings: `guidance=G` (default 5; 1 turns CFG off),
//! `recipe=NAME` (a preset: its steps, guidance and schedule; STEPS is then ignored),
//! `quantize=int8|fp8`, `lora=PATH[:STRENGTH]`. Prints load time, seconds per step, decode time
//! and the whole run's wall time.

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use candle_core::Device;
use gallop_engine::{RunContext, discard_frames};
use gallop_wan::pipeline::{GenerateArgs, PipelineChanges, WanPipeline, gaussian_noise};
use gallop_wan::scheduler::Recipe;

fn main() -> anyhow::Result<()> {
    gallop_wan::memory::reuse_freed_memory(); // as the gallop binary does
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() >= 6,
        "usage: pipeline_bench MODEL_DIR HEIGHT WIDTH FRAMES STEPS [f32|bf16|f16] [KEY=VALUE...]"
    );
    let dtype: gallop_wan::settings::ComputeDtype = match args.get(6).filter(|a| !a.contains('=')) {
        Some(text) => text.parse().map_err(anyhow::Error::msg)?,
        None => Default::default(),
    };
    let num = |i: usize| args[i].parse::<usize>();
    let (height, width, frames, mut steps) = (num(2)?, num(3)?, num(4)?, num(5)?);
    let mut guidance = 5.0;
    let mut changes = PipelineChanges::default();
    for setting in args[6..].iter().filter(|a| a.contains('=')) {
        let (key, value) = setting.split_once('=').unwrap();
        match key {
            "guidance" => guidance = value.parse()?,
            "recipe" => {
                let recipe: Recipe = value.parse().map_err(anyhow::Error::msg)?;
                (steps, guidance, changes.schedule) =
                    (recipe.steps, recipe.guidance, recipe.schedule);
            }
            "quantize" => changes.quantize = Some(value.parse().map_err(anyhow::Error::msg)?),
            "lora" => changes
                .loras
                .push(value.parse().map_err(anyhow::Error::msg)?),
            _ => anyhow::bail!("unknown setting {key:?}: guidance, recipe, quantize or lora"),
        }
    }
    let run_start = Instant::now();
    let device = Device::Cpu;
    let t0 = Instant::now();
    let pipeline = WanPipeline::load_with(
        std::path::Path::new(&args[1]),
        dtype.dtype(),
        &changes,
        &device,
    )?;
    let load = t0.elapsed().as_secs_f64();
    let prompt = pipeline.encode_prompt("A white horse gallops along the beach at sunset")?;
    let negative = pipeline.encode_prompt("blurry, static, low quality")?;
    let image = match pipeline.index().class {
        gallop_wan::model_dir::PipelineClass::ImageToVideo => {
            Some(gaussian_noise(&[1, 3, height, width], 1, &device)?.clamp(-1f32, 1f32)?)
        }
        _ => None,
    };
    let shape = pipeline.latent_shape(height, width, frames, 0);
    let args = GenerateArgs {
        prompt_embeds: prompt,
        negative_prompt_embeds: (guidance > 1.0).then_some(negative),
        image,
        height,
        width,
        num_frames: frames,
        steps,
        guidance_scale: guidance,
        guidance_scale_2: None,
        latents: gaussian_noise(&shape, 0, &device)?,
        image_embeds: None,
        reference_images: Vec::new(),
        conditioning_scale: 1.0,
        leading_frames: None,
    };
    let cancel = AtomicBool::new(false);
    let t1 = Instant::now();
    let mut progress = |_| {};
    let mut discard = discard_frames;
    let mut ctx = RunContext::new(&mut progress, &cancel, &mut discard);
    let latents = pipeline.denoise(&args, &mut ctx)?;
    let denoise = t1.elapsed().as_secs_f64();
    let t2 = Instant::now();
    let video = pipeline.decode(&latents)?;
    let decode = t2.elapsed().as_secs_f64();
    println!(
        "gallop ({dtype} weights, {changes:?}): load {load:.3} s, {:.4} s/step ({steps} steps, guidance {guidance}), decode {decode:.3} s, whole run {:.2} s, frames {:?}",
        denoise / steps as f64,
        run_start.elapsed().as_secs_f64(),
        video.dims()
    );
    Ok(())
}
