"""Ada-GVAE posterior sharing (Locatello et al. 2020, "Weakly-Supervised Disentanglement Without Compromises",
ICML, Sec. 4, the adaptive group VAE): the weak supervision behind the disentangled dSprites generator.

The training data are pairs (x1, x2) known to differ in a few ground-truth factors (which ones is not given). With
diagonal Gaussian posteriors q(z|x1), q(z|x2), the per-coordinate divergence

    δ_j = KL(q(z_j|x1) ‖ q(z_j|x2))

is small for coordinates that encode a shared factor. The coordinates with δ_j below the threshold
τ = (max_j δ_j + min_j δ_j) / 2 are treated as shared: both posteriors are replaced there by their average
(mean of the means, mean of the variances; the "GVAE" aggregation). The ELBO of each image is then taken with its
modified posterior. A coordinate that mixes two factors would be averaged away whenever only one of them changes,
so the model is pushed to give each factor its own coordinates, without ever being told which factor changed.

Public: `share_posteriors(mu1, logvar1, mu2, logvar2) -> (mu1, logvar1, mu2, logvar2)`.
"""
from __future__ import annotations

import torch


def share_posteriors(mu1: torch.Tensor, logvar1: torch.Tensor, mu2: torch.Tensor, logvar2: torch.Tensor):
    """Average the two (B, d) diagonal Gaussians on the coordinates whose KL(q1_j ‖ q2_j) is under the pair's
    midpoint threshold; the other coordinates keep their own posterior."""
    var1, var2 = logvar1.exp(), logvar2.exp()
    delta = 0.5 * (var1 / var2 + (mu2 - mu1).pow(2) / var2 - 1.0 + logvar2 - logvar1)
    tau = 0.5 * (delta.max(dim=1, keepdim=True).values + delta.min(dim=1, keepdim=True).values)
    shared = delta < tau
    mu_avg, var_avg = 0.5 * (mu1 + mu2), 0.5 * (var1 + var2)
    logvar_avg = var_avg.log()
    return (torch.where(shared, mu_avg, mu1), torch.where(shared, logvar_avg, logvar1),
            torch.where(shared, mu_avg, mu2), torch.where(shared, logvar_avg, logvar2))


__all__ = ["share_posteriors"]
