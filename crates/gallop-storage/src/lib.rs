//! Result and upload storage through `object_store`, opened from a URL: a local directory
//! (`file:///path`, by default `data-dir/objects`) or any S3-compatible bucket
//! (`s3://bucket/prefix`, with the standard `AWS_*` variables and `AWS_ENDPOINT_URL`), so API
//! and worker processes on many machines share one store.
//!
//! Layout:
//! - `results/{job}/attempt-{n}.mp4`: written by attempt n BEFORE the job row points at it, so
//!   the upload of a worker that died is never served;
//! - `uploads/{account}/{id}`: images uploaded through `POST /v1/uploads`, referenced as
//!   `gallop://uploads/{id}` by any number of the account's jobs; the sweeper deletes them when
//!   they are older than the upload lifetime.

mod location;
pub mod signing;

use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::signer::{Method, Signer};
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload};

pub use location::URL_RULE;

/// How long `Storage::check` waits for the store before calling it unreachable (the client's
/// own retries would take minutes).
pub const CHECK_LIMIT: Duration = Duration::from_secs(3);

/// Bytes of an object as they arrive, for streaming downloads.
pub type ByteStream = BoxStream<'static, Result<Bytes, StorageError>>;

/// Uploads live a day, as upstream's task ids and video URLs do.
pub const DEFAULT_UPLOAD_TTL_SECS: u64 = 24 * 3600;

/// The uri prefix of uploaded inputs.
pub const UPLOAD_URI_PREFIX: &str = "gallop://uploads/";

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object {0} not found")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    /// A storage URL or its `AWS_*` settings that cannot work; names the rule.
    #[error("{0}")]
    BadUrl(String),
    #[error("object storage: {0}")]
    Backend(String),
}

impl From<object_store::Error> for StorageError {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { path, .. } => StorageError::NotFound(path),
            other => StorageError::Backend(other.to_string()),
        }
    }
}

#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    /// Presigns download URLs; only object stores that serve HTTP themselves have one.
    signer: Option<Arc<dyn Signer>>,
    /// A local store's directory: `check` asks whether it is still there.
    local_root: Option<PathBuf>,
    describe: Arc<str>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Storage({})", self.describe)
    }
}

impl Storage {
    pub fn new(store: Arc<dyn ObjectStore>) -> Storage {
        Storage {
            describe: format!("{store}").into(),
            store,
            signer: None,
            local_root: None,
        }
    }

    /// Where the objects are, as a URL (`file:///...`, `s3://bucket/prefix`), for logs.
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// Local files under `data_dir/objects` (created if missing): the default, the same as
    /// `file://{data_dir}/objects`.
    pub fn local(data_dir: &FsPath) -> Result<Storage, StorageError> {
        Storage::open(location::Location::Local(data_dir.join("objects")), [])
    }

    /// Opens `file:///absolute/path` (created if missing) or `s3://bucket/prefix`, the bucket
    /// configured by this process's `AWS_*` variables (as `AmazonS3Builder::from_env`; an
    /// `http://` `AWS_ENDPOINT_URL` is allowed, with path-style requests).
    pub fn from_url(url: &str) -> Result<Storage, StorageError> {
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
        Storage::from_url_with_env(url, env)
    }

