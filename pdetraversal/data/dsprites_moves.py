"""Known transformations of dSprites: the five factor moves as real image sequences, the data of eq. 8 (L_z).

A sequence moves one factor by one grid value per traversal step: shape square -> ellipse -> heart, scale one of
its six values, orientation 9 degrees, x and y one of 32 positions. Potential k < 5 is tied to factor k of
`dsprites.FACTOR_NAMES`. `dsprites_matching_loss` renders the sequences, encodes them with the frozen generator's
encoder and applies `pdetraversal.transitions.sequence_matching_loss` (eq. 8).

No sequence wraps around (heart -> square, or a square turned past 81 degrees, which is the square at 0 again):
a potential flow is a gradient field, its circulation around any closed loop is zero, so a cyclic move has no
potential to learn. Rotations therefore stay within one period of the shape's symmetry (`ORIENTATION_PERIOD`:
a square 0-81 degrees, an ellipse 0-171, a heart 0-351). A factor with fewer values than the traversal has steps
gives shorter sequences (shape: 2 steps, scale: 5); `lengths` says how many steps each one has.
"""
from __future__ import annotations

import numpy as np
import torch

from ..transitions import sequence_matching_loss
from . import dsprites

# How many of a factor's values (from the first) the moves run over; for orientation, per shape.
MOVE_SPAN = {"shape": 3, "scale": 6, "orientation": dsprites.ORIENTATION_PERIOD, "x": 32, "y": 32}


def factor_sequences(n: int, num_steps: int, seed=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n one-factor sequences: (indices (num_steps + 1, n, 5), factor (n,), lengths (n,)).

    The factor is uniform over the five; sequence i changes it by +1 per step for lengths[i] = min(num_steps,
    span − 1) steps from a uniform start that keeps every value within the span (for orientation, the first period
    of the sprite's shape). Frames after the last valid step repeat it. The other factors are uniform and fixed."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    first = dsprites.random_factors(n, seed)
    rng = np.random.default_rng(None if seed is None else (*np.atleast_1d(seed).tolist(), 13))
    factor = torch.from_numpy(rng.integers(0, len(dsprites.FACTOR_NAMES), size=n))
    span = torch.tensor([MOVE_SPAN[name] if name != "orientation" else 0 for name in dsprites.FACTOR_NAMES])[factor]
    rows = factor == dsprites.FACTOR_NAMES.index("orientation")
    span[rows] = torch.tensor(dsprites.ORIENTATION_PERIOD)[first[rows, 0]]
    lengths = span.clamp(max=num_steps + 1) - 1
    start = torch.from_numpy((rng.random(n) * (span - lengths).numpy()).astype(np.int64))  # 0 .. span - 1 - length
    every = torch.arange(n)
    first[every, factor] = start
    t = torch.arange(num_steps + 1)[:, None]
    indices = first.expand(num_steps + 1, n, 5).clone()
    indices[:, every, factor] = start + torch.minimum(t, lengths[None, :])
    return indices, factor, lengths


def dsprites_matching_loss(flow, generator, batch_size: int, seed) -> torch.Tensor:
    """Mean L_z (eq. 8) over `batch_size` fresh factor sequences of num_timesteps − 1 steps (the steps training
    uses, t = 0..T−2); potential k = the moved factor's index. `generator.encode(x)` must return the posterior
    (mean, log-variance), as `hub_models.DSpritesVAE` does; the means are the codes, without gradient."""
    if flow.num_potentials < len(dsprites.FACTOR_NAMES):
        raise ValueError(f"dSprites supervision ties potentials 0..4 to the five factors; got K = {flow.num_potentials}")
    indices, factor, lengths = factor_sequences(batch_size, flow.num_timesteps - 1, seed)
    device = next(flow.parameters()).device
    # Encoding is the step's main cost: encode each sequence's valid frames only (shape has 3, scale 6), and let
    # the frames after the last valid one, which the loss masks out, repeat its code.
    valid = torch.arange(indices.shape[0])[:, None] <= lengths[None, :]
    with torch.no_grad():
        mu = generator.encode(dsprites.render(indices[valid]).to(device))[0]
    codes = torch.empty(*indices.shape[:2], mu.shape[1], device=device)
    codes[valid.to(device)] = mu
    last = codes[lengths.to(device), torch.arange(batch_size, device=device)]
    codes = torch.where(valid.to(device)[..., None], codes, last)
    return sequence_matching_loss(flow, codes, factor.to(device), lengths.to(device)).mean()


__all__ = ["MOVE_SPAN", "factor_sequences", "dsprites_matching_loss"]
