//! Each schema rule broken by one field, with the exact message a client sees.

use gallop_api::{
    ApiError, ModelId, UriPolicy, ValidationError, parse_input, parse_input_with, parse_run_body,
};
use serde_json::{Value, json};

fn valid_i2v() -> Value {
    json!({"image": "https://example.com/cat.png", "prompt": "the cat blinks"})
}

fn valid_r2v() -> Value {
    json!({"prompt": "image 1 waves", "images": ["https://example.com/a.png", "https://example.com/b.png"]})
}

/// `base` with `key` set to `value`, or removed when `value` is None.
fn with(mut base: Value, key: &str, value: Option<Value>) -> Value {
    let object = base.as_object_mut().unwrap();
    match value {
        Some(v) => object.insert(key.to_string(), v),
        None => object.remove(key),
    };
    base
}

#[test]
fn each_broken_rule_gets_its_exact_message() {
    use ModelId::{HhI2v as I2V, HhR2v as R2V};
    let long = "x".repeat(2501);
    let images = |n: usize| Value::from(vec!["https://example.com/a.png"; n]);
    let cases: Vec<(ModelId, &str, Option<Value>, &str)> = vec![
        // Required fields.
        (I2V, "image", None, "/input/image is required"),
        (I2V, "image", Some(Value::Null), "/input/image is required"),
        (R2V, "prompt", None, "/input/prompt is required"),
        (R2V, "images", None, "/input/images is required"),
        // Wrong JSON types.
        (
            I2V,
            "image",
            Some(json!(7)),
            "/input/image must be a string",
        ),
        (
            I2V,
            "prompt",
            Some(json!(["a"])),
            "/input/prompt must be a string",
        ),
        (
            I2V,
            "negative_prompt",
            Some(json!(false)),
            "/input/negative_prompt must be a string",
        ),
        (
            I2V,
            "duration",
            Some(json!("5")),
            "/input/duration must be an integer",
        ),
        (
            I2V,
            "duration",
            Some(json!(5.5)),
            "/input/duration must be an integer",
        ),
        (
            R2V,
            "seed",
            Some(json!(1.25)),
            "/input/seed must be an integer",
        ),
        (
            R2V,
            "seed",
            Some(json!(true)),
            "/input/seed must be an integer",
        ),
        (
            I2V,
            "watermark",
            Some(json!("true")),
            "/input/watermark must be a boolean",
        ),
        (
            I2V,
            "resolution",
            Some(json!(720)),
            "/input/resolution must be a string",
        ),
        (
            R2V,
            "images",
            Some(json!("https://example.com/a.png")),
            "/input/images must be an array",
        ),
        (
            R2V,
            "images",
            Some(json!(["https://example.com/a.png", 3])),
            "/input/images/1 must be a string",
        ),
        // Ranges.
        (
            I2V,
            "duration",
            Some(json!(2)),
            "/input/duration must be >= 3",
        ),
        (
            R2V,
            "duration",
            Some(json!(16)),
            "/input/duration must be <= 15",
        ),
        (
            I2V,
            "duration",
            Some(json!(-1)),
            "/input/duration must be >= 3",
        ),
        (I2V, "seed", Some(json!(-1)), "/input/seed must be >= 0"),
        (
            I2V,
            "seed",
            Some(json!(2147483648u64)),
            "/input/seed must be <= 2147483647",
        ),
        (
            R2V,
            "seed",
            Some(json!(u64::MAX)),
            "/input/seed must be <= 2147483647",
        ),
        (
            R2V,
            "seed",
            Some(json!(1e30)),
            "/input/seed must be <= 2147483647",
        ),
        // Enums.
        (
            I2V,
            "resolution",
            Some(json!("480P")),
            "/input/resolution must be one of 720P, 1080P",
        ),
        (
            R2V,
            "resolution",
            Some(json!("720p")),
            "/input/resolution must be one of 720P, 1080P",
        ),
        (
            R2V,
            "ratio",
            Some(json!("2:1")),
            "/input/ratio must be one of 16:9, 9:16, 3:4, 4:3, 1:1, 21:9, 9:21, 5:4, 4:5",
        ),
        // Lengths.
        (
            R2V,
            "prompt",
            Some(json!("")),
            "/input/prompt must not be empty",
        ),
        (
            R2V,
            "prompt",
            Some(json!(" \t\n\u{3000} ")),
            "/input/prompt must not be only whitespace",
        ),
        (
            R2V,
            "prompt",
            Some(json!(long)),
            "/input/prompt must have at most 2500 characters",
        ),
        (
            I2V,
            "prompt",
            Some(json!(long)),
            "/input/prompt must have at most 2500 characters",
        ),
        (
            R2V,
            "images",
            Some(images(0)),
            "/input/images must have at least 1 item",
        ),
        (
            R2V,
            "images",
            Some(images(10)),
            "/input/images must have at most 9 items",
        ),
        // Uris.
        (
            I2V,
            "image",
            Some(json!("cat.png")),
            "/input/image must be a uri: https://, http://, data:image/...;base64,... or gallop://uploads/ID",
        ),
        (
            R2V,
            "images",
            Some(json!([
                "https://example.com/a.png",
                "ftp://example.com/b.png"
            ])),
            "/input/images/1 must be a uri: https://, http://, data:image/...;base64,... or gallop://uploads/ID",
        ),
        (
            I2V,
            "image",
            Some(json!("file:///etc/passwd")),
            "/input/image must not be a file:// uri; upload the file and pass gallop://uploads/ID",
        ),
        // Unknown fields, and fields of the other model.
        (I2V, "foo", Some(json!(1)), "/input/foo is not allowed"),
        (R2V, "a/b", Some(json!(1)), "/input/a~1b is not allowed"),
        (
            I2V,
            "ratio",
            Some(json!("16:9")),
            "/input/ratio is not allowed for alibaba/hh1-i2v",
        ),
        (
            I2V,
            "images",
            Some(json!(["https://example.com/a.png"])),
            "/input/images is not allowed for alibaba/hh1-i2v",
        ),
        (
            R2V,
            "image",
            Some(json!("https://example.com/a.png")),
            "/input/image is not allowed for alibaba/hh1.1-r2v",
        ),
        (
            R2V,
            "negative_prompt",
            Some(json!("blur")),
            "/input/negative_prompt is not allowed for alibaba/hh1.1-r2v",
        ),
    ];
    let mut failures = Vec::new();
    for (model, key, value, expected) in cases {
        let base = match model {
            ModelId::HhI2v => valid_i2v(),
            ModelId::HhR2v => valid_r2v(),
        };
        assert!(
            parse_input(model, &base).is_ok(),
            "the base input must be valid"
        );
        let input = with(base, key, value.clone());
        match parse_input(model, &input) {
            Ok(request) => {
                failures.push(format!("{model} {key}={value:?}: accepted as {request:?}"))
            }
            Err(e) if e.to_string() != expected => failures.push(format!(
                "{model} {key}={value:?}: got {e:?}, want {expected:?}"
            )),
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_error_names_the_pointer_and_the_rule_separately() {
    let input = with(valid_i2v(), "duration", Some(json!(16)));
    let err = parse_input(ModelId::HhI2v, &input).unwrap_err();
    assert_eq!(
        err,
        ValidationError::new("/input/duration", "must be <= 15")
    );
}

#[test]
fn a_whole_float_counts_as_an_integer() {
    let input = with(valid_i2v(), "duration", Some(json!(5.0)));
    assert_eq!(parse_input(ModelId::HhI2v, &input).unwrap().duration, 5);
}

#[test]
fn null_optional_fields_count_as_absent() {
    let input = json!({"image": "https://example.com/a.png", "seed": null, "duration": null, "prompt": null});
    let request = parse_input(ModelId::HhI2v, &input).unwrap();
    assert_eq!(
        (request.seed, request.duration, request.prompt.as_str()),
        (None, 5, "")
    );
}

#[test]
fn the_input_must_be_an_object() {
    let err = parse_input(ModelId::HhI2v, &json!(["https://example.com/a.png"])).unwrap_err();
    assert_eq!(err.to_string(), "/input must be an object");
}

#[test]
fn prompt_length_counts_characters_not_bytes() {
    // 2500 two-byte characters are 5000 bytes but within the limit.
    let input = with(valid_r2v(), "prompt", Some(json!("é".repeat(2500))));
    assert!(parse_input(ModelId::HhR2v, &input).is_ok());
}

#[test]
fn accepted_uri_forms() {
    for uri in [
        "https://example.com/a.png",
        "http://10.0.0.1:8080/a.png?x=1",
        "HTTPS://EXAMPLE.COM/A.PNG",
        "data:image/png;base64,iVBORw0KGgo=",
        "data:image/svg+xml;base64,PHN2Zz4=",
        "gallop://uploads/up_01HXYZ-a",
    ] {
        let input = with(valid_i2v(), "image", Some(json!(uri)));
        assert!(
            parse_input(ModelId::HhI2v, &input).is_ok(),
            "{uri} must be accepted"
        );
    }
}

#[test]
fn refused_uri_forms() {
    for uri in [
        "https://",
        "https:///path",
        "https://example.com/a b.png",
        "data:text/plain;base64,aGk=",
        "data:image/png,rawbytes",
        "data:image/png;base64,",
        "data:image/png;base64,not base64!",
        "gallop://uploads/",
        "gallop://uploads/../../etc",
        "gallop://other/1",
        "/home/me/cat.png",
        "",
    ] {
        let input = with(valid_i2v(), "image", Some(json!(uri)));
        let err = parse_input(ModelId::HhI2v, &input).expect_err(uri);
        assert_eq!(err.pointer, "/input/image", "{uri}");
        assert!(err.rule.starts_with("must be a uri"), "{uri}: {err}");
    }
}

#[test]
fn file_uris_only_under_the_cli_policy() {
    let input = with(valid_i2v(), "image", Some(json!("file:///home/me/cat.png")));
    assert!(parse_input(ModelId::HhI2v, &input).is_err());
    let request = parse_input_with(ModelId::HhI2v, &input, UriPolicy::AllowFiles).unwrap();
    assert_eq!(request.images, vec!["file:///home/me/cat.png".to_string()]);
    let bad = with(valid_i2v(), "image", Some(json!("cat.png")));
    let err = parse_input_with(ModelId::HhI2v, &bad, UriPolicy::AllowFiles).unwrap_err();
    assert_eq!(
        err.rule,
        "must be a uri: https://, http://, data:image/...;base64,..., gallop://uploads/ID or file://"
    );
}

#[test]
fn run_body_errors() {
    let cases: Vec<(Value, &str, u32)> = vec![
        (
            json!({"input": valid_i2v()}),
            "No model given: /model is required (served: alibaba/hh1-i2v, alibaba/hh1.1-r2v)",
            5007,
        ),
        (
            json!({"model": "alibaba/hh2-t2v", "input": valid_i2v()}),
            "No such model: alibaba/hh2-t2v (served: alibaba/hh1-i2v, alibaba/hh1.1-r2v)",
            5007,
        ),
        (
            json!({"model": 3, "input": valid_i2v()}),
            "Bad input: /model must be a string",
            5006,
        ),
        (
            json!({"model": "alibaba/hh1-i2v"}),
            "Bad input: /input is required",
            5006,
        ),
        (
            json!({"model": "alibaba/hh1-i2v", "input": "cat"}),
            "Bad input: /input must be an object",
            5006,
        ),
        (
            json!({"model": "alibaba/hh1-i2v", "input": valid_i2v(), "queueRequest": "yes"}),
            "Bad input: /queueRequest must be a boolean",
            5006,
        ),
        (
            json!({"model": "alibaba/hh1-i2v", "input": valid_i2v(), "stream": true}),
            "Bad input: /stream is not allowed",
            5006,
        ),
        (
            json!({"model": "alibaba/hh1-i2v", "input": with(valid_i2v(), "duration", Some(json!(20)))}),
            "Bad input: /input/duration must be <= 15",
            5006,
        ),
        (
            json!({"request_id": "r1", "model": "alibaba/hh1-i2v"}),
            "Bad input: /model is not allowed with /request_id",
            5006,
        ),
        (
            json!({"request_id": ""}),
            "Bad input: /request_id must not be empty",
            5006,
        ),
        (
            json!({"request_id": 12}),
            "Bad input: /request_id must be a string",
            5006,
        ),
        (
            json!([1, 2]),
            "Bad input: the request body must be a JSON object",
            5006,
        ),
    ];
    for (body, message, code) in cases {
        let err = parse_run_body(&body).expect_err(message);
        assert_eq!(err.to_string(), message);
        assert_eq!(err.cloudflare_code().code(), code, "{message}");
        let envelope = serde_json::to_value(err.to_cloudflare()).unwrap();
        assert_eq!(
            envelope,
            json!({"success": false, "errors": [{"code": code, "message": message}], "messages": [], "result": null})
        );
    }
    assert!(matches!(
        parse_run_body(&json!({"model": "nope", "input": {}})),
        Err(ApiError::NoSuchModel { .. })
    ));
}
