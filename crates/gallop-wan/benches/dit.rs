//! dit-bench: one Wan transformer forward for BENCHMARKS.md, on the weights and inputs that
//! `benches/dit_diffusers.py` writes to /tmp/dit-bench (run that first).
//!
//! cargo bench -p gallop-wan --bench dit --no-run, then run the printed binary:
//!   RAYON_NUM_THREADS=2 /usr/bin/time -v target/release/deps/dit-* [--repeat 3]
//! Prints load and forward seconds (wall, and CPU of all threads), and the relative error against diffusers' sample.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use candle_core::{DType, Device};
use gallop_wan::transformer::{WanTransformer, inputs_from_tensors};

fn main() -> anyhow::Result<()> {
    gallop_wan::memory::reuse_freed_memory();
    let mut repeat = 1;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--repeat" => repeat = it.next().context("--repeat N")?.parse()?,
            "--bench" => {} // passed by `cargo bench`
            other => anyhow::bail!("unknown argument {other:?}"),
        }
    }
    let root = Path::new("/tmp/dit-bench");
    let device = Device::Cpu;
    let start = Instant::now();
    let model = WanTransformer::load(&root.join("model"), DType::F32, &device)?;
    println!("load {:.2}s", start.elapsed().as_secs_f64());
    let inputs = inputs_from_tensors(candle_core::safetensors::load(
        root.join("inputs.safetensors"),
        &device,
    )?)?;
    let mut sample = None;
    for _ in 0..repeat {
        let (start, cpu) = (Instant::now(), gallop_wan::testing::process_cpu_seconds());
        sample = Some(model.forward(&inputs)?);
        println!(
            "forward {:.3}s (cpu {:.3}s)",
            start.elapsed().as_secs_f64(),
            gallop_wan::testing::process_cpu_seconds() - cpu
        );
    }
    let reference = root.join("diffusers_sample.safetensors");
    if let (Some(sample), true) = (sample, reference.exists()) {
        let expected = candle_core::safetensors::load(&reference, &device)?
            .remove("sample")
            .context("no sample in the diffusers output")?;
        let err = gallop_wan::testing::relative_error(&sample, &expected)?;
        println!("relative error vs diffusers {err:.2e}");
    }
    Ok(())
}
