"""K random unit directions in latent space, a floor: straight lines (paper eq. 2 with v_k constant) whose headings
are drawn from N(0, I) and normalised, i.e. uniform on the sphere.

A traversal method that does not beat these on the same generator and metric has shown nothing. The seed is part
of the config, so the same seed gives the same directions on any machine (torch's CPU generator).
"""
from __future__ import annotations

import torch

from .lines import StraightLines


class RandomDirections(StraightLines):
    """K seeded Gaussian directions, each scaled to unit norm; `seed` is saved with the config."""

    method_name = "random"
    default_label = "random"

    def __init__(self, latent_dim: int, num_potentials: int, num_timesteps: int = 10, step_size: float = 1.0,
                 generator: str | None = None, generator_revision: str | None = None,
                 labels: list[str] | None = None, seed: int = 0):
        super().__init__(latent_dim, num_potentials, num_timesteps, step_size, generator, generator_revision, labels)
        self.seed = seed
        rng = torch.Generator().manual_seed(seed)
        self._set_directions(torch.randn(num_potentials, latent_dim, generator=rng))
