//! The Model Studio shape maps to the same request through the same rules.

use gallop_api::{
    ApiError, DashScopeErrorCode, GenerationRequest, ModelId, Ratio, Resolution, TaskAnswer,
    TaskOutput, TaskStatus, TaskUsage, parse_input, parse_video_synthesis,
};
use serde_json::{Value, json};

fn i2v_body() -> Value {
    json!({
        "model": "happyhorse-1.0-i2v",
        "input": {
            "prompt": "A gentle camera push-in",
            "negative_prompt": "blur",
            "media": [{"type": "first_frame", "url": "https://example.com/rap.png"}]
        },
        "parameters": {"resolution": "1080P", "duration": 10, "watermark": false, "seed": 7}
    })
}

fn r2v_body() -> Value {
    json!({
        "model": "happyhorse-1.1-r2v",
        "input": {
            "prompt": "image 1 meets image 2",
            "media": [
                {"type": "reference_image", "url": "https://example.com/a.png"},
                {"type": "reference_image", "url": "https://example.com/b.png"}
            ]
        },
        "parameters": {"ratio": "9:16", "duration": 8}
    })
}

#[test]
fn i2v_maps_to_the_same_request_as_the_cloudflare_shape() {
    let from_dashscope = parse_video_synthesis(&i2v_body()).unwrap().request;
    let from_cloudflare = parse_input(
        ModelId::HhI2v,
        &json!({"image": "https://example.com/rap.png", "prompt": "A gentle camera push-in",
                "negative_prompt": "blur", "resolution": "1080P", "duration": 10,
                "watermark": false, "seed": 7}),
    )
    .unwrap();
    assert_eq!(from_dashscope, from_cloudflare);
}

#[test]
fn r2v_maps_with_defaults_for_absent_parameters() {
    let request = parse_video_synthesis(&r2v_body()).unwrap().request;
    assert_eq!(
        request,
        GenerationRequest {
            model: ModelId::HhR2v,
            prompt: "image 1 meets image 2".to_string(),
            negative_prompt: None,
            images: vec![
                "https://example.com/a.png".to_string(),
                "https://example.com/b.png".to_string()
            ],
            resolution: Resolution::P720,
            ratio: Some(Ratio::R9x16),
            duration: 8,
            seed: None,
            watermark: true,
        }
    );
}

#[test]
fn parameters_may_be_absent_and_cloudflare_ids_are_accepted() {
    let mut body = i2v_body();
    body.as_object_mut().unwrap().remove("parameters");
    body["model"] = json!("alibaba/hh1-i2v");
    let request = parse_video_synthesis(&body).unwrap().request;
    assert_eq!(
        (request.model, request.resolution, request.duration),
        (ModelId::HhI2v, Resolution::P720, 5)
    );
}

/// `body` with the value at JSON pointer `at` replaced, or removed when `value` is None.
fn edit(mut body: Value, at: &str, value: Option<Value>) -> Value {
    let (parent, key) = at.rsplit_once('/').unwrap();
    let parent = body.pointer_mut(parent).unwrap();
    match (parent, value) {
        (Value::Object(o), Some(v)) => {
            o.insert(key.to_string(), v);
        }
        (Value::Object(o), None) => {
            o.remove(key);
        }
        (Value::Array(a), Some(v)) => a[key.parse::<usize>().unwrap()] = v,
        (Value::Array(a), None) => {
            a.remove(key.parse::<usize>().unwrap());
        }
        _ => panic!("{at} is not in an object or array"),
    }
    body
}

