"""The auxiliary classifier C of the paper (eq. 7, L_k): which potential k moved x_t to x_{t+1}?

The pair is stacked on channels (2C input channels). Images up to 64 px use a LeNet-style net on the pair pooled
to LeNet's 32×32 (conv5 6, pool, conv5 16, pool, conv5 120, each conv with batch norm and ReLU, then
120 -> 84 -> K): pooling first makes it 4× cheaper on 64 px images, and a step of the flow changes whole sprites,
not single pixels. Larger images use a small ResNet (BasicBlocks, widths 32-256) with a 2C-channel stem.
No torchvision: both are a few lines of torch.
"""
from __future__ import annotations

import torch
from torch import nn


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1, padding: int | None = None) -> nn.Sequential:
    padding = kernel // 2 if padding is None else padding
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(_conv_bn_relu(cin, cout, 3, stride), nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(cout))
        self.skip = (nn.Identity() if stride == 1 and cin == cout
                     else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x):
        return torch.relu(self.body(x) + self.skip(x))


class PairClassifier(nn.Module):
    """logits over K potentials from (x_t, x_{t+1}), each (B, C, H, W)."""

    def __init__(self, num_potentials: int, channels: int = 1, image_size: int = 64):
        super().__init__()
        self.channels, self.image_size = channels, image_size
        cin = 2 * channels
        if image_size <= 64:
            self.features = nn.Sequential(
                nn.AdaptiveAvgPool2d(32),
                _conv_bn_relu(cin, 6, 5, padding=0), nn.MaxPool2d(2),  # 28 -> 14
                _conv_bn_relu(6, 16, 5, padding=0), nn.MaxPool2d(2),  # 10 -> 5
                _conv_bn_relu(16, 120, 5, padding=0), nn.Flatten(),  # 1×1
            )
            self.head = nn.Sequential(nn.Linear(120, 84), nn.ReLU(inplace=True), nn.Linear(84, num_potentials))
        else:
            widths = (32, 64, 128, 256)
            layers = [_conv_bn_relu(cin, widths[0], 7, 2), nn.MaxPool2d(3, 2, 1)]
            for i, w in enumerate(widths):
                prev = widths[max(i - 1, 0)]
                layers += [_BasicBlock(prev, w, 1 if i == 0 else 2), _BasicBlock(w, w, 1)]
            self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.head = nn.Linear(widths[-1], num_potentials)

    def forward(self, x_t: torch.Tensor, x_next: torch.Tensor) -> torch.Tensor:
        if x_t.shape != x_next.shape or x_t.ndim != 4 or x_t.shape[1] != self.channels:
            raise ValueError(f"expected two image batches of shape (B, {self.channels}, H, W), "
                             f"got {tuple(x_t.shape)} and {tuple(x_next.shape)}")
        return self.head(self.features(torch.cat([x_t, x_next], dim=1)))
