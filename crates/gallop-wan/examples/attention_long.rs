//! Times the tiled attention at a long sequence (the online-softmax path), 2 threads expected.
use candle_core::{Device, Tensor};
use gallop_wan::transformer::{AttentionTiling, attention};
fn main() -> anyhow::Result<()> {
    gallop_wan::memory::reuse_freed_memory();
    let (h, s, d) = (12, 12288, 128);
    let q = Tensor::randn(0f32, 1f32, (1, h, s, d), &Device::Cpu)?;
    let k = Tensor::randn(0f32, 1f32, (1, h, s, d), &Device::Cpu)?;
    let v = Tensor::randn(0f32, 1f32, (1, h, s, d), &Device::Cpu)?;
    for _ in 0..3 {
        let (t, c) = (
            std::time::Instant::now(),
            gallop_wan::testing::process_cpu_seconds(),
        );
        let out = attention(&q, &k, &v, AttentionTiling::default())?;
        println!(
            "attention [1,{h},{s},{d}] {:.3}s (cpu {:.3}s) {:?}",
            t.elapsed().as_secs_f64(),
            gallop_wan::testing::process_cpu_seconds() - c,
            out.dims()
        );
    }
    Ok(())
}
