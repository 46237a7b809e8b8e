//! Every integration test of this crate, in one binary: each test binary links the whole
//! dependency tree, so a binary per file cost CI gigabytes of disk and minutes of linking.

mod support;

mod compute_device;
mod debug_frames;
mod generate;
mod generate_first_run;
mod pipeline_generate;
mod pipeline_generate_a14b;
mod pipeline_models_pull;
mod pipeline_serve;
mod pipeline_serve_config;
mod quiet_output;
mod readme_session;
mod scale_out;
mod serve;
mod serve_faults;
mod serve_secrets;
mod upstream_routing;
