//! Bearer-token auth, always on. A token is bound to one account; the store keeps only its hash.

use axum::extract::FromRequestParts;
use axum::http::{HeaderMap, header, request::Parts};

use super::error::ApiError;
use super::{SharedState, store_error, with_store};
use crate::store::StoreError;

/// The account of the request's valid bearer token.
#[derive(Debug, Clone)]
pub struct Account(pub String);

/// Why a request is not authenticated (each shape renders it its own way).
#[derive(Debug, thiserror::Error)]
pub enum AuthFailure {
    #[error("missing Authorization: Bearer TOKEN header")]
    Missing,
    #[error("the Authorization header must be \"Bearer TOKEN\"")]
    Malformed,
    #[error("the token is not valid")]
    Unknown,
    /// The store could not answer. Kept typed: an unreachable database is a 503 the client may
    /// retry, not a bad token (401) nor a server fault (500).
    #[error("could not check the token: {0}")]
    Store(#[from] StoreError),
}

impl From<AuthFailure> for ApiError {
    fn from(f: AuthFailure) -> ApiError {
        match f {
            AuthFailure::Store(e) => store_error(e),
            other => ApiError::unauthorized(&other.to_string()),
        }
    }
}

/// The account behind the `Authorization: Bearer` header.
pub async fn authenticate(state: &SharedState, headers: &HeaderMap) -> Result<String, AuthFailure> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(AuthFailure::Missing)?
        .to_str()
        .map_err(|_| AuthFailure::Malformed)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(AuthFailure::Malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthFailure::Malformed);
    }
    let token = token.to_string();
    with_store(state, move |s| s.account_for_token(&token))
        .await?
        .ok_or(AuthFailure::Unknown)
}

impl FromRequestParts<SharedState> for Account {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Account(authenticate(state, &parts.headers).await?))
    }
}

/// A Cloudflare path names an account: it must be the token's own. A token used with another
/// account's path answers 401 (code 10000), as Cloudflare does for a token without access.
pub fn check_path_account(token_account: &str, path_account: &str) -> Result<(), ApiError> {
    if token_account == path_account {
        Ok(())
    } else {
        Err(ApiError::unauthorized(&format!(
            "this token is not valid for account {path_account:?}"
        )))
    }
}
