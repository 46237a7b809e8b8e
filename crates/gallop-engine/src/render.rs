//! One whole run, shared by `gallop generate` and the server's worker: decoded images in, a
//! watermarked H.264 MP4 out. Fetching the images is the caller's job (the CLI reads paths, the
//! server fetches safely); everything after the bytes is here so both produce the same video.

use gallop_api::{GenerationRequest, MAX_SEED, ModelId};
use gallop_media::{DecodeLimits, Mp4Encoder, VideoEncoder, Watermark};
use image::RgbImage;

use crate::{Engine, EngineError, EngineInfo, EngineInput, RunContext};

/// Choices of the operator, not of the request.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// Text of the visible mark; None uses [`gallop_media::DEFAULT_WATERMARK`]. Only drawn when
    /// the request's `watermark` is true.
    pub watermark_text: Option<String>,
    /// Test path (`gallop generate --width/--height/--num-frames`): this exact output instead
    /// of the request's geometry.
    pub geometry: Option<gallop_api::Geometry>,
    /// The H.264 encoder (`--encoder`): openh264 built in, or the operator's ffmpeg.
    pub encoder: VideoEncoder,
}

/// What a render made.
#[derive(Debug, Clone)]
pub struct RenderOutput {
    /// H.264 in MP4, moov before mdat.
    pub mp4: Vec<u8>,
    pub frames: u32,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// The seed in force: the request's, or the one picked for it.
    pub seed: u32,
    pub engine: EngineInfo,
}

impl RenderOutput {
    /// Seconds of video.
    pub fn duration_secs(&self) -> f64 {
        self.frames as f64 / self.fps as f64
    }
}

/// A bad input image, named by its request field (`/input/images/1`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InputImageError {
    pub field: String,
    pub message: String,
}

/// The request field that carries image `index`: `/input/image` for i2v, `/input/images/N` for r2v.
pub fn image_field(model: ModelId, index: usize) -> String {
    match model {
        ModelId::HhI2v => "/input/image".to_string(),
        ModelId::HhR2v => format!("/input/images/{index}"),
    }
}

/// Decodes the request's images (bytes in request order) with the model's limits: i2v sides
/// >= 300 px, r2v short side >= 400 px, both at most 20 MB and aspect within 2.5:1.
pub fn decode_request_images(
    model: ModelId,
    bytes: &[Vec<u8>],
) -> Result<Vec<RgbImage>, InputImageError> {
    let limits = match model {
        ModelId::HhI2v => DecodeLimits::i2v(),
        ModelId::HhR2v => DecodeLimits::r2v(),
    };
    bytes
        .iter()
        .enumerate()
        .map(|(i, b)| {
            gallop_media::decode_image(b, &limits).map_err(|e| InputImageError {
                field: image_field(model, i),
                message: e.to_string(),
            })
        })
        .collect()
}

/// A seed for a request that has none, within the schema's 0..=2147483647.
pub fn random_seed() -> u32 {
    rand::random_range(0..=MAX_SEED)
}

/// Runs `engine` on `request` and `images` (decoded, in request order), draws the watermark
/// unless the request turns it off, and encodes the frames as they come. `ctx` is the caller's
/// side of the run: its progress and cancel flag reach the engine, and its sink sees each frame
/// exactly as it goes to the encoder, watermark drawn (a debugging look; `|_| Ok(())` for none).
pub fn render_video(
    engine: &dyn Engine,
    request: &GenerationRequest,
    images: &[RgbImage],
    options: &RenderOptions,
    ctx: RunContext<'_>,
) -> Result<RenderOutput, EngineError> {
    let first = images.first().map(|i| i.dimensions());
    let geometry = options.geometry.unwrap_or_else(|| request.geometry(first));
    let seed = request.seed.unwrap_or_else(random_seed);
    let mut encoder = Mp4Encoder::with_encoder(
        &options.encoder,
        geometry.width,
        geometry.height,
        geometry.fps,
    )
    .map_err(|e| EngineError::Internal(e.to_string()))?;
    let watermark = request.watermark.then(|| {
        let text = options
            .watermark_text
            .as_deref()
            .unwrap_or(gallop_media::DEFAULT_WATERMARK);
        Watermark::new(text, geometry.width, geometry.height)
    });
    let RunContext {
        progress,
        cancel,
        sink: look,
        ..
    } = ctx;
    let mut index = 0u32;
    {
        let mut encode = |mut frame: RgbImage| -> Result<(), String> {
            if frame.dimensions() != (geometry.width, geometry.height) {
                return Err(format!(
                    "engine sent a {}x{} frame; the video is {}x{}",
                    frame.width(),
                    frame.height(),
                    geometry.width,
                    geometry.height
                ));
            }
            if let Some(mark) = &watermark {
                mark.apply(&mut frame);
            }
            encoder.push(&frame).map_err(|e| e.to_string())?;
            index += 1;
            look(frame)
        };
        let input = EngineInput {
            request,
            images,
            geometry,
            seed,
        };
        engine.generate(&input, &mut RunContext::new(progress, cancel, &mut encode))?;
    }
    if index != geometry.frames {
        return Err(EngineError::Internal(format!(
            "engine made {index} frames; the video needs {}",
            geometry.frames
        )));
    }
    let mp4 = encoder
        .finish()
        .map_err(|e| EngineError::Internal(e.to_string()))?;
    Ok(RenderOutput {
        mp4,
        frames: geometry.frames,
        width: geometry.width,
        height: geometry.height,
        fps: geometry.fps,
        seed,
        engine: engine.run_info(geometry),
    })
}