#[test]
fn each_broken_rule_points_into_the_dashscope_body() {
    let media = |n: usize| {
        Value::from(vec![
            json!({"type": "reference_image", "url": "https://example.com/a.png"});
            n
        ])
    };
    let cases: Vec<(Value, &str, Option<Value>, &str)> = vec![
        (
            i2v_body(),
            "/parameters/duration",
            Some(json!(16)),
            "Bad input: /parameters/duration must be <= 15",
        ),
        (
            i2v_body(),
            "/parameters/seed",
            Some(json!(-3)),
            "Bad input: /parameters/seed must be >= 0",
        ),
        (
            i2v_body(),
            "/parameters/watermark",
            Some(json!(1)),
            "Bad input: /parameters/watermark must be a boolean",
        ),
        (
            i2v_body(),
            "/parameters/resolution",
            Some(json!("4K")),
            "Bad input: /parameters/resolution must be one of 720P, 1080P",
        ),
        (
            i2v_body(),
            "/parameters/ratio",
            Some(json!("16:9")),
            "Bad input: /parameters/ratio is not allowed for happyhorse-1.0-i2v: the image sets the aspect ratio",
        ),
        (
            i2v_body(),
            "/parameters/size",
            Some(json!("1280*720")),
            "Bad input: /parameters/size is not a parameter of happyhorse-1.0-i2v: use resolution (720P or 1080P)",
        ),
        (
            i2v_body(),
            "/parameters",
            Some(json!([])),
            "Bad input: /parameters must be an object",
        ),
        (
            i2v_body(),
            "/input/media/0/url",
            Some(json!("file:///etc/passwd")),
            "Bad input: /input/media/0/url must not be a file:// uri; upload the file and pass gallop://uploads/ID",
        ),
        (
            i2v_body(),
            "/input/media/0/url",
            None,
            "Bad input: /input/media/0/url is required",
        ),
        (
            i2v_body(),
            "/input/media/0/type",
            None,
            "Bad input: /input/media/0/type is required",
        ),
        (
            i2v_body(),
            "/input/media/0/type",
            Some(json!("reference_image")),
            "Bad input: /input/media/0/type must be first_frame for happyhorse-1.0-i2v",
        ),
        (
            i2v_body(),
            "/input/media/0/extra",
            Some(json!(1)),
            "Bad input: /input/media/0/extra is not allowed",
        ),
        (
            i2v_body(),
            "/input/media",
            Some(json!([])),
            "Bad input: /input/media must have at least 1 item",
        ),
        (
            i2v_body(),
            "/input/media",
            Some(
                json!([{"type": "first_frame", "url": "https://example.com/a.png"}, {"type": "first_frame", "url": "https://example.com/b.png"}]),
            ),
            "Bad input: /input/media must have at most 1 item",
        ),
        (
            i2v_body(),
            "/input/media",
            None,
            "Bad input: /input/media is required",
        ),
        (
            i2v_body(),
            "/input/img_url",
            Some(json!("https://example.com/a.png")),
            "Bad input: /input/img_url is not allowed with /input/media: give the images once",
        ),
        (
            i2v_body(),
            "/input/reference_urls",
            Some(json!(["https://example.com/a.png"])),
            "Bad input: /input/reference_urls is not allowed",
        ),
        (
            i2v_body(),
            "/input/template",
            Some(json!("gufeng")),
            "Bad input: /input/template is not allowed",
        ),
        (
            i2v_body(),
            "/input/function",
            Some(json!("image2video")),
            "Bad input: /input/function must be video-synthesis",
        ),
        (
            i2v_body(),
            "/input/extend_prompt",
            Some(json!("yes")),
            "Bad input: /input/extend_prompt must be a boolean",
        ),
        (
            i2v_body(),
            "/parameters/prompt_extend",
            Some(json!(1)),
            "Bad input: /parameters/prompt_extend must be a boolean",
        ),
        (
            i2v_body(),
            "/parameters/shot_type",
            Some(json!("multi")),
            "Bad input: /parameters/shot_type is not allowed",
        ),
        (
            r2v_body(),
            "/input/img_url",
            Some(json!("https://example.com/a.png")),
            "Bad input: /input/img_url is not allowed",
        ),
        (
            r2v_body(),
            "/input/reference_urls",
            Some(json!(["https://example.com/a.png"])),
            "Bad input: /input/reference_urls is not allowed with /input/media: give the images once",
        ),
        (i2v_body(), "/input", None, "Bad input: /input is required"),
        (
            i2v_body(),
            "/extra",
            Some(json!(1)),
            "Bad input: /extra is not allowed",
        ),
        (
            r2v_body(),
            "/input/prompt",
            None,
            "Bad input: /input/prompt is required",
        ),
        (
            r2v_body(),
            "/input/prompt",
            Some(json!("")),
            "Bad input: /input/prompt must not be empty",
        ),
        (
            r2v_body(),
            "/input/prompt",
            Some(json!("   \n ")),
            "Bad input: /input/prompt must not be only whitespace",
        ),
        (
            r2v_body(),
            "/input/negative_prompt",
            Some(json!("blur")),
            "Bad input: /input/negative_prompt is not allowed",
        ),
        (
            r2v_body(),
            "/input/media",
            Some(media(10)),
            "Bad input: /input/media must have at most 9 items",
        ),
        (
            r2v_body(),
            "/input/media/1/type",
            Some(json!("first_frame")),
            "Bad input: /input/media/1/type must be reference_image for happyhorse-1.1-r2v",
        ),
        (
            r2v_body(),
            "/parameters/ratio",
            Some(json!("2:1")),
            "Bad input: /parameters/ratio must be one of 16:9, 9:16, 3:4, 4:3, 1:1, 21:9, 9:21, 5:4, 4:5",
        ),
        (
            r2v_body(),
            "/parameters/duration",
            Some(json!(2.5)),
            "Bad input: /parameters/duration must be an integer",
        ),
    ];
    let mut failures = Vec::new();
    for (base, at, value, expected) in cases {
        let body = edit(base, at, value.clone());
        match parse_video_synthesis(&body) {
            Ok(r) => failures.push(format!("{at}={value:?}: accepted as {r:?}")),
            Err(e) if e.to_string() != expected => {
                failures.push(format!("{at}={value:?}: got {e}, want {expected}"))
            }
            Err(e) => assert_eq!(e.dashscope_code(), DashScopeErrorCode::InvalidParameter),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn unknown_and_missing_models_are_model_not_found() {
    let unknown = edit(i2v_body(), "/model", Some(json!("wan2.2-i2v-plus")));
    let err = parse_video_synthesis(&unknown).unwrap_err();
    assert!(matches!(err, ApiError::NoSuchModel { .. }));
    let body = serde_json::to_value(err.to_dashscope("req-1")).unwrap();
    assert_eq!(
        body,
        json!({"code": "ModelNotFound",
               "message": "No such model: wan2.2-i2v-plus (served: happyhorse-1.0-i2v, happyhorse-1.1-i2v, happyhorse-1.0-r2v, happyhorse-1.1-r2v, alibaba/hh1-i2v, alibaba/hh1.1-r2v)",
               "request_id": "req-1"})
    );
    assert_eq!(err.dashscope_code().http_status(), 404);
    let missing = edit(i2v_body(), "/model", None);
    assert!(matches!(
        parse_video_synthesis(&missing),
        Err(ApiError::NoSuchModel { given: None, .. })
    ));
}

#[test]
fn invalid_parameter_error_body() {
    let body = edit(i2v_body(), "/parameters/duration", Some(json!(99)));
    let err = parse_video_synthesis(&body).unwrap_err();
    assert_eq!(
        serde_json::to_value(err.to_dashscope("req-2")).unwrap(),
        json!({"code": "InvalidParameter", "message": "Bad input: /parameters/duration must be <= 15", "request_id": "req-2"})
    );
    assert_eq!(err.dashscope_code().http_status(), 400);
}

#[test]
fn error_codes_spell_as_model_studio_does() {
    for (code, text, status) in [
        (
            DashScopeErrorCode::InvalidParameter,
            "InvalidParameter",
            400,
        ),
        (DashScopeErrorCode::InvalidApiKey, "InvalidApiKey", 401),
        (DashScopeErrorCode::ModelNotFound, "ModelNotFound", 404),
        (
            DashScopeErrorCode::ThrottlingRateQuota,
            "Throttling.RateQuota",
            429,
        ),
        (
            DashScopeErrorCode::UnsupportedOperation,
            "UnsupportedOperation",
            400,
        ),
        (DashScopeErrorCode::InternalError, "InternalError", 500),
    ] {
        assert_eq!(serde_json::to_value(code).unwrap(), text);
        assert_eq!(code.as_str(), text);
        assert_eq!(code.http_status(), status);
    }
}

#[test]
fn task_answers() {
    let submitted = TaskAnswer {
        output: TaskOutput::new("task-1", TaskStatus::Pending),
        request_id: "req-3".to_string(),
        usage: None,
    };
    assert_eq!(
        serde_json::to_value(&submitted).unwrap(),
        json!({"output": {"task_status": "PENDING", "task_id": "task-1"}, "request_id": "req-3"})
    );
    let succeeded = TaskAnswer {
        output: TaskOutput {
            submit_time: Some("2026-11-22 02:00:00.000".to_string()),
            scheduled_time: Some("2026-11-22 02:00:01.000".to_string()),
            end_time: Some("2026-11-22 02:03:00.000".to_string()),
            video_url: Some("https://gallop.test/v/abc.mp4".to_string()),
            orig_prompt: Some("the cat blinks".to_string()),
            ..TaskOutput::new("task-1", TaskStatus::Succeeded)
        },
        request_id: "req-4".to_string(),
        usage: Some(TaskUsage {
            duration: 5,
            output_video_duration: Some(5),
            video_count: 1,
            sr: Some(720),
            ratio: Some("16:9".to_string()),
        }),
    };
    let value = serde_json::to_value(&succeeded).unwrap();
    assert_eq!(value["output"]["task_status"], "SUCCEEDED");
    assert_eq!(
        value["output"]["video_url"],
        "https://gallop.test/v/abc.mp4"
    );
    assert_eq!(value["output"]["end_time"], "2026-11-22 02:03:00.000");
    assert_eq!(value["output"]["orig_prompt"], "the cat blinks");
    assert_eq!(
        value["usage"],
        json!({"duration": 5, "output_video_duration": 5, "video_count": 1, "SR": 720, "ratio": "16:9"})
    );
    assert_eq!(
        serde_json::from_value::<TaskAnswer>(value).unwrap(),
        succeeded
    );
    for (status, text) in [
        (TaskStatus::Running, "RUNNING"),
        (TaskStatus::Failed, "FAILED"),
        (TaskStatus::Canceled, "CANCELED"),
        (TaskStatus::Unknown, "UNKNOWN"),
    ] {
        assert_eq!(serde_json::to_value(status).unwrap(), text);
    }
    let failed = TaskAnswer {
        output: TaskOutput {
            code: Some("InvalidParameter".to_string()),
            message: Some("/input/media/0/url could not be fetched".to_string()),
            ..TaskOutput::new("task-2", TaskStatus::Failed)
        },
        request_id: "req-5".to_string(),
        usage: None,
    };
    assert_eq!(
        serde_json::to_value(&failed).unwrap(),
        json!({"output": {"task_id": "task-2", "task_status": "FAILED", "code": "InvalidParameter",
                          "message": "/input/media/0/url could not be fetched"}, "request_id": "req-5"})
    );
}

#[test]
fn every_sdk_calling_style_and_model_id_maps_to_the_seed_request() {
    let url = "https://example.com/a.png";
    let sdk = |model: &str, input: Value, parameters: Value| {
        let mut input = input;
        // The official SDK adds these two to every input.
        input["extend_prompt"] = json!(true);
        input["function"] = json!("video-synthesis");
        parse_video_synthesis(&json!({"model": model, "input": input, "parameters": parameters}))
            .unwrap()
    };
    let media = sdk(
        "happyhorse-1.0-i2v",
        json!({"prompt": "p", "media": [{"type": "first_frame", "url": url}]}),
        json!({"duration": 3}),
    );
    let img_url = sdk(
        "happyhorse-1.1-i2v",
        json!({"prompt": "p", "img_url": url}),
        json!({"duration": 3, "prompt_extend": false}),
    );
    let first_frame_url = sdk(
        "happyhorse-1.0-i2v",
        json!({"prompt": "p", "first_frame_url": url}),
        json!({"duration": 3}),
    );
    assert_eq!(media.request, img_url.request);
    assert_eq!(media.request, first_frame_url.request);
    assert_eq!(media.request.model, ModelId::HhI2v);
    assert_eq!(media.image_fields, ["/input/media/0/url"]);
    assert_eq!(img_url.image_fields, ["/input/img_url"]);
    assert_eq!(first_frame_url.image_fields, ["/input/first_frame_url"]);
    assert_eq!(
        (img_url.model_name.as_str(), img_url.prompt_extend),
        ("happyhorse-1.1-i2v", Some(false))
    );
    assert_eq!(media.prompt_extend, None);

    let r2v_media = sdk(
        "happyhorse-1.1-r2v",
        json!({"prompt": "image 1 and image 2", "media": [
            {"type": "reference_image", "url": url}, {"type": "reference_image", "url": url}]}),
        json!({"ratio": "1:1"}),
    );
    let r2v_urls = sdk(
        "happyhorse-1.0-r2v",
        json!({"prompt": "image 1 and image 2", "reference_urls": [url, url]}),
        json!({"ratio": "1:1"}),
    );
    assert_eq!(r2v_media.request, r2v_urls.request);
    assert_eq!(r2v_media.request.model, ModelId::HhR2v);
    assert_eq!(
        r2v_urls.image_fields,
        ["/input/reference_urls/0", "/input/reference_urls/1"]
    );
    assert_eq!(
        r2v_media.image_fields,
        ["/input/media/0/url", "/input/media/1/url"]
    );
}

#[test]
fn an_sdk_null_prompt_is_absent() {
    let parsed = parse_video_synthesis(&json!({
        "model": "happyhorse-1.0-i2v",
        "input": {"prompt": null, "img_url": "https://example.com/a.png", "extend_prompt": true},
        "parameters": {}
    }))
    .unwrap();
    assert_eq!(parsed.request.prompt, "");
}