    /// [`Storage::from_url`] with the `AWS_*` variables given instead of read from the process
    /// (other variables are ignored).
    pub fn from_url_with_env(
        url: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Storage, StorageError> {
        Storage::open(location::parse(url)?, env)
    }

    fn open(
        location: location::Location,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Storage, StorageError> {
        let opened = location::open(location, env)?;
        Ok(Storage {
            store: opened.store,
            signer: opened.signer,
            local_root: opened.local_root,
            describe: opened.describe.into(),
        })
    }

    /// Whether the store answers: a local directory that still exists, or a bucket that lists
    /// (an empty prefix, so the answer is small) within [`CHECK_LIMIT`].
    pub async fn check(&self) -> Result<(), StorageError> {
        if let Some(root) = &self.local_root
            && !root.is_dir()
        {
            return Err(StorageError::Backend(format!(
                "{} is not a directory",
                root.display()
            )));
        }
        let prefix = Path::from("gallop-check");
        let probe = self.store.list_with_delimiter(Some(&prefix));
        match tokio::time::timeout(CHECK_LIMIT, probe).await {
            Ok(listed) => listed.map(|_| ()).map_err(StorageError::from),
            Err(_) => Err(StorageError::Backend(format!(
                "no answer within {} s",
                CHECK_LIMIT.as_secs()
            ))),
        }
    }

    /// Where attempt `attempt` of `job_id` writes its MP4.
    pub fn result_key(job_id: &str, attempt: u32) -> String {
        format!("results/{job_id}/attempt-{attempt}.mp4")
    }

    pub async fn put_result(
        &self,
        job_id: &str,
        attempt: u32,
        mp4: Vec<u8>,
    ) -> Result<String, StorageError> {
        check_segment("job id", job_id)?;
        let key = Storage::result_key(job_id, attempt);
        self.store
            .put(&Path::from(key.as_str()), PutPayload::from(mp4))
            .await?;
        Ok(key)
    }

    /// Stores an uploaded image for `account`; returns its id (use as `gallop://uploads/{id}`).
    pub async fn put_upload(&self, account: &str, bytes: Vec<u8>) -> Result<String, StorageError> {
        check_segment("account", account)?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        self.store
            .put(&upload_path(account, &id), PutPayload::from(bytes))
            .await?;
        Ok(id)
    }

    /// The bytes of an upload of `account` (another account's upload is "not found").
    pub async fn read_upload(&self, account: &str, id: &str) -> Result<Vec<u8>, StorageError> {
        check_segment("account", account)?;
        check_segment("upload id", id)?;
        let got = self.store.get(&upload_path(account, id)).await?;
        Ok(got.bytes().await?.to_vec())
    }

    pub async fn delete_upload(&self, account: &str, id: &str) -> Result<(), StorageError> {
        check_segment("account", account)?;
        check_segment("upload id", id)?;
        ignore_missing(self.store.delete(&upload_path(account, id)).await)
    }

    /// What `account` keeps uploaded: how many, their bytes, and when the oldest was written
    /// (unix ms; None without uploads).
    pub async fn upload_usage(&self, account: &str) -> Result<UploadUsage, StorageError> {
        check_segment("account", account)?;
        let prefix = Path::from(format!("uploads/{account}").as_str());
        let listing = self.store.list_with_delimiter(Some(&prefix)).await?;
        let mut usage = UploadUsage::default();
        for obj in listing.objects {
            usage.count += 1;
            usage.bytes += obj.size;
            let written = obj.last_modified.timestamp_millis();
            usage.oldest_ms = Some(usage.oldest_ms.map_or(written, |o: i64| o.min(written)));
        }
        Ok(usage)
    }

    /// Deletes uploads last written more than `age_ms` ago; returns how many.
    pub async fn sweep_uploads(&self, age_ms: i64) -> Result<u32, StorageError> {
        let cutoff = now_ms() - age_ms;
        let mut deleted = 0;
        let accounts = self
            .store
            .list_with_delimiter(Some(&Path::from("uploads")))
            .await?;
        for account_dir in accounts.common_prefixes {
            let listing = self.store.list_with_delimiter(Some(&account_dir)).await?;
            for obj in listing.objects {
                if obj.last_modified.timestamp_millis() < cutoff {
                    ignore_missing(self.store.delete(&obj.location).await)?;
                    deleted += 1;
                }
            }
        }
        Ok(deleted)
    }

    /// Size in bytes of an object.
    pub async fn size(&self, key: &str) -> Result<u64, StorageError> {
        Ok(self.store.head(&Path::from(key)).await?.size)
    }

    pub async fn read(&self, key: &str) -> Result<Vec<u8>, StorageError> {
        let got = self.store.get(&Path::from(key)).await?;
        Ok(got.bytes().await?.to_vec())
    }

    /// Bytes `range` (end exclusive) of an object, for HTTP Range answers.
    pub async fn read_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>, StorageError> {
        Ok(self
            .store
            .get_range(&Path::from(key), range)
            .await?
            .to_vec())
    }

    /// Bytes `range` (end exclusive, not empty) of an object as a stream of chunks: a download
    /// holds one chunk at a time, never the whole object.
    pub async fn stream_range(
        &self,
        key: &str,
        range: Range<u64>,
    ) -> Result<ByteStream, StorageError> {
        let options = GetOptions {
            range: Some(GetRange::Bounded(range)),
            ..GetOptions::default()
        };
        let got = self.store.get_opts(&Path::from(key), options).await?;
        Ok(got.into_stream().map_err(StorageError::from).boxed())
    }

    /// A URL that downloads the object straight from the bucket for `ttl`, signed with the
    /// bucket's credentials; None where the store cannot presign (local files).
    pub async fn presigned_get(
        &self,
        key: &str,
        ttl: Duration,
    ) -> Result<Option<String>, StorageError> {
        let Some(signer) = &self.signer else {
            return Ok(None);
        };
        let url = signer
            .signed_url(Method::GET, &Path::from(key), ttl)
            .await?;
        Ok(Some(url.to_string()))
    }

    /// Deletes an object; a missing one is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        ignore_missing(self.store.delete(&Path::from(key)).await)
    }

    /// Deletes every stored attempt of a job (results of dead attempts included).
    pub async fn delete_job_results(&self, job_id: &str) -> Result<(), StorageError> {
        check_segment("job id", job_id)?;
        let prefix = Path::from(format!("results/{job_id}").as_str());
        let listing = self.store.list_with_delimiter(Some(&prefix)).await?;
        for obj in listing.objects {
            ignore_missing(self.store.delete(&obj.location).await)?;
        }
        Ok(())
    }
}

/// One account's stored uploads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UploadUsage {
    pub count: u32,
    pub bytes: u64,
    /// When the oldest was written, unix ms.
    pub oldest_ms: Option<i64>,
}

/// `gallop://uploads/{id}` -> `Some(id)`.
pub fn upload_id_of_uri(uri: &str) -> Option<&str> {
    uri.strip_prefix(UPLOAD_URI_PREFIX)
}

fn upload_path(account: &str, id: &str) -> Path {
    Path::from(format!("uploads/{account}/{id}").as_str())
}

/// Ids and accounts become path segments: refuse anything that could escape its directory.
fn check_segment(field: &str, value: &str) -> Result<(), StorageError> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && value != "."
        && value != "..";
    if ok {
        Ok(())
    } else {
        Err(StorageError::Invalid(format!(
            "{field} {value:?} must be 1-128 characters of A-Z a-z 0-9 - _ ."
        )))
    }
}

fn ignore_missing(r: Result<(), object_store::Error>) -> Result<(), StorageError> {
    match r {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
