//! Model ids served by an upstream Model Studio endpoint instead of a local engine, and whose
//! key pays for each job: the account's own (BYOK) when it stored one, else the server's
//! (Unified), else none (the request is refused at submit, saying how to set one).

use gallop_api::ModelId;
use gallop_upstream::{ApiKey, KeySource};
pub use gallop_upstream::{DEFAULT_PATIENCE, DEFAULT_POLL_INTERVAL, UpstreamRoute};
use std::collections::HashMap;
use std::sync::Arc;

use crate::keys::{KeyVault, VaultError};
use gallop_store::{JobStore, StoreError};

/// The provider name keys are stored under: every upstream speaks Alibaba's Model Studio API.
pub const PROVIDER: &str = "alibaba";

/// Model id -> its upstream route. Empty: everything is served locally.
#[derive(Debug, Clone, Default)]
pub struct UpstreamRoutes {
    routes: HashMap<ModelId, Arc<UpstreamRoute>>,
}

impl UpstreamRoutes {
    pub fn new(routes: Vec<(ModelId, UpstreamRoute)>) -> UpstreamRoutes {
        UpstreamRoutes {
            routes: routes.into_iter().map(|(m, r)| (m, Arc::new(r))).collect(),
        }
    }

    pub fn route_for(&self, model: ModelId) -> Option<&Arc<UpstreamRoute>> {
        self.routes.get(&model)
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Neither the account nor the server has a key: the message says how to set one.
    #[error("{0}")]
    Missing(String),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The key a new job of `account` on `route` uses: the account's own, else the server's.
pub fn choose_key(
    store: &dyn JobStore,
    vault: &KeyVault,
    account: &str,
    route: &UpstreamRoute,
) -> Result<(KeySource, ApiKey), KeyError> {
    if let Some(key) = account_key(store, vault, account)? {
        return Ok((KeySource::Byok, key));
    }
    match &route.unified_key {
        Some(key) => Ok((KeySource::Unified, key.clone())),
        None => Err(KeyError::Missing(missing_key_message(account, route))),
    }
}

/// The key of `source` for `account`, for a job that already chose it (its upstream task
/// belongs to that key's Model Studio account).
pub fn key_of_source(
    store: &dyn JobStore,
    vault: &KeyVault,
    account: &str,
    route: &UpstreamRoute,
    source: KeySource,
) -> Result<ApiKey, KeyError> {
    let key = match source {
        KeySource::Byok => account_key(store, vault, account)?,
        KeySource::Unified => route.unified_key.clone(),
    };
    key.ok_or_else(|| {
        KeyError::Missing(format!(
            "the {source} key this job was submitted with is no longer set, so its upstream \
             task cannot be followed; {}",
            how_to_set(account, route)
        ))
    })
}

fn account_key(
    store: &dyn JobStore,
    vault: &KeyVault,
    account: &str,
) -> Result<Option<ApiKey>, KeyError> {
    match store.provider_key(account, PROVIDER)? {
        Some(sealed) => Ok(Some(vault.open(account, PROVIDER, &sealed)?)),
        None => Ok(None),
    }
}

fn missing_key_message(account: &str, route: &UpstreamRoute) -> String {
    format!(
        "model {} is served by Model Studio ({}) and needs an Alibaba Model Studio API key: \
         account {account:?} has none and this server has none. {}",
        route.model,
        route.describe(),
        how_to_set(account, route)
    )
}

/// How an account stores its own key, or asks the operator for the server's.
pub fn how_to_set(account: &str, route: &UpstreamRoute) -> String {
    let unified = match &route.key_env {
        Some(var) => format!("or ask the operator to set {var} for the server's own key"),
        None => format!(
            "or ask the operator to add api_key_env to [upstreams.{}] in the serve config",
            route.upstream.name()
        ),
    };
    format!(
        "Store your own key with PUT /v1/keys/{PROVIDER} {{\"api_key\": \"sk-...\"}} or \
         `gallop keys set --account {account} --provider {PROVIDER}` (key on standard input), \
         {unified}"
    )
}
