//! What each recipe adds to the noisy latents before the transformer sees them, and which
//! timesteps it passes.

use crate::error::{Context, ensure};
use candle_core::{DType, Tensor};
use image::RgbImage;

use super::{GenerateArgs, WanPipeline};
use crate::model_dir::PipelineClass;

/// An RGB image -> `[1, 3, H, W]` f32 in [-1, 1] (`x / 255 * 2 - 1`, as diffusers' processor).
pub fn image_to_tensor(image: &RgbImage, device: &candle_core::Device) -> crate::Result<Tensor> {
    let (w, h) = image.dimensions();
    let data: Vec<f32> = image
        .as_raw()
        .iter()
        .map(|&v| 2.0 * (v as f32 / 255.0) - 1.0)
        .collect();
    Ok(Tensor::from_vec(data, (h as usize, w as usize, 3), device)?
        .permute((2, 0, 1))?
        .unsqueeze(0)?
        .contiguous()?)
}

pub(super) enum Condition {
    /// Text to video: the latents alone; one timestep per sample, or per token (TI2V-5B).
    Text { per_token: Option<usize> },
    /// TI2V-5B: the clean first-frame latent replaces latent frame 0 (`mask` 0 there), whose
    /// tokens get timestep 0.
    FirstFrame { condition: Tensor, mask: Tensor },
    /// Wan2.1-I2V / A14B: `[mask (4 channels), first-frame video latents]` concatenated to the
    /// latents along channels.
    Channels { condition: Tensor },
    /// VACE: control hints from the references; the reference latent frames are dropped at the end.
    Vace {
        control: Tensor,
        scale: Tensor,
        references: usize,
    },
}

impl Condition {
    pub(super) fn prepare(pipe: &WanPipeline, args: &GenerateArgs) -> crate::Result<Self> {
        let [_, _, frames, lh, lw] = pipe.latent_shape(args.height, args.width, args.num_frames, 0);
        let (_, ph, pw) = pipe.transformer.config().patch();
        let tokens_per_frame = (lh / ph) * (lw / pw);
        let class = pipe.index.class;
        ensure!(
            class == PipelineClass::Vace || args.reference_images.is_empty(),
            "reference images need a WanVACEPipeline checkpoint; this one is {class:?}"
        );
        if class == PipelineClass::Vace {
            ensure!(
                args.image.is_none(),
                "a VACE checkpoint takes reference images, not a first-frame image"
            );
            let (control, scale) = super::vace::control(
                pipe,
                &args.reference_images,
                args.leading_frames.as_ref(),
                (args.height, args.width, args.num_frames),
                args.conditioning_scale,
            )?;
            return Ok(Self::Vace {
                control,
                scale,
                references: args.reference_images.len(),
            });
        }
        if class != PipelineClass::ImageToVideo {
            ensure!(
                args.image.is_none(),
                "this checkpoint is a {class:?} pipeline and takes no first-frame image"
            );
            return Ok(Self::Text {
                per_token: pipe
                    .index
                    .expand_timesteps
                    .then_some(frames * tokens_per_frame),
            });
        }
        let image = args
            .image
            .as_ref()
            .context("image: an image-to-video checkpoint needs the first frame")?
            .to_dtype(DType::F32)?;
        ensure!(
            image.dims() == [1, 3, args.height, args.width],
            "image must be [1, 3, {}, {}] (the video size), got {:?}",
            args.height,
            args.width,
            image.dims()
        );
        let image = image.unsqueeze(2)?; // [1, 3, 1, H, W]
        let device = image.device().clone();
        if pipe.index.expand_timesteps {
            let latent = pipe.vae.encode(&image)?;
            let condition = pipe.vae.normalize_latents(&latent)?;
            let mut mask = vec![1f32; frames * lh * lw];
            mask[..lh * lw].fill(0.0);
            let mask = Tensor::from_vec(mask, (1, 1, frames, lh, lw), &device)?;
            return Ok(Self::FirstFrame { condition, mask });
        }
        // The first frame followed by black (zero) frames, encoded as one video.
        let rest = Tensor::zeros(
            (1, 3, args.num_frames - 1, args.height, args.width),
            DType::F32,
            &device,
        )?;
        let video = Tensor::cat(&[&image, &rest], 2)?;
        let latent = pipe.vae.normalize_latents(&pipe.vae.encode(&video)?)?;
        // Mask: all 4 channels 1 on latent frame 0 (its 4 pixel frames are the given image's
        // repeats), 0 elsewhere.
        let t = pipe.temporal_factor();
        let mut mask = vec![0f32; t * frames * lh * lw];
        for c in 0..t {
            let start = c * frames * lh * lw;
            mask[start..start + lh * lw].fill(1.0);
        }
        let mask = Tensor::from_vec(mask, (1, t, frames, lh, lw), &device)?;
        Ok(Self::Channels {
            condition: Tensor::cat(&[&mask, &latent], 1)?,
        })
    }

