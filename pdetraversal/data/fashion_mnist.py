"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017): 70,000 grey 28x28 pictures of clothes in 10 classes, the real-image
data of the Fashion-MNIST generators (`hub_models.fashion_vae`, `hub_models.sngan`). No paper equation lives here.

Read from where Debian's package puts it (MIT licence):

    sudo apt-get install dataset-fashion-mnist     # -> /usr/share/datasets/fashion-mnist/*-idx*-ubyte.gz

or from the folder in $FASHION_MNIST_DIR holding the same four files. Each picture is padded with 2 black pixels on
every side to 32x32 (so a conv stack halves it cleanly 32 -> 16 -> 8 -> 4) and scaled to [0, 1]. The splits are the
dataset's own: 60,000 train, 10,000 test.

Public: `CLASS_NAMES`, `IMAGE_SHAPE`, `DEFAULT_DIR`, `data_dir()`, `load(split)`, `images(n, seed, split)`.
"""
from __future__ import annotations

import functools
import gzip
import os

import numpy as np
import torch
import torch.nn.functional as F

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot")
IMAGE_SHAPE = (1, 32, 32)
PAD = 2  # 28 + 2 * 2 = 32
DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
SPLITS = {"train": "train", "test": "t10k"}
INSTALL = "sudo apt-get install dataset-fashion-mnist"


def data_dir() -> str:
    return os.environ.get("FASHION_MNIST_DIR", DEFAULT_DIR)


def _read_idx(path: str, magic: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    if int.from_bytes(data[:4], "big") != magic:
        raise ValueError(f"{path} is not an IDX file of the expected kind (magic {magic:#x})")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


@functools.lru_cache(maxsize=2)
def load(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, 1, 32, 32) float32 in [0, 1], labels (N,) int64) of `split` ("train": 60,000, "test": 10,000)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    folder = data_dir()
    paths = [os.path.join(folder, f"{SPLITS[split]}-{kind}-idx{n}-ubyte.gz") for kind, n in (("images", 3), ("labels", 1))]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"Fashion-MNIST is not installed ({missing[0]} is missing): run `{INSTALL}`, or set "
                                "FASHION_MNIST_DIR to a folder holding its four .gz files")
    pixels, labels = _read_idx(paths[0], 0x803), _read_idx(paths[1], 0x801)
    if len(pixels) != len(labels):
        raise ValueError(f"{paths[0]} holds {len(pixels)} images but {paths[1]} {len(labels)} labels")
    x = torch.from_numpy(pixels.copy()).float().div_(255.0).unsqueeze(1)
    return F.pad(x, (PAD,) * 4), torch.from_numpy(labels.astype(np.int64))


def images(n: int, seed: int | None = None, split: str = "train") -> torch.Tensor:
    """n pictures of `split` drawn without replacement (the same seed gives the same pictures), (n, 1, 32, 32)."""
    x, _ = load(split)
    if not 1 <= n <= len(x):
        raise ValueError(f"n must be in [1, {len(x)}], got {n}")
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    return x[torch.randperm(len(x), generator=g)[:n]]
