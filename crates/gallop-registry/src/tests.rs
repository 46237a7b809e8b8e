use super::*;
use clap::Parser;
use gallop_wan::settings::{ComputeDevice, ComputeDtype};
use std::collections::HashMap;

fn pipelines() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../gallop-wan/tests/fixtures/pipelines")
}

/// Writes `text` as a config file in a temp dir beside links to the fixture checkpoints.
fn config(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gallop.toml");
    std::fs::write(
        &path,
        text.replace("FIXTURES", &pipelines().display().to_string()),
    )
    .unwrap();
    (dir, path)
}

fn error(text: &str) -> String {
    let (_dir, path) = config(text);
    format!("{}", read_config(&path).unwrap_err())
}

fn with_dir(dir: PathBuf) -> WanSettings {
    WanSettings {
        model_dir: Some(dir),
        ..Default::default()
    }
}

/// The flags of a command that flattens the settings, as `gallop serve` and `generate` do.
#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    settings: WanSettings,
}

#[test]
fn flags_and_the_config_file_give_the_same_settings() {
    let dir = pipelines().join("a14b/model");
    let flags = Flags::try_parse_from([
        "gallop",
        "--model-dir",
        dir.to_str().unwrap(),
        "--steps",
        "2",
        "--guidance",
        "4.0",
        "--guidance-2",
        "2.0",
        "--device",
        "cpu",
        "--dtype",
        "bf16",
    ])
    .unwrap()
    .settings;
    let (_tmp, path) = config(
        r#"
        [models."alibaba/hh1-i2v"]
        model_dir = "FIXTURES/a14b/model"
        steps = 2
        guidance = 4.0
        guidance_2 = 2.0
        device = "cpu"
        dtype = "bf16"
        "#,
    );
    let from_file = read_config(&path)
        .unwrap()
        .checkpoints
        .remove(0)
        .checked
        .settings;
    assert_eq!(flags, from_file);
    assert_eq!(flags.dtype, ComputeDtype::Bf16);
    // Absent flags and absent keys are the same defaults.
    let bare = Flags::try_parse_from(["gallop", "--model-dir", dir.to_str().unwrap()])
        .unwrap()
        .settings;
    let (_tmp, path) =
        config("[models.\"alibaba/hh1-i2v\"]\nmodel_dir = \"FIXTURES/a14b/model\"\n");
    assert_eq!(
        bare,
        read_config(&path)
            .unwrap()
            .checkpoints
            .remove(0)
            .checked
            .settings
    );
    assert_eq!(bare, with_dir(dir));
}

/// The engine issue's settings (LoRAs per expert, quantization, a recipe and the schedule)
/// read the same from flags and keys, relative LoRA paths from the file's folder.
#[test]
fn lora_quantize_and_recipe_flags_and_keys_give_the_same_settings() {
    let dir = pipelines().join("a14b/model");
    let loras = pipelines().join("../changes/loras");
    let lora = |name: &str| loras.join(name).display().to_string();
    let flags = Flags::try_parse_from([
        "gallop",
        "--model-dir",
        dir.to_str().unwrap(),
        "--lora",
        &format!("{}:0.5", lora("a14b_high.safetensors")),
        "--lora",
        &lora("diffusers.safetensors"),
        "--lora-2",
        &lora("a14b_low.safetensors"),
        "--quantize",
        "fp8",
        "--recipe",
        "lightning-4step",
        "--scheduler",
        "unipc",
        "--shift",
        "3",
        "--timesteps",
        "1000,500",
        "--release-text-encoder",
    ])
    .unwrap()
    .settings;
    let tmp = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(&loras, tmp.path().join("loras")).unwrap();
    let path = tmp.path().join("gallop.toml");
    let text = r#"
        [models."alibaba/hh1-i2v"]
        model_dir = "FIXTURES/a14b/model"
        loras = [{ path = "LORAS/a14b_high.safetensors", strength = 0.5 },
                 { path = "LORAS/diffusers.safetensors" }]
        loras_2 = [{ path = "LORAS/a14b_low.safetensors" }]
        quantize = "fp8"
        recipe = "lightning-4step"
        scheduler = "unipc"
        shift = 3.0
        timesteps = [1000, 500]
        release_text_encoder = true
        "#
    .replace("FIXTURES", &pipelines().display().to_string())
    .replace("LORAS", &loras.display().to_string());
    std::fs::write(&path, text).unwrap();
    let from_file = read_config(&path)
        .unwrap()
        .checkpoints
        .remove(0)
        .checked
        .settings;
    assert_eq!(flags, from_file);
    assert_eq!(from_file.loras[0].strength, 0.5);
    assert_eq!(from_file.loras[1].strength, 1.0);
    // What the run does: the explicit settings over the recipe's, steps from the list.
    assert_eq!(from_file.steps_setting(), Some(2));
    assert_eq!(from_file.guidance_setting(), Some(1.0));
    let schedule = from_file.schedule();
    assert_eq!(schedule.shift, Some(3.0));
    assert_eq!(schedule.timesteps, Some(vec![1000.0, 500.0]));
    // A relative LoRA path is read from the config file's folder, as model_dir is.
    std::fs::write(
        &path,
        format!(
            "[models.\"alibaba/hh1-i2v\"]\nmodel_dir = \"{}\"\nloras = [{{ path = \"loras/diffusers.safetensors\" }}]\n",
            dir.display()
        ),
    )
    .unwrap();
    let relative = read_config(&path)
        .unwrap()
        .checkpoints
        .remove(0)
        .checked
        .settings;
    assert_eq!(
        relative.loras[0].path,
        tmp.path().join("loras/diffusers.safetensors")
    );
}

