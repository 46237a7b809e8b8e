//! `PUT /v1/keys/{provider}` and `DELETE /v1/keys/{provider}`: a token stores or removes its
//! own account's upstream key (BYOK). The key is sealed before it reaches the store and is
//! never in an answer, an error or a log line.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use gallop_upstream::ApiKey;
use serde_json::{Value, json};

use super::auth::Account;
use super::body::json_object;
use super::error::{ApiError, code};
use super::path::PathParams;
use super::{SharedState, store_error, with_store};
use crate::keys::{MAX_KEY_CHARS, PROVIDERS, checked_key};

fn check_provider(provider: &str) -> Result<(), ApiError> {
    if PROVIDERS.contains(&provider) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        code::NOT_FOUND,
        format!(
            "no provider {provider:?}: keys can be stored for {}",
            PROVIDERS.join(", ")
        ),
    ))
}

/// `{"api_key": "..."}`: one printable key, no spaces. The rule never quotes the value.
fn read_key(body: serde_json::Map<String, Value>) -> Result<ApiKey, ApiError> {
    if let Some(other) = body.keys().find(|k| *k != "api_key") {
        return Err(ApiError::bad_input(format!("/{other} is not allowed")));
    }
    let rule = format!("/api_key must be a string of 1-{MAX_KEY_CHARS} visible characters");
    let text = match body.get("api_key") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(ApiError::bad_input(rule)),
        None => return Err(ApiError::bad_input("/api_key is required")),
    };
    checked_key(text).ok_or_else(|| ApiError::bad_input(rule))
}

/// `PUT /v1/keys/{provider}`.
pub async fn put(
    State(state): State<SharedState>,
    Account(account): Account,
    PathParams(provider): PathParams<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    check_provider(&provider)?;
    let key = read_key(json_object(&headers, body, state.body_limit)?)?;
    let sealed = state.vault.seal(&account, &provider, &key);
    drop(key);
    let (acc, prov) = (account.clone(), provider.clone());
    with_store(&state, move |s| s.put_provider_key(&acc, &prov, &sealed))
        .await
        .map_err(store_error)?;
    tracing::info!(%account, %provider, "stored the account's own key (BYOK)");
    Ok(Json(json!({
        "account": account,
        "provider": provider,
        "stored": true,
        "keySource": "BYOK",
    })))
}

/// `DELETE /v1/keys/{provider}`: 404 when the account had none.
pub async fn delete(
    State(state): State<SharedState>,
    Account(account): Account,
    PathParams(provider): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    check_provider(&provider)?;
    let (acc, prov) = (account.clone(), provider.clone());
    let deleted = with_store(&state, move |s| s.delete_provider_key(&acc, &prov))
        .await
        .map_err(store_error)?;
    if !deleted {
        return Err(ApiError::not_found(&format!(
            "a {provider} key of account {account:?}"
        )));
    }
    tracing::info!(%account, %provider, "removed the account's own key (BYOK)");
    Ok(Json(json!({
        "account": account,
        "provider": provider,
        "stored": false,
    })))
}
