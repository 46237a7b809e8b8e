//! Motion-compensated frame interpolation, needing no weights: a 16 fps generation becomes
//! smooth 24 fps video instead of repeating every second frame.
//!
//! For a pair of frames A, B and a time t in (0, 1) between them:
//! 1. Motion A -> B and B -> A per 8x8 block, by coarse-to-fine block matching on a luma pyramid
//!    (predictive search from the coarser level, then quarter-pixel refinement).
//! 2. For each 8x8 block of the new frame, the motion v that best explains it: among the
//!    vectors of nearby blocks in both fields, the one whose two ends agree, A at p - t v against
//!    B at p + (1 - t) v (bilateral matching: objects land where their motion puts them at t).
//!    Each pixel then picks among its four nearest blocks' vectors, so moving edges stay sharp.
//! 3. The pixel blends A and B at those ends, weighted by closeness in time; where one end is
//!    hidden (the field there does not move with v: covered or uncovered background), mostly the
//!    other end.
//!
//! Every pixel's value depends only on the inputs, not on how rows are split over threads, so
//! the same frames give the same bytes.

use image::RgbImage;

use crate::MediaError;

/// Block edge of the motion fields, in pixels of their pyramid level.
const BLOCK: usize = 8;
/// Full search radius at the coarsest level, in its pixels.
const COARSE_RADIUS: i32 = 8;
/// The pyramid stops before a level whose short side would fall below this.
const MIN_LEVEL_SIDE: usize = 24;
const MAX_LEVELS: usize = 6;
/// Cost of departing from the predicted vector, in luma levels per pixel of departure: picks the
/// smooth answer where the picture is flat and says nothing about motion.
const SMOOTHNESS: f32 = 0.5;
/// A vector within this many pixels of the field's own motion counts as the same motion.
const CONSISTENT_PX: f32 = 1.0;
/// Weight left to an end that the fields say is hidden.
const HIDDEN_WEIGHT: f32 = 0.05;

/// One float plane (luma, 0-255) with edge-replicating reads.
#[derive(Clone)]
struct Plane {
    width: usize,
    height: usize,
    data: Vec<f32>,
}

impl Plane {
    fn luma(image: &RgbImage) -> Self {
        let data = image
            .as_raw()
            .chunks_exact(3)
            .map(|p| 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32)
            .collect();
        Self {
            width: image.width() as usize,
            height: image.height() as usize,
            data,
        }
    }

    fn at(&self, x: isize, y: isize) -> f32 {
        let x = x.clamp(0, self.width as isize - 1) as usize;
        let y = y.clamp(0, self.height as isize - 1) as usize;
        self.data[y * self.width + x]
    }

    /// Bilinear read at a real position (pixel centres on integers).
    fn sample(&self, x: f32, y: f32) -> f32 {
        let (x0, y0) = (x.floor(), y.floor());
        let (fx, fy) = (x - x0, y - y0);
        let (x0, y0) = (x0 as isize, y0 as isize);
        let top = self.at(x0, y0) * (1.0 - fx) + self.at(x0 + 1, y0) * fx;
        let bottom = self.at(x0, y0 + 1) * (1.0 - fx) + self.at(x0 + 1, y0 + 1) * fx;
        top * (1.0 - fy) + bottom * fy
    }

    /// Half the size, each pixel the mean of a 2x2 box.
    fn half(&self) -> Self {
        let (width, height) = (self.width.div_ceil(2), self.height.div_ceil(2));
        let mut data = Vec::with_capacity(width * height);
        for y in 0..height {
            for x in 0..width {
                let (sx, sy) = (2 * x as isize, 2 * y as isize);
                let sum = self.at(sx, sy)
                    + self.at(sx + 1, sy)
                    + self.at(sx, sy + 1)
                    + self.at(sx + 1, sy + 1);
                data.push(sum * 0.25);
            }
        }
        Self {
            width,
            height,
            data,
        }
    }

    /// This plane and ever smaller halves, finest first.
    fn pyramid(self) -> Vec<Self> {
        let mut levels = vec![self];
        while levels.len() < MAX_LEVELS {
            let last = levels.last().expect("the pyramid starts with one level");
            if last.width.min(last.height) / 2 < MIN_LEVEL_SIDE {
                break;
            }
            let half = last.half();
            levels.push(half);
        }
        levels
    }
}

