//! Every integration test of this crate, in one binary: each test binary links the whole
//! dependency tree, so a binary per file cost CI gigabytes of disk and minutes of linking.

mod http_support;

mod dashscope_sdk;
mod fetch_retry;
mod http_auth;
mod http_engine_map;
mod http_errors;
mod http_jobs;
mod http_limits;
mod http_quotas;
mod http_routes;
mod http_seeds;
mod http_uploads;
mod storage_s3;
mod upstream_keys;
mod web_page;
mod worker_durability;
mod worker_retries;
mod worker_runs;
