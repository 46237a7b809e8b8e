//! `gallop serve --config FILE` with two tiny checkpoints saved by diffusers (an i2v one and a
//! VACE one): the real binary on a loopback port; an i2v job and an r2v job each complete and
//! report their own checkpoint; with only the i2v checkpoint an r2v request is refused at
//! submit; a malformed file stops the server at startup naming the key.

use crate::support;

use support::*;

use std::path::{Path, PathBuf};
use std::time::Duration;

fn checkpoint(case: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../gallop-wan/tests/fixtures/pipelines")
        .join(case)
        .join("model")
        .display()
        .to_string()
}

/// A config file in `dir` serving each (model id, checkpoint, dtype) with one step, guidance off.
fn write_config(dir: &Path, entries: &[(&str, &str, &str)]) -> PathBuf {
    let text: String = entries
        .iter()
        .map(|(model, case, dtype)| {
            format!(
                "[models.\"{model}\"]\nmodel_dir = \"{}\"\nsteps = 1\nguidance = 1.0\ndtype = \"{dtype}\"\n\n",
                checkpoint(case)
            )
        })
        .collect();
    let path = dir.join("gallop.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn png(width: u32, height: u32, shade: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, shade])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn upload(addr: &str, token: &str, shade: u8) -> String {
    let (status, body) = http(
        addr,
        "POST",
        "/v1/uploads",
        token,
        "image/png",
        &png(640, 480, shade),
    );
    assert_eq!(status, 201, "{body}");
    json(&body)["uri"].as_str().unwrap().to_string()
}

fn submit(addr: &str, token: &str, job: serde_json::Value) -> (u16, serde_json::Value) {
    let (status, body) = http(
        addr,
        "POST",
        "/v1/jobs",
        token,
        "application/json",
        job.to_string().as_bytes(),
    );
    (status, json(&body))
}

#[test]
fn each_model_runs_on_its_own_checkpoint() {
    let data = tempfile::tempdir().unwrap();
    let config = write_config(
        data.path(),
        &[
            ("alibaba/hh1-i2v", "ti2v", "f32"),
            ("alibaba/hh1.1-r2v", "vace", "bf16"),
        ],
    );
    let addr = free_addr();
    let config_arg = config.display().to_string();
    let server = Server::start(
        &data.path().join("data"),
        &addr,
        &["--config", &config_arg, "--workers", "2"],
    );
    let lines = server.startup_lines();
    let (i2v_ckpt, r2v_ckpt) = (checkpoint("ti2v"), checkpoint("vace"));
    assert!(
        lines.contains(&format!(
            "alibaba/hh1-i2v: wan engine, checkpoint {i2v_ckpt}, on cpu, f32"
        )) && lines.contains(&format!(
            "alibaba/hh1.1-r2v: wan engine, checkpoint {r2v_ckpt}, on cpu, bf16 weights (f32 compute)"
        )),
        "{lines:?}"
    );
    let token = token_from(&lines);

    let (status, body) = http(&addr, "GET", "/v1/models", &token, "application/json", b"");
    assert_eq!(status, 200, "{body}");
    let models = json(&body);
    assert_eq!(models["models"][0]["id"], "alibaba/hh1-i2v", "{body}");
    assert_eq!(
        models["models"][0]["checkpoint"],
        i2v_ckpt.as_str(),
        "{body}"
    );
    assert_eq!(models["models"][1]["id"], "alibaba/hh1.1-r2v", "{body}");
    assert_eq!(
        models["models"][1]["checkpoint"],
        r2v_ckpt.as_str(),
        "{body}"
    );
    assert_eq!(models["models"][0]["compute"], "cpu, f32", "{body}");
    let r2v_compute = "cpu, bf16 weights (f32 compute)";
    assert_eq!(models["models"][1]["compute"], r2v_compute, "{body}");

    let image = upload(&addr, &token, 40);
    let (status, i2v) = submit(
        &addr,
        &token,
        serde_json::json!({
            "model": "alibaba/hh1-i2v",
            "input": {"image": image, "prompt": "a horse on the beach", "duration": 3, "seed": 5}
        }),
    );
    assert_eq!(status, 202, "{i2v}");
    let refs = [upload(&addr, &token, 90), upload(&addr, &token, 200)];
    let (status, r2v) = submit(
        &addr,
        &token,
        serde_json::json!({
            "model": "alibaba/hh1.1-r2v",
            "input": {"images": refs, "prompt": "the two meet on the beach", "duration": 3, "seed": 5}
        }),
    );
    assert_eq!(status, 202, "{r2v}");

    for (job, ckpt, compute) in [(i2v, &i2v_ckpt, "cpu, f32"), (r2v, &r2v_ckpt, r2v_compute)] {
        let done = wait_completed(
            &addr,
            &token,
            job["id"].as_str().unwrap(),
            Duration::from_secs(900),
        );
        assert_eq!(done["engine"]["engine"], "wan", "{done}");
        assert_eq!(done["engine"]["checkpoint"], ckpt.as_str(), "{done}");
        assert_eq!(done["engine"]["compute"], compute, "{done}");
        assert!(done["result"]["video"].is_string(), "{done}");
    }
}

#[test]
fn a_model_without_a_checkpoint_is_refused_at_submit() {
    let data = tempfile::tempdir().unwrap();
    let config = write_config(data.path(), &[("alibaba/hh1-i2v", "ti2v", "f32")]);
    let addr = free_addr();
    let config_arg = config.display().to_string();
    let server = Server::start(&data.path().join("data"), &addr, &["--config", &config_arg]);
    let lines = server.startup_lines();
    assert!(
        lines.iter().any(|l| l
            == "alibaba/hh1.1-r2v: not served (no checkpoint configured; requests are refused)"),
        "{lines:?}"
    );
    let token = token_from(&lines);

    let (_, body) = http(&addr, "GET", "/v1/models", &token, "application/json", b"");
    let models = json(&body);
    assert_eq!(models["models"][1]["served"], false, "{body}");
    assert!(models["models"][1]["engine"].is_null(), "{body}");

    let refs = [upload(&addr, &token, 90)];
    let (status, answer) = submit(
        &addr,
        &token,
        serde_json::json!({
            "model": "alibaba/hh1.1-r2v",
            "input": {"images": refs, "prompt": "walks on the beach", "duration": 3}
        }),
    );
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["errors"][0]["code"], 5007, "{answer}");
    let message = answer["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("model alibaba/hh1.1-r2v is not served here")
            && message.contains("[models.\"alibaba/hh1.1-r2v\"]"),
        "{message}"
    );
    let (_, body) = http(&addr, "GET", "/v1/jobs", &token, "application/json", b"");
    assert_eq!(
        json(&body)["jobs"],
        serde_json::json!([]),
        "nothing queued: {body}"
    );
}

