"""The physics-informed terms (paper eq. 3-4): the wave equation residual and the initial condition.

    f^k(z, t) = ∂²u^k/∂t² − (c^k)² Δ_z u^k,        L_f = mean_t ‖f^k(z_t, t)‖²
    L_u = ‖∇_z u^k(z_0, 0)‖²

Δ_z u is the true Laplacian: the trace of the Hessian in z (not the Hessian row-sum Σ_i ∂²u/∂z_i∂z_j that the
authors' code computes). ∂²u/∂t² is taken per sample: each sample has its own t, and since samples do not
interact, the gradient of a batch sum w.r.t. a (B,) time tensor is each sample's own derivative.

The exact Laplacian is computed one of two ways, chosen by d (both give tr H to float rounding):
d backward passes, one Hessian-vector product H·e_i each (`hessian_trace`), or, up to FORWARD_MODE_MAX_DIM,
forward-over-reverse mode (`forward_mode_laplacian`: the JVP of ∇_z u along every e_i at once, by torch.func),
which at small d costs less than the d passes (measured in bench/results/speed.md).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.func import grad as func_grad, jvp, vmap

UFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Up to this latent size the exact Laplacian uses forward mode: bench/speed.py measured it 2x faster at d = 32 and
# slower at d = 128 through PotentialFlow's padded layout (its width below 256); through the sorted layout (width 256
# and up) it was faster at every d tried, but at large d its (d, B, d) tangents take gigabytes, so d alone decides.
FORWARD_MODE_MAX_DIM = 32


def _leaf(x: torch.Tensor) -> torch.Tensor:
    return x if x.requires_grad else x.detach().requires_grad_(True)


def _grads(out: torch.Tensor, inputs: tuple[torch.Tensor, ...],
           grad_outputs: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """d out / d each input, in one backward pass, keeping the graph; zeros for an input that out does not use."""
    if not out.requires_grad:
        return tuple(torch.zeros_like(x) for x in inputs)
    grads = torch.autograd.grad(out, inputs, grad_outputs=grad_outputs, create_graph=True, allow_unused=True)
    return tuple(torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads))


def _grad(out: torch.Tensor, inp: torch.Tensor, grad_outputs: torch.Tensor | None = None) -> torch.Tensor:
    """d out / d inp keeping the graph; zeros where out does not depend on inp (e.g. a linear or time-free u)."""
    return _grads(out, (inp,), grad_outputs)[0]


def hessian_trace(grad_z: torch.Tensor, z: torch.Tensor, method: str = "exact", num_probes: int = 1,
                  rng: torch.Generator | None = None, rows: int | None = None) -> torch.Tensor:
    """Δ_z u per sample, from ∇_z u (built with create_graph=True from z). Returns (rows,), rows = B by default.

    `rows`: only the first `rows` samples; the others (points the caller evaluated in the same pass for their
    gradient alone) get no Hessian, and Hutchinson draws its probes for the first `rows` only.
    Both methods sum vᵀHv over Hessian-vector products, one backward pass each (samples are independent, so one
    pass serves the whole batch):
    "exact": v = e_1..e_d, which gives tr H exactly; d passes.
    "hutchinson": the mean over `num_probes` Rademacher v, unbiased (E[vᵀHv] = tr H); variance falls as 1/probes.
    (A batched pass over all v at once, autograd's is_grads_batched, was several times slower here.)
    """
    B, d = z.shape
    rows = B if rows is None else rows
    if method == "exact":
        return sum(_grad(grad_z[:rows, i].sum(), z)[:rows, i] for i in range(d))
    if method == "hutchinson":
        if num_probes < 1:
            raise ValueError(f"num_probes must be >= 1, got {num_probes}")
        total = 0
        rest = z.new_zeros(B - rows, d)  # no probe on the rows whose Laplacian is not wanted
        for _ in range(num_probes):
            v = (torch.randint(0, 2, (rows, d), generator=rng) * 2 - 1).to(z)
            total = total + (v * _grad(grad_z, z, torch.cat([v, rest]))[:rows]).sum(-1)
        return total / num_probes
    raise ValueError(f"laplacian must be 'exact' or 'hutchinson', got {method!r}")


def forward_mode_laplacian(u_fn: UFn, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The exact Δ_z u(z, t) per sample -> (B,), forward over reverse: H·e_i as the JVP of ∇_z u along e_i, for
    every i at once (vmap over i), then the diagonal. Samples are independent, so one tangent e_i (the same in every
    row) serves the whole batch. Differentiable w.r.t. u_fn's parameters (torch.func passes the outer graph on)."""
    B, d = z.shape

    def grad_u(x):
        return func_grad(lambda y: u_fn(y, t).sum())(x)

    basis = torch.eye(d, dtype=z.dtype, device=z.device)[:, None, :].expand(d, B, d)
    hess_columns = vmap(lambda e: jvp(grad_u, (z,), (e,))[1])(basis)  # (d, B, d): [i, b] = H_b e_i
    return torch.diagonal(hess_columns, dim1=0, dim2=2).sum(-1)


def _uses_forward_mode(method: str, d: int) -> bool:
    return method == "exact" and d <= FORWARD_MODE_MAX_DIM


def laplacian(u_fn: UFn, z: torch.Tensor, t: torch.Tensor, method: str = "exact", num_probes: int = 1,
              rng: torch.Generator | None = None) -> torch.Tensor:
    """Δ_z u(z, t) per sample -> (B,)."""
    z = _leaf(z)
    if _uses_forward_mode(method, z.shape[1]):
        return forward_mode_laplacian(u_fn, z, t)
    grad_z = _grad(u_fn(z, t).sum(), z)
    return hessian_trace(grad_z, z, method, num_probes, rng)


def wave_residual_and_gradient(u_fn: UFn, z: torch.Tensor, t: torch.Tensor, c: float | torch.Tensor,
                               laplacian: str = "exact", num_probes: int = 1, rng: torch.Generator | None = None,
                               rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(f, ∇_z u) from one forward pass of u_fn: f = ∂²u/∂t² − c²·Δ_z u at the first `rows` samples (default
    all), (rows,), and ∇_z u (with its graph) at all B, (B, d). c: a scalar or (rows,).

    A caller that steps along ∇_z u, or needs it at further points, gets it here without a second forward and
    backward pass of u_fn; the further points go after the first `rows` and have no residual computed.
    """
    if z.ndim != 2 or t.shape != (z.shape[0],):
        raise ValueError(f"need z of shape (B, d) and t of shape (B,), got {tuple(z.shape)} and {tuple(t.shape)}")
    if laplacian not in ("exact", "hutchinson"):
        raise ValueError(f"laplacian must be 'exact' or 'hutchinson', got {laplacian!r}")
    rows = z.shape[0] if rows is None else rows
    if not 0 <= rows <= z.shape[0]:
        raise ValueError(f"rows must lie in 0..{z.shape[0]}, got {rows}")
    z, t = _leaf(z), _leaf(t)
    grad_z, grad_t = _grads(u_fn(z, t).sum(), (z, t))  # one backward pass for both
    u_tt = _grad(grad_t[:rows].sum(), t)[:rows]
    if _uses_forward_mode(laplacian, z.shape[1]):
        lap = forward_mode_laplacian(u_fn, z, t)[:rows]
    else:
        lap = hessian_trace(grad_z, z, laplacian, num_probes, rng, rows)
    return u_tt - torch.as_tensor(c, dtype=z.dtype, device=z.device) ** 2 * lap, grad_z


def wave_residual(u_fn: UFn, z: torch.Tensor, t: torch.Tensor, c: float | torch.Tensor, laplacian: str = "exact",
                  num_probes: int = 1, rng: torch.Generator | None = None) -> torch.Tensor:
    """f = ∂²u/∂t² − c²·Δ_z u for any u_fn(z, t) -> (B,); z (B, d), t (B,), c a scalar or (B,). Returns (B,).

    Differentiable w.r.t. u_fn's parameters and c, so mean(f²) can be minimised directly.
    """
    return wave_residual_and_gradient(u_fn, z, t, c, laplacian, num_probes, rng)[0]


def initial_condition(velocity0: torch.Tensor) -> torch.Tensor:
    """L_u per sample: ‖∇_z u^k(z_0, 0)‖² -> (B,), from the velocity at t = 0."""
    return velocity0.pow(2).sum(-1)
