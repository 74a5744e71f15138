"""Convert the pre-trained face DCGAN of the PyPI package `gan-face-generate` 1.1.1 into a pdetraversal generator
folder (`hub_models.face_dcgan.FaceDCGAN`, diffusers' layout). No paper equation lives here.

The package ships its generator as `gan_face_generate/weights.tar`, a torch checkpoint `{"netG_state_dict": ...}`.
Install it without its dependencies (they include torchvision, which this project does not use) and never import it
(its modules import torchvision); the file is found through `importlib.util.find_spec`, which does not run the
package:

    python -m pip install --no-deps gan-face-generate==1.1.1
    python train/convert_face_dcgan.py --output-dir hub_models/face-dcgan

The checkpoint is read with `torch.load(weights_only=True)` only, so a pickle that holds anything but tensors and
plain containers is refused. Every key and shape is checked against FaceDCGAN's before anything is built. The
weights are stored in float16 by default (about 7 MB instead of 14; `hub_models.base` loads them as float32), and
the converted folder, loaded back strictly, is checked to decode as the original float32 network does on fixed
latents up to the rounding of the weights to the stored precision. The folder also gets samples.png and a README.md
card with the source, the licences, this command, the time taken and the measured numbers.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import pickle
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.func import jvp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hub_models import load_generator  # noqa: E402
from hub_models.base import GENERATOR_WEIGHTS  # noqa: E402
from hub_models.face_dcgan import FaceDCGAN  # noqa: E402  (registers the class for load_generator)
from pdetraversal.hub import CheckpointError  # noqa: E402
from train.flags import hardware  # noqa: E402

PACKAGE = "gan_face_generate"
PACKAGE_VERSION = "1.1.1"
WEIGHTS_FILE = "weights.tar"
STATE_KEY = "netG_state_dict"
CONFIG = {"latent_dim": 100, "channels": 3, "width": 64}  # nz, nc, ngf of the package's generator
DTYPES = {"float16": torch.float16, "float32": torch.float32}
GRID_ROWS, GRID_COLS, SAMPLE_SEED = 4, 8, 0
SAMPLE_COLOURS = 128  # a palette PNG of the grid is ~70 KB where full RGB is ~230 KB
CHECK_SEED, CHECK_NUM = 1, 64
# float32 arithmetic in a different order (our loaded copy against the reference) differs by a few ulps of [-1, 1].
SAME_WEIGHTS_ATOL = 1e-5


def package_weights() -> Path:
    """weights.tar inside the installed gan_face_generate package, found without importing it."""
    spec = importlib.util.find_spec(PACKAGE)
    for folder in list(spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / WEIGHTS_FILE
        if path.is_file():
            return path
    raise CheckpointError(f"{PACKAGE}/{WEIGHTS_FILE} not found: run `python -m pip install --no-deps "
                          f"gan-face-generate=={PACKAGE_VERSION}` or pass --weights PATH")


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """The generator's state dict from the checkpoint at `path`, its keys and shapes checked against FaceDCGAN's."""
    try:
        checkpoint = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        # torch's message is a page of advice; what it refused follows "WeightsUnpickler error:".
        text = str(e).split("WeightsUnpickler error:", 1)[-1].split("Check the documentation")[0]
        reason = " ".join(text.split()).split(". ")[0] or type(e).__name__
        raise CheckpointError(f"{path} is refused by torch.load(weights_only=True), it is not a checkpoint of "
                              f"plain tensors: {reason}") from None
    except (OSError, RuntimeError, EOFError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{path} is not a readable torch checkpoint: {first}") from None
    if not isinstance(checkpoint, dict) or STATE_KEY not in checkpoint:
        raise CheckpointError(f"{path} holds no '{STATE_KEY}' (a dict with it is what {PACKAGE} saves)")
    state = checkpoint[STATE_KEY]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: '{STATE_KEY}' is a {type(state).__name__}, not a dict of tensors")
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in FaceDCGAN(**CONFIG).state_dict().items()}
    for key, shape in expected.items():
        if key not in state:
            raise CheckpointError(f"{path}: '{STATE_KEY}' lacks the tensor '{key}' (expected shape {shape})")
        value = state[key]
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: '{key}' is a {type(value).__name__}, not a tensor")
        if tuple(value.shape) != shape:
            raise CheckpointError(f"{path}: '{key}' has shape {tuple(value.shape)}, expected {shape}")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{path}: '{key}' holds non-finite values")
    extra = sorted(str(k) for k in state if k not in expected)
    if extra:
        raise CheckpointError(f"{path}: '{STATE_KEY}' has the unexpected tensor '{extra[0]}'"
                              + (f" and {len(extra) - 1} more" if len(extra) > 1 else ""))
    return state


def reference_network(state: dict[str, torch.Tensor]) -> nn.Sequential:
    """The package's generator, rebuilt here layer by layer as its models.py lays it out, holding `state` in
    float32: the original the conversion is checked against (outputs in [-1, 1])."""
    nz, nc, ngf = CONFIG["latent_dim"], CONFIG["channels"], CONFIG["width"]
    net = nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(),
        nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(),
        nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(),
        nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(),
        nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh())
    net.load_state_dict({k.removeprefix("main."): v.float() if v.is_floating_point() else v
                         for k, v in state.items()})
    return net.eval()


def rounded(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """`state` with its floating tensors rounded to `dtype` and back to float32, as they are stored and loaded."""
    return {k: v.to(dtype).float() if v.is_floating_point() else v for k, v in state.items()}


def write_samples(gen: FaceDCGAN, path: Path) -> None:
    """A GRID_ROWS x GRID_COLS grid of decode(z), z ~ N(0, I) with seed SAMPLE_SEED, 2 white pixels apart, as a
    SAMPLE_COLOURS-colour palette PNG."""
    with torch.no_grad():
        x = gen.decode(gen.sample_latent(GRID_ROWS * GRID_COLS, seed=SAMPLE_SEED))
    tiles = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    gap, (h, w) = 2, tiles.shape[1:3]
    canvas = np.full((GRID_ROWS * (h + gap) + gap, GRID_COLS * (w + gap) + gap, 3), 255, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, GRID_COLS)
        canvas[gap + r * (h + gap): gap + r * (h + gap) + h, gap + c * (w + gap): gap + c * (w + gap) + w] = tile
    Image.fromarray(canvas).quantize(SAMPLE_COLOURS, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def decode_ms_per_image(gen: FaceDCGAN, n: int = 64, repeats: int = 3) -> float:
    z = gen.sample_latent(n, seed=2)
    with torch.no_grad():
        gen.decode(z)  # warm-up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            gen.decode(z)
            best = min(best, time.perf_counter() - start)
    return 1000 * best / n


def image_speed(gen: FaceDCGAN, n: int = 32, seed: int = 3) -> tuple[float, float]:
    """Mean and standard deviation over n prior draws of ‖J(z) v‖ / sqrt(#pixels) for a random unit direction v:
    the RMS pixel change per unit step in z, the quantity L_J (eq. 5-6) rewards and --jacobian-saturation caps."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, gen.latent_dim, generator=g)
    v = torch.randn(n, gen.latent_dim, generator=g)
    v = v / v.norm(dim=1, keepdim=True)
    _, jv = jvp(gen.decode, (z,), (v,))
    rms = jv.flatten(1).pow(2).mean(dim=1).sqrt()
    return float(rms.mean()), float(rms.std())


def write_card(out: Path, command: str, args, facts: dict) -> None:
    dtype = args.dtype
    card = f"""---
library_name: pdetraversal
license: other
license_name: digiface-1m-non-commercial-research
license_link: https://github.com/microsoft/DigiFace1M
tags:
- pdetraversal
- pdetraversal-generator
- gan
- dcgan
- faces
---

# Face DCGAN (pdetraversal generator), converted from gan-face-generate {PACKAGE_VERSION}

A DCGAN generator (`hub_models.face_dcgan.FaceDCGAN`, {facts['num_params']:,} parameters, latent dimension
{CONFIG['latent_dim']}, width {CONFIG['width']}) for colour 3x64x64 faces, a frozen generator for "Latent Traversals
in Generative Models as Potential Flows" (Song et al., ICML 2023, Sec. 3-4). `decode(z) = (G(z) + 1) / 2` maps
z ~ N(0, I) to images in [0, 1]. It has no encoder: traversals start from prior samples.

![{GRID_ROWS * GRID_COLS} samples decode(z), z ~ N(0, I), seed {SAMPLE_SEED}](samples.png)

(samples.png is stored with a {SAMPLE_COLOURS}-colour palette to keep it small.)

## Source and licences

- Weights: `gan_face_generate/{WEIGHTS_FILE}` of the PyPI package
  [`gan-face-generate` {PACKAGE_VERSION}](https://pypi.org/project/gan-face-generate/{PACKAGE_VERSION}/) by Chien Liu,
  home [chien-liu/DCGAN-PyTorch](https://github.com/chien-liu/DCGAN-PyTorch); file sha256
  `{facts['sha256']}`. Its code is MIT-licensed (Copyright (c) 2023 Chien Liu); the architecture is the PyTorch
  DCGAN tutorial's (Radford, Metz & Chintala 2016). The weights were converted, not retrained: same tensors under
  the same `main.<i>` keys, stored here in {dtype}.
- Training data: [DigiFace-1M](https://github.com/microsoft/DigiFace1M) (Bae et al., WACV 2023, Microsoft), 1.22M
  synthetic faces rendered from a 3D face model; the package's training script downloads its 720K-image part
  (10K identities x 72 images), resizes and centre-crops them to 64x64 and trains for up to 40 epochs (batch 512,
  Adam lr 2e-4, beta1 0.5); the batch-norm layers of these weights counted {facts['bn_batches']:,} training batches.
- DigiFace-1M's README says the dataset "can be used for non-commercial research" and is licensed under the
  LICENSE file of its repository. These weights were trained on it, so **use them for non-commercial research
  only**. Whether those terms legally reach a model trained on the images is not stated there; this card takes
  the cautious reading. The text of that LICENSE file was not checked when this card was written; read it
  before any use beyond non-commercial research. The conversion code is this repository's (Apache-2.0).

## Conversion

Command (from the repository root, after `python -m pip install --no-deps gan-face-generate=={PACKAGE_VERSION}`):

```
{command}
```

- time: {facts['seconds']:.1f} s on {hardware(args)} (load, check, save, reload, verify, samples, card)
- stored dtype: {dtype} (`{GENERATOR_WEIGHTS}`, {facts['file_bytes'] / 1e6:.2f} MB); `load_generator` returns
  float32 weights
- check on {CHECK_NUM} fixed latents (seed {CHECK_SEED}), images in [0, 1]: largest |difference| to the original
  float32 network {facts['max_diff']:.2e} (the rounding of the weights to {dtype}); to the original with its
  weights rounded the same way {facts['max_diff_rounded']:.2e} (float32 arithmetic only)

## Measured

| quantity | value |
|---|---|
| decode, ms per image (batch 64, CPU, {hardware(args)}) | {facts['decode_ms']:.2f} |
| RMS pixel change per unit step in z along a random direction, mean ± sd over 32 prior draws | {facts['speed'][0]:.4f} ± {facts['speed'][1]:.4f} |
| mean pixel value of the {GRID_ROWS * GRID_COLS} samples | {facts['mean_pixel']:.3f} |

The RMS pixel change is ‖J(z) v‖ / sqrt(3·64·64) for a unit v (J the Jacobian of decode). L_J of `train/fit.py`
rewards −0.1·tanh(RMS change / 0.1) at its default `--jacobian-saturation 0.1`, which saturates near an RMS change
of 0.1: in this linear estimate, a step of about 0.1 / {facts['speed'][0]:.4f} ≈ {0.1 / facts['speed'][0]:.1f} in z
along such a direction.

## Use

```python
from hub_models import load_generator
gen = load_generator("hub_models/face-dcgan")
images = gen.decode(gen.sample_latent(8, seed=0))   # (8, 3, 64, 64) in [0, 1]
W = gen.latent_weight()                              # (8192, 100): the first layer as a matrix, for SeFa
```
"""
    (out / "README.md").write_text(card, encoding="utf-8")


def convert(args, command: str) -> dict:
    start = time.perf_counter()
    source = Path(args.weights) if args.weights else package_weights()
    state = read_state(source)
    dtype = DTYPES[args.dtype]
    model = FaceDCGAN(**CONFIG)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    # nn.Module's cast: diffusers' ModelMixin.to warns about modules to keep in float32, and FaceDCGAN has none.
    nn.Module.to(model, dtype).save_pretrained(out)
    gen = load_generator(out)
    if any(p.dtype != torch.float32 for p in gen.parameters()):
        raise CheckpointError(f"{out}: the reloaded generator is not float32")
    z = torch.randn(CHECK_NUM, CONFIG["latent_dim"], generator=torch.Generator().manual_seed(CHECK_SEED))
    with torch.no_grad():
        ours = gen.decode(z)
        original = (reference_network(state)(z.view(*z.shape, 1, 1)) + 1) / 2
        original_rounded = (reference_network(rounded(state, dtype))(z.view(*z.shape, 1, 1)) + 1) / 2
    max_diff = float((ours - original).abs().max())
    max_diff_rounded = float((ours - original_rounded).abs().max())
    if max_diff_rounded > SAME_WEIGHTS_ATOL:
        raise CheckpointError(f"{out}: the converted generator decodes {max_diff_rounded:.2e} away from the "
                              f"original with the same {args.dtype} weights (allowed {SAME_WEIGHTS_ATOL:.0e})")
    write_samples(gen, out / "samples.png")
    with torch.no_grad():
        mean_pixel = float(gen.decode(gen.sample_latent(GRID_ROWS * GRID_COLS, seed=SAMPLE_SEED)).mean())
    facts = {
        "num_params": sum(p.numel() for p in gen.parameters()),
        "sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        "bn_batches": int(state["main.1.num_batches_tracked"]),
        "file_bytes": (out / GENERATOR_WEIGHTS).stat().st_size,
        "max_diff": max_diff, "max_diff_rounded": max_diff_rounded,
        "decode_ms": decode_ms_per_image(gen), "speed": image_speed(gen), "mean_pixel": mean_pixel,
    }
    facts["seconds"] = time.perf_counter() - start
    write_card(out, command, args, facts)
    return facts


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", help=f"the checkpoint to convert (default: {PACKAGE}/{WEIGHTS_FILE} of the "
                                          f"installed package)")
    parser.add_argument("--output-dir", required=True, help="folder for config.json, the weights, samples.png, README.md")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float16",
                        help="precision the weights are stored in (default float16)")
    parser.add_argument("--num-threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--hardware", help="hardware line for the card (default: CPU cores and torch threads)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    torch.set_num_threads(args.num_threads)
    command = "python train/convert_face_dcgan.py " + " ".join(shlex.quote(a) for a in argv)
    try:
        facts = convert(args, command)
    except CheckpointError as e:
        raise SystemExit(f"error: {e}") from None
    print(f"wrote {args.output_dir}: {facts['num_params']:,} parameters in {args.dtype} "
          f"({facts['file_bytes'] / 1e6:.2f} MB), max |diff| to the original {facts['max_diff']:.2e}, "
          f"decode {facts['decode_ms']:.2f} ms/image, {facts['seconds']:.1f} s")
    return facts


if __name__ == "__main__":
    main()
