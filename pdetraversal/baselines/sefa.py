"""SeFa (Shen & Zhou, "Closed-Form Factorization of Latent Semantics in GANs", CVPR 2021): straight lines along
the top-K eigenvectors of AᵀA, A the weight (out, d) of the generator's first layer acting on z.

The first layer maps a step n in z to a change A·n of its output; the unit steps that change it most maximise
‖A n‖² = nᵀAᵀA n, and the K best mutually orthogonal ones are the eigenvectors of AᵀA with the K largest
eigenvalues. Closed form, no training; one of the paper's baselines (Song et al., ICML 2023). The traversal is
paper eq. 2 with v_k constant (`lines.StraightLines`).
"""
from __future__ import annotations

import torch

from .lines import StraightLines


class SeFa(StraightLines):
    """Build it with `SeFa.from_generator(generator, K)`; `from_pretrained` restores saved directions.

    The buffer `eigenvalues` (K,) holds the eigenvalue of each direction (descending), i.e. ‖A v_k‖²."""

    method_name = "sefa"
    default_label = "SeFa"

    def __init__(self, latent_dim: int, num_potentials: int, num_timesteps: int = 10, step_size: float = 1.0,
                 generator: str | None = None, generator_revision: str | None = None,
                 labels: list[str] | None = None):
        if num_potentials > latent_dim:
            raise ValueError(f"SeFa: {num_potentials} directions asked for, but AᵀA has only {latent_dim} eigenvectors")
        super().__init__(latent_dim, num_potentials, num_timesteps, step_size, generator, generator_revision, labels)
        self.register_buffer("eigenvalues", torch.zeros(num_potentials))

    def velocity(self, z: torch.Tensor, t: float | torch.Tensor, k: int | torch.Tensor) -> torch.Tensor:
        if not bool(self.directions.any()):
            raise RuntimeError("this SeFa has no directions yet: build it with SeFa.from_generator(generator, K) "
                               "or load one with from_pretrained")
        return super().velocity(z, t, k)

    @classmethod
    def from_generator(cls, generator, num_potentials: int, /, **kwargs) -> "SeFa":
        """The top-`num_potentials` eigenvectors of AᵀA, A = generator.latent_weight(). kwargs: the other
        constructor arguments (num_timesteps, step_size, generator=<its repo id or folder>, ...); the first two
        arguments are positional-only, so `generator=` can name the generator's repo."""
        weight = generator.latent_weight() if callable(getattr(generator, "latent_weight", None)) else None
        if weight is None:
            raise ValueError(f"SeFa does not apply to {type(generator).__name__}: it has no linear first layer on z")
        if weight.ndim != 2 or weight.shape[1] != generator.latent_dim:
            raise ValueError(f"{type(generator).__name__}.latent_weight() must have shape (out, {generator.latent_dim}), "
                             f"got {tuple(weight.shape)}")
        model = cls(generator.latent_dim, num_potentials, **kwargs)
        a = weight.detach().to("cpu", torch.float64)  # float64: close eigenvalues swap order in float32
        values, vectors = torch.linalg.eigh(a.T @ a)  # ascending
        values, vectors = values.flip(0)[:num_potentials], vectors.flip(1)[:, :num_potentials].T  # (K,), (K, d)
        # An eigenvector's sign is arbitrary; fix it so its largest component is positive, for reproducible labels.
        signs = torch.sign(vectors.gather(1, vectors.abs().argmax(1, keepdim=True)))
        model._set_directions((vectors * signs).float())
        model.eigenvalues.copy_(values.float())
        return model
