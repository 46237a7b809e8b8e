//! Spatially tiled encode and decode, as diffusers' `tiled_encode` / `tiled_decode`: overlapping
//! tiles run separately (each with its own time cache), then each tile is linearly blended into
//! the already-blended tiles above and to its left, and the stride-sized corners are joined.

use candle_core::{Result, Tensor};

use super::conv::FeatCache;
use super::{AutoencoderKLWan, channels_major, frames_major, unpatchify};

/// Tile sizes in sample pixels (diffusers' `tile_sample_min_*` / `tile_sample_stride_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TileConfig {
    pub min_height: usize,
    pub min_width: usize,
    pub stride_height: usize,
    pub stride_width: usize,
}

impl Default for TileConfig {
    /// diffusers' defaults: 256 px tiles every 192 px (64 px blended).
    fn default() -> Self {
        Self {
            min_height: 256,
            min_width: 256,
            stride_height: 192,
            stride_width: 192,
        }
    }
}

/// Frames-major patchified sample `[B, F, C, H, W]` -> frames-major moments `[B, T, 2z, h, w]`.
/// Tiles are laid out in the patchified frame, as diffusers does.
pub(super) fn encode(vae: &AutoencoderKLWan, x: &Tensor, tiles: &TileConfig) -> Result<Tensor> {
    let (_, _, _, height, width) = x.dims5()?;
    let ratio = vae.config.scale_factor_spatial / vae.config.patch();
    let (latent_h, latent_w) = (height / ratio, width / ratio);
    let (min_h, min_w) = (tiles.min_height / ratio, tiles.min_width / ratio);
    let (stride_h, stride_w) = (tiles.stride_height / ratio, tiles.stride_width / ratio);

    let mut rows = Vec::new();
    for i in (0..height).step_by(tiles.stride_height) {
        let mut row = Vec::new();
        for j in (0..width).step_by(tiles.stride_width) {
            let tile = crop(x, i, tiles.min_height, j, tiles.min_width)?;
            row.push(vae.encode_frames(&tile)?);
        }
        rows.push(row);
    }
    let joined = blend_and_join(rows, min_h - stride_h, min_w - stride_w, stride_h, stride_w)?;
    crop(&joined, 0, latent_h, 0, latent_w)
}

/// Latents `[B, z, T, h, w]` -> sample `[B, 3, F, H, W]`, clamped.
pub(super) fn decode(
    vae: &AutoencoderKLWan,
    latents: &Tensor,
    tiles: &TileConfig,
) -> crate::Result<Tensor> {
    let z = frames_major(latents)?;
    let (_, frames, _, height, width) = z.dims5()?;
    let s = vae.config.scale_factor_spatial;
    let p = vae.config.patch();
    let (min_h, min_w) = (tiles.min_height / s, tiles.min_width / s);
    let (stride_h, stride_w) = (tiles.stride_height / s, tiles.stride_width / s);
    // The decoder's output is still patchified: its tiles, strides and blends are 1/p of pixels.
    let (out_h, out_w) = (height * s / p, width * s / p);
    let (sample_stride_h, sample_stride_w) = (tiles.stride_height / p, tiles.stride_width / p);
    let blend_h = tiles.min_height / p - sample_stride_h;
    let blend_w = tiles.min_width / p - sample_stride_w;

    let mut rows = Vec::new();
    for i in (0..height).step_by(stride_h) {
        let mut row = Vec::new();
        for j in (0..width).step_by(stride_w) {
            let tile = crop(&z, i, min_h, j, min_w)?;
            let mut cache = FeatCache::new();
            let mut decoded = Vec::with_capacity(frames);
            for k in 0..frames {
                decoded.push(vae.decode_chunk(&tile.narrow(1, k, 1)?, &mut cache, k == 0)?);
            }
            row.push(Tensor::cat(&decoded, 1)?);
        }
        rows.push(row);
    }
    let joined = blend_and_join(rows, blend_h, blend_w, sample_stride_h, sample_stride_w)?;
    let out = crop(&joined, 0, out_h, 0, out_w)?;
    let out = unpatchify(&channels_major(&out)?, p)?;
    Ok(out.clamp(-1f32, 1f32)?)
}

/// Blend every tile into its (already blended) upper and left neighbours, keep its
/// `keep_h x keep_w` corner, and join the corners. Tiles are `[B, T, C, h, w]`.
fn blend_and_join(
    mut rows: Vec<Vec<Tensor>>,
    blend_h: usize,
    blend_w: usize,
    keep_h: usize,
    keep_w: usize,
) -> Result<Tensor> {
    let mut joined_rows = Vec::with_capacity(rows.len());
    for i in 0..rows.len() {
        let mut kept = Vec::with_capacity(rows[i].len());
        for j in 0..rows[i].len() {
            let mut tile = rows[i][j].clone();
            if i > 0 {
                tile = blend(&rows[i - 1][j], &tile, blend_h, 3)?;
            }
            if j > 0 {
                tile = blend(&rows[i][j - 1], &tile, blend_w, 4)?;
            }
            let (_, _, _, h, w) = tile.dims5()?;
            kept.push(
                tile.narrow(3, 0, keep_h.min(h))?
                    .narrow(4, 0, keep_w.min(w))?,
            );
            rows[i][j] = tile;
        }
        joined_rows.push(Tensor::cat(&kept, 4)?);
    }
    Tensor::cat(&joined_rows, 3)
}

/// The first `extent` rows (or columns) of `b` fade in from the last `extent` of `a`:
/// `a[-extent + y] * (1 - y/extent) + b[y] * (y/extent)`.
fn blend(a: &Tensor, b: &Tensor, extent: usize, dim: usize) -> Result<Tensor> {
    let extent = extent.min(a.dim(dim)?).min(b.dim(dim)?);
    if extent == 0 {
        return Ok(b.clone());
    }
    let mut shape = vec![1usize; 5];
    shape[dim] = extent;
    let ramp: Vec<f32> = (0..extent)
        .map(|y| (y as f64 / extent as f64) as f32)
        .collect();
    let fade_in = Tensor::from_vec(ramp, shape, b.device())?.to_dtype(b.dtype())?;
    let fade_out = (1.0 - &fade_in)?;
    let a_tail = a.narrow(dim, a.dim(dim)? - extent, extent)?;
    let b_head = b.narrow(dim, 0, extent)?;
    let mixed = (a_tail.broadcast_mul(&fade_out)? + b_head.broadcast_mul(&fade_in)?)?;
    let rest = b.narrow(dim, extent, b.dim(dim)? - extent)?;
    Tensor::cat(&[&mixed, &rest], dim)
}

/// `x[.., top..top+height, left..left+width]`, clipped to the frame like a Python slice.
fn crop(x: &Tensor, top: usize, height: usize, left: usize, width: usize) -> Result<Tensor> {
    let (_, _, _, h, w) = x.dims5()?;
    let height = height.min(h - top);
    let width = width.min(w - left);
    x.narrow(3, top, height)?.narrow(4, left, width)
}
