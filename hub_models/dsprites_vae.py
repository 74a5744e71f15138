"""A convolutional VAE for 64x64 binary images: the generator G = sigmoid(Dec(z)) of the paper's dSprites setting
(Sec. 4), trained by `train/train_vae.py` on procedural dSprites (`pdetraversal.data.dsprites`).

Encoder q(z|x) = N(mu(x), diag(exp(logvar(x)))): four 4x4 stride-2 convolutions (64 -> 32 -> 16 -> 8 -> 4 pixels,
channels w, w, 2w, 2w) with ReLU, then Linear(2w*16, hidden) -> ReLU -> Linear(hidden, 2*latent_dim).
Decoder p(x|z) = Bernoulli(sigmoid(logits)): the mirror image (Linear layers, then four 4x4 stride-2 transposed
convolutions back to one channel of logits). Prior p(z) = N(0, I), so `Generator.sample_latent` draws from it.
With the defaults (latent_dim=10, width=32, hidden_dim=256) it has about 0.77M parameters. The layers and methods
are `hub_models.conv_vae.ConvVAE`, shared with the MNIST VAE.
"""
from __future__ import annotations

import torch

from pdetraversal.data import dsprites

from diffusers.configuration_utils import register_to_config

from .base import Generator
from .conv_vae import ConvVAE


class DSpritesVAE(ConvVAE, Generator):
    """Conv VAE for (B, 1, 64, 64) images in [0, 1]; `decode(z)` gives Bernoulli means, `decode_logits(z)` logits."""

    @register_to_config
    def __init__(self, latent_dim: int = 10, width: int = 32, hidden_dim: int = 256):
        super().__init__()
        self.image_shape = (1, 64, 64)
        self._build(latent_dim, width, hidden_dim, widths=(1, 1, 2, 2))  # 64 -> 32 -> 16 -> 8 -> 4 pixels

    @torch.no_grad()
    def data_latent(self, n: int, seed: int | None = None) -> torch.Tensor:
        """Posterior means of n fresh procedural dSprites (`dsprites.sample(n, seed)`): codes of real sprites."""
        return self.encode(dsprites.sample(n, seed)[0].to(self.device))[0]