/// A motion in pixels: where a point goes between the two frames of a pair.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Motion {
    x: f32,
    y: f32,
}

impl Motion {
    fn scaled(self, k: f32) -> Self {
        Self {
            x: self.x * k,
            y: self.y * k,
        }
    }

    fn distance(self, other: Self) -> f32 {
        (self.x - other.x).abs() + (self.y - other.y).abs()
    }
}

/// One motion per BLOCK x BLOCK block of a plane.
struct Field {
    columns: usize,
    rows: usize,
    motions: Vec<Motion>,
}

impl Field {
    fn for_plane(plane: &Plane) -> Self {
        let (columns, rows) = (plane.width.div_ceil(BLOCK), plane.height.div_ceil(BLOCK));
        Self {
            columns,
            rows,
            motions: vec![Motion::default(); columns * rows],
        }
    }

    fn block(&self, column: isize, row: isize) -> Motion {
        let column = column.clamp(0, self.columns as isize - 1) as usize;
        let row = row.clamp(0, self.rows as isize - 1) as usize;
        self.motions[row * self.columns + column]
    }

    /// The motion of the block under pixel position (x, y).
    fn at_pixel(&self, x: f32, y: f32) -> Motion {
        let b = BLOCK as f32;
        self.block((x / b).floor() as isize, (y / b).floor() as isize)
    }
}

/// Mean absolute difference between `from`'s block (column, row) and `to` displaced by `motion`.
fn block_cost(from: &Plane, to: &Plane, column: usize, row: usize, motion: Motion) -> f32 {
    let (x0, y0) = (column * BLOCK, row * BLOCK);
    let (x1, y1) = ((x0 + BLOCK).min(from.width), (y0 + BLOCK).min(from.height));
    let integer = motion.x.fract() == 0.0 && motion.y.fract() == 0.0;
    let mut sum = 0.0;
    for y in y0..y1 {
        for x in x0..x1 {
            let here = from.data[y * from.width + x];
            let there = if integer {
                to.at(
                    x as isize + motion.x as isize,
                    y as isize + motion.y as isize,
                )
            } else {
                to.sample(x as f32 + motion.x, y as f32 + motion.y)
            };
            sum += (here - there).abs();
        }
    }
    sum / ((x1 - x0) * (y1 - y0)) as f32
}

/// The best of `candidates` for one block, judged by match plus departure from `predicted`.
fn best_motion(
    from: &Plane,
    to: &Plane,
    (column, row): (usize, usize),
    predicted: Motion,
    candidates: impl IntoIterator<Item = Motion>,
) -> Motion {
    let mut best = (f32::INFINITY, predicted);
    for motion in candidates {
        let cost =
            block_cost(from, to, column, row, motion) + SMOOTHNESS * motion.distance(predicted);
        // Ties keep the earlier candidate, so the result does not depend on float noise order.
        if cost < best.0 {
            best = (cost, motion);
        }
    }
    best.1
}

/// Square grid of offsets `-radius..=radius` times `step` around `centre`.
fn around(centre: Motion, radius: i32, step: f32) -> impl Iterator<Item = Motion> {
    (-radius..=radius).flat_map(move |dy| {
        (-radius..=radius).map(move |dx| Motion {
            x: centre.x + dx as f32 * step,
            y: centre.y + dy as f32 * step,
        })
    })
}

/// Motion of each block of `from` (finest level) into `to`, coarse to fine.
fn estimate(from: &[Plane], to: &[Plane]) -> Field {
    let coarsest = from.len() - 1;
    let mut field = Field::for_plane(&from[coarsest]);
    for_each_block(&mut field, |column, row| {
        let zero = Motion::default();
        best_motion(
            &from[coarsest],
            &to[coarsest],
            (column, row),
            zero,
            around(zero, COARSE_RADIUS, 1.0),
        )
    });
    for level in (0..coarsest).rev() {
        let parent = field;
        field = Field::for_plane(&from[level]);
        let (from, to) = (&from[level], &to[level]);
        for_each_block(&mut field, |column, row| {
            let (pc, pr) = ((column / 2) as isize, (row / 2) as isize);
            let predicted = parent.block(pc, pr).scaled(2.0);
            // The parent and its neighbours, scaled to this level: a block on an object's edge
            // may belong to the neighbour's motion.
            let seeds = [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)]
                .map(|(dc, dr)| parent.block(pc + dc, pr + dr).scaled(2.0));
            let seed = best_motion(from, to, (column, row), predicted, seeds);
            let integer = best_motion(from, to, (column, row), predicted, around(seed, 1, 1.0));
            if level > 0 {
                return integer;
            }
            let half = best_motion(from, to, (column, row), predicted, around(integer, 1, 0.5));
            best_motion(from, to, (column, row), predicted, around(half, 1, 0.25))
        });
    }
    field
}

