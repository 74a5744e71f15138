"""The SNGAN ResNet generator and discriminator of Miyato et al. (2018, "Spectral Normalization for Generative
Adversarial Networks", the 32x32 ResNet of their Appendix B), as the frozen GAN generator of the paper's SNGAN
setting (Sec. 4: latent dimension 128, 32x32 images), here for 1-channel Fashion-MNIST (`train/train_sngan.py`).
No equation of the potential-flow paper lives here.

Generator G: z ~ N(0, I_128) -> Linear(128, 4*4*w) -> three up-sampling residual blocks
(BN, ReLU, nearest x2, conv3x3, BN, ReLU, conv3x3, plus a nearest x2 then 1x1-conv shortcut; 4 -> 8 -> 16 -> 32
pixels) -> BN, ReLU, conv3x3 to `channels` -> tanh, mapped to [0, 1] by (1 + tanh) / 2.

Discriminator D (trainer only, not a Generator, not registered, not shipped): every conv and the final Linear
carry spectral normalisation (one power iteration per training forward); an "optimized" first block (conv3x3,
ReLU, conv3x3, avg-pool, with an avg-pool then 1x1-conv shortcut), one down-sampling block (ReLU, conv, ReLU, conv,
avg-pool; 1x1-conv then avg-pool shortcut), two blocks without down-sampling, ReLU, a sum over pixels, SN Linear to
one logit.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import register_to_config
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from .base import Generator
from .conv_vae import _check_sizes


def _batch_norm(layer: nn.BatchNorm2d, x: torch.Tensor, frozen: bool) -> torch.Tensor:
    """`layer(x)`, but with its running statistics whenever `frozen`, whatever the module's train flag says: a
    frozen generator's image of z must not depend on the other latents in the batch."""
    if not frozen:
        return layer(x)
    return F.batch_norm(x, layer.running_mean, layer.running_var, layer.weight, layer.bias, training=False,
                        eps=layer.eps)


class GenBlock(nn.Module):
    """Up-sampling residual block: h = conv(ReLU(BN(conv(up(ReLU(BN(x))))))) + conv1x1(up(x))."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, 1, 1)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1)
        self.shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        h = F.interpolate(F.relu(_batch_norm(self.bn1, x, frozen)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(_batch_norm(self.bn2, self.conv1(h), frozen)))
        return h + self.shortcut(F.interpolate(x, scale_factor=2, mode="nearest"))


class SNGANGenerator(Generator):
    """G: (n, latent_dim) -> (n, channels, 32, 32) in [0, 1]. `forward(z)` is the training pass (batch statistics
    while in train mode) and gives tanh outputs in [-1, 1]; `decode(z)` always uses the running statistics."""

    @register_to_config
    def __init__(self, latent_dim: int = 128, channels: int = 1, width: int = 256):
        super().__init__()
        _check_sizes(type(self).__name__, latent_dim=latent_dim, channels=channels, width=width)
        self.latent_dim = latent_dim
        self.image_shape = (channels, 32, 32)
        self.width = width
        self.fc = nn.Linear(latent_dim, 4 * 4 * width)
        self.blocks = nn.ModuleList([GenBlock(width, width) for _ in range(3)])  # 4 -> 8 -> 16 -> 32 pixels
        self.bn_out = nn.BatchNorm2d(width)
        self.conv_out = nn.Conv2d(width, channels, 3, 1, 1)
        # Xavier-uniform, with gain sqrt(2) on the residual 3x3 convs that follow a ReLU, as SNGAN code commonly does:
        # PyTorch's default init leaves the tanh output nearly constant at the start.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                gain = 2 ** 0.5 if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) and m is not self.conv_out else 1.0
                nn.init.xavier_uniform_(m.weight, gain)
                nn.init.zeros_(m.bias)

    def _run(self, z: torch.Tensor, frozen: bool) -> torch.Tensor:
        self.check_latent(z)
        h = self.fc(z).view(-1, self.width, 4, 4)
        for block in self.blocks:
            h = block(h, frozen)
        return torch.tanh(self.conv_out(F.relu(_batch_norm(self.bn_out, h, frozen))))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Training pass: images in [-1, 1], BatchNorm as its train flag says."""
        return self._run(z, frozen=False)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(n, latent_dim) -> (n, C, 32, 32) in [0, 1], BatchNorm on its running statistics; differentiable in z."""
        return (self._run(z, frozen=True) + 1) / 2

    def latent_weight(self) -> torch.Tensor:
        """The first Linear's weight, (16 * width, latent_dim): what SeFa factorises."""
        return self.fc.weight


class OptimizedDisBlock(nn.Module):
    """The discriminator's first block: conv, ReLU, conv, avg-pool; shortcut avg-pool then 1x1 conv (no ReLU on
    the raw image)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = spectral_norm(nn.Conv2d(cin, cout, 3, 1, 1))
        self.conv2 = spectral_norm(nn.Conv2d(cout, cout, 3, 1, 1))
        self.shortcut = spectral_norm(nn.Conv2d(cin, cout, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.avg_pool2d(self.conv2(F.relu(self.conv1(x))), 2)
        return h + self.shortcut(F.avg_pool2d(x, 2))


class DisBlock(nn.Module):
    """ReLU, conv, ReLU, conv (then avg-pool when `down`); the shortcut is a 1x1 conv (then avg-pool) when the block
    changes the size or the channels, else the identity."""

    def __init__(self, cin: int, cout: int, down: bool):
        super().__init__()
        self.down = down
        self.conv1 = spectral_norm(nn.Conv2d(cin, cout, 3, 1, 1))
        self.conv2 = spectral_norm(nn.Conv2d(cout, cout, 3, 1, 1))
        self.shortcut = spectral_norm(nn.Conv2d(cin, cout, 1)) if down or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.relu(self.conv1(F.relu(x))))
        s = x if self.shortcut is None else self.shortcut(x)
        if self.down:
            h, s = F.avg_pool2d(h, 2), F.avg_pool2d(s, 2)
        return h + s


class SNGANDiscriminator(nn.Module):
    """D: (n, channels, 32, 32) images in [-1, 1] -> (n,) logits; used by the trainer only."""

    def __init__(self, channels: int = 1, width: int = 128):
        super().__init__()
        _check_sizes(type(self).__name__, channels=channels, width=width)
        self.blocks = nn.Sequential(OptimizedDisBlock(channels, width),  # 32 -> 16
                                    DisBlock(width, width, down=True),  # 16 -> 8
                                    DisBlock(width, width, down=False), DisBlock(width, width, down=False))
        self.linear = spectral_norm(nn.Linear(width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.blocks(x)).sum(dim=(2, 3))  # global sum pool, as in Miyato et al.
        return self.linear(h).squeeze(1)
