"""WarpedSpace (Tzelepis, Tzimiropoulos & Patras, "WarpedGANSpace: Finding non-linear RBF paths in GAN latent
space", ICCV 2021): each traversal climbs a sum of Gaussian RBFs, one of the paper's baselines (Song et al., 2023).

Per k a support set of N centres s_{k,i} with weights α_{k,i} and a fixed width γ:
    u^k(z) = Σ_i α_{k,i} exp(−γ ‖z − s_{k,i}‖²),
    ∇u^k(z) = −2γ Σ_i α_{k,i} exp(−γ ‖z − s_{k,i}‖²) (z − s_{k,i}),
and the traversal follows the normalised gradient, v^k = ∇u^k / ‖∇u^k‖ (paper eq. 2 with that velocity), so every
step has length step_size and only the heading bends. The centres and weights are learnable; u is time-free.
Centres start at N(0, I) draws and the weights alternate +1, −1 (pairs of a source and a sink, the "dipoles"
of the original), so the initial field flows between them.

Its original training is a classifier of k and a regressor of the shift size; the wave-equation terms L_f and L_u
were never part of it (L_u is even constant: ‖v‖ = 1). `pde_terms = False` tells the trainer to set their weights
to 0; L_J and L_k train it with the same step as the other methods.
"""
from __future__ import annotations

import torch
from torch import nn

from ..traversal import Traversal

_MIN_NORM = 1e-12  # below this ‖∇u‖ the heading is undefined; dividing by the floor instead keeps v finite (≈ 0)


class WarpedSpace(Traversal):
    """K RBF potentials with PotentialFlow's training interface; `velocity` is the unit gradient.

    Extra args:
        num_support: N, the RBF centres per traversal (even, so they pair into dipoles).
        gamma: the RBF width γ, fixed; default 1/d, so a kernel is about e^-2 between two N(0, I) samples.
    """

    method_name = "warped"
    pde_terms = False
    default_label = "warped"

    def __init__(self, latent_dim: int, num_potentials: int, num_timesteps: int = 10, step_size: float = 1.0,
                 generator: str | None = None, generator_revision: str | None = None,
                 labels: list[str] | None = None, num_support: int = 8, gamma: float | None = None):
        super().__init__(latent_dim, num_potentials, num_timesteps, step_size, generator, generator_revision, labels)
        if num_support < 2 or num_support % 2:
            raise ValueError(f"WarpedSpace: num_support must be an even number >= 2, got {num_support}")
        if gamma is not None and gamma <= 0:
            raise ValueError(f"WarpedSpace: gamma must be > 0, got {gamma}")
        self.num_support = num_support
        self.gamma = 1.0 / latent_dim if gamma is None else float(gamma)
        self.centres = nn.Parameter(torch.randn(num_potentials, num_support, latent_dim))
        self.alphas = nn.Parameter(torch.tensor([1.0, -1.0]).repeat(num_potentials, num_support // 2))
        self.wave_speed = nn.Parameter(torch.ones(num_potentials))  # for training_step's signature; unused (pde_terms)

    def _kernels(self, z: torch.Tensor, k: int | torch.Tensor):
        """(z − s_i, α_i exp(−γ‖z − s_i‖²)): (B, N, d) and (B, N)."""
        k = self._check(z, k)
        diff = z[:, None, :] - self.centres[k].to(z)  # int k: (N, d) broadcast; tensor k: (B, N, d)
        return diff, self.alphas[k].to(z) * torch.exp(-self.gamma * diff.pow(2).sum(-1))

    def potential(self, z: torch.Tensor, t: float | torch.Tensor, k: int | torch.Tensor) -> torch.Tensor:
        """u^k(z) = Σ_i α_i exp(−γ‖z − s_i‖²) -> (B,); t is accepted and ignored."""
        return self._kernels(z, k)[1].sum(-1)

    def gradient(self, z: torch.Tensor, k: int | torch.Tensor) -> torch.Tensor:
        """∇_z u^k(z) in closed form -> (B, d)."""
        diff, weighted = self._kernels(z, k)
        return -2.0 * self.gamma * (weighted[..., None] * diff).sum(1)

    def velocity(self, z: torch.Tensor, t: float | torch.Tensor, k: int | torch.Tensor) -> torch.Tensor:
        """∇u^k / ‖∇u^k‖ -> (B, d), unit norm wherever ‖∇u‖ > 1e-12; keeps the graph to the centres and weights."""
        g = self.gradient(z, k)
        return g / g.norm(dim=-1, keepdim=True).clamp_min(_MIN_NORM)