    /// The transformer's `hidden_states` and `timestep` at step timestep `t`.
    pub(super) fn model_input(&self, latents: &Tensor, t: f32) -> crate::Result<(Tensor, Tensor)> {
        let device = latents.device();
        Ok(match self {
            Self::Text { per_token: None } | Self::Vace { .. } => {
                (latents.clone(), Tensor::new(&[t], device)?)
            }
            Self::Text { per_token: Some(n) } => {
                (latents.clone(), Tensor::full(t, (1, *n), device)?)
            }
            Self::FirstFrame { condition, mask } => {
                let input = self.blend(latents, condition, mask)?;
                // Per token: the mask at each token's top-left pixel times t (0 on frame 0).
                let (_, _, f, h, w) = mask.dims5()?;
                let step = mask
                    .i_tokens(f, h, w)?
                    .affine(t as f64, 0.0)?
                    .unsqueeze(0)?;
                (input, step)
            }
            Self::Channels { condition } => (
                Tensor::cat(&[latents, condition], 1)?,
                Tensor::new(&[t], device)?,
            ),
        })
    }

    /// VACE's control input and per-layer scale.
    pub(super) fn control(&self) -> Option<(&Tensor, &Tensor)> {
        match self {
            Self::Vace { control, scale, .. } => Some((control, scale)),
            _ => None,
        }
    }

    /// The latents the loop ends with, the clean first frame blended back in for TI2V-5B.
    pub(super) fn finish(&self, latents: Tensor) -> crate::Result<Tensor> {
        match self {
            Self::FirstFrame { condition, mask } => self.blend(&latents, condition, mask),
            Self::Vace { references, .. } => {
                let frames = latents.dim(2)?;
                Ok(latents.narrow(2, *references, frames - references)?)
            }
            _ => Ok(latents),
        }
    }

    /// `(1 - mask) * condition + mask * latents`.
    fn blend(&self, latents: &Tensor, condition: &Tensor, mask: &Tensor) -> crate::Result<Tensor> {
        let keep = mask.affine(-1.0, 1.0)?;
        Ok(condition
            .broadcast_mul(&keep)?
            .add(&latents.broadcast_mul(mask)?)?)
    }
}

trait TokenMask {
    /// `mask[0, 0, :, ::2, ::2]` flattened: one value per (1, 2, 2) patch.
    fn i_tokens(&self, f: usize, h: usize, w: usize) -> candle_core::Result<Tensor>;
}

impl TokenMask for Tensor {
    fn i_tokens(&self, f: usize, h: usize, w: usize) -> candle_core::Result<Tensor> {
        let values = self.flatten_all()?.to_vec1::<f32>()?;
        let mut out = Vec::with_capacity(f * h.div_ceil(2) * w.div_ceil(2));
        for t in 0..f {
            for y in (0..h).step_by(2) {
                for x in (0..w).step_by(2) {
                    out.push(values[(t * h + y) * w + x]);
                }
            }
        }
        let n = out.len();
        Tensor::from_vec(out, n, self.device())
    }
}
