//! `CLIPImageProcessor` as the Wan I2V pipeline runs it (transformers' PIL backend): RGB, resize
//! the shortest edge with PIL's bicubic, centre crop, rescale by 1/255, normalise by mean and std.
//! The resize reproduces Pillow's fixed-point convolution so the pixels match exactly.

use std::path::Path;

use crate::error::{Context, bail, ensure};
use candle_core::{Device, Tensor};
use image::{DynamicImage, RgbImage};
use serde::Deserialize;

/// The `preprocessor_config.json` fields read; `size` and `crop_size` accept the dict forms.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ProcessorConfig {
    pub do_resize: bool,
    pub size: serde_json::Value,
    pub resample: u32,
    pub do_center_crop: bool,
    pub crop_size: serde_json::Value,
    pub do_rescale: bool,
    pub rescale_factor: f64,
    pub do_normalize: bool,
    pub image_mean: Vec<f32>,
    pub image_std: Vec<f32>,
}

impl Default for ProcessorConfig {
    /// transformers' CLIP defaults (OpenAI mean and std, 224), digits as transformers writes them.
    #[allow(clippy::excessive_precision)]
    fn default() -> Self {
        Self {
            do_resize: true,
            size: serde_json::json!({"shortest_edge": 224}),
            resample: 3,
            do_center_crop: true,
            crop_size: serde_json::json!({"height": 224, "width": 224}),
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: vec![0.48145466, 0.4578275, 0.40821073],
            image_std: vec![0.26862954, 0.26130258, 0.27577711],
        }
    }
}

/// How to resize, resolved from `size`.
#[derive(Debug, Clone, Copy)]
enum Resize {
    ShortestEdge(usize),
    Exact { height: usize, width: usize },
}

pub struct ClipImageProcessor {
    config: ProcessorConfig,
    resize: Resize,
    crop: (usize, usize),
}

fn field(v: &serde_json::Value, key: &str) -> Option<usize> {
    v.get(key).and_then(|x| x.as_u64()).map(|x| x as usize)
}

impl ClipImageProcessor {
    /// Read `preprocessor_config.json` from an `image_processor/` folder (or the file itself).
    pub fn from_path(path: &Path) -> crate::Result<Self> {
        let file = if path.is_dir() {
            path.join("preprocessor_config.json")
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let config: ProcessorConfig =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", file.display()))?;
        Self::new(config).with_context(|| format!("in {}", file.display()))
    }

    pub fn new(config: ProcessorConfig) -> crate::Result<Self> {
        ensure!(
            config.resample == 3,
            "image processor: resample {} is not supported: only 3 (bicubic)",
            config.resample
        );
        ensure!(
            config.image_mean.len() == 3 && config.image_std.len() == 3,
            "image processor: image_mean and image_std must have 3 values"
        );
        ensure!(
            config.image_std.iter().all(|&s| s > 0.0),
            "image processor: image_std values must be positive"
        );
        let resize = if let Some(n) = field(&config.size, "shortest_edge") {
            Resize::ShortestEdge(n)
        } else if let (Some(height), Some(width)) =
            (field(&config.size, "height"), field(&config.size, "width"))
        {
            Resize::Exact { height, width }
        } else if let Some(n) = config.size.as_u64() {
            Resize::ShortestEdge(n as usize)
        } else {
            bail!(
                "image processor: size {} must have shortest_edge or height and width",
                config.size
            );
        };
        let crop = match (
            field(&config.crop_size, "height"),
            field(&config.crop_size, "width"),
        ) {
            (Some(h), Some(w)) => (h, w),
            _ => match config.crop_size.as_u64() {
                Some(n) => (n as usize, n as usize),
                None => bail!(
                    "image processor: crop_size {} must have height and width",
                    config.crop_size
                ),
            },
        };
        Ok(Self {
            config,
            resize,
            crop,
        })
    }

    /// The resized `(height, width)` of an image: transformers' shortest-edge rule truncates the
    /// long side (`int(short_target * long / short)`).
    fn resized_size(&self, height: usize, width: usize) -> (usize, usize) {
        match self.resize {
            Resize::Exact { height, width } => (height, width),
            Resize::ShortestEdge(target) => {
                let (short, long) = (height.min(width), height.max(width));
                let new_long = (target as f64 * long as f64 / short as f64) as usize;
                if height <= width {
                    (target, new_long)
                } else {
                    (new_long, target)
                }
            }
        }
    }

    /// Images to `pixel_values` `(batch, 3, crop_h, crop_w)` f32.
    pub fn preprocess(&self, images: &[DynamicImage], device: &Device) -> crate::Result<Tensor> {
        ensure!(!images.is_empty(), "image processor: no images");
        let mut batch = Vec::with_capacity(images.len());
        for image in images {
            batch.push(self.preprocess_one(&image.to_rgb8(), device)?);
        }
        Ok(Tensor::stack(&batch, 0)?)
    }

    fn preprocess_one(&self, rgb: &RgbImage, device: &Device) -> crate::Result<Tensor> {
        let (w, h) = (rgb.width() as usize, rgb.height() as usize);
        ensure!(w > 0 && h > 0, "image processor: the image is empty");
        let mut image = rgb.clone();
        if self.config.do_resize {
            let (nh, nw) = self.resized_size(h, w);
            ensure!(
                nh > 0 && nw > 0,
                "image processor: image {w}x{h} resizes to nothing"
            );
            image = resize_bicubic_like_pil(&image, nw, nh);
        }
        let (mut h, mut w) = (image.height() as usize, image.width() as usize);
        let (mut top, mut left) = (0, 0);
        if self.config.do_center_crop {
            let (ch, cw) = self.crop;
            ensure!(
                ch <= h && cw <= w,
                "image processor: crop {cw}x{ch} is larger than the resized image {w}x{h}"
            );
            top = (h - ch) / 2;
            left = (w - cw) / 2;
            (h, w) = (ch, cw);
        }
        // Channel-first floats: rescale in float64 then round to float32, normalise in float32,
        // as transformers' numpy path does.
        let mut data = vec![0f32; 3 * h * w];
        for c in 0..3 {
            let (mean, std) = (self.config.image_mean[c], self.config.image_std[c]);
            for y in 0..h {
                for x in 0..w {
                    let p = image.get_pixel((left + x) as u32, (top + y) as u32)[c];
                    let mut v = if self.config.do_rescale {
                        (p as f64 * self.config.rescale_factor) as f32
                    } else {
                        p as f32
                    };
                    if self.config.do_normalize {
                        v = (v - mean) / std;
                    }
                    data[(c * h + y) * w + x] = v;
                }
            }
        }
        Ok(Tensor::from_vec(data, (3, h, w), device)?)
    }
}

/// Pillow's bicubic kernel (a = -0.5).
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Per output pixel: first input index, tap count, and fixed-point taps (Pillow's
/// `precompute_coeffs` + `normalize_coeffs_8bpc`; the support widens when shrinking).
fn coefficients(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = 2.0 * filter_scale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filter_scale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
            let w: Vec<f64> = (0..xmax)
                .map(|x| bicubic((x as f64 + xmin as f64 - center + 0.5) * ss))
                .collect();
            let total: f64 = w.iter().sum();
            let taps = w
                .iter()
                .map(|&k| {
                    let k = if total != 0.0 { k / total } else { k };
                    let f = k * (1u32 << PRECISION_BITS) as f64;
                    if f < 0.0 {
                        (f - 0.5) as i32
                    } else {
                        (f + 0.5) as i32
                    }
                })
                .collect();
            (xmin, taps)
        })
        .collect()
}

fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resize like Pillow's `Image.resize((w, h), BICUBIC)` on an RGB image: a horizontal pass over
/// only the rows the vertical pass needs, then a vertical pass, both in 22-bit fixed point.
pub fn resize_bicubic_like_pil(src: &RgbImage, out_w: usize, out_h: usize) -> RgbImage {
    let (in_w, in_h) = (src.width() as usize, src.height() as usize);
    let horizontal = coefficients(in_w, out_w);
    let vertical = coefficients(in_h, out_h);
    let need_h = out_w != in_w;
    let need_v = out_h != in_h;
    let (first_row, last_row) = if need_h {
        let first = vertical[0].0;
        let (lmin, ltaps) = &vertical[out_h - 1];
        (first, lmin + ltaps.len())
    } else {
        (0, in_h)
    };
    let round = 1i64 << (PRECISION_BITS - 1);
    // Horizontal pass into rows first_row..last_row.
    let rows = last_row - first_row;
    let mut temp = vec![0u8; rows * out_w * 3];
    let (temp_w, temp_rows) = if need_h {
        let raw = src.as_raw();
        for y in 0..rows {
            let row = &raw[(first_row + y) * in_w * 3..];
            for (xx, (xmin, taps)) in horizontal.iter().enumerate() {
                for c in 0..3 {
                    let mut acc = round;
                    for (i, &k) in taps.iter().enumerate() {
                        acc += row[(xmin + i) * 3 + c] as i64 * k as i64;
                    }
                    temp[(y * out_w + xx) * 3 + c] = clip8(acc);
                }
            }
        }
        (out_w, rows)
    } else {
        temp = src.as_raw().clone();
        (in_w, in_h)
    };
    if !need_v {
        return RgbImage::from_raw(temp_w as u32, temp_rows as u32, temp).expect("sized buffer");
    }
    let offset = if need_h { first_row } else { 0 };
    let mut out = vec![0u8; out_h * temp_w * 3];
    for (yy, (ymin, taps)) in vertical.iter().enumerate() {
        let ymin = ymin - offset;
        for x in 0..temp_w {
            for c in 0..3 {
                let mut acc = round;
                for (i, &k) in taps.iter().enumerate() {
                    acc += temp[((ymin + i) * temp_w + x) * 3 + c] as i64 * k as i64;
                }
                out[(yy * temp_w + x) * 3 + c] = clip8(acc);
            }
        }
    }
    RgbImage::from_raw(temp_w as u32, out_h as u32, out).expect("sized buffer")
}
