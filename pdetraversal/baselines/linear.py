"""The linear potential u^k(z, t) = a_k·z: the paper's controlled baseline (Song et al., ICML 2023), trained with
the same losses as the potential flow (Sec. 4.2: L_u + L_f + L_J + L_k) but restricted to straight lines.

Its velocity ∇_z u^k = a_k is constant, so the flow of paper eq. 2 is z_t = z_0 + t · step · a_k. The wave residual
of eq. 3 is exactly zero (Δ_z u = 0 since u is linear in z; ∂²u/∂t² = 0 since u does not depend on t), so L_f is
trivially met: that is the point of this control. Whatever the potential flow gains over it comes from the curved,
PDE-shaped paths, not from the other losses. L_u = ‖a_k‖² still pulls the step toward zero against L_J.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..traversal import Traversal


class LinearPotential(Traversal):
    """K linear potentials a_k·z (a: a (K, d) parameter) with PotentialFlow's training interface.

    Extra args:
        init_scale: the initial ‖a_k‖ is about this (a_k ~ N(0, init_scale²/d · I)).
    """

    method_name = "linear"
    pde_terms = True
    default_label = "linear"

    def __init__(self, latent_dim: int, num_potentials: int, num_timesteps: int = 10, step_size: float = 1.0,
                 generator: str | None = None, generator_revision: str | None = None,
                 labels: list[str] | None = None, init_scale: float = 0.1):
        super().__init__(latent_dim, num_potentials, num_timesteps, step_size, generator, generator_revision, labels)
        self.init_scale = init_scale
        self.weight = nn.Parameter(torch.randn(num_potentials, latent_dim) * init_scale / math.sqrt(latent_dim))
        self.wave_speed = nn.Parameter(torch.ones(num_potentials))  # c^k of eq. 3; it multiplies Δu = 0, so it stays put

    def potential(self, z: torch.Tensor, t: float | torch.Tensor, k: int | torch.Tensor) -> torch.Tensor:
        """u^k(z, t) = a_k·z -> (B,); t is accepted and ignored."""
        return (z * self.velocity(z, t, k)).sum(-1)

    def velocity(self, z: torch.Tensor, t: float | torch.Tensor, k: int | torch.Tensor) -> torch.Tensor:
        """∇_z u^k = a_k -> (B, d); keeps the graph to a (it is the parameter itself)."""
        k = self._check(z, k)
        a = self.weight[k]
        return a.expand_as(z) if isinstance(k, int) else a