#[test]
fn a_recipe_gives_way_to_the_settings_beside_it() {
    let recipe = |extra: &[&str]| {
        let mut args = vec!["gallop", "--recipe", "lightx2v-4step"];
        args.extend_from_slice(extra);
        Flags::try_parse_from(args).unwrap().settings
    };
    let plain = recipe(&[]);
    assert_eq!(plain.steps_setting(), Some(4));
    assert_eq!(plain.guidance_setting(), Some(1.0));
    assert_eq!(
        plain.schedule().timesteps,
        Some(vec![1000.0, 750.0, 500.0, 250.0])
    );
    // Another step count drops the recipe's list: the sampler spaces the steps.
    let eight = recipe(&["--steps", "8", "--guidance", "2"]);
    assert_eq!(eight.steps_setting(), Some(8));
    assert_eq!(eight.guidance_setting(), Some(2.0));
    assert_eq!(eight.schedule().timesteps, None);
    assert_eq!(eight.schedule().shift, Some(5.0));
    // Nothing given: the checkpoint's own recipe and scheduler.
    let none = Flags::try_parse_from(["gallop"]).unwrap().settings;
    assert_eq!(
        (none.steps_setting(), none.guidance_setting()),
        (None, None)
    );
    assert_eq!(none.schedule(), Default::default());
}

#[test]
fn a_bad_value_is_refused_alike_by_the_flag_and_the_key() {
    let flag = Flags::try_parse_from(["gallop", "--model-dir", "x", "--dtype", "fp16"])
        .err()
        .unwrap()
        .to_string();
    assert!(
        flag.contains("must be f32, bf16 or f16, got \"fp16\""),
        "{flag}"
    );
    assert!(flag.contains("--dtype"), "{flag}");
    let key = error(
        "[models.\"alibaba/hh1-i2v\"]\nmodel_dir = \"FIXTURES/ti2v/model\"\ndtype = \"fp16\"\n",
    );
    assert!(
        key.contains("models.\"alibaba/hh1-i2v\".dtype: must be f32, bf16 or f16, got \"fp16\""),
        "{key}"
    );
    // A value of the wrong type names its key too.
    let key =
        error("[models.\"alibaba/hh1-i2v\"]\nmodel_dir = \"FIXTURES/ti2v/model\"\nsteps = \"4\"\n");
    assert!(
        key.contains("models.\"alibaba/hh1-i2v\".steps: invalid type"),
        "{key}"
    );
}

#[test]
fn a_good_file_names_a_checkpoint_and_settings_per_id() {
    let (_dir, path) = config(
        r#"
        [models."alibaba/hh1-i2v"]
        model_dir = "FIXTURES/a14b/model"
        steps = 2
        guidance = 4.0
        guidance_2 = 2.0

        device = "cpu"
        dtype = "f32"

        [models."alibaba/hh1.1-r2v"]
        model_dir = "FIXTURES/vace/model"
        "#,
    );
    let checkpoints = read_config(&path).unwrap().checkpoints;
    assert_eq!(checkpoints.len(), 2);
    assert_eq!(checkpoints[0].model, ModelId::HhI2v);
    assert_eq!(checkpoints[0].settings().steps, Some(2));
    assert_eq!(checkpoints[0].settings().guidance_2, Some(2.0));
    assert_eq!(checkpoints[0].settings().device, ComputeDevice::Cpu);
    assert_eq!(checkpoints[0].settings().dtype, ComputeDtype::F32);
    assert_eq!(checkpoints[1].model, ModelId::HhR2v);
    assert!(checkpoints[1].dir().ends_with("vace/model"));
    let vace = checkpoints[1].dir().to_path_buf();
    assert_eq!(checkpoints[1].settings(), &with_dir(vace));
}

