//! Times the tiled attention at a long sequence (the online-softmax path); run with
//! RAYON_NUM_THREADS=2. Arguments `KEY_TILE,QUERY_TILE,MAX_SCORES` try other tilings (default:
//! `AttentionTiling::default()`); each runs twice.
use anyhow::Context;
use candle_core::{Device, Tensor};
use gallop_wan::transformer::{AttentionTiling, attention};

fn main() -> anyhow::Result<()> {
    gallop_wan::memory::reuse_freed_memory();
    let mut tilings = Vec::new();
    for arg in std::env::args().skip(1) {
        let p: Vec<usize> = arg
            .split(',')
            .map(str::parse)
            .collect::<Result<_, _>>()
            .with_context(|| format!("{arg:?}: expected KEY_TILE,QUERY_TILE,MAX_SCORES"))?;
        anyhow::ensure!(
            p.len() == 3,
            "{arg:?}: expected KEY_TILE,QUERY_TILE,MAX_SCORES"
        );
        tilings.push(AttentionTiling {
            key_tile: p[0],
            query_tile: p[1],
            max_scores: p[2],
        });
    }
    if tilings.is_empty() {
        tilings.push(AttentionTiling::default());
    }
    let (h, s, d) = (12, 12288, 128);
    let q = Tensor::randn(0f32, 1f32, (1, h, s, d), &Device::Cpu)?;
    let k = Tensor::randn(0f32, 1f32, (1, h, s, d), &Device::Cpu)?;
    let v = Tensor::randn(0f32, 1f32, (1, h, s, d), &Device::Cpu)?;
    for tiling in tilings.iter().flat_map(|t| [*t, *t]) {
        let start = std::time::Instant::now();
        let cpu = gallop_wan::testing::process_cpu_seconds();
        let out = attention(&q, &k, &v, tiling)?;
        println!(
            "attention {:?} {tiling:?} {:.3}s (cpu {:.3}s)",
            out.dims(),
            start.elapsed().as_secs_f64(),
            gallop_wan::testing::process_cpu_seconds() - cpu,
        );
    }
    Ok(())
}