/// Fills every block of `field` with `motion_of(column, row)`, rows spread over threads.
fn for_each_block(field: &mut Field, motion_of: impl Fn(usize, usize) -> Motion + Sync) {
    let columns = field.columns;
    parallel_rows(&mut field.motions, columns, |row, motions| {
        for (column, motion) in motions.iter_mut().enumerate() {
            *motion = motion_of(column, row);
        }
    });
}

/// Runs `fill(row_index, row)` over rows of `row_len` items, split over the machine's cores.
fn parallel_rows<T: Send>(items: &mut [T], row_len: usize, fill: impl Fn(usize, &mut [T]) + Sync) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rows = items.len() / row_len.max(1);
    let per_thread = rows.div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for (chunk_index, chunk) in items.chunks_mut(per_thread * row_len).enumerate() {
            let fill = &fill;
            scope.spawn(move || {
                for (i, row) in chunk.chunks_mut(row_len).enumerate() {
                    fill(chunk_index * per_thread + i, row);
                }
            });
        }
    });
}

/// A pair of consecutive frames with their motion both ways, ready to make frames between them.
pub struct MotionPair<'a> {
    a: &'a RgbImage,
    b: &'a RgbImage,
    luma_a: Plane,
    luma_b: Plane,
    /// Motion of A's blocks into B.
    forward: Field,
    /// Motion of B's blocks into A.
    backward: Field,
}

impl<'a> MotionPair<'a> {
    /// Estimates the motion between `a` and `b`, which must have one size.
    pub fn new(a: &'a RgbImage, b: &'a RgbImage) -> Result<Self, MediaError> {
        if a.dimensions() != b.dimensions() {
            return Err(MediaError::FrameSizeMismatch {
                index: 1,
                width: b.width(),
                height: b.height(),
                expected_width: a.width(),
                expected_height: a.height(),
            });
        }
        let pyramid_a = Plane::luma(a).pyramid();
        let pyramid_b = Plane::luma(b).pyramid();
        let forward = estimate(&pyramid_a, &pyramid_b);
        let backward = estimate(&pyramid_b, &pyramid_a);
        let mut pyramid_a = pyramid_a;
        let mut pyramid_b = pyramid_b;
        Ok(Self {
            a,
            b,
            luma_a: pyramid_a.swap_remove(0),
            luma_b: pyramid_b.swap_remove(0),
            forward,
            backward,
        })
    }

    /// The frame at time `t` between A (0) and B (1).
    pub fn frame_at(&self, t: f32) -> RgbImage {
        let t = t.clamp(0.0, 1.0);
        let field = self.motion_at(t);
        let (width, height) = self.a.dimensions();
        let mut out = RgbImage::new(width, height);
        let row_len = width as usize * 3;
        parallel_rows(out.as_mut(), row_len, |y, row| {
            for (x, pixel) in row.chunks_exact_mut(3).enumerate() {
                let motion = self.pixel_motion(&field, t, x, y);
                let rgb = self.blend(t, x as f32, y as f32, motion);
                pixel.copy_from_slice(&rgb);
            }
        });
        out
    }

    /// Mean disagreement of A and B over `block` (column, row) if `motion` carries it, A at
    /// p - t v against B at p + (1 - t) v.
    fn bilateral_cost(&self, t: f32, (column, row): (usize, usize), motion: Motion) -> f32 {
        let plane = &self.luma_a;
        let (x0, y0) = (column * BLOCK, row * BLOCK);
        let (x1, y1) = (
            (x0 + BLOCK).min(plane.width),
            (y0 + BLOCK).min(plane.height),
        );
        let mut sum = 0.0;
        for y in y0..y1 {
            for x in x0..x1 {
                sum += self.pixel_cost(t, x as f32, y as f32, motion);
            }
        }
        sum / ((x1 - x0) * (y1 - y0)) as f32
    }

