"""Every traversal method behind one interface: the potential flow (paper eq. 2-3) and the baselines it is compared
with (Song et al., ICML 2023), plus two floors.

- `potential`: `PotentialFlow`, the paper's method: K MLP potentials u^k(z, t) trained with the wave equation.
- `linear`: `LinearPotential`, u^k = a_k·z trained with the same losses: the paper's controlled baseline, straight
  lines whose wave residual is exactly zero.
- `warped`: `WarpedSpace` (Tzelepis et al., "WarpedGANSpace", ICCV 2021): the normalised gradient of a learned sum
  of Gaussian RBFs; trained without the PDE terms (`pde_terms = False`).
- `sefa`: `SeFa` (Shen & Zhou, "Closed-Form Factorization of Latent Semantics in GANs", CVPR 2021): the top
  eigenvectors of AᵀA, A the generator's first weight on z; closed form, no training.
- `axes`: `LatentAxes`, the latent coordinates e_0..e_{K-1}, the classic VAE traversal (a floor).
- `random`: `RandomDirections`, K seeded random unit directions (a floor).

Each has `num_potentials`, `latent_dim`, `num_timesteps`, `step_size`, `label(k)`, `config` and
`traverse(z0, k, num_steps, step_size, direction, differentiable) -> (num_steps + 1, B, d)`, with PotentialFlow's
argument checks, so `pdetraversal.potentials.traverse_both_ways` works on all. The trained ones (`potential`,
`linear`, `warped`) also have `potential(z, t, k)`, `velocity(z, t, k)` and `wave_speed`, which is all that
`pdetraversal.training.training_step` uses. Each saves with `save_pretrained`, whose config.json names its `method`;
`load_traversal` reads that key back and loads the right class strictly.
"""
from __future__ import annotations

import os

from ..hub import CheckpointError, read_config
from ..potentials import PotentialFlow
from .axes import LatentAxes
from ..traversal import Traversal
from .linear import LinearPotential
from .random_directions import RandomDirections
from .sefa import SeFa
from .warped import WarpedSpace

METHODS = {
    "potential": PotentialFlow,
    "linear": LinearPotential,
    "warped": WarpedSpace,
    "sefa": SeFa,
    "axes": LatentAxes,
    "random": RandomDirections,
}


def floors(generator, num_potentials: int, num_timesteps: int, step_size: float, seed: int = 0) -> dict:
    """The closed-form lines every method is compared with, at the same T and step: {"sefa" (where the generator
    has `latent_weight()`), "axes", "random"}. Axes and SeFa take min(d, K) directions, random K (seed `seed`)."""
    d = int(generator.latent_dim)
    out = {}
    if callable(getattr(generator, "latent_weight", None)) and generator.latent_weight() is not None:
        out["sefa"] = SeFa.from_generator(generator, min(d, num_potentials), num_timesteps=num_timesteps,
                                          step_size=step_size)
    out["axes"] = LatentAxes(d, min(d, num_potentials), num_timesteps, step_size)
    out["random"] = RandomDirections(d, num_potentials, num_timesteps, step_size, seed=seed)
    return out


def load_traversal(repo_id_or_folder: str | os.PathLike, revision: str | None = None, subfolder: str | None = None,
                   **download_kwargs):
    """Any method saved with save_pretrained, from a folder or a Hub repo (at `revision`, in `subfolder`), in eval mode.

    The class is the one config.json names under `method`; a config without it (written before the key existed)
    is a PotentialFlow. Loading is strict (pdetraversal.hub.HubModule); an unknown method is a CheckpointError."""
    config = read_config(repo_id_or_folder, revision, subfolder, **download_kwargs)
    name = config.get("method", "potential")
    if name not in METHODS:
        raise CheckpointError(f"{repo_id_or_folder}: config.json names method={name!r}; known methods: {sorted(METHODS)}")
    return METHODS[name].from_pretrained(repo_id_or_folder, revision=revision, subfolder=subfolder,
                                         **download_kwargs).eval()


__all__ = ["METHODS", "floors", "load_traversal", "Traversal", "PotentialFlow", "LinearPotential", "WarpedSpace", "SeFa",
           "LatentAxes", "RandomDirections"]
