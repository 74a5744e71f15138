"""A tiny MLP generator G(z) = sigmoid(W2 tanh(W1 z)): the smallest model that follows the generator contract.

Used by the tests and as a template for new generators.
"""
from __future__ import annotations

import torch
from torch import nn

from diffusers.configuration_utils import register_to_config

from .base import Generator


class MLPGenerator(Generator):
    @register_to_config
    def __init__(self, latent_dim: int = 4, hidden_dim: int = 32, channels: int = 1, image_size: int = 8):
        super().__init__()
        self.latent_dim = latent_dim
        self.image_shape = (channels, image_size, image_size)
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden_dim), nn.Tanh(), nn.Linear(hidden_dim, channels * image_size * image_size)
        )

    def latent_weight(self) -> torch.Tensor:
        return self.net[0].weight

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        self.check_latent(z)
        return torch.sigmoid(self.net(z)).view(-1, *self.image_shape)
