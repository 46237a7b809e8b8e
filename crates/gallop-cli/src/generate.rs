//! `gallop generate`: one video from the command line. Builds the seed-shaped `input` object
//! from `--input` and/or flags, validates it as the API would, reads the images, and hands the
//! rest to `gallop_engine::render_video`, the same code the server's worker runs.

mod flags;
mod output;
mod progress;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use anyhow::{Context, bail};
use gallop_api::{GenerationRequest, ModelId, UriPolicy, parse_input_with};
use gallop_engine::render::{RenderOptions, decode_request_images, image_field};
use gallop_engine::{EngineInfo, RunContext, render_video};
use gallop_registry::{EncoderSettings, Spelling};
use gallop_wan::{WanDebug, WanSettings};
use image::RgbImage;
use serde_json::{Map, Value};

use flags::FlagNames;

/// Upstream's input limit, for local files as for fetched ones.
const MAX_IMAGE_BYTES: u64 = gallop_fetch::MAX_IMAGE_BYTES as u64;

#[derive(clap::Args)]
pub struct Args {
    /// alibaba/hh1-i2v or alibaba/hh1.1-r2v.
    #[arg(long)]
    model: String,
    /// A JSON file holding the seed's `input` object. Flags given as well override its fields;
    /// image paths in it are relative to the file.
    #[arg(long)]
    input: Option<PathBuf>,
    /// An image: a local path, file://, http(s):// or data: URI. Repeat for r2v references.
    #[arg(long = "image")]
    images: Vec<String>,
    /// What happens in the video, at most 2500 characters; r2v (where it is required) calls the
    /// references "image 1", "image 2", ... in --image order.
    #[arg(long)]
    prompt: Option<String>,
    /// i2v only: what the video should not show.
    #[arg(long)]
    negative_prompt: Option<String>,
    /// 720P or 1080P [default: 720P].
    #[arg(long)]
    resolution: Option<String>,
    /// r2v only: 16:9, 9:16, 3:4, 4:3, 1:1, 21:9, 9:21, 5:4, 4:5 [default: 16:9]; i2v follows
    /// the image's shape.
    #[arg(long)]
    ratio: Option<String>,
    /// Whole seconds, 3 to 15 [default: 5].
    #[arg(long, allow_negative_numbers = true)]
    duration: Option<i64>,
    /// 0 to 2147483647; picked at random (and printed) when absent.
    #[arg(long, allow_negative_numbers = true)]
    seed: Option<i64>,
    /// Draw the visible mark in the bottom-right corner: true or false [default: true].
    #[arg(long)]
    watermark: Option<bool>,
    /// No visible mark (the same as --watermark false).
    #[arg(long, conflicts_with = "watermark")]
    no_watermark: bool,
    /// Text of the mark.
    #[arg(long)]
    watermark_text: Option<String>,
    /// Where to write the MP4 (the name must end in .mp4). Its folder is created if missing;
    /// both are checked before any work starts.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// Debug: also write every encoded frame (watermark drawn) as DIR/frame_NNNNN.png; with
    /// --model-dir and a path ending in .safetensors, the decoded frames before watermark and
    /// encoding as tensor `frames`, f32 [F, H, W, 3] in [0, 1].
    #[arg(long, hide = true)]
    dump_frames: Option<PathBuf>,
    #[command(flatten, next_help_heading = "H.264 encoding")]
    encoding: EncoderSettings,
    #[command(
        flatten,
        next_help_heading = "Wan checkpoint (without --model-dir: the motion preview)"
    )]
    wan: WanSettings,
    #[command(flatten)]
    debug: WanDebug,
}

impl Args {
    /// `--dump-frames` names a tensor file for the Wan engine rather than a PNG folder.
    fn dumps_tensor(&self) -> bool {
        self.wan.model_dir.is_some()
            && self
                .dump_frames
                .as_ref()
                .is_some_and(|p| p.extension().is_some_and(|e| e == "safetensors"))
    }

    /// The debug overrides, for the Wan engine.
    fn wan_debug(&self) -> WanDebug {
        WanDebug {
            dump_frames: self
                .dumps_tensor()
                .then(|| self.dump_frames.clone())
                .flatten(),
            ..self.debug.clone()
        }
    }

