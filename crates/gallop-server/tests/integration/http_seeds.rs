//! The seeds' exact example bodies, over real loopback HTTP, with their image hosts pointed at a
//! loopback image server: each answers `Completed` with a signed link to an MP4 that decodes, and
//! the link serves HTTP Range.

use crate::http_support;

use http_support::{ImageServer, TestServer, check_ranges, client};
use reqwest::StatusCode;

/// The `--data` bodies of the seeds' cURL examples, verbatim.
const SEED_BODIES: [&str; 4] = [
    r#"{  "model": "alibaba/hh1-i2v",  "input": {    "image": "https://help-static-aliyun-doc.aliyuncs.com/file-manage-files/zh-CN/20250925/wpimhv/rap.png",    "prompt": "A gentle camera push-in on the scene with soft ambient lighting"  }}"#,
    r#"{  "model": "alibaba/hh1-i2v",  "input": {    "image": "https://help-static-aliyun-doc.aliyuncs.com/file-manage-files/zh-CN/20250925/wpimhv/rap.png",    "prompt": "Subject begins rapping confidently to the beat, head bobbing",    "duration": 10,    "resolution": "1080P"  }}"#,
    r#"{  "model": "alibaba/hh1-i2v",  "input": {    "image": "https://help-static-aliyun-doc.aliyuncs.com/file-manage-files/zh-CN/20250925/wpimhv/rap.png",    "prompt": "Camera orbits slowly around the subject under streetlamp light",    "duration": 8,    "resolution": "720P",    "seed": 42  }}"#,
    r#"{  "model": "alibaba/hh1.1-r2v",  "input": {    "prompt": "The person in image 1 walks through the futuristic city in image 2 and meets the person in image 3.",    "images": [      "https://pub-04a6d208d361438ea01b797e6973bd19.r2.dev/catalog/bytedance__seedream-5-lite/portrait-photo-0.jpeg",      "https://pub-04a6d208d361438ea01b797e6973bd19.r2.dev/catalog/google__nano-banana-2/futuristic-city.png",      "https://pub-04a6d208d361438ea01b797e6973bd19.r2.dev/catalog/google__nano-banana-2/high-resolution-portrait.jpg"    ],    "duration": 8,    "ratio": "16:9",    "resolution": "1080P"  }}"#,
];

/// (duration s, expected width, height) per body: i2v follows the 480x640 (3:4) input image.
const EXPECTED: [(u32, u32, u32); 4] = [
    (5, 832, 1088),
    (10, 1248, 1632),
    (8, 832, 1088),
    (8, 1920, 1080),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seed_examples_complete_with_decodable_mp4_and_range_downloads() {
    let images = ImageServer::start().await;
    let server = TestServer::start().await;

    // All four at once, synchronously, as the seeds' clients call.
    let answers = futures_util::future::join_all(SEED_BODIES.iter().map(|body| {
        let body = images.localize(body);
        let server = &server;
        async move { server.post(&server.run_path(), &body).await }
    }))
    .await;

    for (i, (status, _, answer)) in answers.into_iter().enumerate() {
        assert_eq!(status, StatusCode::OK, "seed body {i}: {answer}");
        assert_eq!(answer["state"], "Completed", "seed body {i}: {answer}");
        assert_eq!(answer["gatewayMetadata"]["keySource"], "Unified");
        assert_eq!(answer["gatewayMetadata"]["engine"], "preview", "{answer}");
        if i == 2 {
            assert_eq!(
                answer["gatewayMetadata"]["seed"], 42,
                "the requested seed is reported"
            );
        } else {
            assert!(
                answer["gatewayMetadata"]["seed"].is_u64(),
                "the seed used is reported"
            );
        }
        let url = answer["result"]["video"].as_str().unwrap();
        assert!(
            url.starts_with(&format!("{}/v1/files/", server.base)),
            "absolute: {url}"
        );
        assert!(
            url.contains("exp=") && url.contains("sig="),
            "signed: {url}"
        );

        // No bearer token: the link is the capability.
        let response = client().get(url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["accept-ranges"], "bytes");
        assert_eq!(response.headers()["content-type"], "video/mp4");
        let mp4 = response.bytes().await.unwrap().to_vec();
        let video = gallop_media::decode_mp4(&mp4).unwrap();
        let (duration, width, height) = EXPECTED[i];
        assert_eq!(
            (video.width, video.height),
            (width, height),
            "seed body {i}"
        );
        assert_eq!(video.frames.len() as u32, duration * 24, "seed body {i}");
        assert!((video.fps - 24.0).abs() < 0.01, "{}", video.fps);

        if i == 0 {
            check_ranges(url, &mp4).await;
        }
    }
    assert!(images.hits.load(std::sync::atomic::Ordering::Relaxed) >= 6);
    server.server.shutdown().await;
}
