//! From decoded frames to the video users see: the windows joined into one video
//! ([`Join`]), the checkpoint's native rate turned into the output's by motion-compensated
//! interpolation ([`FrameRateConverter`]: 16 -> 24 fps makes two of every three frames new
//! instead of showing every second frame twice), and each frame fitted to the output size.
//! Interpolation runs at the generation size, before any upscale, where it is cheapest.

use gallop_api::Geometry;
use gallop_media::FrameRateConverter;
use image::RgbImage;

use crate::error::ensure;
use crate::windows::{Join, Windows};

pub struct Output {
    join: Join,
    rate: FrameRateConverter,
    size: (u32, u32),
    wanted: u32,
}

impl Output {
    /// The output of `geometry` from `windows` of frames generated at `native_fps`.
    pub fn new(windows: Windows, native_fps: u32, geometry: Geometry) -> crate::Result<Self> {
        let rate = FrameRateConverter::new(native_fps, geometry.fps, geometry.frames as u64)?;
        ensure!(
            windows.frames() as u64 >= rate.source_frames_needed(),
            "{} windows of {} frames make {} frames at {native_fps} fps, but {} output frames at \
             {} fps need {}",
            windows.count,
            windows.length,
            windows.frames(),
            geometry.frames,
            geometry.fps,
            rate.source_frames_needed()
        );
        Ok(Self {
            join: Join::new(windows),
            rate,
            size: (geometry.width, geometry.height),
            wanted: geometry.frames,
        })
    }

    /// What the next window continues from ([`Join::tail`]).
    pub fn tail(&self) -> &[RgbImage] {
        self.join.tail()
    }

    /// Takes the current window's next decoded frame; returns the output frames it completes.
    pub fn push(&mut self, frame: RgbImage) -> crate::Result<Vec<RgbImage>> {
        let mut out = Vec::new();
        for joined in self.join.push(frame)? {
            for frame in self.rate.push(joined)? {
                out.push(self.fit(frame));
            }
        }
        Ok(out)
    }

    /// The current window has sent all its frames.
    pub fn end_window(&mut self) -> crate::Result<()> {
        self.join.end_window()
    }

    /// Every output frame has been made.
    pub fn finish(&self) -> crate::Result<()> {
        ensure!(
            self.rate.frames_made() == self.wanted as u64,
            "made {} of the video's {} frames",
            self.rate.frames_made(),
            self.wanted
        );
        Ok(())
    }

    fn fit(&self, frame: RgbImage) -> RgbImage {
        match frame.dimensions() == self.size {
            true => frame,
            false => gallop_media::fit_and_crop(&frame, self.size.0, self.size.1),
        }
    }
}