    fn pixel_cost(&self, t: f32, x: f32, y: f32, motion: Motion) -> f32 {
        let a = self.luma_a.sample(x - t * motion.x, y - t * motion.y);
        let b = self
            .luma_b
            .sample(x + (1.0 - t) * motion.x, y + (1.0 - t) * motion.y);
        (a - b).abs()
    }

    /// The motion through each block of the frame at time t (bilateral choice among the
    /// nearby vectors of both fields).
    fn motion_at(&self, t: f32) -> Field {
        let mut field = Field::for_plane(&self.luma_a);
        for_each_block(&mut field, |column, row| {
            let (c, r) = (column as isize, row as isize);
            let mut candidates = vec![Motion::default()];
            for (dc, dr) in [
                (0, 0),
                (-1, 0),
                (1, 0),
                (0, -1),
                (0, 1),
                (-1, -1),
                (1, -1),
                (-1, 1),
                (1, 1),
            ] {
                for motion in [
                    self.forward.block(c + dc, r + dr),
                    self.backward.block(c + dc, r + dr).scaled(-1.0),
                ] {
                    if !candidates.contains(&motion) {
                        candidates.push(motion);
                    }
                }
            }
            let mut best = (f32::INFINITY, Motion::default());
            for motion in candidates {
                // A hair of preference for slower motion settles ties on flat areas.
                let cost = self.bilateral_cost(t, (column, row), motion)
                    + 0.01 * motion.distance(Motion::default());
                if cost < best.0 {
                    best = (cost, motion);
                }
            }
            best.1
        });
        field
    }

    /// Pixel (x, y)'s motion: the one of its four nearest blocks' motions that best matches its
    /// 3x3 neighbourhood, so a block straddling an edge does not drag one side along.
    fn pixel_motion(&self, field: &Field, t: f32, x: usize, y: usize) -> Motion {
        let b = BLOCK as isize;
        let (column, row) = ((x as isize) / b, (y as isize) / b);
        // The neighbouring block on the side of the block this pixel is nearer to.
        let side = |p: usize| if (p % BLOCK) < BLOCK / 2 { -1 } else { 1 };
        let (sc, sr) = (side(x), side(y));
        let own = field.block(column, row);
        let others = [
            field.block(column + sc, row),
            field.block(column, row + sr),
            field.block(column + sc, row + sr),
        ];
        if others.iter().all(|&m| m == own) {
            return own;
        }
        let cost = |motion: Motion| {
            let mut sum = 0.0;
            for dy in -1..=1 {
                for dx in -1..=1 {
                    sum += self.pixel_cost(
                        t,
                        (x as isize + dx) as f32,
                        (y as isize + dy) as f32,
                        motion,
                    );
                }
            }
            sum
        };
        let mut best = (cost(own), own);
        for motion in others {
            if motion != best.1 {
                let c = cost(motion);
                if c < best.0 {
                    best = (c, motion);
                }
            }
        }
        best.1
    }

    /// A at p - t v and B at p + (1 - t) v, weighted by closeness in time, an end hidden by
    /// an occlusion (its own field does not move with v there) weighing little.
    fn blend(&self, t: f32, x: f32, y: f32, motion: Motion) -> [u8; 3] {
        let (ax, ay) = (x - t * motion.x, y - t * motion.y);
        let (bx, by) = (x + (1.0 - t) * motion.x, y + (1.0 - t) * motion.y);
        let seen_a = self.forward.at_pixel(ax, ay).distance(motion) <= CONSISTENT_PX;
        let seen_b = self.backward.at_pixel(bx, by).scaled(-1.0).distance(motion) <= CONSISTENT_PX;
        let mut weight_a = 1.0 - t;
        let mut weight_b = t;
        if seen_a != seen_b {
            if seen_a {
                weight_b *= HIDDEN_WEIGHT;
            } else {
                weight_a *= HIDDEN_WEIGHT;
            }
        }
        let total = weight_a + weight_b;
        let from_a = sample_rgb(self.a, ax, ay);
        let from_b = sample_rgb(self.b, bx, by);
        [0, 1, 2].map(|c| {
            ((from_a[c] * weight_a + from_b[c] * weight_b) / total)
                .round()
                .clamp(0.0, 255.0) as u8
        })
    }
}

