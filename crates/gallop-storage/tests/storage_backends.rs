//! Object storage, each rule checked on a local directory (`file://`) AND on a real
//! S3-compatible server over loopback (`s3://`, signed requests): result keys name job and
//! attempt, uploads are per account, ranges read (and stream) the right bytes, the sweeper
//! deletes by age, ids cannot escape their directory. Then what only one backend has: URL
//! errors, presigned downloads, health checks.

use std::any::Any;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use futures_util::TryStreamExt;
use gallop_storage::{Storage, StorageError, URL_RULE, upload_id_of_uri};
use gallop_testkit::TempS3;

/// A storage under test, and where its objects live on disk behind its API.
struct Backend {
    storage: Storage,
    on_disk: Box<dyn Fn(&str) -> PathBuf + Send>,
    _server: Box<dyn Any + Send>,
}

fn local() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::local(dir.path()).unwrap();
    let root = dir.path().join("objects");
    Backend {
        storage,
        on_disk: Box::new(move |key| root.join(key)),
        _server: Box::new(dir),
    }
}

/// Under a prefix, so keys must be mapped both ways.
fn s3() -> Backend {
    let s3 = TempS3::start();
    let storage = Storage::from_url_with_env(&s3.url("gallop/objects"), s3.env()).unwrap();
    let root = s3.object_path(TempS3::BUCKET, "gallop/objects");
    Backend {
        storage,
        on_disk: Box::new(move |key| root.join(key)),
        _server: Box::new(s3),
    }
}

/// Each named test once per backend: `local::NAME` and `s3::NAME`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::local()).await
            })*
        }
        mod s3 {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::s3()).await
            })*
        }
    };
}

on_both_backends!(
    results_live_under_job_and_attempt_and_read_back_by_range,
    uploads_belong_to_their_account,
    the_sweeper_deletes_uploads_older_than_their_lifetime,
    ids_that_could_escape_their_directory_are_refused,
    a_reachable_store_passes_its_check,
);

fn pattern(len: u32) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

async fn streamed(storage: &Storage, key: &str, range: std::ops::Range<u64>) -> Vec<u8> {
    let chunks: Vec<_> = storage
        .stream_range(key, range)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    chunks.concat()
}

async fn results_live_under_job_and_attempt_and_read_back_by_range(b: Backend) {
    let storage = &b.storage;
    let bytes = pattern(10_000);
    let key = storage.put_result("job-1", 2, bytes.clone()).await.unwrap();
    assert_eq!(key, "results/job-1/attempt-2.mp4");
    assert!((b.on_disk)("results/job-1/attempt-2.mp4").is_file());
    assert_eq!(storage.size(&key).await.unwrap(), 10_000);
    assert_eq!(storage.read(&key).await.unwrap(), bytes);
    assert_eq!(
        storage.read_range(&key, 100..356).await.unwrap(),
        bytes[100..356].to_vec()
    );
    assert_eq!(
        storage.read_range(&key, 9_990..10_000).await.unwrap(),
        bytes[9_990..].to_vec()
    );
    assert_eq!(streamed(storage, &key, 0..10_000).await, bytes);
    assert_eq!(
        streamed(storage, &key, 4_097..9_999).await,
        bytes[4_097..9_999].to_vec()
    );
    assert!(matches!(
        storage
            .stream_range("results/none/attempt-1.mp4", 0..1)
            .await,
        Err(StorageError::NotFound(_))
    ));

    // Deleting a job's results removes every attempt, and is idempotent.
    storage.put_result("job-1", 1, vec![1, 2, 3]).await.unwrap();
    storage.put_result("job-2", 1, vec![4]).await.unwrap();
    storage.delete_job_results("job-1").await.unwrap();
    storage.delete_job_results("job-1").await.unwrap();
    assert!(matches!(
        storage.size(&key).await,
        Err(StorageError::NotFound(_))
    ));
    assert!(storage.size("results/job-1/attempt-1.mp4").await.is_err());
    assert_eq!(
        storage.size("results/job-2/attempt-1.mp4").await.unwrap(),
        1
    );
}

