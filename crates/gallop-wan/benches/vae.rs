//! vae-bench: time one Wan VAE decode (or encode) of random latents, for BENCHMARKS.md.
//!
//! cargo bench -p gallop-wan --bench vae --no-run, then run the printed binary:
//!   RAYON_NUM_THREADS=2 /usr/bin/time -v target/release/deps/vae-* \
//!     --model-dir /tmp/vae-bench/wan21 --latent 16,2,16,16 [--tiled | --tile PX] [--encode] [--repeat 3]
//! The model folder comes from `benches/vae_diffusers.py`, which times diffusers on the same
//! weights and shapes. Prints the seconds of each run (loading excluded).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use gallop_wan::vae::{AutoencoderKLWan, TileConfig};

struct Args {
    model_dir: PathBuf,
    /// `z, T, h, w` of the latents.
    latent: Vec<usize>,
    tiled: bool,
    /// Tile size in pixels (stride 3/4 of it); implies `--tiled`.
    tile: Option<usize>,
    encode: bool,
    repeat: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        model_dir: PathBuf::from("/tmp/vae-bench/wan21"),
        latent: vec![16, 2, 16, 16],
        tiled: false,
        tile: None,
        encode: false,
        repeat: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--model-dir" => args.model_dir = it.next().context("--model-dir DIR")?.into(),
            "--latent" => {
                let v = it.next().context("--latent z,T,h,w")?;
                args.latent = v.split(',').map(|s| s.parse()).collect::<Result<_, _>>()?;
                anyhow::ensure!(args.latent.len() == 4, "--latent must be z,T,h,w");
            }
            "--tiled" => args.tiled = true,
            "--tile" => {
                args.tile = Some(it.next().context("--tile PX")?.parse()?);
                args.tiled = true;
            }
            "--encode" => args.encode = true,
            "--repeat" => args.repeat = it.next().context("--repeat N")?.parse()?,
            "--bench" => {} // passed by `cargo bench`
            other => anyhow::bail!("unknown argument {other:?}"),
        }
    }
    Ok(args)
}

fn main() -> anyhow::Result<()> {
    gallop_wan::memory::reuse_freed_memory();
    let args = parse_args()?;
    let device = Device::Cpu;
    let start = Instant::now();
    let vae = AutoencoderKLWan::load(&args.model_dir, DType::F32, &device)?;
    eprintln!("load {:.2}s", start.elapsed().as_secs_f64());
    let (z, t, h, w) = (
        args.latent[0],
        args.latent[1],
        args.latent[2],
        args.latent[3],
    );
    let tiles = match args.tile {
        Some(px) => Some(TileConfig {
            min_height: px,
            min_width: px,
            stride_height: px * 3 / 4,
            stride_width: px * 3 / 4,
        }),
        None => args.tiled.then(TileConfig::default),
    };
    let s = vae.config().scale_factor_spatial;
    for run in 0..args.repeat {
        let (start, cpu) = (Instant::now(), gallop_wan::testing::process_cpu_seconds());
        let shape = if args.encode {
            let frames = 1 + 4 * (t - 1);
            let x = Tensor::rand(-1f32, 1f32, (1, 3, frames, h * s, w * s), &device)?;
            vae.encode_with(&x, tiles.as_ref())?.dims().to_vec()
        } else {
            let latents = Tensor::randn(0f32, 1f32, (1, z, t, h, w), &device)?;
            vae.decode_with(&latents, tiles.as_ref())?.dims().to_vec()
        };
        let what = if args.encode { "encode" } else { "decode" };
        println!(
            "run {run}: {what} latent [1,{z},{t},{h},{w}] -> {shape:?} tiled={} {:.3}s (cpu {:.3}s)",
            args.tiled,
            start.elapsed().as_secs_f64(),
            gallop_wan::testing::process_cpu_seconds() - cpu
        );
    }
    Ok(())
}
