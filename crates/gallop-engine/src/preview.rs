//! The motion preview: a weight-free engine that animates the input images with eased camera
//! moves. It shows the whole service working anywhere, quickly, and is always reported as
//! `preview`, never as the model.
//!
//! i2v: one shot of the image with the camera move the prompt names (a gentle push-in when it
//! names none). r2v: one shot per referenced image, in the order the prompt names them (all
//! images in order when it names none), each with its own gentle move, cross-dissolving.

use gallop_api::ModelId;
use image::RgbImage;

use crate::camera::{CameraMove, CameraPath, smoothstep};
use crate::warp::{blend_into, render_view_into};
use crate::{Engine, EngineError, EngineInfo, EngineInput, RunContext};

/// The source keeps this much more resolution than the output, so zooming in up to 1/1.25 of
/// the frame never magnifies past the image's own pixels.
const SOURCE_SCALE: f32 = 1.25;
/// Half a second at 24 fps.
const DISSOLVE_FRAMES: u32 = 12;
/// Gentle moves an r2v shot picks from when the prompt names none.
const SHOT_MOVES: [CameraMove; 5] = [
    CameraMove::PushIn,
    CameraMove::PanRight,
    CameraMove::PullOut,
    CameraMove::PanLeft,
    CameraMove::TiltUp,
];

/// The motion-preview engine. Needs no weights.
#[derive(Debug, Default, Clone, Copy)]
pub struct PreviewEngine;

impl Engine for PreviewEngine {
    fn info(&self) -> EngineInfo {
        EngineInfo {
            engine: "preview".into(),
            checkpoint: None,
            compute: None,
            windows: None,
        }
    }

    fn generate(
        &self,
        input: &EngineInput<'_>,
        ctx: &mut RunContext<'_>,
    ) -> Result<(), EngineError> {
        let geometry = input.geometry;
        if geometry.width == 0 || geometry.height == 0 || geometry.frames == 0 {
            return Err(EngineError::Internal(format!(
                "geometry must be non-empty, got {}x{} with {} frames",
                geometry.width, geometry.height, geometry.frames
            )));
        }
        let order = shot_order(input)?;
        let camera_move = CameraMove::from_prompt(&input.request.prompt);
        let shots = plan_shots(geometry.frames, order.len() as u32);
        let (width, height) = (geometry.width, geometry.height);
        let source_w = even_scaled(width);
        let source_h = even_scaled(height);

        // Each shot's source is prepared once, when the shot first appears, and dropped after.
        let mut sources: Vec<Option<RgbImage>> = vec![None; shots.len()];
        let paths: Vec<CameraPath> = (0..shots.len())
            .map(|i| {
                let m = match (input.request.model, camera_move) {
                    (_, Some(m)) => m,
                    (ModelId::HhI2v, None) => CameraMove::PushIn,
                    (ModelId::HhR2v, None) => {
                        SHOT_MOVES[(input.seed as usize + i) % SHOT_MOVES.len()]
                    }
                };
                CameraPath::new(m, input.seed, i as u32)
            })
            .collect();
        let mut second = RgbImage::new(width, height);
        ctx.plan(geometry.frames);

        for frame_index in 0..geometry.frames {
            ctx.check_cancel()?;
            let active: Vec<usize> = shots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.contains(frame_index))
                .map(|(i, _)| i)
                .collect();
            let mut frame = RgbImage::new(width, height);
            for (layer, &shot_index) in active.iter().enumerate() {
                let shot = &shots[shot_index];
                if sources[shot_index].is_none() {
                    let image = &input.images[order[shot_index]];
                    sources[shot_index] = Some(prepare_source(image, source_w, source_h)?);
                }
                let source = sources[shot_index].as_ref().expect("prepared above");
                let view = paths[shot_index].at(shot.progress(frame_index));
                if layer == 0 {
                    render_view_into(source, &view, &mut frame);
                } else {
                    // The later shot fades in over the dissolve, eased so the cut starts and
                    // ends softly (a sudden jump also costs the encoder a blurry frame).
                    render_view_into(source, &view, &mut second);
                    let into_dissolve = frame_index - shot.start + 1;
                    let dissolve = shots[shot_index - 1].end() - shot.start;
                    let weight = smoothstep(into_dissolve as f32 / (dissolve + 1) as f32);
                    blend_into(&mut frame, &second, weight);
                }
            }
            // A shot that has ended for good frees its source.
            for (i, s) in shots.iter().enumerate() {
                if s.end() <= frame_index + 1 {
                    sources[i] = None;
                }
            }
            ctx.emit(frame)?;
            ctx.advance();
        }
        Ok(())
    }
}