async fn uploads_belong_to_their_account(b: Backend) {
    let storage = &b.storage;
    let id = storage
        .put_upload("acme", b"image bytes".to_vec())
        .await
        .unwrap();
    assert!((b.on_disk)(&format!("uploads/acme/{id}")).is_file());
    assert_eq!(
        upload_id_of_uri(&format!("gallop://uploads/{id}")),
        Some(id.as_str())
    );
    assert_eq!(upload_id_of_uri("https://x/y"), None);
    assert_eq!(
        storage.read_upload("acme", &id).await.unwrap(),
        b"image bytes"
    );
    assert!(matches!(
        storage.read_upload("zeta", &id).await,
        Err(StorageError::NotFound(_))
    ));
    let usage = storage.upload_usage("acme").await.unwrap();
    assert_eq!((usage.count, usage.bytes), (1, 11));
    assert!(usage.oldest_ms.is_some());
    assert_eq!(storage.upload_usage("zeta").await.unwrap().count, 0);

    storage.delete_upload("acme", &id).await.unwrap();
    storage.delete_upload("acme", &id).await.unwrap();
    assert!(storage.read_upload("acme", &id).await.is_err());
    assert_eq!(storage.upload_usage("acme").await.unwrap().count, 0);
}

async fn the_sweeper_deletes_uploads_older_than_their_lifetime(b: Backend) {
    let storage = &b.storage;
    let old = storage.put_upload("acme", vec![1; 10]).await.unwrap();
    let fresh = storage.put_upload("acme", vec![2; 10]).await.unwrap();
    let other = storage.put_upload("zeta", vec![3; 10]).await.unwrap();
    // Both backends take an object's age from its file's modification time: make two of them
    // two hours old behind the API.
    let two_hours_ago = SystemTime::now() - Duration::from_secs(2 * 3600);
    for (account, id) in [("acme", &old), ("zeta", &other)] {
        let file = std::fs::File::options()
            .write(true)
            .open((b.on_disk)(&format!("uploads/{account}/{id}")))
            .unwrap();
        file.set_modified(two_hours_ago).unwrap();
    }

    let one_hour_ms = 3600 * 1000;
    assert_eq!(storage.sweep_uploads(one_hour_ms).await.unwrap(), 2);
    assert!(matches!(
        storage.read_upload("acme", &old).await,
        Err(StorageError::NotFound(_))
    ));
    assert!(matches!(
        storage.read_upload("zeta", &other).await,
        Err(StorageError::NotFound(_))
    ));
    assert_eq!(storage.read_upload("acme", &fresh).await.unwrap(), [2; 10]);
    assert_eq!(storage.sweep_uploads(one_hour_ms).await.unwrap(), 0);
}

async fn ids_that_could_escape_their_directory_are_refused(b: Backend) {
    let storage = &b.storage;
    for bad in ["../acme", "..", "a/b", "", "x%2F..", &"a".repeat(200)] {
        let err = storage.read_upload("acme", bad).await.unwrap_err();
        assert!(
            err.to_string().contains("upload id") && err.to_string().contains("must be 1-128"),
            "{bad:?}: {err}"
        );
        assert!(
            storage.put_upload(bad, vec![1]).await.is_err(),
            "account {bad:?}"
        );
        assert!(
            storage.put_result(bad, 1, vec![1]).await.is_err(),
            "job {bad:?}"
        );
    }
}

async fn a_reachable_store_passes_its_check(b: Backend) {
    b.storage.check().await.unwrap();
    // Checking writes nothing.
    b.storage.put_result("job-1", 1, vec![1]).await.unwrap();
    b.storage.check().await.unwrap();
    assert_eq!(b.storage.upload_usage("acme").await.unwrap().count, 0);
}

#[test]
fn storage_urls_that_cannot_work_are_refused_naming_the_rule() {
    let cases = [
        ("gs://bucket/x", "scheme \"gs:\" is not supported"),
        ("objects", "is not a URL"),
        ("/var/lib/gallop", "is not a URL"),
        ("file://nas/share", "three slashes"),
        ("s3:///prefix", "needs a bucket name"),
        ("s3://bucket:9000/p", "AWS_ENDPOINT_URL"),
        ("s3://bucket/p?region=x", "query"),
        (
            "s3://AKIDEXAMPLE:wJalrXUtnFEMI@bucket/p",
            "must not carry credentials",
        ),
    ];
    for (url, why) in cases {
        let err = match Storage::from_url_with_env(url, []) {
            Ok(_) => panic!("{url} was accepted"),
            Err(e) => e,
        };
        assert!(matches!(err, StorageError::BadUrl(_)), "{url}: {err:?}");
        let message = err.to_string();
        assert!(
            message.starts_with("storage URL ") && message.contains(why),
            "{url}: {message}"
        );
        assert!(message.ends_with(URL_RULE), "{url}: {message}");
        assert!(
            !message.contains("wJalrXUtnFEMI"),
            "secret echoed: {message}"
        );
    }
}

