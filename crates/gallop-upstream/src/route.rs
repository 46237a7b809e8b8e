//! One model id served by an upstream endpoint: which endpoint, which of its models, the
//! server's own key and how patiently to wait for it.

use std::time::Duration;

use crate::client::Upstream;
use crate::key::ApiKey;

/// One model id routed upstream (`upstream = "NAME"` in the serve config).
#[derive(Debug, Clone)]
pub struct UpstreamRoute {
    pub upstream: Upstream,
    /// Model Studio's id for it (`happyhorse-1.0-i2v`).
    pub model: String,
    /// The server's own key (Unified), read from `key_env` at startup.
    pub unified_key: Option<ApiKey>,
    /// The environment variable the Unified key comes from, for messages.
    pub key_env: Option<String>,
    /// How long an unreachable, failing or throttling upstream is retried before a job fails.
    pub patience: Duration,
    /// Time between two reads of a running task.
    pub poll_interval: Duration,
}

/// Default [`UpstreamRoute::patience`]: ten minutes of outage before a job gives up.
pub const DEFAULT_PATIENCE: Duration = Duration::from_secs(600);

/// Default [`UpstreamRoute::poll_interval`]: a video takes minutes, and Model Studio allows
/// about 20 task reads a second per account, so one read per job every 5 s is far inside it.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);

impl UpstreamRoute {
    /// How reports name this engine: `upstream alibaba (happyhorse-1.0-i2v)`.
    pub fn describe(&self) -> String {
        format!("upstream {} ({})", self.upstream.name(), self.model)
    }
}
