"""The non-PDE loss terms of the paper: L_J (eq. 5-6), L_k (eq. 7) and L_x (eq. 9). L_z (eq. 8) is in `transitions`.

- `jacobian_term`: L_J = −‖J_G(z)·∇_z u‖², the image-space speed of a latent step, by forward-mode AD.
  The paper maximises it unbounded, and nothing then stops the step from growing. Ours saturates:
      L_J = −τ · tanh(s / τ),   s = sqrt(mean over pixels of (J_G(z)·v)²)   (the RMS pixel change of a step),
  which rewards speed while the step is small (s ≪ τ) and stops rewarding growth once the RMS pixel change per
  step reaches about τ: the gradient falls as 1/cosh²(s/τ). The RMS rather than the squared norm keeps the push
  from vanishing near v = 0 (where the initial condition and the wave equation pull the potentials towards
  u = const), and the pixel mean rather than the sum makes τ independent of the image size.
- `diversity_term`: L_div, a remedy outside the paper: the squared cosine between two potentials' image steps.
- `classifier_loss`: L_k, cross-entropy of the auxiliary classifier predicting k from (x_t, x_{t+1}).
- `negative_elbo`: L_x, the VAE's negative ELBO (Bernoulli pixels) of decoded codes; `elbo_terms` its two parts,
  `kl_per_coordinate` the KL of each latent coordinate.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch.func import jvp


def jacobian_vector_product(decode: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, v: torch.Tensor):
    """(G(z), J_G(z)·v) in one forward-mode pass; differentiable w.r.t. v (and z)."""
    return jvp(decode, (z,), (v,))


def jacobian_term(jv: torch.Tensor, saturation: float = 0.1) -> torch.Tensor:
    """L_J per sample from J_G(z)·v (B, C, H, W): −τ·tanh(rms(Jv) / τ) -> (B,), bounded in [−τ, 0]."""
    if saturation <= 0:
        raise ValueError(f"saturation must be > 0, got {saturation}")
    speed = (jv.pow(2).flatten(1).mean(1) + 1e-12).sqrt()
    return -saturation * torch.tanh(speed / saturation)


def diversity_term(jv_a: torch.Tensor, jv_b: torch.Tensor) -> torch.Tensor:
    """L_div per sample: cos²(J·v^k, J·v^k') between two potentials' image-space steps at one point -> (B,), in [0, 1].

    Not in the paper (a remedy, `training.LossConfig.diversity`): 0 when the two image changes are orthogonal, 1 when
    they are parallel or opposite (the same change, faster or backwards)."""
    a, b = jv_a.flatten(1), jv_b.flatten(1)
    return F.cosine_similarity(a, b, dim=1, eps=1e-12).pow(2)


def classifier_loss(logits: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """L_k: cross-entropy of predicting the potential index k from the image pair."""
    return F.cross_entropy(logits, k)


def kl_per_coordinate(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z_j|x) ‖ N(0, 1)) of each coordinate of a diagonal Gaussian posterior -> same shape as mu."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def elbo_terms(x: torch.Tensor, logits: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor):
    """Per sample: (−log p(x|z) for Bernoulli pixels summed over pixels, KL(q(z|x) ‖ N(0, I))), each (B,)."""
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    return recon, kl_per_coordinate(mu, logvar).sum(-1)


def negative_elbo(x: torch.Tensor, logits: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
                  beta: float = 1.0) -> torch.Tensor:
    """−ELBO per sample: −log p(x|z) + β·KL(q(z|x) ‖ N(0, I)) -> (B,)."""
    recon, kl = elbo_terms(x, logits, mu, logvar)
    return recon + beta * kl
