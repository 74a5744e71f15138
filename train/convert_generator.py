"""Convert a generator folder from pdetraversal's first layout (config.json naming `generator_class`, weights in
model.safetensors, written through huggingface_hub's PyTorchModelHubMixin) to diffusers' layout, which
`hub_models.load_generator` reads (config.json with `_class_name`, weights in diffusion_pytorch_model.safetensors;
see hub_models/base.py). No paper equation lives here.

The weights are not re-encoded: the tensors are read and written back under the same keys, and the converted folder
is loaded strictly and checked to decode exactly as the old weights do before the old files are removed.

    python train/convert_generator.py hub_models/dsprites-vae [more folders]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import safetensors.torch
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hub_models import REGISTRY, load_generator  # noqa: E402
from hub_models.base import GENERATOR_CONFIG, GENERATOR_WEIGHTS  # noqa: E402
from pdetraversal.hub import CheckpointError, load_state_strict  # noqa: E402

OLD_WEIGHTS = "model.safetensors"


def convert(folder: Path) -> str:
    config_file, old = folder / GENERATOR_CONFIG, folder / OLD_WEIGHTS
    if not config_file.is_file() or not old.is_file():
        raise CheckpointError(f"{folder} has no {GENERATOR_CONFIG} and {OLD_WEIGHTS} to convert")
    config = json.loads(config_file.read_text(encoding="utf-8"))
    name = config.pop("generator_class", None)
    if name not in REGISTRY:
        raise CheckpointError(f"{folder}: config.json names generator_class={name!r}; known classes: {sorted(REGISTRY)}")
    model = REGISTRY[name](**config)
    load_state_strict(model, str(old))
    model.save_pretrained(folder)
    new = load_generator(folder)
    z = torch.randn(4, new.latent_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        if not torch.equal(model.eval().decode(z), new.decode(z)):
            raise CheckpointError(f"{folder}: the converted generator does not decode as the old one; kept both files")
    old.unlink()
    return f"{folder}: {name}, {len(safetensors.torch.load_file(folder / GENERATOR_WEIGHTS))} tensors -> {GENERATOR_WEIGHTS}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="generator folders in the first layout")
    args = parser.parse_args(argv)
    for folder in args.folders:
        try:
            print(convert(folder))
        except CheckpointError as e:
            raise SystemExit(f"error: {e}")


if __name__ == "__main__":
    main()
