"""Label-anchored latent coordinates: the supervision that gives the dSprites VAE one coordinate per factor
(semi-supervised disentanglement with factor labels as latent targets, cf. Locatello et al. 2020, "Disentangling
Factors of Variation Using Few Labels", ICLR).

The potentials of the paper (Sec. 4.1) can only move factors the frozen generator encodes along smooth, non-circulating
paths. Unsupervised and weakly supervised (`pdetraversal.adagvae`) VAEs on dSprites encode x, y and scale well but
fold shape and orientation together, and decode squares as blobs. Here coordinate j of the posterior mean is pulled
towards a target made from factor j of the training image,

    L_anchor = Σ_j (μ_j(x) − a_j(factors of x))²,   j = 0..4 (shape, scale, orientation, x, y),

added to the ELBO with a weight; further coordinates, if any, are free. The targets:
- shape, scale, x, y (indices i of n values): a_j = Φ⁻¹((i + ½) / n), the standard normal quantile, so a uniform
  factor is spread like a standard normal coordinate and z ~ N(0, I) decodes to in-range sprites;
- orientation: a_2 = ORIENTATION_STEP · (j − (n_m − 1) / 2), j = i mod n_m, where n_m = 40 / m orientations make one
  period of the shape's symmetry (a square is unchanged by a quarter turn: m = 4, n_m = 10; an ellipse by a half
  turn: m = 2; a heart: m = 1). Taking the index modulo the period makes the target a function of the image; one slope
  for every shape makes a turn by Δθ the same move for every shape, so the one linear potential u = c·z_2 turns
  them all alike. A ring (cos mθ, sin mθ) would also be a function of the image, but it closes a loop: a square's
  codes would go round it, and the potential turning them, the ring angle, cannot be single-valued (a gradient field
  has no circulation), so the network must fit a jump somewhere on the ring; the fitted field turned no square.
  Here the jump sits between the last orientation of a period and the first, which no image lies between.
  The ranges then differ by shape (squares ±0.45, hearts ±1.95 at step 0.1), and the last orientation of a period
  is the far end from the first although the images differ by one step.
The anchors fix only the posterior means; with free coordinates, a trained VAE may copy a factor into them.

Public: `ANCHOR_NAMES`, `ORIENTATION_STEP`, `anchor_targets(indices) -> (B, 5)`, `anchor_loss(mu, indices) -> (B,)`.
"""
from __future__ import annotations

import torch

from . import dsprites

ANCHOR_NAMES = dsprites.FACTOR_NAMES
ORIENTATION_STEP = 0.1  # latent distance of one 9-degree turn, for every shape


def _quantile(index: torch.Tensor, size: int) -> torch.Tensor:
    return torch.special.ndtri((index + 0.5) / size)


def anchor_targets(indices) -> torch.Tensor:
    """Factor indices (B, 5) -> anchor targets (B, 5) float32 in the order of `ANCHOR_NAMES`."""
    idx = torch.as_tensor(indices).long()
    if idx.ndim != 2 or idx.shape[1] != len(dsprites.FACTOR_NAMES):
        raise ValueError(f"anchor_targets expects factor indices of shape (B, 5), got {tuple(idx.shape)}")
    f = idx.double()
    sizes = dsprites.FACTOR_SIZES
    period = torch.tensor(dsprites.ORIENTATION_PERIOD)[idx[:, 0]]
    turn = (idx[:, 2] % period).double() - (period.double() - 1) / 2
    return torch.stack([
        _quantile(f[:, 0], sizes[0]), _quantile(f[:, 1], sizes[1]), ORIENTATION_STEP * turn,
        _quantile(f[:, 3], sizes[3]), _quantile(f[:, 4], sizes[4]),
    ], dim=1).float()


def anchor_loss(mu: torch.Tensor, indices) -> torch.Tensor:
    """Σ_j (μ_j − a_j)² over the anchored coordinates, per image -> (B,)."""
    n = len(ANCHOR_NAMES)
    if mu.ndim != 2 or mu.shape[1] < n:
        raise ValueError(f"anchor_loss needs posterior means with at least {n} coordinates, got {tuple(mu.shape)}")
    target = anchor_targets(indices).to(mu)
    return (mu[:, :n] - target).pow(2).sum(dim=1)


__all__ = ["ANCHOR_NAMES", "ORIENTATION_STEP", "anchor_targets", "anchor_loss"]
