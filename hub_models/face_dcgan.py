"""A pre-trained DCGAN face generator as a frozen pdetraversal generator G: z -> x (the paper's frozen generator,
Sec. 3-4; the GAN itself is Radford et al.'s DCGAN, not part of the paper).

The architecture is the one of the PyTorch DCGAN tutorial, as used by the PyPI package `gan-face-generate` (trained
on DigiFace-1M; `train/convert_face_dcgan.py` converts its weights and says where they come from):

    z (B, d, 1, 1) -> ConvT(d, 8w, 4, 1, 0) -> BN -> ReLU      4x4
                   -> ConvT(8w, 4w, 4, 2, 1) -> BN -> ReLU    8x8
                   -> ConvT(4w, 2w, 4, 2, 1) -> BN -> ReLU   16x16
                   -> ConvT(2w, w, 4, 2, 1) -> BN -> ReLU    32x32
                   -> ConvT(w, C, 4, 2, 1) -> Tanh           64x64 in [-1, 1]

with no biases on the transposed convolutions. The layers sit under the same `main.<i>` keys as in the original
checkpoint, so its tensors load unchanged. `decode(z) = (G(z) + 1) / 2` maps z ~ N(0, I) to images in [0, 1].
With the defaults (d = 100, C = 3, w = 64) it has 3,576,704 parameters.
"""
from __future__ import annotations

import torch
from torch import nn

from diffusers.configuration_utils import register_to_config

from .base import Generator
from .conv_vae import _check_sizes

IMAGE_SIZE = 64  # fixed by the stack: 1 -> 4 -> 8 -> 16 -> 32 -> 64 pixels


class FaceDCGAN(Generator):
    """DCGAN generator for (B, channels, 64, 64) images; `width` is the tutorial's ngf (feature maps of the last
    hidden layer)."""

    @register_to_config
    def __init__(self, latent_dim: int = 100, channels: int = 3, width: int = 64):
        super().__init__()
        _check_sizes(type(self).__name__, latent_dim=latent_dim, channels=channels, width=width)
        self.latent_dim = latent_dim
        self.image_shape = (channels, IMAGE_SIZE, IMAGE_SIZE)
        widths = (latent_dim, 8 * width, 4 * width, 2 * width, width)
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths, widths[1:])):
            # The first layer turns the 1x1 code into 4x4 maps; each later one doubles the size.
            layers += [nn.ConvTranspose2d(a, b, 4, 1, 0, bias=False) if i == 0 else
                       nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU()]
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        self.train(False)

    def train(self, mode: bool = True) -> "FaceDCGAN":
        """Batch norm stays on its running statistics in every mode: this generator is only ever used frozen, and
        batch statistics would make each image depend on the others in its batch (and put in-place buffer updates
        in the way of `torch.func.jvp`)."""
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def latent_weight(self) -> torch.Tensor:
        """The first layer's weight as a (8w*16, latent_dim) matrix, for SeFa.

        A transposed convolution applied to a 1x1 input is a linear map of z: output[o, i, j] = Σ_c z[c] W[c, o, i, j]
        with no overlap between kernel positions, so the flattened 8w x 4 x 4 output is W.reshape(d, 8w*16)ᵀ z."""
        weight = self.main[0].weight
        return weight.reshape(weight.shape[0], -1).T

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) -> images (B, C, 64, 64) in [0, 1]; differentiable in z."""
        self.check_latent(z)
        return (self.main(z.view(-1, self.latent_dim, 1, 1)) + 1) / 2
