//! The prompt path of the Wan pipelines: cleaning (diffusers' prompt_clean), the UMT5-style
//! tokenizer (fixture tokenizer.json built with the same pipeline), 512 padding, zeroed rows.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use gallop_wan::t5::{PromptTokenizer, TextEncoder, clean_prompt};
use gallop_wan::testing::assert_close;

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/t5")
        .join(case)
}

fn cases() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("tokenizer/cases.json")).unwrap())
        .unwrap()
}

#[test]
fn prompts_are_cleaned_like_diffusers() {
    for case in cases()["prompts"].as_array().unwrap() {
        let raw = case["raw"].as_str().unwrap();
        assert_eq!(
            clean_prompt(raw),
            case["clean"].as_str().unwrap(),
            "raw prompt {raw:?}"
        );
    }
}

#[test]
fn tokenizer_pads_truncates_and_ends_with_eos_like_transformers() {
    let cases = cases();
    let max_length = cases["max_length"].as_u64().unwrap() as usize;
    let tokenizer = PromptTokenizer::from_path(&fixture("tokenizer"), max_length).unwrap();
    for case in cases["prompts"].as_array().unwrap() {
        let clean = case["clean"].as_str().unwrap().to_string();
        let t = tokenizer
            .tokenize(std::slice::from_ref(&clean), &Device::Cpu)
            .unwrap();
        let ids: Vec<u32> = t.input_ids.squeeze(0).unwrap().to_vec1().unwrap();
        let mask: Vec<u32> = t.attention_mask.squeeze(0).unwrap().to_vec1().unwrap();
        let want = |k: &str| -> Vec<u32> {
            case[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect()
        };
        assert_eq!(ids, want("input_ids"), "ids of {clean:?}");
        assert_eq!(mask, want("attention_mask"), "mask of {clean:?}");
        assert_eq!(t.lengths, vec![mask.iter().filter(|&&m| m == 1).count()]);
    }
}

#[test]
fn prompt_embeds_match_the_pipeline_with_512_tokens_and_zeroed_padding() {
    let dir = fixture("prompt");
    let prompts: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("prompts.json")).unwrap()).unwrap();
    let refs: Vec<&str> = prompts.iter().map(|s| s.as_str()).collect();
    let encoder = TextEncoder::from_model_dir(&dir, 512, DType::F32, &Device::Cpu).unwrap();
    let got = encoder.encode_prompts(&refs).unwrap();
    let expected = &candle_core::safetensors::load(dir.join("outputs.safetensors"), &Device::Cpu)
        .unwrap()["prompt_embeds"];
    assert_eq!(got.dims(), &[2, 512, 32]);
    assert_close("prompt_embeds", &got, expected, 1e-4);
    // Rows past the first prompt's 10 tokens are exactly zero.
    let tail = got.narrow(0, 0, 1).unwrap().narrow(1, 10, 502).unwrap();
    let max = tail
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(max, 0.0);
    // ... and every real row carries signal.
    let head = got.narrow(0, 0, 1).unwrap().narrow(1, 0, 10).unwrap();
    let row_max = head
        .abs()
        .unwrap()
        .max_keepdim(2)
        .unwrap()
        .min_all()
        .unwrap();
    assert!(row_max.to_scalar::<f32>().unwrap() > 0.0);
}

#[test]
fn a_tokenizer_without_pad_is_refused() {
    let json = std::fs::read_to_string(fixture("tokenizer/tokenizer.json")).unwrap();
    let broken = json.replace("<pad>", "<nopad>");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), broken).unwrap();
    let err = PromptTokenizer::from_path(dir.path(), 16)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("<pad>"), "{err}");
}