#[test]
fn relative_dirs_are_from_the_files_folder() {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(pipelines().join("ti2v/model"), dir.path().join("ti2v")).unwrap();
    let path = dir.path().join("serve.toml");
    std::fs::write(
        &path,
        "[models.\"alibaba/hh1-i2v\"]\nmodel_dir = \"ti2v\"\n",
    )
    .unwrap();
    let checkpoints = read_config(&path).unwrap().checkpoints;
    assert_eq!(checkpoints[0].dir(), dir.path().join("ti2v"));
}

#[test]
fn errors_name_the_key_and_the_rule() {
    for (text, wanted) in [
        (
            "[models.\"alibaba/hh2\"]\nmodel_dir = \"FIXTURES/ti2v/model\"\n",
            "models.\"alibaba/hh2\": unknown model id; the ids are alibaba/hh1-i2v, alibaba/hh1.1-r2v",
        ),
        (
            "[models.\"alibaba/hh1-i2v\"]\nmodel_dir = \"FIXTURES/nothing\"\n",
            "models.\"alibaba/hh1-i2v\".model_dir: ",
        ),
        (
            "[models.\"alibaba/hh1.1-r2v\"]\nmodel_dir = \"FIXTURES/ti2v/model\"\n",
            "models.\"alibaba/hh1.1-r2v\".model_dir: ",
        ),
        (
            "[models.\"alibaba/hh1-i2v\"]\nmodel_dir = \"FIXTURES/ti2v/model\"\nstepz = 3\n",
            "unknown field `stepz`",
        ),
        (
            "[model.\"alibaba/hh1-i2v\"]\nmodel_dir = \"FIXTURES/ti2v/model\"\n",
            "unknown field `model`",
        ),
        (
            "[models.\"alibaba/hh1-i2v\"]\nmodel_dir = \"FIXTURES/ti2v/model\"\nguidance_2 = 2.0\n",
            "models.\"alibaba/hh1-i2v\".guidance_2 needs a checkpoint with two experts",
        ),
        (
            "[models.\"alibaba/hh1-i2v\"]\nmodel_dir = \"FIXTURES/ti2v/model\"\nsteps = 0\n",
            "models.\"alibaba/hh1-i2v\".steps must be >= 1",
        ),
        (
            "[models.\"alibaba/hh1-i2v\"]\nsteps = 3\n",
            "missing field `model_dir`",
        ),
        (
            "[models.\"alibaba/hh1-i2v\"]\nmodel_dir = \"FIXTURES/ti2v/model\"\nquantize = \"int4\"\n",
            "models.\"alibaba/hh1-i2v\".quantize: must be int8 or fp8, got \"int4\"",
        ),
        (
            "[models.\"alibaba/hh1-i2v\"]\nmodel_dir = \"FIXTURES/ti2v/model\"\nrecipe = \"turbo\"\n",
            "models.\"alibaba/hh1-i2v\".recipe: unknown recipe \"turbo\": expected one of lightx2v-4step, lightning-4step",
        ),
        (
            "[models.\"alibaba/hh1-i2v\"]\nmodel_dir = \"FIXTURES/ti2v/model\"\nloras = [{ path = \"x.safetensors\", strenght = 1.0 }]\n",
            "models.\"alibaba/hh1-i2v\".loras[0].strenght: unknown field `strenght`",
        ),
        (
            "[models.\"alibaba/hh1-i2v\"]\nmodel_dir = \"FIXTURES/ti2v/model\"\nloras = [{ path = \"x.safetensors\" }]\n",
            "models.\"alibaba/hh1-i2v\".loras: ",
        ),
        (
            "[models.\"alibaba/hh1-i2v\"]\nmodel_dir = \"FIXTURES/ti2v/model\"\nloras_2 = [{ path = \"x.safetensors\" }]\n",
            "models.\"alibaba/hh1-i2v\".loras_2 is for the low-noise expert",
        ),
        (
            "[models.\"alibaba/hh1-i2v\"]\nmodel_dir = \"FIXTURES/a14b/model\"\nsteps = 3\ntimesteps = [1000, 500]\n",
            "models.\"alibaba/hh1-i2v\".timesteps lists 2 timesteps but steps is 3",
        ),
        (
            "[models.\"alibaba/hh1-i2v\"]\nmodel_dir = \"FIXTURES/a14b/model\"\nshift = -1.0\n",
            "models.\"alibaba/hh1-i2v\".shift must be a finite number > 0",
        ),
        ("models = {}\n", "`models` names no checkpoint"),
        (
            "[models.\"alibaba/hh1-i2v\"]\nmodel_dir = \"FIXTURES/ti2v/model\"\ndtype = \"fp16\"\n",
            "models.\"alibaba/hh1-i2v\".dtype: must be f32, bf16 or f16, got \"fp16\"",
        ),
        (
            "[models.\"alibaba/hh1-i2v\"]\nmodel_dir = \"FIXTURES/ti2v/model\"\ndevice = \"cuda:a\"\n",
            "models.\"alibaba/hh1-i2v\".device: must be cpu, cuda or cuda:N",
        ),
    ] {
        let err = error(text);
        assert!(err.contains(wanted), "{text}\nwanted {wanted:?} in: {err}");
    }
    assert!(
        error("[models.\"alibaba/hh1-i2v\"]\nmodel_dir = \"FIXTURES/nothing\"\n")
            .contains("is not a directory")
    );
    let err = error("[models.\"alibaba/hh1.1-r2v\"]\nmodel_dir = \"FIXTURES/ti2v/model\"\n");
    assert!(
        err.contains("is a WanImageToVideoPipeline checkpoint, which cannot serve alibaba/hh1.1-r2v: alibaba/hh1.1-r2v needs a WanVACEPipeline"),
        "{err}"
    );
}

