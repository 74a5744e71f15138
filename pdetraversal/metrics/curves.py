"""How closely traversals follow known curved factor paths.

The paper's central claim (Sec. 4.1) is that potentials u^k(z, t) varying in space and time give traversals
z_{t+1} = z_t + ∇_z u^k(z_t, t) (eq. 2) that bend with the latent space, where a linear direction cannot. On a
generator whose factor paths are known curves (`hub_models.swirl.SwirlVAE`: `true_factor_path(z0, factor,
num_steps, step, direction)`), that claim can be measured directly:

- distance: for each point of the two-way traversal from z0 (the -S end, ..., z0, ..., the +S end), the distance
  to the nearest point of the true curve of its factor through the same z0, the curve sampled densely in both
  directions and taken as a polyline (point-to-segment distances); the mean over the points, divided by the
  traversal's own length (the sum of its step lengths), so a scaled copy of a path scores the same. 0 means the
  traversal lies on the curve. A still traversal (length under 1e-8) has no direction: it counts as NaN and is left
  out of the means; `num_still` says how many.
- cosine: for each step z_t -> z_{t+1}, the cosine between the step and the curve's tangent at the point nearest the
  step's midpoint. The sign of a traversal is arbitrary for unsupervised methods, so each traversal's cosines are
  multiplied by the sign of their sum: a path that follows the curve backwards scores like one that follows it
  forwards, one that zigzags along it does not.

The curve is sampled at spacing `step / oversample` in the true path's parameter, so a traversal made with the true
path's own step lies on the samples and scores exactly 0. Its extent starts at twice the traversal's nominal reach
(2·num_steps·step) and doubles (at most 3 times) while some traversal point's nearest curve point is an end of the sampled curve, so a
traversal that follows the curve further than that is not penalised.

`assign_factors` maps each traversal of an unsupervised method to the factor whose curve it follows best (the
smallest distance). `curve_shape` gives a path's chord/arc ratio and largest turn between two of its steps, used to
size the swirl.

Public: `follow_curves`, `assign_factors`, `curve_shape`, `nearest_on_polyline`.
"""
from __future__ import annotations

import math

import torch

from ..potentials import traverse_both_ways

_MAX_DOUBLINGS = 3  # the curve then reaches 16 times the traversal's nominal reach
_STILL = 1e-8


