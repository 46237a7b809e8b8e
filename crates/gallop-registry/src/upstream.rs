//! Model ids the config routes to an upstream Model Studio endpoint instead of a checkpoint:
//!
//! ```toml
//! [upstreams.alibaba]
//! base_url = "https://dashscope-intl.aliyuncs.com/api/v1"
//! api_key_env = "DASHSCOPE_API_KEY"   # optional: the server's own key (Unified)
//!
//! [models."alibaba/hh1-i2v"]
//! upstream = "alibaba"
//! upstream_model = "happyhorse-1.0-i2v"   # default: the id's HappyHorse model
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use gallop_api::ModelId;
use gallop_upstream::{ApiKey, DEFAULT_PATIENCE, DEFAULT_POLL_INTERVAL, Upstream, UpstreamRoute};

use crate::file::{UpstreamEntry, UpstreamTable};

/// How long one call to upstream (submit, read, cancel, download) may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The routes of `entries` (model id, entry) over the `upstreams` tables; `env` reads an
/// environment variable. Errors name the key (`upstreams."alibaba".base_url: ...`).
pub(crate) fn routes(
    upstreams: &BTreeMap<String, UpstreamTable>,
    entries: Vec<(String, UpstreamEntry)>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(ModelId, UpstreamRoute)>, String> {
    let mut built = BTreeMap::new();
    for (name, table) in upstreams {
        let key = format!("upstreams.\"{name}\"");
        built.insert(
            name.as_str(),
            endpoint(name, table, env).map_err(|e| key + &e)?,
        );
    }
    entries
        .into_iter()
        .map(|(id, entry)| {
            let key = format!("models.\"{id}\"");
            route(&id, entry, &built).map_err(|e| key + &e)
        })
        .collect()
}

/// One `[upstreams.NAME]` table checked, as a route without its model.
fn endpoint(
    name: &str,
    table: &UpstreamTable,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<UpstreamRoute, String> {
    let url = table.base_url.trim();
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(format!(
            ".base_url must start with https:// or http:// (a Model Studio endpoint such as \
             https://dashscope-intl.aliyuncs.com/api/v1), got {url:?}"
        ));
    }
    let unified_key = match &table.api_key_env {
        None => None,
        Some(var) => Some(env(var).as_deref().and_then(ApiKey::new).ok_or_else(|| {
            format!(
                ".api_key_env: the environment variable {var} is not set or empty; set it to \
                 the server's own Model Studio key, or remove api_key_env to serve only \
                 accounts that store their own key"
            )
        })?),
    };
    Ok(UpstreamRoute {
        upstream: Upstream::new(name, url, CALL_TIMEOUT),
        model: String::new(),
        unified_key,
        key_env: table.api_key_env.clone(),
        patience: seconds("patience_secs", table.patience_secs, DEFAULT_PATIENCE)?,
        poll_interval: seconds(
            "poll_interval_secs",
            table.poll_interval_secs,
            DEFAULT_POLL_INTERVAL,
        )?,
    })
}

fn seconds(key: &str, value: Option<f64>, default: Duration) -> Result<Duration, String> {
    match value {
        None => Ok(default),
        Some(s) if s > 0.0 && s <= 86_400.0 => Ok(Duration::from_secs_f64(s)),
        Some(s) => Err(format!(
            ".{key} must be more than 0 and at most 86400 seconds, got {s}"
        )),
    }
}

/// One `[models."ID"]` entry with `upstream = "NAME"`.
fn route(
    id: &str,
    entry: UpstreamEntry,
    upstreams: &BTreeMap<&str, UpstreamRoute>,
) -> Result<(ModelId, UpstreamRoute), String> {
    let model = ModelId::parse(id).ok_or_else(|| {
        format!(
            ": unknown model id; the ids are {}",
            ModelId::ALL.map(|m| m.as_str()).join(", ")
        )
    })?;
    let Some(endpoint) = upstreams.get(entry.upstream.as_str()) else {
        let names: Vec<&str> = upstreams.keys().copied().collect();
        return Err(format!(
            ".upstream: there is no [upstreams.{}] table (defined: {})",
            entry.upstream,
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        ));
    };
    let upstream_model = entry
        .upstream_model
        .unwrap_or_else(|| model.dashscope_name().to_string());
    if upstream_model.trim().is_empty() {
        return Err(".upstream_model must not be empty".into());
    }
    let mut route = endpoint.clone();
    route.model = upstream_model;
    Ok((model, route))
}
