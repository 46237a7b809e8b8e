//! Every integration test of this crate, in one binary: each test binary links the whole
//! dependency tree, so a binary per file cost CI gigabytes of disk and minutes of linking.

mod chained_windows;
mod changes_fixtures;
mod clip_vision;
mod held_weights;
mod layout_manifests;
mod lora_errors;
mod pipeline_dtype;
mod pipeline_engine;
mod pipeline_fixtures;
mod scheduler_traces;
mod t5_clip_manifests;
mod t5_encoder;
mod tokenizer_prompts;
mod transformer_fixtures;
mod transformer_inputs;
mod transformer_manifests;
mod vae_fixtures;
mod vae_manifest;
