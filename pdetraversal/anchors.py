"""Label-anchored latent coordinates: the supervision that gives the dSprites VAE one coordinate per factor
(semi-supervised disentanglement with factor labels as latent targets, cf. Locatello et al. 2020, "Disentangling
Factors of Variation Using Few Labels", ICLR).

The potentials of the paper (Sec. 3) can only move factors the frozen generator encodes along smooth, non-circulating
paths. Unsupervised and weakly supervised (`pdetraversal.adagvae`) VAEs on dSprites encode x, y and scale well but
fold shape and orientation together, and decode squares as blobs. Here the first six coordinates of the posterior
mean are pulled towards the factor labels of the training image,

    L_anchor = Σ_j (μ_j(x) − a_j(factors of x))²,   j = 0..5,

added to the ELBO with a weight; the remaining coordinates are free. The targets are chosen so that the labelled data
look like the prior N(0, I):
- shape, scale, x, y (indices i of n values): a_j = Φ⁻¹((i + ½) / n), the standard normal quantile, so a uniform
  factor is spread like a standard normal coordinate and z ~ N(0, I) decodes to in-range sprites;
- orientation: a point r·(cos mθ, sin mθ) on a ring, where m is the shape's order of symmetry (a square is unchanged
  by a quarter turn: m = 4; an ellipse by a half turn: m = 2; a heart: m = 1), so that the target is a function of
  the image, and complete: no orientation is left for the free coordinates. The radius is r = R / √m. Turning a
  sprite by Δθ moves its code along the arc r·m·Δθ, and the gradient of the ring angle φ has length 1/r, so the one
  potential u = R²·Δθ·φ turns every shape by Δθ per step: the rotation needs no shape-dependent speed, whose
  gradient would also push the shape coordinate (∇u is a gradient: a speed that depends on z_0 means u does).
  R = 1.7 gives a mean radius over the three shapes of 1.25, about that of a 2-D standard normal.
The anchors fix only the posterior means: a trained VAE may still copy orientation into free coordinates, shape by
shape (the shipped one does, see its card), and that copy is again a shape-dependent rotation.

Public: `ANCHOR_NAMES`, `SYMMETRY`, `RING_RADIUS`, `anchor_targets(indices) -> (B, 6)`, `anchor_loss(mu, indices) -> (B,)`.
"""
from __future__ import annotations

import math

import torch

from . import dsprites

ANCHOR_NAMES = ("shape", "scale", "cos mθ", "sin mθ", "x", "y")
SYMMETRY = (4, 2, 1)  # m per shape of dsprites.SHAPE_NAMES: square, ellipse, heart
RING_RADIUS = 1.7  # R, the ring radius of the heart (m = 1)


def _quantile(index: torch.Tensor, size: int) -> torch.Tensor:
    return torch.special.ndtri((index + 0.5) / size)


def anchor_targets(indices) -> torch.Tensor:
    """Factor indices (B, 5) -> anchor targets (B, 6) float32 in the order of `ANCHOR_NAMES`."""
    idx = torch.as_tensor(indices).long()
    if idx.ndim != 2 or idx.shape[1] != len(dsprites.FACTOR_NAMES):
        raise ValueError(f"anchor_targets expects factor indices of shape (B, 5), got {tuple(idx.shape)}")
    f = idx.double()
    sizes = dsprites.FACTOR_SIZES
    m = torch.tensor(SYMMETRY, dtype=torch.float64)[idx[:, 0]]
    angle = m * f[:, 2] * (2 * math.pi / sizes[2])
    radius = RING_RADIUS / m.sqrt()
    return torch.stack([
        _quantile(f[:, 0], sizes[0]), _quantile(f[:, 1], sizes[1]),
        radius * torch.cos(angle), radius * torch.sin(angle),
        _quantile(f[:, 3], sizes[3]), _quantile(f[:, 4], sizes[4]),
    ], dim=1).float()


def anchor_loss(mu: torch.Tensor, indices) -> torch.Tensor:
    """Σ_j (μ_j − a_j)² over the anchored coordinates, per image -> (B,)."""
    n = len(ANCHOR_NAMES)
    if mu.ndim != 2 or mu.shape[1] < n:
        raise ValueError(f"anchor_loss needs posterior means with at least {n} coordinates, got {tuple(mu.shape)}")
    target = anchor_targets(indices).to(mu)
    return (mu[:, :n] - target).pow(2).sum(dim=1)


__all__ = ["ANCHOR_NAMES", "SYMMETRY", "RING_RADIUS", "anchor_targets", "anchor_loss"]
