"""vae-bench, diffusers side: time AutoencoderKLWan on the same weights and shapes as benches/vae.rs.

First run writes random weights of a published config to /tmp/vae-bench/<name>/ (save_pretrained),
which the Rust bench loads too. Run by hand (never in CI), 2 threads:
  /usr/bin/time -v /tmp/ref/bin/python crates/gallop-wan/benches/vae_diffusers.py \
      --model-dir /tmp/vae-bench/wan21 --latent 16,2,16,16 [--tiled] [--encode] [--repeat 3]
"""

import argparse
import os
import time

import torch
from diffusers import AutoencoderKLWan

CONFIGS = {
    "wan21": dict(),  # diffusers' defaults are the Wan2.1 VAE
    "wan22": dict(
        base_dim=160, decoder_base_dim=256, z_dim=48, is_residual=True, in_channels=12, out_channels=12,
        patch_size=2, scale_factor_spatial=16, latents_mean=[0.0] * 48, latents_std=[1.0] * 48,
    ),
}  # fmt: skip


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model-dir", default="/tmp/vae-bench/wan21")
    p.add_argument("--latent", default="16,2,16,16")
    p.add_argument("--tiled", action="store_true")
    p.add_argument("--encode", action="store_true")
    p.add_argument("--repeat", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(2)
    if not os.path.exists(os.path.join(args.model_dir, "config.json")):
        torch.manual_seed(0)
        AutoencoderKLWan(**CONFIGS[os.path.basename(args.model_dir)]).save_pretrained(args.model_dir)
    start = time.time()
    vae = AutoencoderKLWan.from_pretrained(args.model_dir, torch_dtype=torch.float32).eval()
    print(f"load {time.time() - start:.2f}s")
    if args.tiled:
        vae.enable_tiling()
    z, t, h, w = (int(v) for v in args.latent.split(","))
    s = vae.config.scale_factor_spatial
    for run in range(args.repeat):
        start = time.time()
        with torch.no_grad():
            if args.encode:
                x = torch.rand(1, 3, 1 + 4 * (t - 1), h * s, w * s) * 2 - 1
                shape = vae.encode(x).latent_dist.mode().shape
            else:
                shape = vae.decode(torch.randn(1, z, t, h, w)).sample.shape
        what = "encode" if args.encode else "decode"
        print(f"run {run}: {what} latent [1,{z},{t},{h},{w}] -> {list(shape)} tiled={args.tiled} "
              f"{time.time() - start:.3f}s")


if __name__ == "__main__":
    main()
