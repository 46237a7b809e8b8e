//! Chained windows: a video longer than the checkpoint's trained window (81 frames at 16 fps,
//! 121 at 24 fps for TI2V-5B) is generated as successive windows of equal length that overlap.
//! Each window after the first starts from the previous one's frame where the overlap begins
//! (its conditioning frame), the shared frames are cross-faded, and each window's colours are
//! matched to the frames it overlaps, so colour is held to the first window instead of drifting.
//! Time and memory grow with the number of windows, linearly in duration.

use image::RgbImage;

/// How a run's frames are split into windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// Frames each window generates (`temporal * n + 1`, at most the trained window).
    pub length: usize,
    /// Frames each window shares with the one before (0 for a single window).
    pub overlap: usize,
    pub count: usize,
}

impl Windows {
    /// Windows for `needed` frames (`temporal * n + 1`) when a window may hold at most
    /// `trained` frames (also `temporal * n + 1`) and consecutive windows share `overlap`.
    /// One window when `needed` fits; else as few equal windows as cover `needed`.
    pub fn plan(needed: usize, trained: usize, overlap: usize, temporal: usize) -> Self {
        if needed <= trained {
            return Self {
                length: needed,
                overlap: 0,
                count: 1,
            };
        }
        let new_per_window = trained - overlap;
        let count = (needed - overlap).div_ceil(new_per_window);
        let shortest = (needed - overlap).div_ceil(count) + overlap;
        let length = (shortest - 1).div_ceil(temporal) * temporal + 1;
        Self {
            length: length.min(trained),
            overlap,
            count,
        }
    }

    /// Distinct frames all windows make together (the overlaps counted once).
    pub fn frames(&self) -> usize {
        self.count * (self.length - self.overlap) + self.overlap
    }

    /// Index in the whole video of window `k`'s first frame.
    pub fn start(&self, k: usize) -> usize {
        k * (self.length - self.overlap)
    }
}

/// The noise seed of window `k`: the request's seed for the first window (so a video that fits
/// one window is what it always was), distinct seeds after it.
pub fn window_seed(seed: u32, k: usize) -> u64 {
    seed as u64 | ((k as u64) << 32)
}

/// A per-channel gain and offset that gives one set of frames the colour statistics (mean and
/// spread of each of R, G, B) of another.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColourMatch {
    gain: [f32; 3],
    offset: [f32; 3],
}

/// Gains outside this range would mean the windows show different things, not drifted colour.
const GAIN_RANGE: (f32, f32) = (0.67, 1.5);

impl ColourMatch {
    /// The match that maps `frames`' statistics onto `reference`'s.
    pub fn between(frames: &[RgbImage], reference: &[RgbImage]) -> Self {
        let (from, to) = (channel_stats(frames), channel_stats(reference));
        let mut gain = [1.0; 3];
        let mut offset = [0.0; 3];
        for c in 0..3 {
            let ((mean_from, spread_from), (mean_to, spread_to)) = (from[c], to[c]);
            gain[c] = match spread_from > 1.0 {
                true => (spread_to / spread_from).clamp(GAIN_RANGE.0, GAIN_RANGE.1),
                false => 1.0,
            };
            offset[c] = mean_to - gain[c] * mean_from;
        }
        Self { gain, offset }
    }

