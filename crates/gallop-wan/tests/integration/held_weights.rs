//! Bytes of weights a loaded checkpoint holds on the CPU, f32 vs `--dtype bf16` (matrices and the
//! T5 token table held in bf16), from the real checkpoints' manifests: each component's loader
//! runs over the manifest (zero-stride stand-ins, nothing of real size allocated) and every tensor
//! it reads counts at the dtype it asked for. The VAE loads in f32 whatever the dtype.
//! `cargo test -p gallop-wan --test integration held_weights -- --nocapture` prints the figures
//! BENCHMARKS.md quotes ("Weights held in bf16 on the CPU").

use std::path::Path;

use candle_core::{DType, Device};
use gallop_wan::quant::Quantize;
use gallop_wan::t5::{T5Config, T5Encoder};
use gallop_wan::transformer::{TransformerConfig, WanTransformer};
use gallop_wan::vae::{AutoencoderKLWan, VaeConfig};
use gallop_wan::weights::TrackedWeights;

/// Bytes `component` of `checkpoint` holds when loaded with `dtype` on the CPU.
fn held_bytes(checkpoint: &str, component: &str, dtype: DType) -> u64 {
    held_bytes_quantized(checkpoint, component, dtype, None)
}

/// As [`held_bytes`], the `Linear` matrices held quantized (`--quantize`) when asked; the VAE
/// is never quantized.
fn held_bytes_quantized(
    checkpoint: &str,
    component: &str,
    dtype: DType,
    quantize: Option<Quantize>,
) -> u64 {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("manifests")
        .join(checkpoint)
        .join(format!("{component}.json"));
    let (config, weights) = TrackedWeights::from_manifest(&path).unwrap();
    let weights = match component {
        "vae" => weights,
        _ => weights.with_quantize(quantize),
    };
    let vb = weights.var_builder(dtype, &Device::Cpu);
    match component {
        "transformer" | "transformer_2" => {
            let config: TransformerConfig = serde_json::from_value(config).unwrap();
            drop(WanTransformer::new(config, vb).unwrap());
        }
        "text_encoder" => {
            let config: T5Config = serde_json::from_value(config).unwrap();
            drop(T5Encoder::new(config, vb).unwrap());
        }
        "vae" => {
            let config: VaeConfig = serde_json::from_value(config).unwrap();
            // The pipeline loads the VAE in f32 whatever the dtype.
            let vb = weights.var_builder(DType::F32, &Device::Cpu);
            drop(AutoencoderKLWan::new(config, vb).unwrap());
        }
        other => panic!("no loader for {other}"),
    }
    assert!(weights.unread().is_empty(), "{checkpoint}/{component}");
    weights.held_bytes()
}

fn gb(bytes: u64) -> String {
    format!("{:.2} GB", bytes as f64 / 1e9)
}

#[test]
fn bf16_held_weights_of_real_checkpoints() {
    // Wan2.1-VACE-1.3B serves r2v with UMT5-XXL (its text encoder is Wan2.1-T2V-14B's) and the
    // Wan2.1 VAE (Wan2.1-T2V-1.3B's); Wan2.2-TI2V-5B has all three in its own folder.
    let checkpoints: [(&str, [(&str, &str); 3]); 2] = [
        (
            "Wan2.1-VACE-1.3B",
            [
                ("Wan2.1-VACE-1.3B", "transformer"),
                ("Wan2.1-T2V-14B", "text_encoder"),
                ("Wan2.1-T2V-1.3B", "vae"),
            ],
        ),
        (
            "Wan2.2-TI2V-5B",
            [
                ("Wan2.2-TI2V-5B", "transformer"),
                ("Wan2.2-TI2V-5B", "text_encoder"),
                ("Wan2.2-TI2V-5B", "vae"),
            ],
        ),
    ];
    for (name, components) in checkpoints {
        let (mut f32_total, mut bf16_total) = (0, 0);
        for (checkpoint, component) in components {
            let f32_bytes = held_bytes(checkpoint, component, DType::F32);
            let bf16_bytes = held_bytes(checkpoint, component, DType::BF16);
            eprintln!(
                "{name}: {component} ({checkpoint}): f32 {}, bf16-held {} ({:.3}x)",
                gb(f32_bytes),
                gb(bf16_bytes),
                bf16_bytes as f64 / f32_bytes as f64
            );
            match component {
                "vae" => assert_eq!(bf16_bytes, f32_bytes, "the VAE stays f32"),
                // The matrices are nearly all of it: close to half, never below.
                _ => assert!(
                    bf16_bytes * 2 >= f32_bytes && bf16_bytes * 100 < f32_bytes * 51,
                    "{name} {component}: {bf16_bytes} of {f32_bytes} bytes"
                ),
            }
            f32_total += f32_bytes;
            bf16_total += bf16_bytes;
        }
        eprintln!(
            "{name}: total f32 {}, bf16-held {}",
            gb(f32_total),
            gb(bf16_total)
        );
    }
}

