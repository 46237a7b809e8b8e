//! The Cloudflare answers serialize to the seeds' JSON, and the error envelope to Cloudflare's.

use gallop_api::{
    CfErrorCode, Envelope, GatewayMetadata, ModelId, RunAnswer, RunFailure, RunProgress,
    VideoResult,
};
use serde_json::{Value, json};

fn completed(video: &str, key_source: &str) -> RunAnswer {
    RunAnswer::Completed {
        result: VideoResult {
            video: video.to_string(),
        },
        gateway_metadata: GatewayMetadata {
            key_source: key_source.to_string(),
            ..GatewayMetadata::unified()
        },
    }
}

#[test]
fn completed_answers_match_the_seed_outputs() {
    // The seeds' "Output" blocks, literally.
    let seeds = [
        (
            r#"{  "state": "Completed",  "result": {    "video": "https://examples.aig.cloudflare.com/alibaba/hh1.1-r2v/multi-image-reference.mp4"  },  "gatewayMetadata": {    "keySource": "Unified"  }}"#,
            completed(
                "https://examples.aig.cloudflare.com/alibaba/hh1.1-r2v/multi-image-reference.mp4",
                "Unified",
            ),
        ),
        (
            r#"{  "gatewayMetadata": {    "keySource": "BYOK"  },  "result": {    "video": "https://pub-04a6d208d361438ea01b797e6973bd19.r2.dev/catalog/alibaba__hh1-i2v/simple-image-to-video.mp4"  },  "state": "Completed"}"#,
            completed(
                "https://pub-04a6d208d361438ea01b797e6973bd19.r2.dev/catalog/alibaba__hh1-i2v/simple-image-to-video.mp4",
                "BYOK",
            ),
        ),
    ];
    for (text, answer) in seeds {
        let seed: Value = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_value(&answer).unwrap(), seed);
        assert_eq!(serde_json::from_value::<RunAnswer>(seed).unwrap(), answer);
    }
}

#[test]
fn gateway_metadata_carries_gallop_extras_only_when_set() {
    let answer = RunAnswer::Completed {
        result: VideoResult {
            video: "https://gallop.test/v/abc.mp4".to_string(),
        },
        gateway_metadata: GatewayMetadata {
            request_id: Some("job_1".to_string()),
            engine: Some("preview".to_string()),
            seed: Some(42),
            ..GatewayMetadata::unified()
        },
    };
    assert_eq!(
        serde_json::to_value(&answer).unwrap(),
        json!({"state": "Completed", "result": {"video": "https://gallop.test/v/abc.mp4"},
               "gatewayMetadata": {"keySource": "Unified", "requestId": "job_1", "engine": "preview", "seed": 42}})
    );
}

#[test]
fn queued_running_and_failed_answers() {
    let cases = [
        (
            RunAnswer::Queued {
                request_id: "job_1".to_string(),
                model: ModelId::HhI2v,
                queue_position: None,
            },
            json!({"state": "Queued", "request_id": "job_1", "model": "alibaba/hh1-i2v"}),
        ),
        (
            RunAnswer::Running {
                request_id: "job_1".to_string(),
                model: ModelId::HhR2v,
                progress: RunProgress {
                    step: 12,
                    total: 40,
                    percent: None,
                },
                eta_seconds: None,
            },
            json!({"state": "Running", "request_id": "job_1", "model": "alibaba/hh1.1-r2v",
                   "progress": {"step": 12, "total": 40}}),
        ),
        (
            RunAnswer::Failed {
                request_id: None,
                model: None,
                error: RunFailure {
                    code: "ImageDecode".to_string(),
                    message: "/input/image is not a JPEG, PNG, WebP or BMP".to_string(),
                },
            },
            json!({"state": "Failed", "error": {"code": "ImageDecode",
                   "message": "/input/image is not a JPEG, PNG, WebP or BMP"}}),
        ),
    ];
    for (answer, expected) in cases {
        assert_eq!(serde_json::to_value(&answer).unwrap(), expected);
        assert_eq!(
            serde_json::from_value::<RunAnswer>(expected).unwrap(),
            answer
        );
    }
}

#[test]
fn classic_route_answer() {
    let answer = Envelope::ok(VideoResult {
        video: "https://gallop.test/v/abc.mp4".to_string(),
    });
    assert_eq!(
        serde_json::to_value(&answer).unwrap(),
        json!({"result": {"video": "https://gallop.test/v/abc.mp4"}, "success": true, "errors": [], "messages": []})
    );
}

#[test]
fn error_codes_and_statuses() {
    let table = [
        (CfErrorCode::BadInput, 5006, 400),
        (CfErrorCode::NoSuchModel, 5007, 400),
        (CfErrorCode::Authentication, 10000, 401),
        (CfErrorCode::TooLarge, 3006, 413),
        (CfErrorCode::Timeout, 3007, 408),
        (CfErrorCode::OutOfCapacity, 3040, 429),
    ];
    for (code, number, status) in table {
        assert_eq!(
            (code.code(), code.http_status()),
            (number, status),
            "{code:?}"
        );
        let envelope: Envelope<Value> = Envelope::error(code, code.default_message());
        assert_eq!(
            serde_json::to_value(&envelope).unwrap(),
            json!({"success": false, "errors": [{"code": number, "message": code.default_message()}],
                   "messages": [], "result": null})
        );
    }
}

#[test]
fn gallop_extras_round_trip() {
    let answers = [
        json!({"state": "Queued", "request_id": "job_1", "model": "alibaba/hh1-i2v", "queue_position": 3}),
        json!({"state": "Running", "request_id": "job_1", "model": "alibaba/hh1-i2v",
               "progress": {"step": 1, "total": 8, "percent": 12.5}, "eta_seconds": 40}),
        json!({"state": "Failed", "request_id": "job_1", "model": "alibaba/hh1.1-r2v",
               "error": {"code": "Cancelled", "message": "cancelled by the client"}}),
    ];
    for expected in answers {
        let answer: RunAnswer = serde_json::from_value(expected.clone()).unwrap();
        assert_eq!(serde_json::to_value(&answer).unwrap(), expected);
    }
    let queued: RunAnswer = serde_json::from_value(json!(
        {"state": "Queued", "request_id": "j", "model": "alibaba/hh1-i2v", "queue_position": 3}
    ))
    .unwrap();
    assert!(matches!(
        queued,
        RunAnswer::Queued {
            queue_position: Some(3),
            ..
        }
    ));
}