/// Which image each shot shows.
fn shot_order(input: &EngineInput<'_>) -> Result<Vec<usize>, EngineError> {
    let n = input.images.len();
    if n == 0 {
        let field = match input.request.model {
            ModelId::HhI2v => "/input/image",
            ModelId::HhR2v => "/input/images",
        };
        return Err(EngineError::bad_input(
            field,
            "at least one image is required",
        ));
    }
    let order = match input.request.model {
        ModelId::HhI2v => vec![0],
        ModelId::HhR2v => {
            let named = gallop_api::referenced_images(&input.request.prompt, n);
            if named.is_empty() {
                (0..n).collect()
            } else {
                named
            }
        }
    };
    if let Some(bad) = order.iter().find(|&&i| i >= n) {
        return Err(EngineError::bad_input(
            "/input/prompt",
            format!(
                "shot refers to image {} but only {n} images were given",
                bad + 1
            ),
        ));
    }
    Ok(order)
}

/// One shot: frames `start..start + len`, overlapping the next shot by the dissolve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shot {
    pub start: u32,
    pub len: u32,
}

impl Shot {
    fn end(&self) -> u32 {
        self.start + self.len
    }

    fn contains(&self, frame: u32) -> bool {
        frame >= self.start && frame < self.end()
    }

    /// 0 at the shot's first frame, 1 at its last.
    fn progress(&self, frame: u32) -> f32 {
        if self.len <= 1 {
            return 0.0;
        }
        (frame - self.start) as f32 / (self.len - 1) as f32
    }
}

/// Splits `frames` into `count` shots of near-equal length, each overlapping the next by a
/// dissolve of up to half a second (shorter when shots are short), covering every frame.
pub(crate) fn plan_shots(frames: u32, count: u32) -> Vec<Shot> {
    // More shots than frames can show would flash by; keep at least 8 frames a shot.
    let count = count.clamp(1, (frames / 8).max(1));
    let dissolve = if count == 1 {
        0
    } else {
        DISSOLVE_FRAMES.min(frames / (3 * count))
    };
    let total = frames + (count - 1) * dissolve;
    let (base, extra) = (total / count, total % count);
    let mut shots = Vec::with_capacity(count as usize);
    let mut start = 0;
    for i in 0..count {
        let len = base + u32::from(i < extra);
        shots.push(Shot { start, len });
        start += len - dissolve;
    }
    shots
}

fn even_scaled(size: u32) -> u32 {
    (((size as f32 * SOURCE_SCALE) / 2.0).round() as u32 * 2).max(2)
}

/// The image cropped to the output's aspect and resized to the source size, once per shot.
fn prepare_source(image: &RgbImage, width: u32, height: u32) -> Result<RgbImage, EngineError> {
    if image.width() == 0 || image.height() == 0 {
        return Err(EngineError::Internal(format!(
            "input image is {}x{} px; it must not be empty",
            image.width(),
            image.height()
        )));
    }
    Ok(gallop_media::fit_and_crop(image, width, height))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shots_cover_every_frame_once_or_twice() {
        for frames in [72u32, 120, 192, 360] {
            for count in 1..=9 {
                let shots = plan_shots(frames, count);
                assert_eq!(shots.len() as u32, count.min(frames / 8));
                assert_eq!(shots[0].start, 0);
                assert_eq!(shots.last().unwrap().end(), frames);
                for f in 0..frames {
                    let n = shots.iter().filter(|s| s.contains(f)).count();
                    assert!((1..=2).contains(&n), "frame {f} in {n} shots");
                }
                for pair in shots.windows(2) {
                    assert!(pair[1].start > pair[0].start);
                    assert!(pair[1].start <= pair[0].end());
                }
            }
        }
    }

    #[test]
    fn dissolve_is_half_a_second_when_shots_are_long() {
        let shots = plan_shots(192, 3);
        assert_eq!(shots[0].end() - shots[1].start, DISSOLVE_FRAMES);
        assert_eq!(shots[1].end() - shots[2].start, DISSOLVE_FRAMES);
    }
}
