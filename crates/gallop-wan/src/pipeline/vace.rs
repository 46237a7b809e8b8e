//! VACE reference-to-video conditioning (diffusers' `WanVACEPipeline` with `reference_images`,
//! and optionally a control video whose first frames are given): each reference is fitted on a
//! white canvas at the video size, VAE-encoded as one frame and prepended in time to the latents
//! of the control video; the mask is 0 on reference frames and on given frames, 1 on the frames
//! to generate. A video with leading frames given and the rest empty (zero, mask 1) is VACE's
//! video extension, which chained windows use to continue the previous window.

use crate::error::ensure;
use candle_core::{DType, Device, Tensor};

use super::WanPipeline;

/// The VACE control input `[1, 2z + s*s, refs + T, h, w]` and its per-layer scale. `leading`
/// (`[1, 3, k, H, W]` in [-1, 1]) are the video's first k frames, kept (mask 0); without it the
/// control video is empty.
pub(super) fn control(
    pipe: &WanPipeline,
    references: &[Tensor],
    leading: Option<&Tensor>,
    (height, width, num_frames): (usize, usize, usize),
    conditioning_scale: f64,
) -> crate::Result<(Tensor, Tensor)> {
    let device = pipe.device.clone();
    let vae = &pipe.vae;
    let z = vae.config().z_dim;
    let s = vae.config().scale_factor_spatial;
    let known = leading.map_or(Ok(0), |l| l.dim(2))?;
    ensure!(
        known < num_frames,
        "leading frames ({known}) must be fewer than the video's {num_frames}"
    );
    // diffusers: inactive = video * (1 - mask), reactive = video * mask. The frames to make are
    // empty (zero), so the reactive half is the empty video's latents and the inactive half
    // holds the given frames.
    let empty = Tensor::zeros((1, 3, num_frames, height, width), DType::F32, &device)?;
    let inactive = match leading {
        Some(frames) => {
            ensure!(
                frames.dims()[..2] == [1, 3] && frames.dims()[3..] == [height, width],
                "leading frames must be [1, 3, k, {height}, {width}], got {:?}",
                frames.dims()
            );
            let rest = empty.narrow(2, known, num_frames - known)?;
            Tensor::cat(&[&frames.to_dtype(DType::F32)?, &rest], 2)?
        }
        None => empty.clone(),
    };
    let reactive = vae.normalize_latents(&vae.encode(&empty)?)?;
    let inactive = match leading {
        Some(_) => vae.normalize_latents(&vae.encode(&inactive)?)?,
        None => reactive.clone(),
    };
    let mut latents = Tensor::cat(&[&inactive, &reactive], 1)?;
    // Each reference goes in front of what is there, so the last reference ends up first.
    for reference in references {
        let canvas = fit_on_white(reference, height, width)?.unsqueeze(2)?;
        let encoded = vae.normalize_latents(&vae.encode(&canvas)?)?;
        let padded = Tensor::cat(&[&encoded, &encoded.zeros_like()?], 1)?;
        latents = Tensor::cat(&[&padded, &latents], 2)?;
    }
    let (_, _, frames, h, w) = latents.dims5()?;
    let refs = references.len();
    let mut mask = vec![1f32; s * s * frames * h * w];
    for c in 0..s * s {
        let channel = &mut mask[c * frames * h * w..(c + 1) * frames * h * w];
        for (f, values) in channel.chunks_mut(h * w).enumerate() {
            if f < refs || leading_frame_kept(f - refs, frames - refs, num_frames, known) {
                values.fill(0.0);
            }
        }
    }
    let mask = Tensor::from_vec(mask, (1, s * s, frames, h, w), &device)?;
    let control = Tensor::cat(&[&latents, &mask], 1)?;
    let cfg = pipe.transformer.config();
    ensure!(
        2 * z + s * s == cfg.vace_in_channels,
        "the VACE transformer takes vace_in_channels = {} but the VAE gives {} (2 x z_dim {z} + {s}x{s} mask)",
        cfg.vace_in_channels,
        2 * z + s * s
    );
    let layers = cfg.vace_layers.len();
    let scale = Tensor::from_vec(vec![conditioning_scale as f32; layers], layers, &device)?;
    Ok((control, scale))
}

/// Whether latent frame `j` of `latent_frames` is kept when the first `known` of `num_frames`
/// pixel frames are given: diffusers downsamples the pixel mask in time with torch's
/// `nearest-exact`, so latent frame j takes pixel frame floor((j + 0.5) * num_frames / latent_frames).
fn leading_frame_kept(j: usize, latent_frames: usize, num_frames: usize, known: usize) -> bool {
    let source = ((j as f64 + 0.5) * num_frames as f64 / latent_frames as f64).floor() as usize;
    source.min(num_frames - 1) < known
}

/// `[1, 3, h, w]` in [-1, 1] scaled to fit `height` x `width` (aspect kept, bilinear as torch's
/// `interpolate(mode="bilinear", align_corners=False)`), centred on white. Returns `[1, 3, H, W]`.
pub fn fit_on_white(image: &Tensor, height: usize, width: usize) -> crate::Result<Tensor> {
    let (_, c, h, w) = image.dims4()?;
    ensure!(c == 3, "reference image must have 3 channels, got {c}");
    let scale = f64::min(height as f64 / h as f64, width as f64 / w as f64);
    let (nh, nw) = ((h as f64 * scale) as usize, (w as f64 * scale) as usize);
    ensure!(
        nh >= 1 && nw >= 1,
        "reference image {w}x{h} is too thin to fit {width}x{height}"
    );
    let src = image
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let resized = bilinear(&src, c, h, w, nh, nw);
    let (top, left) = ((height - nh) / 2, (width - nw) / 2);
    let mut canvas = vec![1f32; c * height * width];
    for ch in 0..c {
        for y in 0..nh {
            let dst = (ch * height + top + y) * width + left;
            let from = (ch * nh + y) * nw;
            canvas[dst..dst + nw].copy_from_slice(&resized[from..from + nw]);
        }
    }
    Ok(Tensor::from_vec(canvas, (1, c, height, width), &Device::Cpu)?.to_device(image.device())?)
}

/// Source index and weight of torch's bilinear (align_corners=False) along one axis, in f32.
fn taps(out: usize, input: usize) -> Vec<(usize, usize, f32)> {
    let scale = input as f32 / out as f32;
    (0..out)
        .map(|d| {
            let src = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
            let i0 = src as usize;
            let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
            (i0, i1, src - i0 as f32)
        })
        .collect()
}

fn bilinear(src: &[f32], c: usize, h: usize, w: usize, nh: usize, nw: usize) -> Vec<f32> {
    let (ys, xs) = (taps(nh, h), taps(nw, w));
    let mut out = Vec::with_capacity(c * nh * nw);
    for ch in 0..c {
        let plane = &src[ch * h * w..(ch + 1) * h * w];
        for &(y0, y1, ly) in &ys {
            for &(x0, x1, lx) in &xs {
                let top = (1.0 - lx) * plane[y0 * w + x0] + lx * plane[y0 * w + x1];
                let bottom = (1.0 - lx) * plane[y1 * w + x0] + lx * plane[y1 * w + x1];
                out.push((1.0 - ly) * top + ly * bottom);
            }
        }
    }
    out
}