    pub fn apply(&self, frame: &mut RgbImage) {
        for pixel in frame.pixels_mut() {
            for c in 0..3 {
                let v = pixel[c] as f32 * self.gain[c] + self.offset[c];
                pixel[c] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
}

/// Mean and standard deviation of each channel over every pixel of `frames`.
fn channel_stats(frames: &[RgbImage]) -> [(f32, f32); 3] {
    let mut sum = [0f64; 3];
    let mut squares = [0f64; 3];
    let mut count = 0f64;
    for frame in frames {
        for pixel in frame.pixels() {
            for c in 0..3 {
                let v = pixel[c] as f64;
                sum[c] += v;
                squares[c] += v * v;
            }
        }
        count += (frame.width() * frame.height()) as f64;
    }
    [0, 1, 2].map(|c| {
        let mean = sum[c] / count.max(1.0);
        let variance = (squares[c] / count.max(1.0) - mean * mean).max(0.0);
        (mean as f32, variance.sqrt() as f32)
    })
}

/// Cross-fades the previous window's last frames (`previous`) into the next window's first
/// frames (`next`, changed in place): the j-th shared frame takes (j + 1) / (overlap + 1) of
/// the next window, so the video moves from one window to the other a step at a time.
pub fn cross_fade(previous: &[RgbImage], next: &mut [RgbImage]) {
    let overlap = previous.len();
    for (j, (old, new)) in previous.iter().zip(next.iter_mut()).enumerate() {
        let w = (j + 1) as f32 / (overlap + 1) as f32;
        for (n, &o) in new.as_mut().iter_mut().zip(old.as_raw()) {
            *n = (o as f32 * (1.0 - w) + *n as f32 * w).round() as u8;
        }
    }
}

/// Joins the windows' frames, as they are decoded, into one video: each window's frames are
/// colour-matched to the window before (so colour is held to the first window), the frames two
/// windows share are cross-faded and sent once, and a window's last `overlap` frames are kept
/// back until the next window's first frames arrive to be faded with them.
#[derive(Debug)]
pub struct Join {
    windows: Windows,
    /// The window whose frames come next, and how many of them have come.
    window: usize,
    index: usize,
    colour: Option<ColourMatch>,
    /// The finished window's last `overlap` frames (colour-matched, not yet sent).
    tail: Vec<RgbImage>,
    /// This window's first `overlap` frames, until all have come (windows after the first).
    head: Vec<RgbImage>,
    /// This window's last `overlap` frames, kept for the next window (all but the last window).
    held: Vec<RgbImage>,
}

impl Join {
    pub fn new(windows: Windows) -> Self {
        // A frame cannot be both faded into the window before and kept for the one after.
        assert!(
            windows.count == 1 || windows.length > 2 * windows.overlap,
            "windows of {} frames cannot share {} with each neighbour",
            windows.length,
            windows.overlap
        );
        Self {
            windows,
            window: 0,
            index: 0,
            colour: None,
            tail: Vec::new(),
            head: Vec::new(),
            held: Vec::new(),
        }
    }

    pub fn windows(&self) -> Windows {
        self.windows
    }

    /// The window whose frames come next.
    pub fn window(&self) -> usize {
        self.window
    }

    /// What the next window continues from: the finished window's last `overlap` frames as the
    /// video will show them before the fade (colour-matched to the first window). Empty before
    /// the first window.
    pub fn tail(&self) -> &[RgbImage] {
        &self.tail
    }

    /// Takes the current window's next frame; returns the frames of the joined video it
    /// completes, in order.
    pub fn push(&mut self, mut frame: RgbImage) -> crate::Result<Vec<RgbImage>> {
        let Windows {
            length,
            overlap,
            count,
        } = self.windows;
        crate::error::ensure!(
            self.index < length,
            "window {} sent more than its {length} frames",
            self.window
        );
        let i = self.index;
        self.index += 1;
        if self.window > 0 && i < overlap {
            self.head.push(frame);
            return Ok(self.fade_in_head());
        }
        if let Some(colour) = &self.colour {
            colour.apply(&mut frame);
        }
        if self.window + 1 < count && i >= length - overlap {
            self.held.push(frame);
            return Ok(Vec::new());
        }
        Ok(vec![frame])
    }

    /// Once the head is complete: matches this window's colour to the tail over the frames both
    /// show, then fades from the tail into the head.
    fn fade_in_head(&mut self) -> Vec<RgbImage> {
        if self.head.len() < self.windows.overlap {
            return Vec::new();
        }
        let colour = ColourMatch::between(&self.head, &self.tail);
        for frame in &mut self.head {
            colour.apply(frame);
        }
        cross_fade(&self.tail, &mut self.head);
        self.colour = Some(colour);
        self.tail.clear();
        std::mem::take(&mut self.head)
    }

    /// The current window has sent all its frames; the next frames are the next window's.
    pub fn end_window(&mut self) -> crate::Result<()> {
        crate::error::ensure!(
            self.index == self.windows.length,
            "window {} sent {} frames, not {}",
            self.window,
            self.index,
            self.windows.length
        );
        self.tail = std::mem::take(&mut self.held);
        self.window += 1;
        self.index = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_videos_take_one_window_and_long_ones_equal_overlapping_windows() {
        assert_eq!(
            Windows::plan(81, 81, 5, 4),
            Windows {
                length: 81,
                overlap: 0,
                count: 1
            }
        );
        // 15 s at 16 fps: 241 frames in windows of at most 81 sharing 5: four of 65.
        let w = Windows::plan(241, 81, 5, 4);
        assert_eq!((w.length, w.overlap, w.count), (65, 5, 4));
        assert!(w.frames() >= 241 && w.length <= 81 && w.length % 4 == 1);
        assert_eq!((w.start(1), w.start(3)), (60, 180));
        // 15 s at 24 fps (TI2V-5B): 361 frames, windows of at most 121.
        let w = Windows::plan(361, 121, 5, 4);
        assert!(
            w.frames() >= 361 && w.length <= 121 && w.length % 4 == 1,
            "{w:?}"
        );
        assert_eq!(w.count, 4);
        // Just over one window: two windows, each shorter than the trained one.
        let w = Windows::plan(85, 81, 5, 4);
        assert_eq!((w.count, w.length), (2, 45));
    }

    #[test]
    fn window_seeds_differ_and_the_first_is_the_request_seed() {
        assert_eq!(window_seed(7, 0), 7);
        assert_ne!(window_seed(7, 1), window_seed(7, 2));
        assert_ne!(window_seed(7, 1), window_seed(8, 1));
    }

    #[test]
    fn colour_match_maps_statistics_and_cross_fade_steps_between_windows() {
        let reference = vec![RgbImage::from_fn(8, 8, |x, _| {
            image::Rgb([20 + x as u8 * 10, 100, 50])
        })];
        // The same picture drifted: brighter red, flatter contrast.
        let mut drifted = vec![RgbImage::from_fn(8, 8, |x, _| {
            image::Rgb([40 + x as u8 * 8, 110, 50])
        })];
        let matched = ColourMatch::between(&drifted, &reference);
        matched.apply(&mut drifted[0]);
        for (a, b) in drifted[0].pixels().zip(reference[0].pixels()) {
            for c in 0..3 {
                assert!((a[c] as i32 - b[c] as i32).abs() <= 2, "{a:?} vs {b:?}");
            }
        }

        let old = vec![RgbImage::from_pixel(2, 2, image::Rgb([0, 0, 0])); 3];
        let mut new = vec![RgbImage::from_pixel(2, 2, image::Rgb([200, 200, 200])); 4];
        cross_fade(&old, &mut new[..3]);
        let levels: Vec<u8> = new.iter().map(|f| f.get_pixel(0, 0)[0]).collect();
        assert_eq!(levels, [50, 100, 150, 200]);
    }

    /// Frame `n` of a video whose grey level rises by 2 a frame.
    fn level(n: usize) -> RgbImage {
        RgbImage::from_pixel(4, 2, image::Rgb([10 + 2 * n as u8, 50, 90]))
    }

    #[test]
    fn join_sends_shared_frames_once_and_holds_colour_to_the_first_window() {
        let windows = Windows::plan(33, 17, 5, 4);
        assert_eq!(
            (windows.count, windows.length, windows.frames()),
            (3, 17, 41)
        );
        let mut join = Join::new(windows);
        let mut video = Vec::new();
        for k in 0..windows.count {
            if k > 0 {
                // The tail is the previous window's last frames: where this window starts.
                let tail: Vec<u8> = join.tail().iter().map(|f| f.get_pixel(0, 0)[0]).collect();
                let first = windows.start(k);
                assert_eq!(
                    tail,
                    (first..first + 5)
                        .map(|n| level(n)[(0, 0)][0])
                        .collect::<Vec<_>>()
                );
            }
            for i in 0..windows.length {
                // Every window after the first comes out 20 levels too bright in red.
                let mut frame = level(windows.start(k) + i);
                if k > 0 {
                    frame.pixels_mut().for_each(|p| p[0] += 20);
                }
                video.extend(join.push(frame).unwrap());
            }
            join.end_window().unwrap();
        }
        assert_eq!(video.len(), windows.frames());
        for (n, frame) in video.iter().enumerate() {
            assert_eq!(frame.get_pixel(3, 1), level(n).get_pixel(3, 1), "frame {n}");
        }
    }
}
