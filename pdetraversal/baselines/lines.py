"""Straight-line traversals: the flow of paper eq. 2 with a constant velocity field, z_{t+1} = z_t ± step · v_k.

The base of the untrained baselines (LatentAxes, RandomDirections, SeFa): K fixed unit directions v_k, a (K, d)
buffer saved in the state dict, so a checkpoint holds exactly the directions that were used. Such a line is the
flow of the linear potential u^k(z) = v_k·z (∇u = v_k), which `potential` returns, so landscape plots work for it too.
"""
from __future__ import annotations

import torch

from ..traversal import Traversal


class StraightLines(Traversal):
    """K straight lines through latent space, one fixed unit direction each. Subclasses fill `directions`."""

    def __init__(self, latent_dim: int, num_potentials: int, num_timesteps: int = 10, step_size: float = 1.0,
                 generator: str | None = None, generator_revision: str | None = None,
                 labels: list[str] | None = None):
        super().__init__(latent_dim, num_potentials, num_timesteps, step_size, generator, generator_revision, labels)
        self.register_buffer("directions", torch.zeros(num_potentials, latent_dim))

    def _set_directions(self, directions: torch.Tensor) -> None:
        """Store `directions` (K, d), each row scaled to unit norm."""
        if directions.shape != self.directions.shape:
            raise ValueError(f"directions must have shape {tuple(self.directions.shape)}, got {tuple(directions.shape)}")
        norms = directions.norm(dim=1, keepdim=True)
        if directions.device.type != "meta" and bool((norms == 0).any()):  # meta: shapes only (hub.py's check)
            raise ValueError("a direction of zero length has no heading")
        self.directions.copy_(directions / norms)

    def potential(self, z: torch.Tensor, t: float | torch.Tensor, k: int | torch.Tensor) -> torch.Tensor:
        """u^k(z) = v_k·z -> (B,); time-free."""
        return (z * self.velocity(z, t, k)).sum(-1)

    def velocity(self, z: torch.Tensor, t: float | torch.Tensor, k: int | torch.Tensor) -> torch.Tensor:
        """v_k -> (B, d), the same at every z and t."""
        k = self._check(z, k)
        v = self.directions[k].to(z)
        return v.expand_as(z) if isinstance(k, int) else v
