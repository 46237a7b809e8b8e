//! Storage URLs: `file:///absolute/path` (a local directory) or `s3://bucket/prefix` (any
//! S3-compatible bucket, configured by the standard `AWS_*` variables).

use std::path::PathBuf;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::signer::Signer;

use crate::StorageError;

/// The rule every storage URL error repeats.
pub const URL_RULE: &str = "use file:///absolute/path or s3://bucket/prefix";

/// Where a storage URL points.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Location {
    Local(PathBuf),
    S3 { bucket: String, prefix: String },
}

/// The opened store, and what only some backends have.
pub(crate) struct Opened {
    pub store: Arc<dyn ObjectStore>,
    /// Presigns URLs (S3); None for local files.
    pub signer: Option<Arc<dyn Signer>>,
    /// The directory of a local store, checked by `Storage::check`.
    pub local_root: Option<PathBuf>,
    /// The URL it was opened from, for logs (storage URLs carry no credentials).
    pub describe: String,
}

/// Parses a storage URL. Errors name the rule, never the URL's credentials.
pub(crate) fn parse(url: &str) -> Result<Location, StorageError> {
    let bad = |why: String| StorageError::BadUrl(format!("storage URL {why}; {URL_RULE}"));
    let parsed = url::Url::parse(url).map_err(|e| bad(format!("is not a URL ({e})")))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad(
            "must not carry credentials (S3 keys come from AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY)"
                .into(),
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(bad("must not have a query or fragment".into()));
    }
    match parsed.scheme() {
        "file" => parse_file(&parsed).map_err(bad),
        "s3" => parse_s3(&parsed).map_err(bad),
        other => Err(bad(format!("scheme \"{other}:\" is not supported"))),
    }
}

fn parse_file(url: &url::Url) -> Result<Location, String> {
    match url.host_str() {
        None | Some("") | Some("localhost") => {}
        Some(host) => {
            return Err(format!(
                "file:// names host \"{host}\": a local path needs three slashes, file:///path"
            ));
        }
    }
    let path = url
        .to_file_path()
        .map_err(|()| "file:// needs an absolute path".to_string())?;
    Ok(Location::Local(path))
}

fn parse_s3(url: &url::Url) -> Result<Location, String> {
    let bucket = url.host_str().unwrap_or("");
    if bucket.is_empty() {
        return Err("s3:// needs a bucket name, s3://bucket/prefix".into());
    }
    if url.port().is_some() {
        return Err(
            "s3:// names a bucket, not a server: set the server in AWS_ENDPOINT_URL".into(),
        );
    }
    let prefix = url.path().trim_matches('/').to_string();
    Path::parse(&prefix)
        .map_err(|e| format!("s3:// prefix {prefix:?} is not a valid key ({e})"))?;
    Ok(Location::S3 {
        bucket: bucket.to_string(),
        prefix,
    })
}

/// Opens `location`; `env` supplies the `AWS_*` settings of an S3 bucket.
pub(crate) fn open(
    location: Location,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Opened, StorageError> {
    match location {
        Location::Local(root) => open_local(root),
        Location::S3 { bucket, prefix } => open_s3(&bucket, &prefix, env),
    }
}

fn open_local(root: PathBuf) -> Result<Opened, StorageError> {
    std::fs::create_dir_all(&root)
        .map_err(|e| StorageError::Backend(format!("{}: {e}", root.display())))?;
    let fs = LocalFileSystem::new_with_prefix(&root)?.with_automatic_cleanup(true);
    Ok(Opened {
        store: Arc::new(fs),
        signer: None,
        describe: format!("file://{}", root.display()),
        local_root: Some(root),
    })
}

fn open_s3(
    bucket: &str,
    prefix: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Opened, StorageError> {
    // object_store's reqwest is built without a bundled TLS provider: ring, as the rest of the
    // workspace uses. Installing twice is harmless (the first one stays).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = s3_builder(env).with_bucket_name(bucket);
    // An S3-compatible server on plain http (MinIO, a test server) must be allowed explicitly;
    // the builder's default of path-style requests (`endpoint/bucket/key`) is what they serve.
    let endpoint = builder
        .get_config_value(&AmazonS3ConfigKey::S3Endpoint)
        .or_else(|| builder.get_config_value(&AmazonS3ConfigKey::Endpoint));
    if endpoint.is_some_and(|e| e.starts_with("http://")) {
        builder = builder.with_allow_http(true);
    }
    // Configuration errors name keys and values the operator set, never the secret key (the
    // builder does not print it).
    let s3 = builder
        .build()
        .map_err(|e| StorageError::BadUrl(format!("s3://{bucket}: {e}")))?;
    let store = Arc::new(PrefixStore::new(s3, prefix));
    Ok(Opened {
        store: store.clone(),
        signer: Some(store),
        local_root: None,
        describe: format!("s3://{bucket}/{prefix}"),
    })
}

/// `AmazonS3Builder::from_env`, from the given variables instead of the process's (so tests and
/// their child processes use the same path).
fn s3_builder(env: impl IntoIterator<Item = (String, String)>) -> AmazonS3Builder {
    let mut builder = AmazonS3Builder::new();
    for (key, value) in env {
        if !key.starts_with("AWS_") {
            continue;
        }
        if let Ok(config) = key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
            builder = builder.with_config(config, value);
        }
    }
    builder
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_and_s3_urls_parse() {
        assert_eq!(
            parse("file:///var/lib/gallop/objects").unwrap(),
            Location::Local("/var/lib/gallop/objects".into())
        );
        assert_eq!(
            parse("file://localhost/srv/o%20bj").unwrap(),
            Location::Local("/srv/o bj".into())
        );
        assert_eq!(
            parse("s3://media/gallop/prod/").unwrap(),
            Location::S3 {
                bucket: "media".into(),
                prefix: "gallop/prod".into()
            }
        );
        assert_eq!(
            parse("s3://media").unwrap(),
            Location::S3 {
                bucket: "media".into(),
                prefix: String::new()
            }
        );
    }
}
