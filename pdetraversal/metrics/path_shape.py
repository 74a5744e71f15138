"""What the traversals and the physics actually do along the paths (paper eq. 2-4).

A small L_f says nothing when u is nearly linear in z and constant in t: then u_tt = 0 and Δ_z u = 0, and the wave
equation f = u_tt − c²Δ_z u (eq. 3) holds trivially. And L_u = ‖∇u(z_0, 0)‖² (eq. 4) is only met when the first
step is small next to the later ones. So, per potential, along traversals from given starts:

- straightness: chord / arc length of the path (1 for a straight line, smaller when it bends);
- turning: the mean angle between consecutive steps, in degrees (0 for a line; how much the direction changes with t);
- first step ‖z_1 − z_0‖, the mean of the later steps, and their ratio (≪ 1 when the initial condition holds);
- |u_tt|, |c²Δ_z u| and |f| averaged over the path's points (z_t, t), t = 0..S−1: the wave equation does something
  only when the two terms are large and cancel, i.e. |f| ≪ |u_tt| ≈ |c²Δu| with both clearly non-zero.
The physics columns need `potential(z, t, k)` and `wave_speed`; methods without them (straight lines) get None.

Public: `path_shape(path)`, `mean_step(method, z0)`, `path_diagnostics(method, z0, ...)`, `format_diagnostics(rows)`.
"""
from __future__ import annotations

import math

import torch

from .. import pde

EXACT_LAPLACIAN_MAX_DIM = 128  # above this the exact trace costs d backward passes per point; use 8 Hutchinson probes


def path_shape(path: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample shape of paths (S + 1, B, d), S >= 1: straightness, turning (degrees; 0 when S = 1), first step,
    mean later step (the first one again when S = 1), each (B,)."""
    if path.ndim != 3 or path.shape[0] < 2:
        raise ValueError(f"path must have shape (S + 1, B, d) with S >= 1, got {tuple(path.shape)}")
    steps = path[1:] - path[:-1]
    lengths = steps.norm(dim=-1)                                   # (S, B)
    arc = lengths.sum(0)
    chord = (path[-1] - path[0]).norm(dim=-1)
    straightness = torch.where(arc > 0, chord / arc.clamp_min(1e-30), torch.ones_like(arc))
    if steps.shape[0] > 1:
        unit = steps / lengths[..., None].clamp_min(1e-30)
        a, b = unit[1:], unit[:-1]  # the angle as 2·atan2(|a − b|, |a + b|): acos loses it near 0 in float32
        turning = torch.rad2deg(2 * torch.atan2((a - b).norm(dim=-1), (a + b).norm(dim=-1))).mean(0)
        later = lengths[1:].mean(0)
    else:
        turning, later = torch.zeros_like(arc), lengths[0]
    return {"straightness": straightness, "turning_deg": turning, "first_step": lengths[0], "later_step": later}


def _physics(method, path: torch.Tensor, k: int, laplacian: str | None) -> dict[str, float] | None:
    if not (callable(getattr(method, "potential", None)) and hasattr(method, "wave_speed")):
        return None
    d = path.shape[-1]
    laplacian = laplacian or ("exact" if d <= EXACT_LAPLACIAN_MAX_DIM else "hutchinson")
    probes = 1 if laplacian == "exact" else 8
    c2 = float(method.wave_speed[k].detach()) ** 2
    u_tt, lap, f = [], [], []
    rng = torch.Generator().manual_seed(0)
    for t in range(path.shape[0] - 1):
        z = path[t].detach().requires_grad_(True)
        tt = torch.full((z.shape[0],), float(t), dtype=z.dtype, device=z.device).requires_grad_(True)

        def u_fn(zz, time):
            return method.potential(zz, time, k)

        with torch.enable_grad():  # one forward pass of u for both derivatives
            u = u_fn(z, tt).sum()
            grad_z, grad_t = pde._grad(u, z), pde._grad(u, tt)
            u_tt.append(pde._grad(grad_t.sum(), tt).detach())
            lap.append(pde.hessian_trace(grad_z, z, laplacian, probes, rng).detach())
        f.append(u_tt[-1] - c2 * lap[-1])
    mean_abs = lambda xs: torch.stack(xs).abs().mean().item()  # noqa: E731
    return {"u_tt": mean_abs(u_tt), "c2_laplacian": c2 * mean_abs(lap), "residual": mean_abs(f), "wave_speed": math.sqrt(c2)}


def mean_step(method, z0: torch.Tensor) -> float:
    """Mean latent step length ‖z_{t+1} − z_t‖ of the positive traversals from z0, over k, t and starts: the step
    straight-line floors get so that they move as far as the method they are compared with."""
    lengths = [(p[1:] - p[:-1]).norm(dim=-1).mean() for p in
               (method.traverse(z0, k).detach() for k in range(int(method.num_potentials)))]
    return float(torch.stack(lengths).mean())


def path_diagnostics(method, z0: torch.Tensor, num_steps: int | None = None, step_size: float | None = None,
                     laplacian: str | None = None) -> list[dict]:
    """One row per potential k of `method` (anything with the traversal interface): the shape of its positive
    traversals from z0 (means over the starts) and, for potentials, the wave-equation terms along them."""
    rows = []
    for k in range(int(method.num_potentials)):
        path = method.traverse(z0, k, num_steps, step_size).detach()
        shape = {name: v.mean().item() for name, v in path_shape(path).items()}
        shape["first_over_later"] = shape["first_step"] / max(shape["later_step"], 1e-30)
        rows.append({"k": k, **shape, "physics": _physics(method, path, k, laplacian)})
    return rows


def format_diagnostics(rows: list[dict]) -> str:
    """A markdown table of `path_diagnostics` rows, for cards and the console."""
    # The pipes of |u_tt| are escaped: unescaped they would end the Markdown cells.
    lines = ["| k | straightness | turning (deg/step) | first step | later steps | first / later | \\|u_tt\\| | "
             "\\|c²Δu\\| | \\|f\\| | c |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = r["physics"]
        physics = (f"{p['u_tt']:.3g} | {p['c2_laplacian']:.3g} | {p['residual']:.3g} | {p['wave_speed']:.3g}"
                   if p else "- | - | - | -")
        lines.append(f"| {r['k']} | {r['straightness']:.4f} | {r['turning_deg']:.2f} | {r['first_step']:.3g} | "
                     f"{r['later_step']:.3g} | {r['first_over_later']:.2f} | {physics} |")
    return "\n".join(lines)


__all__ = ["path_shape", "mean_step", "path_diagnostics", "format_diagnostics", "EXACT_LAPLACIAN_MAX_DIM"]
