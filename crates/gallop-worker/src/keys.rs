//! Accounts' own upstream keys (BYOK), sealed at rest: each key is encrypted with
//! ChaCha20-Poly1305 under a server secret that is not in the database (the file
//! `data-dir/provider-keys.secret`, or `GALLOP_KEY_SECRET` as 64 hex digits), and bound to its
//! account and provider, so a sealed key copied to another account's row does not open.
//! The store only ever holds the sealed bytes; keys are never logged or returned.

use std::path::Path;

use gallop_upstream::ApiKey;
use rand::RngCore;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use gallop_storage::signing::load_or_create_secret;

/// The providers whose keys an account may store (every upstream speaks Model Studio).
pub const PROVIDERS: [&str; 1] = ["alibaba"];

/// Longest key accepted (Model Studio keys are about 35 characters).
pub const MAX_KEY_CHARS: usize = 512;

/// A key as an account gives it: 1-[`MAX_KEY_CHARS`] visible ASCII characters once surrounding
/// whitespace is trimmed. None otherwise (the caller states the rule; it never quotes the value).
pub fn checked_key(text: &str) -> Option<ApiKey> {
    let text = text.trim();
    let visible = text.chars().all(|c| c.is_ascii_graphic());
    if !visible || text.chars().count() > MAX_KEY_CHARS {
        return None;
    }
    ApiKey::new(text)
}

const SECRET_FILE: &str = "provider-keys.secret";
/// Overrides the secret file, so the secret can live apart from the data directory.
pub const SECRET_ENV: &str = "GALLOP_KEY_SECRET";

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("{SECRET_ENV} must be 64 hex digits (32 bytes)")]
    BadSecret,
    #[error("provider key secret: {0}")]
    Io(#[from] std::io::Error),
    /// Wrong secret, or bytes that were not sealed for this account and provider.
    #[error(
        "the stored key of account {account:?} for {provider} cannot be opened (was the \
             server secret changed?); store it again"
    )]
    CannotOpen { account: String, provider: String },
}

/// Seals and opens provider keys with the server secret.
pub struct KeyVault {
    key: LessSafeKey,
}

impl std::fmt::Debug for KeyVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyVault([redacted])")
    }
}

impl KeyVault {
    pub fn new(secret: [u8; 32]) -> KeyVault {
        let unbound =
            UnboundKey::new(&CHACHA20_POLY1305, &secret).expect("32 bytes is the key size");
        KeyVault {
            key: LessSafeKey::new(unbound),
        }
    }

    /// A vault with a random secret nothing was sealed with: for workers built without a data
    /// directory, where no account can have stored a key.
    pub fn ephemeral() -> KeyVault {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        KeyVault::new(secret)
    }

    /// The secret from `GALLOP_KEY_SECRET`, else `data_dir/provider-keys.secret` (made on first
    /// use, mode 0600).
    pub fn load_or_create(data_dir: &Path) -> Result<KeyVault, VaultError> {
        let secret = match std::env::var(SECRET_ENV) {
            Ok(hex_secret) => hex::decode(hex_secret.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or(VaultError::BadSecret)?,
            Err(_) => load_or_create_secret(&data_dir.join(SECRET_FILE))?,
        };
        Ok(KeyVault::new(secret))
    }

    /// Nonce followed by the ciphertext and its tag.
    pub fn seal(&self, account: &str, provider: &str, key: &ApiKey) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut sealed = key.expose().as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(binding(account, provider)),
                &mut sealed,
            )
            .expect("a key is far below the cipher's size limit");
        [nonce.as_slice(), &sealed].concat()
    }

    pub fn open(&self, account: &str, provider: &str, sealed: &[u8]) -> Result<ApiKey, VaultError> {
        let cannot_open = || VaultError::CannotOpen {
            account: account.to_string(),
            provider: provider.to_string(),
        };
        if sealed.len() < NONCE_LEN {
            return Err(cannot_open());
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| cannot_open())?;
        let mut buffer = ciphertext.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(binding(account, provider)), &mut buffer)
            .map_err(|_| cannot_open())?;
        std::str::from_utf8(plain)
            .ok()
            .and_then(ApiKey::new)
            .ok_or_else(cannot_open)
    }
}

/// The associated data a sealed key is bound to.
fn binding(account: &str, provider: &str) -> Vec<u8> {
    format!("gallop provider key\0{account}\0{provider}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_key_opens_only_for_its_account_provider_and_secret() {
        let vault = KeyVault::new([7; 32]);
        let key = ApiKey::new("sk-abc").unwrap();
        let sealed = vault.seal("a", "alibaba", &key);
        assert!(
            !sealed.windows(6).any(|w| w == b"sk-abc"),
            "stored in the clear"
        );
        assert_eq!(vault.open("a", "alibaba", &sealed).unwrap(), key);
        assert!(vault.open("b", "alibaba", &sealed).is_err());
        assert!(vault.open("a", "other", &sealed).is_err());
        assert!(
            KeyVault::new([8; 32])
                .open("a", "alibaba", &sealed)
                .is_err()
        );
        assert_ne!(
            sealed,
            vault.seal("a", "alibaba", &key),
            "fresh nonce per seal"
        );
    }
}
