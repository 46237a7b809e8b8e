"""dit-bench, diffusers side: one WanTransformer3DModel forward on the same weights and inputs as
benches/dit.rs (12 heads x 128, ffn 8960, text_dim 4096, 2 layers, in/out 16; latents
[1,16,5,32,32], timestep [500], text [1,512,4096]), f32, 2 threads.

First run writes random weights to /tmp/dit-bench/model/ (save_pretrained) and the inputs to
/tmp/dit-bench/inputs.safetensors, which the Rust bench reads too. Run by hand (never in CI):
  /usr/bin/time -v /tmp/ref/bin/python crates/gallop-wan/benches/dit_diffusers.py [--repeat 3]
Prints load and forward seconds (wall, and CPU of all threads); writes the sample to /tmp/dit-bench/diffusers_sample.safetensors.
"""

import argparse
import os
import time

import torch
from diffusers import WanTransformer3DModel
from safetensors.torch import load_file, save_file

ROOT = "/tmp/dit-bench"
CONFIG = dict(
    patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
    text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=2, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6,
)  # fmt: skip


def prepare():
    model_dir = os.path.join(ROOT, "model")
    if not os.path.exists(os.path.join(model_dir, "config.json")):
        torch.manual_seed(0)
        WanTransformer3DModel(**CONFIG).save_pretrained(model_dir)
    inputs = os.path.join(ROOT, "inputs.safetensors")
    if not os.path.exists(inputs):
        g = torch.Generator().manual_seed(1)
        save_file(
            {
                "hidden_states": torch.randn(1, 16, 5, 32, 32, generator=g),
                "timestep": torch.tensor([500.0]),
                "encoder_hidden_states": torch.randn(1, 512, 4096, generator=g),
            },
            inputs,
        )
    return model_dir, inputs


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(2)
    model_dir, inputs_path = prepare()
    start = time.time()
    # from_pretrained needs `accelerate` for this class (keep_in_fp32_modules), which the reference
    # venv lacks; this is the plain path it would take: build from config, load the state dict.
    model = WanTransformer3DModel.from_config(WanTransformer3DModel.load_config(model_dir)).eval()
    weights = os.path.join(model_dir, "diffusion_pytorch_model.safetensors")
    model.load_state_dict(load_file(weights), assign=True)
    print(f"load {time.time() - start:.2f}s")
    inputs = load_file(inputs_path)
    for _ in range(args.repeat):
        start, cpu = time.time(), time.process_time()
        with torch.no_grad():
            sample = model(**inputs, return_dict=False)[0]
        print(f"forward {time.time() - start:.3f}s (cpu {time.process_time() - cpu:.3f}s)")
    save_file({"sample": sample.contiguous()}, os.path.join(ROOT, "diffusers_sample.safetensors"))


if __name__ == "__main__":
    main()