#[test]
fn a_directory_named_twice_loads_once() {
    let dir = pipelines().join("ti2v/model");
    let entry = |steps| {
        let settings = WanSettings {
            steps: Some(steps),
            ..with_dir(dir.clone())
        };
        check(ModelId::HhI2v, settings).unwrap()
    };
    let engines = load_wan(vec![entry(1), entry(2)]).unwrap();
    assert!(std::ptr::eq(
        engines[0].1.pipeline(),
        engines[1].1.pipeline()
    ));
    assert_eq!((engines[0].1.steps(), engines[1].1.steps()), (1, 2));
    assert_eq!(engines[0].1.compute(), "cpu, f32");
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_in_a_cpu_build_is_refused_naming_the_key_or_the_flag() {
    let err = error(
        "[models.\"alibaba/hh1-i2v\"]\nmodel_dir = \"FIXTURES/ti2v/model\"\ndevice = \"cuda\"\n",
    );
    assert!(
        err.contains("models.\"alibaba/hh1-i2v\".device: cuda:0 needs CUDA")
            && err.contains("cargo build --release --features cuda"),
        "{err}"
    );
    let settings = WanSettings {
        device: ComputeDevice::Cuda(1),
        ..with_dir(pipelines().join("ti2v/model"))
    };
    let err = format!("{}", shorthand(settings).unwrap_err());
    assert!(err.starts_with("--device: cuda:1 needs CUDA"), "{err}");
}

#[test]
fn the_model_dir_shorthand_serves_the_id_of_its_class() {
    let vace = shorthand(with_dir(pipelines().join("vace/model"))).unwrap();
    assert_eq!(vace.model, ModelId::HhR2v);
    let i2v = shorthand(with_dir(pipelines().join("i2v21/model"))).unwrap();
    assert_eq!(i2v.model, ModelId::HhI2v);
    let err = format!(
        "{}",
        shorthand(with_dir(pipelines().join("t2v/model"))).unwrap_err()
    );
    assert!(
        err.contains("a WanPipeline checkpoint serves no model here")
            && err.contains("alibaba/hh1-i2v needs a WanImageToVideoPipeline"),
        "{err}"
    );
}

#[test]
fn a_setting_is_refused_as_the_flag_the_user_typed() {
    let settings = WanSettings {
        guidance_2: Some(2.0),
        ..with_dir(pipelines().join("ti2v/model"))
    };
    let err = shorthand(settings).unwrap_err().to_string();
    assert!(
        err.starts_with("--guidance-2: guidance_2 needs a checkpoint with two experts"),
        "{err}"
    );
    let err = for_generate(
        ModelId::HhR2v,
        with_dir(pipelines().join("ti2v/model")),
        WanDebug::default(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.starts_with("--model-dir: "), "{err}");
    assert!(err.contains("cannot serve alibaba/hh1.1-r2v"), "{err}");
}

fn read_with_env(text: &str, env: &[(&str, &str)]) -> Result<Config> {
    let (_dir, path) = config(text);
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    read_config_with_env(&path, &|var| env.get(var).cloned())
}

const UPSTREAM: &str = r#"
[upstreams.alibaba]
base_url = "https://dashscope-intl.aliyuncs.com/api/v1/"
api_key_env = "DASHSCOPE_API_KEY"
poll_interval_secs = 0.5
"#;

#[test]
fn an_entry_with_upstream_is_a_route_beside_the_checkpoints() {
    let text = format!(
        "{UPSTREAM}\n[models.\"alibaba/hh1-i2v\"]\nupstream = \"alibaba\"\n\n\
         [models.\"alibaba/hh1.1-r2v\"]\nmodel_dir = \"FIXTURES/vace/model\"\n"
    );
    let config = read_with_env(&text, &[("DASHSCOPE_API_KEY", "sk-unified")]).unwrap();
    assert_eq!(config.checkpoints.len(), 1);
    assert_eq!(config.checkpoints[0].model, ModelId::HhR2v);
    let [(model, route)] = config.upstreams.as_slice() else {
        panic!("{:?}", config.upstreams)
    };
    assert_eq!(*model, ModelId::HhI2v);
    assert_eq!(route.describe(), "upstream alibaba (happyhorse-1.0-i2v)");
    assert_eq!(
        route.upstream.base_url(),
        "https://dashscope-intl.aliyuncs.com/api/v1"
    );
    assert_eq!(route.unified_key.as_ref().unwrap().expose(), "sk-unified");
    assert_eq!(route.key_env.as_deref(), Some("DASHSCOPE_API_KEY"));
    assert_eq!(route.poll_interval, std::time::Duration::from_millis(500));
    assert_eq!(route.patience, gallop_upstream::DEFAULT_PATIENCE);

    // Routes alone are a configuration; upstream_model names upstream's id; no key env: BYOK only.
    let text = "[upstreams.cn]\nbase_url = \"https://dashscope.aliyuncs.com/api/v1\"\n\
                [models.\"alibaba/hh1.1-r2v\"]\nupstream = \"cn\"\n\
                upstream_model = \"happyhorse-1.0-r2v\"\n";
    let config = read_with_env(text, &[]).unwrap();
    assert!(config.checkpoints.is_empty());
    let route = &config.upstreams[0].1;
    assert_eq!(route.describe(), "upstream cn (happyhorse-1.0-r2v)");
    assert!(route.unified_key.is_none() && route.key_env.is_none());
}

#[test]
fn upstream_errors_name_the_key_and_the_rule() {
    let entry = "\n[models.\"alibaba/hh1-i2v\"]\nupstream = \"alibaba\"\n";
    let with_key = [("DASHSCOPE_API_KEY", "sk-unified")];
    let cases: [(String, &[(&str, &str)], &str); 6] = [
        (
            format!("{UPSTREAM}{entry}upstream_modle = \"x\"\n"),
            &with_key,
            "models.\"alibaba/hh1-i2v\".upstream_modle: unknown field `upstream_modle`, expected `upstream` or \
             `upstream_model` (line 9)",
        ),
        (
            format!("{UPSTREAM}{entry}"),
            &[],
            "upstreams.\"alibaba\".api_key_env: the environment variable DASHSCOPE_API_KEY is \
             not set or empty",
        ),
        (
            format!("{}{entry}", UPSTREAM.replace("https://", "ftp://")),
            &with_key,
            "upstreams.\"alibaba\".base_url must start with https:// or http://",
        ),
        (
            format!("{UPSTREAM}\n[models.\"alibaba/hh1-i2v\"]\nupstream = \"elsewhere\"\n"),
            &with_key,
            "models.\"alibaba/hh1-i2v\".upstream: there is no [upstreams.elsewhere] table \
             (defined: alibaba)",
        ),
        (
            format!(
                "{}{entry}",
                UPSTREAM.replace("poll_interval_secs = 0.5", "poll_interval_secs = 0")
            ),
            &with_key,
            "upstreams.\"alibaba\".poll_interval_secs must be more than 0",
        ),
        (
            format!("{UPSTREAM}{entry}[servers]\nx = 1\n"),
            &with_key,
            "unknown field `servers`, expected one of `encoder`, `ffmpeg`, `upstreams`, `models`",
        ),
    ];
    for (text, env, expected) in cases {
        let err = read_with_env(&text, env).unwrap_err().to_string();
        assert!(err.contains(expected), "{err}\n  expected: {expected}");
    }
    let err = read_with_env(
        &format!("{}{entry}", UPSTREAM.replace("base_url", "base_uri")),
        &with_key,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("upstreams.\"alibaba\".base_uri: unknown field `base_uri`")
            && err.contains("(line 3)"),
        "{err}"
    );
}

/// The flags of a command that flattens the encoder settings, as `gallop serve` does.
#[derive(Parser)]
struct EncoderFlags {
    #[command(flatten)]
    settings: EncoderSettings,
}

#[test]
fn the_encoder_flags_and_the_top_level_keys_give_the_same_settings() {
    let flags = EncoderFlags::try_parse_from(["gallop", "--encoder", "ffmpeg", "--ffmpeg", "ff"])
        .unwrap()
        .settings;
    let (dir, path) = config(
        "encoder = \"ffmpeg\"\nffmpeg = \"ff\"\n\
         [models.\"alibaba/hh1-i2v\"]\nmodel_dir = \"FIXTURES/ti2v/model\"\n",
    );
    assert_eq!(read_config(&path).unwrap().encoder, flags);
    assert_eq!(flags.encoder, Some(EncoderName::Ffmpeg));
    // A path (not a bare name, which is looked up on PATH) is from the file's folder.
    std::fs::write(
        &path,
        "ffmpeg = \"bin/ffmpeg\"\nencoder = \"openh264\"\n\
         [models.\"alibaba/hh1-i2v\"]\nmodel_dir = \"ti2v\"\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(pipelines().join("ti2v/model"), dir.path().join("ti2v")).unwrap();
    let read = read_config(&path).unwrap().encoder;
    assert_eq!(read.ffmpeg, Some(dir.path().join("bin/ffmpeg")));
    assert_eq!(read.encoder, Some(EncoderName::Openh264));
    // Nothing given: the built-in encoder, opened without running anything.
    let none = EncoderFlags::try_parse_from(["gallop"]).unwrap().settings;
    assert!(none.is_default());
    assert_eq!(
        none.open(Spelling::Flags),
        Ok(gallop_media::VideoEncoder::OpenH264)
    );
}

#[test]
fn encoder_errors_name_the_key_or_the_flag_and_the_rule() {
    let models = "[models.\"alibaba/hh1-i2v\"]\nmodel_dir = \"FIXTURES/ti2v/model\"\n";
    let err = error(&format!("encoder = \"x264\"\n{models}"));
    assert!(
        err.contains("encoder: unknown variant `x264`, expected `openh264` or `ffmpeg` (line 1)"),
        "{err}"
    );
    let err = error(&format!("encoderr = \"ffmpeg\"\n{models}"));
    assert!(err.contains("unknown field `encoderr`"), "{err}");

    let only_path = EncoderSettings {
        ffmpeg: Some("/usr/bin/ffmpeg".into()),
        ..Default::default()
    };
    assert_eq!(
        only_path.open(Spelling::Flags).unwrap_err(),
        "--ffmpeg only applies with --encoder ffmpeg (the encoder is openh264)"
    );
    assert_eq!(
        only_path.open(Spelling::Keys).unwrap_err(),
        "ffmpeg only applies with encoder ffmpeg (the encoder is openh264)"
    );
    let missing = EncoderSettings {
        encoder: Some(EncoderName::Ffmpeg),
        ffmpeg: Some("/nonexistent/ffmpeg".into()),
    };
    let err = missing.open(Spelling::Keys).unwrap_err();
    assert!(
        err.starts_with("ffmpeg /nonexistent/ffmpeg: cannot run ffmpeg /nonexistent/ffmpeg: "),
        "{err}"
    );
    let err = EncoderFlags::try_parse_from(["gallop", "--encoder", "x264"])
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("[possible values: openh264, ffmpeg]"), "{err}");
}
