//! `gallop debug forward`: run one component on named tensors from a safetensors file and write
//! its output, the same path the golden-fixture tests take.

use std::path::Path;

/// Components and the function that runs each. Each component module owns its entry.
pub fn forward(
    component: &str,
    model_dir: &Path,
    inputs: &Path,
    output: &Path,
) -> crate::Result<()> {
    let run: fn(&Path, &Path, &Path) -> crate::Result<()> = match component {
        // Each component module adds its line here: "name" => module::debug_forward,
        "vae-encode" => crate::vae::debug_forward_encode,
        "vae-decode" => crate::vae::debug_forward_decode,
        "transformer" => crate::transformer::debug_forward,
        "text-encoder" => crate::t5::debug_forward,
        "image-encoder" => crate::clip::debug_forward,
        other => crate::error::bail!(
            "unknown component {other:?}: expected transformer, vae-encode, vae-decode, text-encoder or image-encoder"
        ),
    };
    run(model_dir, inputs, output)
}
