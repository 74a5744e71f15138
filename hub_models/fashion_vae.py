"""A convolutional VAE for grey 32x32 Fashion-MNIST pictures: a frozen generator G = sigmoid(Dec(z)) of the kind the
paper traverses (Sec. 3-4; the paper itself has no Fashion-MNIST setting), on the data of
`pdetraversal.data.fashion_mnist`. No paper equation is implemented here; the ELBO it is trained with is in
`train/train_fashion_vae.py`.

Encoder q(z|x) = N(mu(x), diag(exp(logvar(x)))): three 4x4 stride-2 convolutions (32 -> 16 -> 8 -> 4 pixels,
channels w, 2w, 2w) with ReLU, then Linear(2w*16, hidden) -> ReLU -> Linear(hidden, 2*latent_dim).
Decoder p(x|z) = Bernoulli(sigmoid(logits)) per pixel: Linear(latent_dim, hidden) -> ReLU -> Linear(hidden, 2w*16)
-> ReLU, then three 4x4 stride-2 transposed convolutions back to 1 channel of logits. Prior p(z) = N(0, I).
The layers and methods are `hub_models.conv_vae.ConvVAE`, shared with the dSprites and MNIST VAEs.
"""
from __future__ import annotations

import torch

from diffusers.configuration_utils import register_to_config

from .base import Generator
from .conv_vae import ConvVAE


class FashionVAE(ConvVAE, Generator):
    """Conv VAE for (B, 1, 32, 32) images in [0, 1]; `decode(z)` gives Bernoulli means, `decode_logits(z)` logits."""

    @register_to_config
    def __init__(self, latent_dim: int = 16, width: int = 32, hidden_dim: int = 256):
        super().__init__()
        self.image_shape = (1, 32, 32)
        self._build(latent_dim, width, hidden_dim, widths=(1, 2, 2))  # 32 -> 16 -> 8 -> 4 pixels

    @torch.no_grad()
    def data_latent(self, n: int, seed: int | None = None) -> torch.Tensor | None:
        """Posterior means of n held-out test pictures (`fashion_mnist.images(n, seed, "test")`), or None when the
        data (Debian's dataset-fashion-mnist, or $FASHION_MNIST_DIR) is not installed."""
        from pdetraversal.data import fashion_mnist

        try:
            x = fashion_mnist.images(n, seed, split="test")
        except FileNotFoundError:
            return None
        return self.encode(x.to(self.device))[0]
