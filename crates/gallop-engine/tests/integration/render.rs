//! `render_video` and `decode_request_images`, the path the CLI and the server's worker share:
//! real PNG bytes in, a real H.264 MP4 out.

use std::io::Cursor;
use std::sync::atomic::{AtomicBool, Ordering};

use gallop_api::{GenerationRequest, MAX_SEED, ModelId, Resolution};
use gallop_engine::render::{RenderOptions, decode_request_images, render_video};
use gallop_engine::{EngineError, PreviewEngine, Progress, RunContext};
use image::{ImageFormat, Rgb, RgbImage};

fn png(width: u32, height: u32) -> Vec<u8> {
    let img = RgbImage::from_fn(width, height, |x, y| {
        Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) / 8 % 256) as u8])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png).unwrap();
    out.into_inner()
}

fn i2v(seed: Option<u32>) -> GenerationRequest {
    GenerationRequest {
        model: ModelId::HhI2v,
        prompt: "pan right".into(),
        negative_prompt: None,
        images: vec!["file:///scene.png".into()],
        resolution: Resolution::P720,
        ratio: None,
        duration: 3,
        seed,
        watermark: true,
    }
}

fn render(
    request: &GenerationRequest,
    images: &[RgbImage],
    cancel: &AtomicBool,
    seen: &mut Vec<RgbImage>,
) -> Result<gallop_engine::RenderOutput, EngineError> {
    let mut progress = |_: Progress| {};
    let mut look = |f: RgbImage| {
        seen.push(f);
        Ok(())
    };
    let ctx = RunContext::new(&mut progress, cancel, &mut look);
    render_video(
        &PreviewEngine,
        request,
        images,
        &RenderOptions::default(),
        ctx,
    )
}

#[test]
fn renders_a_decodable_video_and_reports_the_seed_it_picked() {
    let images = decode_request_images(ModelId::HhI2v, &[png(800, 600)]).unwrap();
    let cancel = AtomicBool::new(false);
    let mut seen = Vec::new();
    let out = render(&i2v(None), &images, &cancel, &mut seen).unwrap();
    // 4:3 image -> upstream's 720P 4:3 size.
    assert_eq!(
        (out.width, out.height, out.fps, out.frames),
        (1088, 832, 24, 72)
    );
    assert!(out.seed <= MAX_SEED);
    assert_eq!(out.engine.engine, "preview");
    assert_eq!(seen.len(), 72);
    let video = gallop_media::decode_mp4(&out.mp4).unwrap();
    assert_eq!(video.frames.len(), 72);
    for (decoded, encoded) in video.frames.iter().zip(&seen) {
        assert!(gallop_media::psnr(decoded, encoded) >= 35.0);
    }

    // The reported seed repeats the run exactly.
    let mut again = Vec::new();
    let repeat = render(&i2v(Some(out.seed)), &images, &cancel, &mut again).unwrap();
    assert_eq!(repeat.seed, out.seed);
    assert!(
        repeat.mp4 == out.mp4,
        "the reported seed did not reproduce the video"
    );
}

#[test]
fn cancel_returns_cancelled() {
    let images = decode_request_images(ModelId::HhI2v, &[png(640, 360)]).unwrap();
    let cancel = AtomicBool::new(true);
    let mut seen = Vec::new();
    let result = render(&i2v(Some(1)), &images, &cancel, &mut seen);
    assert!(matches!(result, Err(EngineError::Cancelled)), "{result:?}");
    assert!(seen.is_empty());
    cancel.store(false, Ordering::Relaxed);
}

#[test]
fn image_errors_name_the_field() {
    let err = decode_request_images(ModelId::HhI2v, &[png(200, 200)]).unwrap_err();
    assert_eq!(err.field, "/input/image");
    assert!(
        err.to_string()
            .starts_with("/input/image: image is 200x200 px"),
        "{err}"
    );

    // r2v: the second image's short side is under 400 px.
    let err = decode_request_images(ModelId::HhR2v, &[png(600, 450), png(500, 350)]).unwrap_err();
    assert_eq!(err.field, "/input/images/1");
    assert!(err.message.contains("500x350"), "{err}");

    let err = decode_request_images(ModelId::HhR2v, &[b"not an image".to_vec()]).unwrap_err();
    assert_eq!(err.field, "/input/images/0");
}