    /// The exact output the geometry overrides ask for, if any.
    fn geometry_override(
        &self,
        request: &GenerationRequest,
        images: &[RgbImage],
    ) -> Option<gallop_api::Geometry> {
        if self.debug.size().is_none() && self.debug.num_frames.is_none() {
            return None;
        }
        let mut geometry = request.geometry(images.first().map(|i| i.dimensions()));
        if let Some((w, h)) = self.debug.width.zip(self.debug.height) {
            geometry.width = w;
            geometry.height = h;
        }
        if let Some(n) = self.debug.num_frames {
            geometry.frames = n;
        }
        Some(geometry)
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let model = ModelId::parse(&args.model).with_context(|| {
        format!(
            "--model: no such model {:?}; served: {}, {}",
            args.model,
            ModelId::HhI2v,
            ModelId::HhR2v
        )
    })?;
    let file = read_input_file(&args)?;
    let names = FlagNames::new(&args, model, &file);
    let input = build_input(model, &args, file)?;
    let request =
        parse_input_with(model, &input, UriPolicy::AllowFiles).map_err(|e| names.validation(&e))?;
    gallop_registry::refuse_settings_without_checkpoint(&args.wan, &args.debug)?;
    let encoder = args
        .encoding
        .open(Spelling::Flags)
        .map_err(anyhow::Error::msg)?;
    // Before any work: a render must not end in "cannot write".
    let out = output::OutputFile::prepare(&args.output)?;
    // The geometry override is the tiny-checkpoint test path: tiny images are allowed there.
    let images = load_images(&request, args.debug.size().is_some(), &names)?;
    let served = gallop_registry::for_generate(model, args.wan.clone(), args.wan_debug())?;

    let options = RenderOptions {
        watermark_text: args.watermark_text.clone(),
        geometry: args.geometry_override(&request, &images),
        encoder,
    };
    let cancel = AtomicBool::new(false);
    let mut reporter = progress::Reporter::new();
    let mut progress = |p| reporter.report(p);
    let png_dir = args.dump_frames.as_ref().filter(|_| !args.dumps_tensor());
    if let Some(dir) = png_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--dump-frames: cannot create {}", dir.display()))?;
    }
    let mut index = 0u32;
    let mut dump = |frame: RgbImage| -> Result<(), String> {
        let Some(dir) = png_dir else { return Ok(()) };
        let path = dir.join(format!("frame_{index:05}.png"));
        index += 1;
        frame
            .save(&path)
            .map_err(|e| format!("--dump-frames: cannot write {}: {e}", path.display()))
    };
    let ctx = RunContext::new(&mut progress, &cancel, &mut dump);
    let output = render_video(served.engine.as_ref(), &request, &images, &options, ctx)?;
    reporter.finish();
    out.write(&output.mp4)?;

    let bytes = output.mp4.len();
    println!("wrote {}", args.output.display());
    println!("size: {bytes} bytes ({:.2} MB)", bytes as f64 / 1e6);
    println!(
        "video: {} frames, {}x{}, {} fps, {:.1} s",
        output.frames,
        output.width,
        output.height,
        output.fps,
        output.duration_secs()
    );
    match &served.compute {
        Some(compute) => println!("engine: {} on {compute}", describe_engine(&output.engine)),
        None => println!("engine: {}", describe_engine(&output.engine)),
    }
    if let Some(w) = output.engine.windows.filter(|w| w.count > 1) {
        println!(
            "windows: {} of {} frames at the checkpoint's rate, each sharing {} with the one before",
            w.count, w.frames, w.overlap
        );
    }
    for line in &served.summary {
        println!("{line}");
    }
    println!("encoder: {}", options.encoder.describe());
    println!("seed: {}", output.seed);
    Ok(())
}

fn describe_engine(info: &EngineInfo) -> String {
    match (info.engine.as_str(), &info.checkpoint) {
        ("preview", _) => "preview (motion preview, not the neural model)".to_string(),
        (engine, Some(checkpoint)) => format!("{engine} ({checkpoint})"),
        (engine, None) => engine.to_string(),
    }
}

/// The `--input` file's object (empty without one).
fn read_input_file(args: &Args) -> anyhow::Result<Map<String, Value>> {
    Ok(match &args.input {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--input: cannot read {}", path.display()))?;
            match serde_json::from_str(&text)
                .with_context(|| format!("--input: {} is not JSON", path.display()))?
            {
                Value::Object(map) => map,
                _ => bail!(
                    "--input: {} must hold a JSON object (the seed's `input`)",
                    path.display()
                ),
            }
        }
        None => Map::new(),
    })
}

