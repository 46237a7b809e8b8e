//! Object storage on a local directory: result keys name job and attempt, uploads are per
//! account, ranges read the right bytes, ids cannot escape their directory.

use gallop_storage::{Storage, StorageError, upload_id_of_uri};

#[tokio::test]
async fn results_live_under_job_and_attempt_and_read_back_by_range() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::local(dir.path()).unwrap();
    let bytes: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let key = storage.put_result("job-1", 2, bytes.clone()).await.unwrap();
    assert_eq!(key, "results/job-1/attempt-2.mp4");
    assert!(
        dir.path()
            .join("objects/results/job-1/attempt-2.mp4")
            .is_file()
    );
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

#[tokio::test]
async fn uploads_belong_to_their_account() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::local(dir.path()).unwrap();
    let id = storage
        .put_upload("acme", b"image bytes".to_vec())
        .await
        .unwrap();
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
    storage.delete_upload("acme", &id).await.unwrap();
    storage.delete_upload("acme", &id).await.unwrap();
    assert!(storage.read_upload("acme", &id).await.is_err());
}

#[tokio::test]
async fn ids_that_could_escape_their_directory_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::local(dir.path()).unwrap();
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