#[tokio::test]
async fn a_file_url_is_a_directory_made_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("a b/objects");
    let url = format!("file://{}", root.display()).replace(' ', "%20");
    let storage = Storage::from_url(&url).unwrap();
    let key = storage.put_result("job-9", 1, vec![7; 5]).await.unwrap();
    assert_eq!(std::fs::read(root.join(&key)).unwrap(), [7; 5]);
    // The default storage of a data dir is the same as its file:// URL.
    let default = Storage::local(dir.path()).unwrap();
    let same = Storage::from_url(&format!("file://{}/objects", dir.path().display())).unwrap();
    let key = default.put_result("job-3", 1, vec![3]).await.unwrap();
    assert_eq!(same.read(&key).await.unwrap(), [3]);
}

#[tokio::test]
async fn a_presigned_url_downloads_from_the_bucket_and_only_with_its_signature() {
    let s3 = TempS3::start();
    let storage = Storage::from_url_with_env(&s3.url("p"), s3.env()).unwrap();
    let bytes = pattern(50_000);
    let key = storage.put_result("job-1", 1, bytes.clone()).await.unwrap();
    let url = storage
        .presigned_get(&key, Duration::from_secs(600))
        .await
        .unwrap()
        .expect("S3 presigns");
    assert!(url.starts_with(&s3.endpoint()), "{url}");
    assert!(url.contains("X-Amz-Signature="), "{url}");

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let got = client.get(&url).send().await.unwrap();
    assert_eq!(got.status().as_u16(), 200);
    assert_eq!(got.bytes().await.unwrap().to_vec(), bytes);
    let part = client
        .get(&url)
        .header("range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status().as_u16(), 206);
    assert_eq!(
        part.bytes().await.unwrap().to_vec(),
        bytes[100..200].to_vec()
    );

    // The server really checks signatures: without them, or with one bit changed, no bytes.
    let unsigned = url.split('?').next().unwrap();
    assert_eq!(
        client.get(unsigned).send().await.unwrap().status().as_u16(),
        403
    );
    let tampered = url.replace("attempt-1", "attempt-2");
    assert_eq!(
        client
            .get(&tampered)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        403
    );

    // Local files have no bucket to send a client to.
    let dir = tempfile::tempdir().unwrap();
    let local = Storage::local(dir.path()).unwrap();
    let key = local.put_result("job-1", 1, vec![1]).await.unwrap();
    assert_eq!(
        local
            .presigned_get(&key, Duration::from_secs(60))
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn wrong_keys_a_missing_bucket_or_no_server_fail_the_check() {
    let s3 = TempS3::start();
    let missing = Storage::from_url_with_env("s3://no-such-bucket/p", s3.env()).unwrap();
    assert!(missing.check().await.is_err());

    let mut env = s3.env();
    for (k, v) in &mut env {
        if k == "AWS_SECRET_ACCESS_KEY" {
            *v = "not-the-secret".into();
        }
    }
    let wrong_key = Storage::from_url_with_env(&s3.url("p"), env).unwrap();
    let err = wrong_key.check().await.unwrap_err();
    assert!(!err.to_string().contains("not-the-secret"), "{err}");

    // A port nothing listens on any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut env = s3.env();
    for (k, v) in &mut env {
        if k == "AWS_ENDPOINT_URL" {
            *v = format!("http://127.0.0.1:{port}");
        }
    }
    let gone = Storage::from_url_with_env(&s3.url("p"), env).unwrap();
    assert!(gone.check().await.is_err());

    // A local store whose directory was removed.
    let dir = tempfile::tempdir().unwrap();
    let local = Storage::local(dir.path()).unwrap();
    local.check().await.unwrap();
    std::fs::remove_dir_all(dir.path().join("objects")).unwrap();
    let err = local.check().await.unwrap_err();
    assert!(err.to_string().contains("objects"), "{err}");
}
