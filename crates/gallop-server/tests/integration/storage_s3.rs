//! A server whose inputs and results live in an S3 bucket (a real S3-compatible server on
//! loopback that checks request signatures): an upload lands in the bucket and the worker reads
//! it from there, the result is written under its job and attempt, and the result link serves
//! the bucket's bytes with Range 206, or, with `presign_downloads`, redirects to a presigned URL
//! of the bucket.

use axum::http::StatusCode;
use gallop_server::storage::Storage;
use gallop_testkit::TempS3;
use image::ImageFormat;
use serde_json::Value;

use crate::http_support::{ACCOUNT, TestServer, check_ranges, client, encode, picture, quick_i2v};

async fn start_on_s3(s3: &TempS3, presign: bool) -> TestServer {
    let storage = Storage::from_url_with_env(&s3.url("gallop"), s3.env()).unwrap();
    TestServer::start_with(|c| {
        c.storage = Some(storage);
        c.presign_downloads = presign;
    })
    .await
}

/// Uploads a picture and runs a job on it synchronously; returns the upload's id and the
/// completed Cloudflare answer.
async fn run_on_upload(server: &TestServer) -> (String, Value) {
    let png = encode(&picture(640, 480, 12), ImageFormat::Png);
    let (status, up) = server.upload(png).await;
    assert_eq!(status, StatusCode::CREATED, "{up}");
    let uri = up["uri"].as_str().unwrap();
    let (status, _, answer) = server.post(&server.run_path(), &quick_i2v(uri)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["state"], "Completed", "{answer}");
    (up["id"].as_str().unwrap().to_string(), answer)
}

/// The job id of a result link `.../v1/files/{job}?exp&sig`.
fn job_of(link: &str) -> &str {
    let path = link.split('?').next().unwrap();
    path.rsplit('/').next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_and_results_live_in_the_bucket_and_links_serve_ranges_from_it() {
    let s3 = TempS3::start();
    let server = start_on_s3(&s3, false).await;
    let (upload, answer) = run_on_upload(&server).await;

    // The worker read its input from the bucket: nothing was stored in the data dir.
    let in_bucket = |key: &str| s3.object_path(TempS3::BUCKET, &format!("gallop/{key}"));
    assert!(in_bucket(&format!("uploads/{ACCOUNT}/{upload}")).is_file());
    assert!(!server.dir.path().join("objects").exists());

    let link = answer["result"]["video"].as_str().unwrap();
    let stored = std::fs::read(in_bucket(&format!(
        "results/{}/attempt-1.mp4",
        job_of(link)
    )))
    .unwrap();
    let response = client().get(link).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "video/mp4");
    assert_eq!(
        response.headers()["content-length"],
        stored.len().to_string().as_str()
    );
    assert_eq!(response.bytes().await.unwrap().to_vec(), stored);
    gallop_media::decode_mp4(&stored).unwrap();
    check_ranges(link, &stored).await;
    server.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_presigned_downloads_a_valid_link_redirects_to_the_bucket() {
    let s3 = TempS3::start();
    let server = start_on_s3(&s3, true).await;
    let (_, answer) = run_on_upload(&server).await;
    let link = answer["result"]["video"].as_str().unwrap();
    let stored = std::fs::read(s3.object_path(
        TempS3::BUCKET,
        &format!("gallop/results/{}/attempt-1.mp4", job_of(link)),
    ))
    .unwrap();

    let no_follow = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = no_follow.get(link).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::TEMPORARY_REDIRECT);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(&s3.endpoint()), "{location}");
    assert!(location.contains("X-Amz-Signature="), "{location}");
    // No longer than the link's own lifetime (a day by default).
    let expires: u64 = location
        .split("X-Amz-Expires=")
        .nth(1)
        .and_then(|rest| rest.split('&').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!((1..=24 * 3600).contains(&expires), "{location}");

    // The bucket serves the bytes itself, Range included; a client that follows redirects
    // gets the video from the link as before.
    let part = no_follow
        .get(&location)
        .header("range", "bytes=100-299")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        part.bytes().await.unwrap().to_vec(),
        stored[100..300].to_vec()
    );
    let followed = client().get(link).send().await.unwrap();
    assert_eq!(followed.status(), StatusCode::OK);
    assert_eq!(followed.bytes().await.unwrap().to_vec(), stored);

    // The link's own signature is still checked first: a forged one gets no bucket URL.
    let forged = format!(
        "{}0",
        link.trim_end_matches(|c: char| c.is_ascii_hexdigit())
    );
    let response = no_follow.get(&forged).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(response.headers().get("location").is_none());
    server.server.shutdown().await;
}
