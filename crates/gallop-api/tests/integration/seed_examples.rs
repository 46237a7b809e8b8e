//! Every example of the seed documents, copied literally, parses to the request it means.

use gallop_api::{
    GenerationRequest, ModelId, Ratio, Resolution, RunBody, parse_input, parse_run_body,
};
use serde_json::{Value, json};

const RAP_PNG: &str =
    "https://help-static-aliyun-doc.aliyuncs.com/file-manage-files/zh-CN/20250925/wpimhv/rap.png";

fn i2v(
    prompt: &str,
    resolution: Resolution,
    duration: u32,
    seed: Option<u32>,
) -> GenerationRequest {
    GenerationRequest {
        model: ModelId::HhI2v,
        prompt: prompt.to_string(),
        negative_prompt: None,
        images: vec![RAP_PNG.to_string()],
        resolution,
        ratio: None,
        duration,
        seed,
        watermark: true,
    }
}

/// The `--data` bodies of the seeds' curl examples, literally.
fn curl_bodies() -> Vec<(&'static str, GenerationRequest)> {
    vec![
        (
            r#"{  "model": "alibaba/hh1-i2v",  "input": {    "image": "https://help-static-aliyun-doc.aliyuncs.com/file-manage-files/zh-CN/20250925/wpimhv/rap.png",    "prompt": "A gentle camera push-in on the scene with soft ambient lighting"  }}"#,
            i2v(
                "A gentle camera push-in on the scene with soft ambient lighting",
                Resolution::P720,
                5,
                None,
            ),
        ),
        (
            r#"{  "model": "alibaba/hh1-i2v",  "input": {    "image": "https://help-static-aliyun-doc.aliyuncs.com/file-manage-files/zh-CN/20250925/wpimhv/rap.png",    "prompt": "Subject begins rapping confidently to the beat, head bobbing",    "duration": 10,    "resolution": "1080P"  }}"#,
            i2v(
                "Subject begins rapping confidently to the beat, head bobbing",
                Resolution::P1080,
                10,
                None,
            ),
        ),
        (
            r#"{  "model": "alibaba/hh1-i2v",  "input": {    "image": "https://help-static-aliyun-doc.aliyuncs.com/file-manage-files/zh-CN/20250925/wpimhv/rap.png",    "prompt": "Camera orbits slowly around the subject under streetlamp light",    "duration": 8,    "resolution": "720P",    "seed": 42  }}"#,
            i2v(
                "Camera orbits slowly around the subject under streetlamp light",
                Resolution::P720,
                8,
                Some(42),
            ),
        ),
        (
            r#"{  "model": "alibaba/hh1.1-r2v",  "input": {    "prompt": "The person in image 1 walks through the futuristic city in image 2 and meets the person in image 3.",    "images": [      "https://pub-04a6d208d361438ea01b797e6973bd19.r2.dev/catalog/bytedance__seedream-5-lite/portrait-photo-0.jpeg",      "https://pub-04a6d208d361438ea01b797e6973bd19.r2.dev/catalog/google__nano-banana-2/futuristic-city.png",      "https://pub-04a6d208d361438ea01b797e6973bd19.r2.dev/catalog/google__nano-banana-2/high-resolution-portrait.jpg"    ],    "duration": 8,    "ratio": "16:9",    "resolution": "1080P"  }}"#,
            GenerationRequest {
                model: ModelId::HhR2v,
                prompt: "The person in image 1 walks through the futuristic city in image 2 and meets the person in image 3.".to_string(),
                negative_prompt: None,
                images: vec![
                    "https://pub-04a6d208d361438ea01b797e6973bd19.r2.dev/catalog/bytedance__seedream-5-lite/portrait-photo-0.jpeg".to_string(),
                    "https://pub-04a6d208d361438ea01b797e6973bd19.r2.dev/catalog/google__nano-banana-2/futuristic-city.png".to_string(),
                    "https://pub-04a6d208d361438ea01b797e6973bd19.r2.dev/catalog/google__nano-banana-2/high-resolution-portrait.jpg".to_string(),
                ],
                resolution: Resolution::P1080,
                ratio: Some(Ratio::R16x9),
                duration: 8,
                seed: None,
                watermark: true,
            },
        ),
    ]
}

#[test]
fn every_seed_curl_body_parses_to_the_expected_request() {
    for (body, expected) in curl_bodies() {
        let body: Value = serde_json::from_str(body).unwrap();
        let parsed = parse_run_body(&body).unwrap();
        assert_eq!(
            parsed,
            RunBody::Submit {
                request: expected,
                queue_request: false
            }
        );
    }
}

#[test]
fn every_seed_input_object_parses_alone_as_the_classic_route_body() {
    for (body, expected) in curl_bodies() {
        let body: Value = serde_json::from_str(body).unwrap();
        let model = ModelId::parse(body["model"].as_str().unwrap()).unwrap();
        assert_eq!(parse_input(model, &body["input"]).unwrap(), expected);
    }
}

#[test]
fn queue_request_beside_model_is_read() {
    let body =
        json!({"model": "alibaba/hh1-i2v", "input": {"image": RAP_PNG}, "queueRequest": true});
    let RunBody::Submit {
        request,
        queue_request,
    } = parse_run_body(&body).unwrap()
    else {
        panic!("a submit body");
    };
    assert!(queue_request);
    assert_eq!(request, i2v("", Resolution::P720, 5, None));
}

#[test]
fn a_request_id_body_is_a_poll() {
    let body = json!({"request_id": "job_123"});
    assert_eq!(
        parse_run_body(&body).unwrap(),
        RunBody::Poll {
            request_id: "job_123".to_string()
        }
    );
}

#[test]
fn defaults_are_720p_five_seconds_watermarked_and_16_9_for_r2v() {
    let r2v = parse_input(
        ModelId::HhR2v,
        &json!({"prompt": "image 1 dances", "images": ["https://example.com/a.png"]}),
    )
    .unwrap();
    assert_eq!(r2v.resolution, Resolution::P720);
    assert_eq!(r2v.duration, 5);
    assert!(r2v.watermark);
    assert_eq!(r2v.ratio, Some(Ratio::R16x9));
    assert_eq!(r2v.seed, None);
}

#[test]
fn explicit_values_at_the_edges_are_kept() {
    let i2v = parse_input(
        ModelId::HhI2v,
        &json!({"image": "gallop://uploads/up_1", "negative_prompt": "blur", "duration": 15,
                "seed": 2147483647, "watermark": false}),
    )
    .unwrap();
    assert_eq!(i2v.duration, 15);
    assert_eq!(i2v.seed, Some(2_147_483_647));
    assert!(!i2v.watermark);
    assert_eq!(i2v.negative_prompt.as_deref(), Some("blur"));
    assert_eq!(i2v.images, vec!["gallop://uploads/up_1".to_string()]);
    let low = parse_input(
        ModelId::HhI2v,
        &json!({"image": "https://x.test/a.png", "duration": 3, "seed": 0}),
    )
    .unwrap();
    assert_eq!((low.duration, low.seed), (3, Some(0)));
}
