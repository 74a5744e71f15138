"""The physics-informed terms (paper eq. 5-6): the wave equation residual and the initial condition.

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


def _grad(out: torch.Tensor, inp: torch.Tensor, grad_outputs: torch.Tensor | None = None, batched: bool = False):
    """d out / d inp keeping the graph; zeros where out does not depend on inp (e.g. a linear or time-free u)."""
    shape = ((grad_outputs.shape[0],) if batched else ()) + tuple(inp.shape)
    if not out.requires_grad:
        return torch.zeros(shape, dtype=inp.dtype, device=inp.device)
    (g,) = torch.autograd.grad(out, inp, grad_outputs=grad_outputs, create_graph=True, allow_unused=True,
                               is_grads_batched=batched)
    return torch.zeros(shape, dtype=inp.dtype, device=inp.device) if g is None else g


def hessian_trace(grad_z: torch.Tensor, z: torch.Tensor, method: str = "exact", num_probes: int = 1,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Δ_z u per sample, from ∇_z u (built with create_graph=True from z). Returns (B,).

    "exact": all d Hessian-vector products with the basis vectors in one batched backward pass, then the diagonal.
    "hutchinson": E[vᵀHv] = tr H for Rademacher v; unbiased, variance falls as 1/num_probes.
    """
    B, d = z.shape
    if method == "exact":
        basis = torch.eye(d, dtype=z.dtype, device=z.device)[:, None, :].expand(d, B, d)
        hv = _grad(grad_z, z, basis, batched=True)
        return torch.diagonal(hv, dim1=0, dim2=2).sum(-1)  # hv[i, b, i] summed over i
    if method == "hutchinson":
        if num_probes < 1:
            raise ValueError(f"num_probes must be >= 1, got {num_probes}")
        v = torch.randint(0, 2, (num_probes, B, d), generator=generator, device="cpu").to(z) * 2 - 1
        hv = _grad(grad_z, z, v, batched=True)
        return (v * hv).sum(-1).mean(0)
    raise ValueError(f"laplacian must be 'exact' or 'hutchinson', got {method!r}")


def laplacian(u_fn: UFn, z: torch.Tensor, t: torch.Tensor, method: str = "exact", num_probes: int = 1,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Δ_z u(z, t) per sample -> (B,)."""
    z = _leaf(z)
    grad_z = _grad(u_fn(z, t).sum(), z)
    return hessian_trace(grad_z, z, method, num_probes, generator)


def wave_residual(u_fn: UFn, z: torch.Tensor, t: torch.Tensor, c: float | torch.Tensor, laplacian: str = "exact",
                  num_probes: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
    """f = ∂²u/∂t² − c²·Δ_z u for any u_fn(z, t) -> (B,); z (B, d), t (B,), c a scalar or (B,). Returns (B,).

    Differentiable w.r.t. u_fn's parameters and c, so mean(f²) can be minimised directly.
    """
    if z.ndim != 2 or t.shape != (z.shape[0],):
        raise ValueError(f"need z of shape (B, d) and t of shape (B,), got {tuple(z.shape)} and {tuple(t.shape)}")
    z, t = _leaf(z), _leaf(t)
    u = u_fn(z, t)
    grad_z, grad_t = _grad(u.sum(), z), _grad(u.sum(), t)
    u_tt = _grad(grad_t.sum(), t)
    lap = hessian_trace(grad_z, z, laplacian, num_probes, generator)
    return u_tt - torch.as_tensor(c, dtype=z.dtype, device=z.device) ** 2 * lap


def initial_condition(velocity0: torch.Tensor) -> torch.Tensor:
    """L_u per sample: ‖∇_z u^k(z_0, 0)‖² -> (B,), from the velocity at t = 0."""
    return velocity0.pow(2).sum(-1)
