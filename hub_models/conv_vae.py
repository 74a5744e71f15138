"""The convolutional VAE shared by the dSprites and MNIST generators: G = sigmoid(Dec(z)) (the paper's VAE settings,
Sec. 4 and 4.3). Only the image shape and the encoder's channels differ between them.

Encoder q(z|x) = N(mu(x), diag(exp(logvar(x)))): 4x4 stride-2 convolutions with ReLU down to 4x4 pixels, then
Linear(2w*16, hidden) -> ReLU -> Linear(hidden, 2*latent_dim). Decoder p(x|z) = Bernoulli(sigmoid(logits)):
Linear(latent_dim, hidden) -> ReLU -> Linear(hidden, 2w*16) -> ReLU, then the transposed convolutions in mirror order
back to the image's channels of logits. The layer indices inside `encoder`, `decoder_fc` and `decoder_conv` are
the shipped checkpoints' keys.
"""
from __future__ import annotations

import torch
from torch import nn


def _check_sizes(owner: str, **sizes) -> None:
    for name, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")


class ConvVAE:
    """Mixed into a `Generator` subclass whose __init__ sets `image_shape` and calls `_build(latent_dim, width,
    hidden_dim, widths)`; `widths` are the encoder convolutions' output channels in multiples of `width`, e.g.
    (1, 1, 2, 2) for 64x64 sprites (channels w, w, 2w, 2w); the decoder's transposed convolutions mirror them. Not a
    Generator itself, so it is not in the registry of loadable classes."""

    image_shape: tuple[int, int, int]

    def _build(self, latent_dim: int, width: int, hidden_dim: int, widths: tuple[int, ...]) -> None:
        _check_sizes(type(self).__name__, latent_dim=latent_dim, width=width, hidden_dim=hidden_dim)
        self.latent_dim = latent_dim
        channels = (self.image_shape[0], *(m * width for m in widths))
        top = channels[-1]
        self._top = (top, 4, 4)
        pairs = list(zip(channels, channels[1:]))
        down = [m for a, b in pairs for m in (nn.Conv2d(a, b, 4, 2, 1), nn.ReLU())]
        self.encoder = nn.Sequential(*down, nn.Flatten(), nn.Linear(top * 16, hidden_dim), nn.ReLU(),
                                     nn.Linear(hidden_dim, 2 * latent_dim))
        self.decoder_fc = nn.Sequential(nn.Linear(latent_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, top * 16),
                                        nn.ReLU())
        up = [m for a, b in reversed(pairs) for m in (nn.ConvTranspose2d(b, a, 4, 2, 1), nn.ReLU())]  # the mirror
        self.decoder_conv = nn.Sequential(*up[:-1])  # no ReLU on the logits

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) images in [0, 1] -> (mu, logvar), each (B, latent_dim)."""
        if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"{type(self).__name__}.encode expects images of shape (B, {', '.join(map(str, self.image_shape))}), "
                             f"got {tuple(x.shape)}")
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def latent_weight(self) -> torch.Tensor:
        """The decoder's first Linear, (hidden_dim, latent_dim), the layer acting on z: what SeFa factorises."""
        return self.decoder_fc[0].weight

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) -> Bernoulli logits (B, C, H, W)."""
        self.check_latent(z)
        return self.decoder_conv(self.decoder_fc(z).view(-1, *self._top))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) -> pixel probabilities (B, C, H, W) in [0, 1]; differentiable in z."""
        return torch.sigmoid(self.decode_logits(z))

    def forward(self, x: torch.Tensor, sample: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruct: (logits, mu, logvar); z = mu + sigma * eps when `sample`, else z = mu."""
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if sample else mu
        return self.decode_logits(z), mu, logvar
