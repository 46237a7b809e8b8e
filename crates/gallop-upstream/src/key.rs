//! An upstream API key and whose it is.

/// A Model Studio API key. Its `Debug` and `Display` print `[redacted]`, so a key that ends up
/// in a log line or an error by mistake still does not leak.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// None for an empty or blank key; surrounding whitespace (a newline from stdin) is trimmed.
    pub fn new(key: &str) -> Option<ApiKey> {
        let key = key.trim();
        (!key.is_empty()).then(|| ApiKey(key.to_string()))
    }

    /// The key itself, for the one place that sends it: the `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

impl std::fmt::Display for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Whose key paid, in Cloudflare's words: the account's own (`BYOK`) or the server's
/// (`Unified`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeySource {
    Byok,
    Unified,
}

impl KeySource {
    pub fn as_str(self) -> &'static str {
        match self {
            KeySource::Byok => "BYOK",
            KeySource::Unified => "Unified",
        }
    }

    pub fn parse(s: &str) -> Option<KeySource> {
        [KeySource::Byok, KeySource::Unified]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_never_prints_itself() {
        let key = ApiKey::new(" sk-secret-123\n").unwrap();
        assert_eq!(key.expose(), "sk-secret-123");
        assert_eq!(format!("{key} {key:?}"), "[redacted] ApiKey([redacted])");
        assert!(ApiKey::new(" \n").is_none());
    }

    #[test]
    fn key_sources_spell_as_cloudflare_does() {
        assert_eq!(KeySource::Byok.as_str(), "BYOK");
        assert_eq!(KeySource::parse("Unified"), Some(KeySource::Unified));
        assert_eq!(KeySource::parse("byok"), None);
    }
}
