"""The traversal interface every method shares (the flow of paper eq. 2, z_{t+1} = z_t + step · v^k(z_t, t)).

`Traversal` is the base of `PotentialFlow` and of every baseline (`pdetraversal.baselines`): `num_potentials`,
`latent_dim`, `num_timesteps`, `step_size`, `label(k)`, `config`, and `traverse`, which rolls out any velocity field
v^k. A subclass defines `velocity(z, t, k) -> (B, d)` and its own state; the argument checks and their errors are
shared, so callers (the app, the benchmarks, `traverse_both_ways`) see one behaviour whatever the method.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .hub import HubModule


def _check_step_size(step_size) -> float:
    try:
        finite = not isinstance(step_size, bool) and math.isfinite(float(step_size))
    except (TypeError, ValueError, RuntimeError):  # RuntimeError: a tensor of more than one number
        finite = False
    if not finite:
        raise ValueError(f"step_size must be a finite number, got {step_size!r}")
    return step_size


class Traversal(
    nn.Module,
    HubModule,
    library_name="pdetraversal",
    license="apache-2.0",
    tags=["latent-traversal", "pdetraversal"],
    paper_url="https://arxiv.org/abs/2304.12944",
):
    """K traversals of a d-dimensional latent space. Subclasses call `super().__init__` with the shared arguments.

    Args:
        latent_dim: d, the generator's latent size.
        num_potentials: K, the number of traversals.
        num_timesteps: T, the default traversal length.
        step_size: default step size for `traverse`.
        generator: repo id or folder of the generator the traversals are for.
        generator_revision: its revision (a commit sha when published).
        labels: optional human-readable name per k.
    """

    pde_terms = False  # overridden by methods trained with L_u and L_f
    default_label = "direction"  # label(k) is f"{default_label} {k}" unless labels are given

    def __init__(self, latent_dim: int, num_potentials: int, num_timesteps: int = 10, step_size: float = 1.0,
                 generator: str | None = None, generator_revision: str | None = None,
                 labels: list[str] | None = None):
        super().__init__()
        if latent_dim < 1 or num_potentials < 1 or num_timesteps < 2:
            raise ValueError("need latent_dim >= 1, num_potentials >= 1 and num_timesteps >= 2")
        if labels is not None and len(labels) != num_potentials:
            raise ValueError(f"got {len(labels)} labels for {num_potentials} potentials")
        _check_step_size(step_size)
        self.latent_dim, self.num_potentials = latent_dim, num_potentials
        self.num_timesteps, self.step_size = num_timesteps, step_size
        self.labels = labels

    @property
    def config(self) -> dict:
        return dict(self._hub_mixin_config)

    def set_labels(self, labels: list[str] | None) -> None:
        """Name the traversals (e.g. after measuring what each one changes); saved with the config."""
        if labels is not None and len(labels) != self.num_potentials:
            raise ValueError(f"got {len(labels)} labels for {self.num_potentials} potentials")
        self.labels = labels
        self._hub_mixin_config["labels"] = labels

    def label(self, k: int) -> str:
        return self.labels[k] if self.labels else f"{self.default_label} {k}"

    def _check(self, z: torch.Tensor, k: int | torch.Tensor) -> int | torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        if isinstance(k, torch.Tensor) and k.ndim == 0:
            k = int(k)
        if isinstance(k, int):
            if not 0 <= k < self.num_potentials:
                raise IndexError(f"potential index k={k} out of range 0..{self.num_potentials - 1}")
            return k
        if k.shape != (z.shape[0],) or k.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"k must be an int or an integer tensor of shape ({z.shape[0]},), got {k.dtype} {tuple(k.shape)}")
        if k.numel() and (int(k.min()) < 0 or int(k.max()) >= self.num_potentials):
            raise IndexError(f"potential indices must lie in 0..{self.num_potentials - 1}")
        return k.long()

    def velocity(self, z: torch.Tensor, t: float | torch.Tensor, k: int | torch.Tensor) -> torch.Tensor:
        """v^k(z, t) -> (B, d): the step direction at z (before step_size and the direction sign)."""
        raise NotImplementedError

    def traverse(
        self,
        z0: torch.Tensor,
        k: int | torch.Tensor,
        num_steps: int | None = None,
        step_size: float | None = None,
        direction: int = 1,
        differentiable: bool = False,
    ) -> torch.Tensor:
        """Follow z_{t+1} = z_t + direction · step_size · v^k(z_t, t) from z0; returns (num_steps + 1, B, d).

        The path is detached unless `differentiable` (then it keeps the graph through every step)."""
        if direction not in (1, -1):
            raise ValueError(f"direction must be +1 or -1, got {direction}")
        num_steps = self.num_timesteps if num_steps is None else num_steps
        if num_steps < 0:
            raise ValueError(f"num_steps must be >= 0, got {num_steps}")
        step = (self.step_size if step_size is None else _check_step_size(step_size)) * direction
        if not bool(torch.isfinite(z0).all()):
            raise ValueError("z0 holds NaN or inf: a traversal needs finite start codes")
        with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
            path = [z0]
            for i in range(num_steps):
                path.append(path[-1] + step * self.velocity(path[-1], float(i), k))
            return torch.stack(path)