/// `cargo test -p gallop-wan --test integration held_weights -- --nocapture` prints the table
/// BENCHMARKS.md quotes ("Weights held: int8 and fp8"). int8 / fp8 rows hold the `Linear`
/// matrices of the transformers and UMT5 in 8 bits (with an f32 scale per output channel) and
/// everything else as `--dtype bf16` does (the T5 token table in bf16, the rest f32).
#[test]
fn quantized_held_weights_of_real_checkpoints() {
    let checkpoints: [(&str, &[(&str, &str)]); 3] = [
        (
            "Wan2.1-VACE-1.3B",
            &[
                ("Wan2.1-VACE-1.3B", "transformer"),
                ("Wan2.1-T2V-14B", "text_encoder"),
                ("Wan2.1-T2V-1.3B", "vae"),
            ],
        ),
        (
            "Wan2.2-TI2V-5B",
            &[
                ("Wan2.2-TI2V-5B", "transformer"),
                ("Wan2.2-TI2V-5B", "text_encoder"),
                ("Wan2.2-TI2V-5B", "vae"),
            ],
        ),
        (
            // Its VAE is Wan2.1's.
            "Wan2.2-I2V-A14B",
            &[
                ("Wan2.2-I2V-A14B", "transformer"),
                ("Wan2.2-I2V-A14B", "transformer_2"),
                ("Wan2.1-T2V-14B", "text_encoder"),
                ("Wan2.1-T2V-1.3B", "vae"),
            ],
        ),
    ];
    let variants = [
        ("f32", DType::F32, None),
        ("bf16", DType::BF16, None),
        ("int8", DType::BF16, Some(Quantize::Int8)),
        ("fp8", DType::BF16, Some(Quantize::Fp8)),
    ];
    for (name, components) in checkpoints {
        let mut totals = [0u64; 4];
        for (checkpoint, component) in components {
            let bytes: Vec<u64> = variants
                .iter()
                .map(|(_, dtype, q)| held_bytes_quantized(checkpoint, component, *dtype, *q))
                .collect();
            eprintln!(
                "{name}: {component} ({checkpoint}): f32 {}, bf16 {}, int8 {}, fp8 {}",
                gb(bytes[0]),
                gb(bytes[1]),
                gb(bytes[2]),
                gb(bytes[3])
            );
            if *component != "vae" {
                // int8 and fp8 hold the same bytes; the matrices at half of bf16 (plus one
                // f32 scale per output channel): nearly all of a transformer, UMT5 keeping its
                // 1B-entry token table in bf16.
                assert_eq!(bytes[2], bytes[3], "{name} {component}");
                let percent = match component.starts_with("transformer") {
                    true => 52,
                    false => 60,
                };
                assert!(
                    bytes[2] * 100 < bytes[1] * percent,
                    "{name} {component}: {bytes:?}"
                );
            }
            for (total, b) in totals.iter_mut().zip(&bytes) {
                *total += b;
            }
        }
        eprintln!(
            "{name}: total f32 {}, bf16 {}, int8 {}, fp8 {}",
            gb(totals[0]),
            gb(totals[1]),
            gb(totals[2]),
            gb(totals[3])
        );
        if name == "Wan2.2-TI2V-5B" {
            // A 24 GB machine: int8 leaves over 8 GB for activations at 720P.
            assert!(totals[2] < 16_000_000_000, "{}", gb(totals[2]));
        }
    }
}