/// `gallop serve` with `config_text`; it must exit non-zero within a minute. Returns stderr.
fn serve_refuses(config_text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gallop.toml");
    std::fs::write(&config, config_text).unwrap();
    let (code, stderr) = serve_exit(&["--config", config.to_str().unwrap()]);
    assert!(code != Some(0), "{config_text}\n{stderr}");
    stderr
}

#[test]
fn a_malformed_config_stops_startup_naming_the_key() {
    let ti2v = checkpoint("ti2v");
    let stderr = serve_refuses(&format!(
        "[models.\"alibaba/hh1-i2v\"]\nmodel_dir = \"{ti2v}\"\nguidence = 3.0\n"
    ));
    assert!(
        stderr.contains("unknown field `guidence`") && stderr.contains("line 3"),
        "{stderr}"
    );
    let stderr = serve_refuses(&format!(
        "[models.\"alibaba/hh1.1-r2v\"]\nmodel_dir = \"{ti2v}\"\n"
    ));
    assert!(
        stderr.contains("models.\"alibaba/hh1.1-r2v\".model_dir")
            && stderr.contains("needs a WanVACEPipeline"),
        "{stderr}"
    );
    let stderr = serve_refuses(&format!(
        "[models.\"alibaba/hh3\"]\nmodel_dir = \"{ti2v}\"\n"
    ));
    assert!(
        stderr.contains("models.\"alibaba/hh3\": unknown model id"),
        "{stderr}"
    );
}
