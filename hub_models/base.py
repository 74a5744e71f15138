"""The generator contract every traversable model follows: G: z -> x (the paper's frozen generator).

Hub base: `PyTorchModelHubMixin` (through `pdetraversal.hub.HubModule`), the same base as the potentials.
One base for both keeps one loading path (config.json + model.safetensors, strict keys) and needs nothing
beyond huggingface_hub; diffusers' ModelMixin would add a heavy dependency to load a 1 MB VAE. Generators that
wrap diffusers models (UNets, consistency models) can still be added by subclassing `Generator`.

`save_pretrained` also writes `generator_class` into config.json, which `load_generator` looks up in a fixed
registry of classes in this package: no code is ever loaded from a repo.
"""
from __future__ import annotations

import torch
from torch import nn

from pdetraversal.hub import HubModule

REGISTRY: dict[str, type["Generator"]] = {}


class Generator(nn.Module, HubModule, library_name="pdetraversal", tags=["pdetraversal-generator"]):
    """A frozen generator: `latent_dim`, `sample_latent(n, seed)`, `decode(z)` -> images in [0, 1], and optionally
    `data_latent(n, seed)`."""

    latent_dim: int

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        REGISTRY[cls.__name__] = cls

    def sample_latent(self, n: int, seed: int | None = None) -> torch.Tensor:
        """n draws from the prior p(z) = N(0, I); the same seed gives the same latents on any machine."""
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        return torch.randn(n, self.latent_dim, generator=g).to(self.device)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(n, latent_dim) -> (n, C, H, W) in [0, 1]; differentiable in z."""
        raise NotImplementedError

    def data_latent(self, n: int, seed: int | None = None) -> torch.Tensor | None:
        """Codes of n fresh images of the training data (e.g. a VAE's posterior means), or None when the generator
        cannot encode or has no data source. Traversals from these start at real images, not at prior samples."""
        return None

    def latent_weight(self) -> torch.Tensor | None:
        """The weight of the first layer acting on z, shape (out, latent_dim), for SeFa
        (`pdetraversal.baselines.sefa`); None when the generator has no linear first layer on z."""
        return None

    def check_latent(self, z: torch.Tensor) -> None:
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"{type(self).__name__} expects latents of shape (n, {self.latent_dim}), got {tuple(z.shape)}")

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def save_pretrained(self, save_directory, *, config=None, **kwargs):
        config = {**(config or self._hub_mixin_config or {}), "generator_class": type(self).__name__}
        return super().save_pretrained(save_directory, config=config, **kwargs)
