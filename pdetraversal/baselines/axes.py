"""The latent axes e_0..e_{K-1}: the classic VAE traversal (vary one latent coordinate, keep the others), a floor.

A traversal method that does not beat these straight lines on the same generator and metric has shown nothing.
On a generator trained with factor labels the axes already are the factors, so only generators trained without
labels test an unsupervised method against them. Flow of paper eq. 2 with v_k = e_k (`lines.StraightLines`).
"""
from __future__ import annotations

import torch

from .lines import StraightLines


class LatentAxes(StraightLines):
    """Traversal k moves latent coordinate k only, by step_size per step. Needs K <= d."""

    method_name = "axes"
    default_label = "axis"

    def __init__(self, latent_dim: int, num_potentials: int, num_timesteps: int = 10, step_size: float = 1.0,
                 generator: str | None = None, generator_revision: str | None = None,
                 labels: list[str] | None = None):
        if num_potentials > latent_dim:
            raise ValueError(f"LatentAxes: {num_potentials} axes asked for, but the latent space has only {latent_dim}")
        super().__init__(latent_dim, num_potentials, num_timesteps, step_size, generator, generator_revision, labels)
        self._set_directions(torch.eye(latent_dim)[:num_potentials])
