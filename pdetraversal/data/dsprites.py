"""Procedural dSprites: the paper's dSprites setting (Sec. 4), generated here because the data cannot be downloaded.

dSprites (Matthey et al. 2017) are 64x64 binary images of one white sprite on black, produced by five independent
ground-truth factors. We draw them ourselves, deterministically, with the same factor grid:

=============  ====  ===================================================================================
factor          size  values
=============  ====  ===================================================================================
shape              3  0 square, 1 ellipse, 2 heart
scale              6  linspace(0.5, 1.0, 6)
orientation       40  2*pi*i/40, i = 0..39 (0 to 351 degrees, step 9 degrees; counter-clockwise on screen)
x                 32  linspace(0, 1, 32); 0 is the left edge of the range
y                 32  linspace(0, 1, 32); 0 is the top of the range (y grows downward, like image rows)
=============  ====  ===================================================================================

Orientation: the original dSprites uses linspace(0, 2*pi, 40), which contains 2*pi and so draws orientation 0
twice. We exclude the endpoint: the 40 orientations are distinct and equally spaced, so a square (symmetric
under 90 degrees) repeats exactly every 10 indices and an ellipse every 20.

Geometry. A sprite is drawn in a frame whose unit length is ``L * scale`` pixels, with ``L = UNIT_PX = 9.7``; the
frame is rotated by the orientation (counter-clockwise on screen) and centred at the pixel centre

    (col, row) = (16 + 31 * x, 16 + 31 * y)           i.e. 16..47 in whole pixels, symmetric about the image centre.

In that frame, with v pointing up on screen, the shapes are the closed sets

- square:  |u| <= 1 and |v| <= 1                       (side 2 units; area 4)
- ellipse: (u / 1.6)^2 + (v / 0.8)^2 <= 1                (semi-axes 1.6 along u and 0.8 along v, ratio 2:1;
                                                         area 1.28*pi = 4.021, about the square's)
- heart:   (u^2 + w^2 - 1)^3 - u^2 w^3 <= 0, w = v + 0.2935
                                                        (the classic implicit heart curve, lobes up, point down,
                                                         shifted so its centroid is the origin; area 3.662;
                                                         mirror symmetric about u = 0)

All three have their centroid at the origin, so the position factors are centroid positions. Orientation 0
means: square axis aligned, ellipse long axis horizontal, heart upright. A pixel is on (1) when at least half of
its 4x4 regularly spaced subsamples lie inside the shape; the largest sprite (ellipse at scale 1, 15.5 px long
semi-axis) fits in the 33x33 canvas centred on the sprite, so no sprite is ever clipped.

Speed: the 3*6*40 = 720 centred sprites are rasterised once (cached, about a second), then each image is one
integer shift of a cached sprite, vectorised with numpy fancy indexing: 10k images take a fraction of a second.

Public API: ``FACTOR_NAMES``, ``FACTOR_SIZES``, ``ORIENTATION_PERIOD``, ``render(indices)``, ``sample(n, seed)``,
``factor_values(indices)``, ``random_factors(n, seed)``, ``one_factor_pairs(n, seed)``.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch

FACTOR_NAMES = ("shape", "scale", "orientation", "x", "y")
FACTOR_SIZES = (3, 6, 40, 32, 32)
SHAPE_NAMES = ("square", "ellipse", "heart")
# Orientation indices after which each shape's image repeats: a square is unchanged by a quarter turn (10 steps of
# 9 degrees), an ellipse by a half turn, a heart only by a full turn.
ORIENTATION_PERIOD = (10, 20, 40)

IMAGE_SIZE = 64
UNIT_PX = 9.7  # pixels per shape unit at scale 1
CANVAS = 33  # side of the centred sprite canvas; its centre pixel is CANVAS // 2 = 16
SUBSAMPLES = 4  # per pixel side
HEART_SHIFT = 0.2935  # centroid height of the implicit heart curve, moved to the origin

SCALES = np.linspace(0.5, 1.0, 6)
ORIENTATIONS = 2 * np.pi * np.arange(40) / 40
POSITIONS = np.linspace(0.0, 1.0, 32)

# Areas of the shapes in shape units (multiply by (UNIT_PX * scale)^2 for pixels).
SHAPE_AREAS = (4.0, math.pi * 1.6 * 0.8, 3.662)


def _inside(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    if shape == 0:
        return (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
    if shape == 1:
        return (u / 1.6) ** 2 + (v / 0.8) ** 2 <= 1.0
    if shape == 2:
        w = v + HEART_SHIFT
        return (u * u + w * w - 1.0) ** 3 - u * u * w ** 3 <= 0.0
    raise ValueError(f"shape index must be 0, 1 or 2, got {shape}")


@functools.lru_cache(maxsize=1)
def centred_sprites() -> np.ndarray:
    """All 720 sprites centred on a 33x33 canvas: uint8 {0,1} array (3, 6, 40, 33, 33), read-only."""
    s = SUBSAMPLES
    # Subsample offsets from the canvas centre in pixels; symmetric about 0, so mirror symmetry is exact.
    off = ((np.arange(CANVAS * s) + 0.5) / s - CANVAS / 2).astype(np.float32)
    dx = off[None, :]  # to the right
    dy = -off[:, None]  # up on screen
    cos = np.cos(ORIENTATIONS).astype(np.float32)[:, None, None]
    sin = np.sin(ORIENTATIONS).astype(np.float32)[:, None, None]
    # Rotate the pixel offsets by -theta into the shape frame: (40, H, W).
    u0 = cos * dx + sin * dy
    v0 = -sin * dx + cos * dy
    out = np.empty((3, len(SCALES), len(ORIENTATIONS), CANVAS, CANVAS), dtype=np.uint8)
    for i, scale in enumerate(SCALES):
        unit = np.float32(UNIT_PX * scale)
        u, v = u0 / unit, v0 / unit
        for shape in range(3):
            hits = _inside(shape, u, v).reshape(len(ORIENTATIONS), CANVAS, s, CANVAS, s).sum(axis=(2, 4))
            out[shape, i] = hits * 2 >= s * s
    if out[..., 0, :].any() or out[..., -1, :].any() or out[..., :, 0].any() or out[..., :, -1].any():
        raise AssertionError("a sprite touches the canvas border; UNIT_PX is too large")
    out.setflags(write=False)
    return out


def _as_indices(indices) -> np.ndarray:
    idx = indices.detach().cpu().numpy() if isinstance(indices, torch.Tensor) else np.asarray(indices)
    if idx.ndim != 2 or idx.shape[1] != 5:
        raise ValueError(f"factor indices must have shape (n, 5), got {idx.shape}")
    idx = idx.astype(np.int64)
    sizes = np.asarray(FACTOR_SIZES)
    bad = (idx < 0) | (idx >= sizes)
    if bad.any():
        j = int(np.argwhere(bad)[0, 1])
        raise ValueError(f"factor '{FACTOR_NAMES[j]}' index out of range 0..{FACTOR_SIZES[j] - 1}")
    return idx


def render(indices, dtype: str = "float32") -> torch.Tensor:
    """Images for integer factor indices (n, 5) ordered as FACTOR_NAMES -> (n, 1, 64, 64) tensor in {0, 1}.

    ``dtype`` is "float32" or "uint8". Accepts a numpy array, a list or a tensor of indices.
    """
    idx = _as_indices(indices)
    n = len(idx)
    sprites = centred_sprites()[idx[:, 0], idx[:, 1], idx[:, 2]]  # (n, 33, 33)
    images = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    span = np.arange(CANVAS)
    # The canvas's top-left pixel goes to (row, col) = (y, x) index; its centre then lands on 16 + index.
    rows = (idx[:, 4][:, None] + span)[:, :, None]
    cols = (idx[:, 3][:, None] + span)[:, None, :]
    images[np.arange(n)[:, None, None], rows, cols] = sprites
    out = torch.from_numpy(images).unsqueeze(1)
    if dtype == "uint8":
        return out
    if dtype == "float32":
        return out.float()
    raise ValueError(f"dtype must be 'float32' or 'uint8', got {dtype!r}")


def random_factors(n: int, seed=None) -> torch.Tensor:
    """n factor index rows (n, 5), each factor uniform over its values; the same seed gives the same rows.

    ``seed`` is anything ``numpy.random.default_rng`` takes: None, an int, or a tuple of ints such as (seed, step).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.stack([rng.integers(0, k, size=n) for k in FACTOR_SIZES], axis=1).astype(np.int64))


