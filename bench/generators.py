"""The README's table of generators: latent size, image size, parameters, CPU decode time per image, source, licence.
No paper equation lives here.

    python bench/generators.py            # every shipped generator (hub_models/*/ in diffusers' layout) + the diffusion ones
    python bench/generators.py --quick    # one timing round

Shipped generators are loaded from their folders. The diffusion generators are not shipped (their real weights are
hundreds of MB on the Hub): they are timed with the architecture of the repo they are meant for, built from its
published UNet config with random weights, which costs the same time per decode as the real weights. Timing: one
torch thread, batch 8, the median of interleaved rounds after a warm-up; the machine is shared, so read the numbers
as sizes, not as a benchmark.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hub_models import REGISTRY, ConsistencyGenerator, DDIMGenerator, load_generator  # noqa: E402

# google/ddpm-cifar10-32's unet/config.json (Apache-2.0, 35.7M parameters, 143 MB)
DDPM_CIFAR10_UNET = dict(sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
                         block_out_channels=(128, 256, 256, 256), norm_eps=1e-6, freq_shift=1, flip_sin_to_cos=False,
                         downsample_padding=0,
                         down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                         up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"))


def diffusion_generators():
    """(name, generator, source, licence) for the pipeline generators, at the real architectures' sizes."""
    from diffusers import CMStochasticIterativeScheduler, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    ddim = DDIMGenerator(UNet2DModel(**DDPM_CIFAR10_UNET), DDPMScheduler(num_train_timesteps=1000), 10)
    yield ("DDIM, 10 steps (`google/ddpm-cifar10-32`'s UNet)", ddim, "Hub: google/ddpm-cifar10-32 (not shipped)",
           "apache-2.0")
    torch.manual_seed(0)
    cm = ConsistencyGenerator(UNet2DModel(**DDPM_CIFAR10_UNET), CMStochasticIterativeScheduler())
    yield ("consistency model, 1 step (a UNet of that size)", cm,
           "Hub: openai/diffusers-cd_imagenet64_l2 is 296M parameters at 64x64 (not shipped)", "mit")


def shipped():
    for config in sorted((ROOT / "hub_models").glob("*/config.json")):
        if json.loads(config.read_text()).get("_class_name") in REGISTRY:
            card = (config.parent / "README.md").read_text(encoding="utf-8")
            licence = next((line.split(":", 1)[1].strip() for line in card.splitlines() if line.startswith("license:")), "?")
            yield f"`hub_models/{config.parent.name}`", load_generator(config.parent), "shipped", licence


def decode_seconds(gen, rounds: int) -> float:
    z = gen.sample_latent(8, seed=0)
    times = []
    with torch.no_grad():
        gen.decode(z)  # warm-up
        for _ in range(rounds):
            t = time.perf_counter()
            gen.decode(z)
            times.append((time.perf_counter() - t) / len(z))
    return statistics.median(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one timing round instead of five")
    p.add_argument("--no-diffusion", action="store_true", help="leave out the diffusion generators (slow to time)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = list(shipped()) + ([] if args.no_diffusion else list(diffusion_generators()))
    print("| generator | class | latent dim | image | parameters | CPU decode / image | source | licence |")
    print("|---|---|---|---|---|---|---|---|")
    for name, gen, source, licence in rows:
        gen = gen.eval().requires_grad_(False)
        seconds = decode_seconds(gen, 1 if args.quick else 5)
        shape = tuple(gen.decode(gen.sample_latent(1, seed=0)).shape[1:])
        params = sum(p.numel() for p in gen.parameters())
        ms = f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"
        print(f"| {name} | `{type(gen).__name__}` | {gen.latent_dim} | {'x'.join(map(str, shape))} | {params:,} | "
              f"{ms} | {source} | {licence} |", flush=True)


if __name__ == "__main__":
    main()
