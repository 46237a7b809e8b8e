//! Result and upload storage through `object_store`: a local directory (`data-dir/objects`) now,
//! any S3-compatible store later through the same trait object.
//!
//! Layout:
//! - `results/{job}/attempt-{n}.mp4`: written by attempt n BEFORE the job row points at it, so
//!   the upload of a worker that died is never served;
//! - `uploads/{account}/{id}`: images uploaded through `POST /v1/uploads`, referenced as
//!   `gallop://uploads/{id}` by any number of the account's jobs; the sweeper deletes them when
//!   they are older than the upload lifetime.

pub mod signing;

use std::ops::Range;
use std::path::Path as FsPath;
use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

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
}

impl Storage {
    pub fn new(store: Arc<dyn ObjectStore>) -> Storage {
        Storage { store }
    }

    /// Local files under `data_dir/objects` (created if missing).
    pub fn local(data_dir: &FsPath) -> Result<Storage, StorageError> {
        let root = data_dir.join("objects");
        std::fs::create_dir_all(&root)
            .map_err(|e| StorageError::Backend(format!("{}: {e}", root.display())))?;
        let fs = LocalFileSystem::new_with_prefix(&root)?.with_automatic_cleanup(true);
        Ok(Storage::new(Arc::new(fs)))
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