def nearest_on_polyline(points: torch.Tensor, curve: torch.Tensor, chunk_size: int = 16
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Nearest points of polylines: points (N, B, d), curve (M, B, d) with M >= 2 (one polyline per column b).

    Returns (distance (N, B), unit tangent of the nearest segment (N, B, d), at_end (N, B): the nearest point is
    the first or the last vertex of the curve)."""
    if points.ndim != 3 or curve.ndim != 3 or points.shape[1:] != curve.shape[1:] or curve.shape[0] < 2:
        raise ValueError(f"need points (N, B, d) and a curve (M >= 2, B, d), got {tuple(points.shape)} and {tuple(curve.shape)}")
    dists, tangents, ends = [], [], []
    m = curve.shape[0] - 1
    for p, c in zip(points.split(chunk_size, dim=1), curve.split(chunk_size, dim=1)):
        a, seg = c[:-1], c[1:] - c[:-1]                                   # (M-1, b, d)
        length2 = (seg * seg).sum(-1)                                      # (M-1, b)
        rel = p[:, None] - a[None]                                         # (N, M-1, b, d)
        s = ((rel * seg[None]).sum(-1) / length2.clamp_min(1e-30)).clamp(0, 1)
        gap = (rel - s[..., None] * seg[None]).norm(dim=-1)               # (N, M-1, b)
        dist, idx = gap.min(dim=1)                                         # (N, b)
        s_best = s.gather(1, idx[:, None]).squeeze(1)
        seg_best = seg[idx, torch.arange(seg.shape[1])[None]]              # (N, b, d)
        dists.append(dist)
        tangents.append(seg_best / seg_best.norm(dim=-1, keepdim=True).clamp_min(1e-30))
        ends.append(((idx == 0) & (s_best == 0)) | ((idx == m - 1) & (s_best == 1)))
    return torch.cat(dists, 1), torch.cat(tangents, 1), torch.cat(ends, 1)


def _true_curve(generator, z0: torch.Tensor, factor: int, extent: float, spacing: float) -> torch.Tensor:
    n = max(1, math.ceil(extent / spacing))
    neg = generator.true_factor_path(z0, factor, n, spacing, direction=-1)
    pos = generator.true_factor_path(z0, factor, n, spacing, direction=1)
    return torch.cat([neg.flip(0), pos[1:]])


def _follow(path: torch.Tensor, generator, z0: torch.Tensor, factor: int, step: float, oversample: int) -> dict:
    """Distance and cosine per start for one two-way path (N, B, d) against the curve of `factor` through z0."""
    steps = path[1:] - path[:-1]
    lengths = steps.norm(dim=-1)                                           # (N-1, B)
    total = lengths.sum(0)                                                 # (B,)
    spacing = step / oversample
    extent = step * (path.shape[0] - 1)  # twice the nominal reach num_steps·step of each half of the path
    for _ in range(_MAX_DOUBLINGS + 1):
        curve = _true_curve(generator, z0, factor, extent, spacing)
        dist, _, at_end = nearest_on_polyline(path, curve)
        if not bool(at_end.any()):
            break
        extent *= 2
    mids = 0.5 * (path[1:] + path[:-1])
    _, tangent, _ = nearest_on_polyline(mids, curve)
    cos = (steps * tangent).sum(-1) / lengths.clamp_min(1e-30)            # (N-1, B)
    cos = torch.where(lengths > _STILL, cos, torch.nan)
    sign = torch.sign(torch.nansum(cos, dim=0))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    still = total <= _STILL
    per_start_distance = torch.where(still, torch.nan, dist.mean(0) / total.clamp_min(1e-30))
    per_start_cosine = torch.where(still, torch.nan, torch.nanmean(cos * sign, dim=0))
    return {"distance": per_start_distance, "cosine": per_start_cosine, "length": total, "still": still}


def _summary(r: dict, factor: int) -> dict:
    return {"factor": factor, "distance": float(torch.nanmean(r["distance"])), "cosine": float(torch.nanmean(r["cosine"])),
            "length": float(r["length"].mean()), "num_still": int(r["still"].sum())}


def _check_args(generator, z0, num_steps, oversample):
    if not callable(getattr(generator, "true_factor_path", None)):
        raise ValueError(f"{type(generator).__name__} has no true_factor_path(); curve metrics need known factor paths")
    if z0.ndim != 2:
        raise ValueError(f"z0 must have shape (B, d), got {tuple(z0.shape)}")
    if num_steps < 1 or oversample < 1:
        raise ValueError(f"num_steps and oversample must be >= 1, got {num_steps} and {oversample}")


@torch.no_grad()
def follow_curves(method, generator, z0: torch.Tensor, factors: dict[int, int], num_steps: int,
                  steps: dict[int, float], step_size: float | None = None, oversample: int = 16) -> dict[int, dict]:
    """Per traversal k of `method` (anything with `traverse(z0, k, num_steps, step_size, direction)`), how closely its
    two-way traversal of num_steps each way from z0 (B, d) follows the true curve of factor `factors[k]` through the
    same z0, `generator.true_factor_path` sampled at spacing steps[factor] / oversample.

    Returns {k: {"factor", "distance" (mean over starts, of the mean point-to-curve distance / traversal length),
    "cosine" (mean step-tangent cosine), "length" (mean traversal length), "num_still"}}, and under "per_start" the
    (B,) tensors of distance and cosine (NaN for still traversals)."""
    _check_args(generator, z0, num_steps, oversample)
    out = {}
    for k, f in factors.items():
        path = traverse_both_ways(method, z0, k, num_steps, step_size)
        r = _follow(path, generator, z0, f, steps[f], oversample)
        out[k] = {**_summary(r, f), "per_start": {"distance": r["distance"], "cosine": r["cosine"]}}
    return out


@torch.no_grad()
def assign_factors(method, generator, z0: torch.Tensor, ks, factors, num_steps: int, steps: dict[int, float],
                   step_size: float | None = None, oversample: int = 16) -> tuple[dict[int, int], dict[int, dict[int, float]]]:
    """For an unsupervised method: each k in `ks` -> the factor in `factors` whose true curve its traversals follow
    best (smallest mean distance, see `follow_curves`). Several k may get the same factor.

    Returns (assignment {k: factor}, distances {k: {factor: distance}}); a k whose traversals are all still gets
    distance NaN for every factor and is left out of the assignment."""
    _check_args(generator, z0, num_steps, oversample)
    assignment, table = {}, {}
    for k in ks:
        path = traverse_both_ways(method, z0, k, num_steps, step_size)
        table[k] = {f: float(torch.nanmean(_follow(path, generator, z0, f, steps[f], oversample)["distance"]))
                    for f in factors}
        finite = {f: d for f, d in table[k].items() if math.isfinite(d)}
        if finite:
            assignment[k] = min(finite, key=finite.get)
    return assignment, table


def curve_shape(path: torch.Tensor) -> dict[str, torch.Tensor]:
    """Shape of paths (N, B, d): "chord_arc" (B,) = |end − start| / sum of step lengths (1 for a straight line), and
    "max_turn_deg" (B,) the largest angle between two of the path's steps (0 for a straight line)."""
    steps = path[1:] - path[:-1]
    unit = steps / steps.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    # The angle between unit vectors u, v is 2·asin(|u − v| / 2), exact near 0 where acos(u·v) loses precision.
    gap = (unit[:, None] - unit[None]).norm(dim=-1).amax(dim=(0, 1))
    return {"chord_arc": (path[-1] - path[0]).norm(dim=-1) / steps.norm(dim=-1).sum(0).clamp_min(1e-30),
            "max_turn_deg": torch.rad2deg(2 * torch.asin((gap / 2).clamp(max=1)))}


__all__ = ["follow_curves", "assign_factors", "curve_shape", "nearest_on_polyline"]
