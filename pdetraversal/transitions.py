"""Weak supervision from known transformations: the latent matching loss L_z (paper Sec. 3.4, eq. 8) for a frozen
generator that has an encoder.

The paper's supervised setting trains a VAE from scratch on sequences x_0 -> x_T made by a known transformation
(rotate, scale, recolour, ...) and asks the flow of potential k to follow the encoded sequence:

    L_z = ‖z_t − ẑ_t‖² + ‖z_{t+1} − z_t − ∇_z u^k(ẑ_t, t)‖²,     z_t = Enc(x_t), ẑ_t the flowed code.

Here the generator is frozen, so the encoder defines the target codes and only the potentials learn. On dSprites the
known transformations are the five factor moves: potential k < 5 is tied to factor k of `dsprites.FACTOR_NAMES`
and moves it to its next value (shape: square -> ellipse -> heart; the others one grid step). No sequence of moves
closes a loop: a potential flow is a gradient field, and a gradient field cannot carry a code around a closed loop
(its circulation is zero), so a cyclic move has no potential to learn. Hence the moves never wrap around
(heart -> square), and rotations stay within one period of the shape's symmetry (`dsprites.ORIENTATION_PERIOD`:
a square from 0 to 81 degrees, an ellipse to 171, a heart to 351): a square is the same image after a quarter turn,
so rotating further closes a loop in image space, and so in the latent space of any encoder.
A pair (x_a, x_b) that differs by that one move is encoded (posterior means z_a, z_b); the move should take
`STEPS_PER_MOVE[f]` traversal steps, so at a point ẑ = z_a + s·(z_b − z_a), s ~ U[0, 1), on the segment between the
two codes, the step must be (z_b − z_a) / STEPS_PER_MOVE[f]. With ẑ on the segment, eq. 8 reads

    L_z = ‖ẑ − ẑ‖² + ‖(ẑ + Δ) − ẑ − step_size·∇_z u^k(ẑ, t)‖² = ‖Δ − step_size·∇_z u^k(ẑ, t)‖²,   Δ = (z_b − z_a) / n_f,

which is `losses.latent_matching_loss`. Points on the segment, not only the two codes, matter for shape: the three
shapes are far apart in the latent space and a traversal passes through the codes between them.
Potentials k >= 5 get no targets: they are trained without labels (L_J + L_k), as in the pre-trained generator setting.

Public: `STEPS_PER_MOVE`, `MOVE_SPAN`, `dsprites_moves(n, seed)`, `matching_loss(flow, encode, ...)`, `dsprites_matching_loss(flow,
generator, batch_size, seed)`.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from . import losses
from .data import dsprites

# Traversal steps one grid move of each factor takes. x, y: one position (of 32) per step, so T = 10 steps each way
# cover 20 of the 32 positions; orientation: 9 degrees per step (a square's 90-degree symmetry in 10 steps); scale:
# half a value per step (the 6 values in 10 steps); shape: a change of shape every 5 steps.
STEPS_PER_MOVE = {"shape": 5, "scale": 2, "orientation": 1, "x": 1, "y": 1}
# How many of a factor's values (from the first) the moves run over; for orientation, per shape (see above).
MOVE_SPAN = {"shape": 3, "scale": 6, "orientation": dsprites.ORIENTATION_PERIOD, "x": 32, "y": 32}


def dsprites_moves(n: int, seed=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n one-move pairs for the five factors: (first indices (n, 5), second indices (n, 5), factor (n,)).

    The factor is uniform over the five; both values lie within the factor's first `MOVE_SPAN` values (for
    orientation, the first period of the pair's shape)."""
    first = dsprites.random_factors(n, seed)
    rng = np.random.default_rng(None if seed is None else (*np.atleast_1d(seed).tolist(), 11))
    factor = torch.from_numpy(rng.integers(0, len(dsprites.FACTOR_NAMES), size=n))
    second = first.clone()
    for f, name in enumerate(dsprites.FACTOR_NAMES):
        rows = factor == f
        span = np.asarray(MOVE_SPAN[name])
        if name == "orientation":  # one period of each pair's shape
            span = span[first[rows, 0].numpy()]
        first[rows, f] = torch.from_numpy(rng.integers(0, span - 1, size=int(rows.sum())))
        second[rows, f] = first[rows, f] + 1
    return first, second, factor


def matching_loss(flow, encode: Callable[[torch.Tensor], torch.Tensor], x_a: torch.Tensor, x_b: torch.Tensor,
                  k: torch.Tensor, steps_per_move: torch.Tensor, t: torch.Tensor,
                  rng: torch.Generator | None = None) -> torch.Tensor:
    """L_z (eq. 8) per pair -> (B,): potential k[i] at a uniform point of the segment between the codes of x_a[i] and
    x_b[i] must step by (code(x_b) − code(x_a)) / steps_per_move[i] at time t[i]. `encode` maps images to codes
    (for a VAE, the posterior mean); it gets no gradient."""
    with torch.no_grad():
        z_a, z_b = encode(torch.cat([x_a, x_b])).chunk(2)
    s = torch.rand(z_a.shape[0], 1, generator=rng).to(z_a)
    z_hat = z_a + s * (z_b - z_a)
    move = (z_b - z_a) / steps_per_move.to(z_a)[:, None]
    step = flow.step_size * flow.velocity(z_hat, t.to(z_a), k)
    return losses.latent_matching_loss(z_hat, z_hat, z_hat + move, step)


def dsprites_matching_loss(flow, generator, batch_size: int, seed, rng: torch.Generator | None = None) -> torch.Tensor:
    """Mean L_z over `batch_size` fresh dSprites moves, potential k = the moved factor's index, t ~ U{1..T−1}.

    t = 0 is left to the initial condition (L_u asks ∇_z u^k(z, 0) = 0). `generator.encode(x)` must return the
    posterior (mean, log-variance), as `hub_models.DSpritesVAE` does."""
    if flow.num_potentials < len(dsprites.FACTOR_NAMES):
        raise ValueError(f"dSprites supervision ties potentials 0..4 to the five factors; got K = {flow.num_potentials}")
    first, second, factor = dsprites_moves(batch_size, seed)
    device = next(flow.parameters()).device
    steps = torch.tensor([STEPS_PER_MOVE[name] for name in dsprites.FACTOR_NAMES])[factor]
    t = torch.randint(1, flow.num_timesteps, (batch_size,), generator=rng)
    loss = matching_loss(flow, lambda x: generator.encode(x)[0], dsprites.render(first).to(device),
                         dsprites.render(second).to(device), factor.to(device), steps, t, rng)
    return loss.mean()


__all__ = ["STEPS_PER_MOVE", "MOVE_SPAN", "dsprites_moves", "matching_loss", "dsprites_matching_loss"]