/// The seed-shaped `input` object: the `--input` file's, with flags laid over it.
fn build_input(
    model: ModelId,
    args: &Args,
    mut input: Map<String, Value>,
) -> anyhow::Result<Value> {
    if !args.images.is_empty() {
        let uris: Vec<Value> = args
            .images
            .iter()
            .map(|s| to_uri(s, None).map(Value::String))
            .collect::<anyhow::Result<_>>()?;
        match model {
            // One --image is the string i2v expects; several go through so validation names them.
            ModelId::HhI2v if uris.len() == 1 => {
                input.insert("image".into(), uris[0].clone());
            }
            ModelId::HhI2v => {
                input.insert("image".into(), Value::Array(uris));
            }
            ModelId::HhR2v => {
                input.insert("images".into(), Value::Array(uris));
            }
        }
    } else {
        // Paths in an --input file are accepted like --image values, relative to that file.
        let base = args.input.as_deref().and_then(Path::parent);
        for key in ["image", "images"] {
            match input.get_mut(key) {
                Some(Value::String(s)) => *s = to_uri(s, base)?,
                Some(Value::Array(items)) => {
                    for item in items {
                        if let Value::String(s) = item {
                            *s = to_uri(s, base)?;
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let mut set = |key: &str, value: Option<Value>| {
        if let Some(v) = value {
            input.insert(key.into(), v);
        }
    };
    set("prompt", args.prompt.clone().map(Value::from));
    set(
        "negative_prompt",
        args.negative_prompt.clone().map(Value::from),
    );
    set("resolution", args.resolution.clone().map(Value::from));
    set("ratio", args.ratio.clone().map(Value::from));
    set("duration", args.duration.map(Value::from));
    set("seed", args.seed.map(Value::from));
    set(
        "watermark",
        args.watermark
            .or(args.no_watermark.then_some(false))
            .map(Value::from),
    );
    Ok(Value::Object(input))
}

/// A local path becomes an absolute `file://` uri; uris pass through unchanged.
/// A relative path is taken from `base` when given (the --input file's folder), else from the
/// working directory.
fn to_uri(value: &str, base: Option<&Path>) -> anyhow::Result<String> {
    if value.contains("://") || value.to_ascii_lowercase().starts_with("data:") {
        return Ok(value.to_string());
    }
    let joined = match base {
        Some(base) => base.join(value),
        None => PathBuf::from(value),
    };
    let path = std::path::absolute(&joined).with_context(|| format!("image path {value:?}"))?;
    // '%' is the escape character of file:// uris; escape it so the path reads back unchanged.
    Ok(format!(
        "file://{}",
        path.display().to_string().replace('%', "%25")
    ))
}

/// Reads and decodes every image of the request, naming the field of any that fails.
fn load_images(
    request: &GenerationRequest,
    tiny_allowed: bool,
    names: &FlagNames,
) -> anyhow::Result<Vec<RgbImage>> {
    let mut bytes = Vec::with_capacity(request.images.len());
    for (i, uri) in request.images.iter().enumerate() {
        let field = image_field(request.model, i);
        bytes.push(read_uri(uri).map_err(|e| names.image(&field, format!("{e:#}")))?);
    }
    if tiny_allowed {
        // Every rule but the minimum size (byte limit, format, aspect) still applies.
        let limits = gallop_media::DecodeLimits::tiny_test();
        return bytes
            .iter()
            .enumerate()
            .map(|(i, b)| {
                gallop_media::decode_image(b, &limits)
                    .map_err(|e| names.image(&image_field(request.model, i), e))
            })
            .collect();
    }
    decode_request_images(request.model, &bytes).map_err(|e| names.image(&e.field, e.message))
}

fn read_uri(uri: &str) -> anyhow::Result<Vec<u8>> {
    if let Some(path) = uri.strip_prefix("file://") {
        let path = PathBuf::from(percent_decode(path));
        let size = std::fs::metadata(&path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .len();
        if size > MAX_IMAGE_BYTES {
            bail!("image is {size} bytes; at most {MAX_IMAGE_BYTES} bytes are allowed");
        }
        return std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()));
    }
    if uri.starts_with("gallop://") {
        bail!("gallop://uploads/ uris name files uploaded to a server; pass a local path instead");
    }
    // data: and http(s): the server's fetcher, allowed to reach this machine's own network
    // since the user running the CLI owns it.
    let policy = gallop_fetch::FetchPolicy {
        allow_private: true,
        ..Default::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(gallop_fetch::fetch_image(uri, &policy))?)
}

/// Decodes `%XX` escapes; anything malformed is kept as written.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