def sample(n: int, seed=None) -> tuple[torch.Tensor, torch.Tensor]:
    """n random dSprites: (images float32 (n, 1, 64, 64) in {0, 1}, factor indices long (n, 5))."""
    idx = random_factors(n, seed)
    return render(idx), idx


def one_factor_pairs(n: int, seed=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n pairs of factor index rows that differ in exactly one factor: (first (n, 5), second (n, 5), factor (n,)).

    The first row is uniform; the changed factor is uniform over the five, and its new value uniform over the other
    values of that factor. These are the weak labels of Ada-GVAE (`pdetraversal.adagvae`): which images form a pair,
    never which factor changed.
    """
    first = random_factors(n, seed)
    rng = np.random.default_rng(None if seed is None else (*np.atleast_1d(seed).tolist(), 7))
    factor = torch.from_numpy(rng.integers(0, len(FACTOR_SIZES), size=n))
    sizes = torch.tensor(FACTOR_SIZES)[factor]
    shift = torch.from_numpy((rng.random(n) * (sizes.numpy() - 1)).astype(np.int64)) + 1  # 1 .. size - 1
    second = first.clone()
    rows = torch.arange(n)
    second[rows, factor] = (first[rows, factor] + shift) % sizes
    return first, second, factor


def factor_values(indices) -> torch.Tensor:
    """Factor values (n, 5) float32: shape, scale, x, y as index / (size - 1) in [0, 1]; orientation in radians."""
    idx = torch.from_numpy(_as_indices(indices)).float()
    vals = idx / (torch.tensor(FACTOR_SIZES, dtype=torch.float32) - 1)
    vals[:, 2] = idx[:, 2] * (2 * math.pi / FACTOR_SIZES[2])
    return vals


__all__ = [
    "FACTOR_NAMES", "FACTOR_SIZES", "SHAPE_NAMES", "ORIENTATION_PERIOD", "SCALES", "ORIENTATIONS", "POSITIONS", "SHAPE_AREAS", "UNIT_PX",
    "centred_sprites", "render", "random_factors", "one_factor_pairs", "sample", "factor_values",
]