/// Bilinear RGB read with edge replication.
fn sample_rgb(image: &RgbImage, x: f32, y: f32) -> [f32; 3] {
    let (width, height) = (image.width() as isize, image.height() as isize);
    let raw = image.as_raw();
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0, y - y0);
    let at = |px: isize, py: isize| {
        let px = px.clamp(0, width - 1) as usize;
        let py = py.clamp(0, height - 1) as usize;
        let i = (py * width as usize + px) * 3;
        [raw[i] as f32, raw[i + 1] as f32, raw[i + 2] as f32]
    };
    let (x0, y0) = (x0 as isize, y0 as isize);
    let (p00, p10, p01, p11) = (
        at(x0, y0),
        at(x0 + 1, y0),
        at(x0, y0 + 1),
        at(x0 + 1, y0 + 1),
    );
    [0, 1, 2].map(|c| {
        let top = p00[c] * (1.0 - fx) + p10[c] * fx;
        let bottom = p01[c] * (1.0 - fx) + p11[c] * fx;
        top * (1.0 - fy) + bottom * fy
    })
}

/// The frame at time `t` (0 = `a`, 1 = `b`) between two consecutive frames of one size.
pub fn interpolate(a: &RgbImage, b: &RgbImage, t: f32) -> Result<RgbImage, MediaError> {
    Ok(MotionPair::new(a, b)?.frame_at(t))
}

/// Streams frames at one rate in and frames at another out: output frame i shows time
/// i / `to_fps`, taken from the source frame at that time when there is one and interpolated
/// between the two around it otherwise (16 -> 24 fps: two of every three frames are new).
pub struct FrameRateConverter {
    from_fps: u32,
    to_fps: u32,
    /// Output frames wanted in all; no more are made.
    wanted: u64,
    made: u64,
    /// Source frames received so far, and the last two of them.
    received: u64,
    previous: Option<RgbImage>,
    latest: Option<RgbImage>,
}

impl FrameRateConverter {
    /// A converter from `from_fps` to `to_fps` (both >= 1) that makes `wanted` output frames.
    pub fn new(from_fps: u32, to_fps: u32, wanted: u64) -> Result<Self, MediaError> {
        for fps in [from_fps, to_fps] {
            if !(1..=240).contains(&fps) {
                return Err(MediaError::BadFrameRate(fps));
            }
        }
        Ok(Self {
            from_fps,
            to_fps,
            wanted,
            made: 0,
            received: 0,
            previous: None,
            latest: None,
        })
    }

    /// Source frames needed to make all `wanted` output frames.
    pub fn source_frames_needed(&self) -> u64 {
        match self.wanted {
            0 => 0,
            n => ((n - 1) * self.from_fps as u64).div_ceil(self.to_fps as u64) + 1,
        }
    }

    /// Output frames made so far.
    pub fn frames_made(&self) -> u64 {
        self.made
    }

    /// Takes the next source frame and returns the output frames it completes, in order.
    pub fn push(&mut self, frame: RgbImage) -> Result<Vec<RgbImage>, MediaError> {
        if let Some(latest) = &self.latest
            && latest.dimensions() != frame.dimensions()
        {
            return Err(MediaError::FrameSizeMismatch {
                index: self.received as usize,
                width: frame.width(),
                height: frame.height(),
                expected_width: latest.width(),
                expected_height: latest.height(),
            });
        }
        self.previous = self.latest.replace(frame);
        self.received += 1;
        let newest = self.received - 1;
        let mut out = Vec::new();
        let mut pair: Option<MotionPair<'_>> = None;
        while self.made < self.wanted {
            // Output frame `made` sits at source position whole + part / to_fps.
            let position = self.made * self.from_fps as u64;
            let (whole, part) = (position / self.to_fps as u64, position % self.to_fps as u64);
            let latest = self.latest.as_ref().expect("a frame was just pushed");
            if part == 0 && whole == newest {
                out.push(latest.clone());
            } else if part != 0 && whole + 1 == newest {
                let previous = self
                    .previous
                    .as_ref()
                    .expect("two frames when whole + 1 == newest");
                if pair.is_none() {
                    pair = Some(MotionPair::new(previous, latest)?);
                }
                let t = part as f32 / self.to_fps as f32;
                out.push(pair.as_ref().expect("just made").frame_at(t));
            } else {
                break;
            }
            self.made += 1;
        }
        Ok(out)
    }
}
