"""The physics-informed terms (paper eq. 3-4): the wave equation residual and the initial condition.

    f^k(z, t) = ∂²u^k/∂t² − (c^k)² Δ_z u^k,        L_f = mean_t ‖f^k(z_t, t)‖²
    L_u = ‖∇_z u^k(z_0, 0)‖²

Δ_z u is the true Laplacian: the trace of the Hessian in z (not the Hessian row-sum Σ_i ∂²u/∂z_i∂z_j that the
authors' code computes). ∂²u/∂t² is taken per sample: each sample has its own t, and since samples do not
interact, the gradient of a batch sum w.r.t. a (B,) time tensor is each sample's own derivative.
"""
from __future__ import annotations

from typing import Callable

import torch

UFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _leaf(x: torch.Tensor) -> torch.Tensor:
    return x if x.requires_grad else x.detach().requires_grad_(True)


def _grad(out: torch.Tensor, inp: torch.Tensor, grad_outputs: torch.Tensor | None = None) -> torch.Tensor:
    """d out / d inp keeping the graph; zeros where out does not depend on inp (e.g. a linear or time-free u)."""
    if not out.requires_grad:
        return torch.zeros_like(inp)
    (g,) = torch.autograd.grad(out, inp, grad_outputs=grad_outputs, create_graph=True, allow_unused=True)
    return torch.zeros_like(inp) if g is None else g


def hessian_trace(grad_z: torch.Tensor, z: torch.Tensor, method: str = "exact", num_probes: int = 1,
                  rng: torch.Generator | None = None) -> torch.Tensor:
    """Δ_z u per sample, from ∇_z u (built with create_graph=True from z). Returns (B,).

    Both methods sum vᵀHv over Hessian-vector products, one backward pass each (samples are independent, so one
    pass serves the whole batch):
    "exact": v = e_1..e_d, which gives tr H exactly; d passes.
    "hutchinson": the mean over `num_probes` Rademacher v, unbiased (E[vᵀHv] = tr H); variance falls as 1/probes.
    (A batched pass over all v at once, autograd's is_grads_batched, was several times slower here.)
    """
    B, d = z.shape
    if method == "exact":
        return sum(_grad(grad_z[:, i].sum(), z)[:, i] for i in range(d))
    if method == "hutchinson":
        if num_probes < 1:
            raise ValueError(f"num_probes must be >= 1, got {num_probes}")
        total = 0
        for _ in range(num_probes):
            v = (torch.randint(0, 2, (B, d), generator=rng) * 2 - 1).to(z)
            total = total + (v * _grad(grad_z, z, v)).sum(-1)
        return total / num_probes
    raise ValueError(f"laplacian must be 'exact' or 'hutchinson', got {method!r}")


def laplacian(u_fn: UFn, z: torch.Tensor, t: torch.Tensor, method: str = "exact", num_probes: int = 1,
              rng: torch.Generator | None = None) -> torch.Tensor:
    """Δ_z u(z, t) per sample -> (B,)."""
    z = _leaf(z)
    grad_z = _grad(u_fn(z, t).sum(), z)
    return hessian_trace(grad_z, z, method, num_probes, rng)


def wave_residual(u_fn: UFn, z: torch.Tensor, t: torch.Tensor, c: float | torch.Tensor, laplacian: str = "exact",
                  num_probes: int = 1, rng: torch.Generator | None = None) -> torch.Tensor:
    """f = ∂²u/∂t² − c²·Δ_z u for any u_fn(z, t) -> (B,); z (B, d), t (B,), c a scalar or (B,). Returns (B,).

    Differentiable w.r.t. u_fn's parameters and c, so mean(f²) can be minimised directly.
    """
    if z.ndim != 2 or t.shape != (z.shape[0],):
        raise ValueError(f"need z of shape (B, d) and t of shape (B,), got {tuple(z.shape)} and {tuple(t.shape)}")
    z, t = _leaf(z), _leaf(t)
    u = u_fn(z, t)
    grad_z, grad_t = _grad(u.sum(), z), _grad(u.sum(), t)
    u_tt = _grad(grad_t.sum(), t)
    lap = hessian_trace(grad_z, z, laplacian, num_probes, rng)
    return u_tt - torch.as_tensor(c, dtype=z.dtype, device=z.device) ** 2 * lap


def initial_condition(velocity0: torch.Tensor) -> torch.Tensor:
    """L_u per sample: ‖∇_z u^k(z_0, 0)‖² -> (B,), from the velocity at t = 0."""
    return velocity0.pow(2).sum(-1)
