"""Factor evaluation of dSprites traversals: which ground-truth factor does each potential move?

This is our stand-in for the paper's dSprites evaluation (Sec. 4): the paper judges traversals of a dSprites
VAE by which generative factor they change. We measure it with a regressor trained on procedural dSprites
(`pdetraversal.data.dsprites`, which knows the factors of every image), applied to the decoded frames of each
traversal `z_{t+1} = z_t ± ∇_z u^k(z_t, t)`.

`FactorRegressor` predicts from a (B, 1, 64, 64) image in [0, 1]:
- shape: logits over (square, ellipse, heart);
- scale, x, y: the normalised factor index / (size - 1) in [0, 1];
- orientation as (cos 4θ, sin 4θ). A square is the same image after a quarter turn, so for squares θ is only
  defined modulo 90°, i.e. only 4θ is a function of the image; for ellipses (θ modulo 180°) and hearts 4θ is too.
  4θ is therefore the one orientation quantity identifiable for every shape, and the one we predict.

`factor_report(flow, generator, regressor)` decodes each potential's traversals in both directions and measures,
per factor, the total variation of the predicted factor along the trajectory, normalised so that sweeping once
across the factor's full range counts 1:
- shape: 0.5 * L1 change of the predicted class probabilities per step (a full switch of class counts 1);
- orientation: absolute angular change of 4θ per step (wrapped to [-π, π]) divided by 2π, weighted by the
  regressor's confidence in the orientation (round blobs have none);
- scale, x, y: absolute change of the [0, 1] value per step.
The regressor's frame-to-frame jitter (0.01-0.03 per one-pixel move) would otherwise add up over the steps and
swamp slow but real changes, so the total variation is taken beyond a small per-factor dead band (`TOLERANCE`,
the play operator: jitter within the band counts 0, a monotone change D counts D - tolerance); pass
`tolerance={f: 0.0 ...}` for the plain total variation.
A potential's dominant factor is the one with the largest change, its share that change over the sum of all five;
a potential whose total change is under `MIN_TOTAL_CHANGE` (0.1) is reported as inactive.

`factor_gap` is a mutual-information-gap-style score over the K traversals (after MIG, Chen et al., NeurIPS 2018,
which for each factor takes the gap between the two latents most informative about it): for each factor, the gap
between the two largest shares that factor has among the active traversals (share of traversal k in factor f:
change_k(f) / total_k), averaged over the five factors. 1 when every factor has one traversal that moves it alone
and no other that moves it; 0 for a factor no traversal moves, or two that move it equally (a repeat).

Public: `FactorRegressor`, `train_factor_regressor`, `evaluate_regressor`, `factor_report`, `factor_gap`,
`format_report`,
`report_labels`.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..data import dsprites
from ..data.dsprites import FACTOR_NAMES, FACTOR_SIZES
from ..potentials import traverse_both_ways
from ..hub import HubModule

SHARE_THRESHOLD = 0.6
# A potential whose traversals change the factors by less than this in total (summed over the five factors, in
# sweeps of a full range) barely changes the image; its "dominant" factor would be noise, so it is reported as
# inactive and counts neither as disentangled nor as covering a factor.
MIN_TOTAL_CHANGE = 0.1


class FactorRegressor(nn.Module, HubModule, library_name="pdetraversal",
                      tags=["pdetraversal", "pdetraversal-factor-regressor", "dsprites"]):
    """Small conv net: (B, 1, 64, 64) -> 12 outputs [shape logits (3), scale, x, y, cos 4θ, sin 4θ,
    cos θ, sin θ, cos 2θ, sin 2θ].

    Four 4x4 stride-2 convolutions (channels w, w, 2w, 2w) with batch norm and ReLU, then Linear(2w*16, hidden)
    -> ReLU -> Linear(hidden, 12). `predict` turns the raw outputs into factors. The last four outputs are
    auxiliary training targets only: θ is trained on hearts (the only shape where it is defined) and 2θ on hearts
    and ellipses; they make the shared features carry the heart's orientation, from which 4θ follows.
    """

    def __init__(self, width: int = 32, hidden_dim: int = 128):
        super().__init__()
        for name, value in (("width", width), ("hidden_dim", hidden_dim)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"FactorRegressor: {name} must be a positive int, got {value!r}")
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(1, w, 4, 2, 1), nn.BatchNorm2d(w), nn.ReLU(),
            nn.Conv2d(w, w, 4, 2, 1), nn.BatchNorm2d(w), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.BatchNorm2d(2 * w), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 4, 2, 1), nn.BatchNorm2d(2 * w), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(2 * w * 16, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, 12),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, 64, 64):
            raise ValueError(f"FactorRegressor expects images of shape (B, 1, 64, 64), got {tuple(x.shape)}")
        return self.net(x)

    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Factors of images in [0, 1]: shape_logits (B, 3), shape_probs (B, 3), scale/x/y (B,) in [0, 1],
        orientation4 (B, 2) the unit vector (cos 4θ, sin 4θ), angle4 (B,) = 4θ in (-π, π], orientation4_norm (B,)
        the length of the raw (cos 4θ, sin 4θ) output: about 1 when the orientation is clear, near 0 when not."""
        out = self(x)
        vec = out[:, 6:8]
        return {
            "shape_logits": out[:, :3],
            "shape_probs": out[:, :3].softmax(dim=1),
            "scale": torch.sigmoid(out[:, 3]),
            "x": torch.sigmoid(out[:, 4]),
            "y": torch.sigmoid(out[:, 5]),
            "orientation4": vec / vec.norm(dim=1, keepdim=True).clamp_min(1e-8),
            "orientation4_norm": vec.norm(dim=1),
            "angle4": torch.atan2(vec[:, 1], vec[:, 0]),
        }


def _targets(indices: torch.Tensor) -> dict[str, torch.Tensor]:
    vals = dsprites.factor_values(indices)
    theta = vals[:, 2]

    def unit(a):
        return torch.stack([torch.cos(a), torch.sin(a)], dim=1)

    return {"shape": indices[:, 0].long(), "scale": vals[:, 1], "x": vals[:, 3], "y": vals[:, 4],
            "orientation4": unit(4 * theta), "orientation1": unit(theta), "orientation2": unit(2 * theta)}


def soften(x: torch.Tensor, generator: torch.Generator, fraction: float = 0.5, max_sigma: float = 1.2) -> torch.Tensor:
    """Blur a random `fraction` of the images with a Gaussian of random width (sigma ~ U(0.3, max_sigma) px).

    Decoded VAE frames are soft-edged probabilities, not binary sprites; training on both keeps the regressor
    reliable on generator output.
    """
    b = x.shape[0]
    sigma = 0.3 + (max_sigma - 0.3) * torch.rand(b, generator=generator)
    keep = torch.rand(b, generator=generator) >= fraction
    r = torch.arange(-3, 4, dtype=x.dtype)
    k1 = torch.exp(-0.5 * (r[None, :] / sigma[:, None]) ** 2)
    k1 = k1 / k1.sum(dim=1, keepdim=True)
    k2 = (k1[:, :, None] * k1[:, None, :]).unsqueeze(1)  # (B, 1, 7, 7)
    blurred = F.conv2d(x.reshape(1, b, 64, 64), k2, padding=3, groups=b).reshape(b, 1, 64, 64)
    return torch.where(keep[:, None, None, None], x, blurred)


def regressor_loss(pred_raw: torch.Tensor, targets: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy on shape + 10 x MSE on scale, x, y (in [0, 1]) + 2 x MSE on (cos 4θ, sin 4θ)
    + the auxiliary MSEs on (cos θ, sin θ) over hearts and on (cos 2θ, sin 2θ) over hearts and ellipses."""
    ce = F.cross_entropy(pred_raw[:, :3], targets["shape"])
    reg = sum(F.mse_loss(torch.sigmoid(pred_raw[:, i]), targets[k]) for i, k in ((3, "scale"), (4, "x"), (5, "y")))
    ori = F.mse_loss(pred_raw[:, 6:8], targets["orientation4"])
    heart = (targets["shape"] == 2).float()[:, None]
    not_square = (targets["shape"] != 0).float()[:, None]
    aux1 = ((pred_raw[:, 8:10] - targets["orientation1"]) ** 2 * heart).sum() / (2 * heart.sum()).clamp_min(1)
    aux2 = ((pred_raw[:, 10:12] - targets["orientation2"]) ** 2 * not_square).sum() / (2 * not_square.sum()).clamp_min(1)
    return ce + 10.0 * reg + 2.0 * ori + aux1 + aux2


def train_factor_regressor(steps: int, batch_size: int = 64, seed: int = 0, progress: bool = True, lr: float = 1e-3,
                           augment: bool = True, width: int = 32, hidden_dim: int = 128) -> FactorRegressor:
    """Train a FactorRegressor on freshly sampled procedural dSprites (Adam, cosine learning-rate decay).

    With `augment`, half of each batch is blurred (`soften`). Returns the model in eval mode.
    """
    from tqdm import tqdm

    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")
    torch.manual_seed(seed)
    model = FactorRegressor(width=width, hidden_dim=hidden_dim)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr * 0.02)
    g = torch.Generator().manual_seed(seed)
    bar = tqdm(range(steps), desc="train factor regressor", disable=not progress, dynamic_ncols=True)
    for step in bar:
        x, idx = dsprites.sample(batch_size, seed=(seed, 1, step))
        if augment:
            x = soften(x, g)
        loss = regressor_loss(model(x), _targets(idx))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 10 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    return model.eval()


@torch.no_grad()
def evaluate_regressor(regressor: FactorRegressor, num: int = 2000, seed: int = 999, soft: bool = False,
                       transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict:
    """Errors on `num` fresh dSprites (blurred like in training when `soft`; passed through `transform` first when
    given, e.g. a VAE's reconstruction, to see how well it keeps the factors): shape accuracy (overall and per
    shape), scale accuracy (nearest of the 6 values), mean absolute x/y error in pixels, median and mean |error of θ|
    in degrees where θ is taken modulo 90° (from 4θ), and the fraction of images whose θ (mod 90°) is within one
    9° step."""
    was_training = regressor.training
    regressor.eval()
    x, idx = dsprites.sample(num, seed=seed)
    if soft:
        x = soften(x, torch.Generator().manual_seed(seed), fraction=1.0)
    if transform is not None:
        x = transform(x)
    p = regressor.predict(x)
    t = _targets(idx)
    scale_idx = (p["scale"] * (FACTOR_SIZES[1] - 1)).round().clamp(0, FACTOR_SIZES[1] - 1).long()
    true4 = torch.atan2(t["orientation4"][:, 1], t["orientation4"][:, 0])
    err4 = torch.remainder(p["angle4"] - true4 + math.pi, 2 * math.pi) - math.pi
    err_deg = err4.abs() / 4 * 180 / math.pi
    regressor.train(was_training)
    shape_right = (p["shape_logits"].argmax(1) == t["shape"]).float()
    return {
        "num_images": num,
        "shape_accuracy": shape_right.mean().item(),
        **{f"shape_accuracy_{name}": shape_right[t["shape"] == s].mean().item()
           for s, name in enumerate(dsprites.SHAPE_NAMES)},
        "scale_accuracy": (scale_idx == idx[:, 1]).float().mean().item(),
        "scale_mae": (p["scale"] - t["scale"]).abs().mean().item(),
        "x_mae_px": ((p["x"] - t["x"]).abs().mean() * 31).item(),
        "y_mae_px": ((p["y"] - t["y"]).abs().mean() * 31).item(),
        "orientation_median_error_deg": err_deg.median().item(),
        "orientation_mean_error_deg": err_deg.mean().item(),
        "orientation_within_9deg": (err_deg <= 9.0).float().mean().item(),
    }


# Noise tolerance of the total variation, per factor, in the report's normalised units. The regressor's output
# jitters by about 0.01-0.03 per frame when a sprite moves by one pixel (stride-2 convolutions are not exactly
# translation invariant); summed over every step of a trajectory that jitter would outweigh a real one-pixel-per-
# step motion. Changes smaller than these are not counted: about a quarter grid step for scale and shape, one pixel
# for x and y, and half an orientation step (4.5° of θ = 18° of 4θ = 0.05 of a turn of 4θ).
TOLERANCE = {"shape": 0.1, "scale": 0.05, "orientation": 0.05, "x": 1 / 31, "y": 1 / 31}


def play_total_variation(signal: torch.Tensor, tolerance: float) -> torch.Tensor:
    """Total variation (along dim 0) of `signal` (N, ...) beyond a dead band of half-width `tolerance`.

    This is the total variation of the play (backlash) operator's output: a tracked value starts at signal[0] and
    moves only as far as needed to stay within `tolerance` of the signal. Jitter smaller than the tolerance counts
    0; a monotone change by D counts max(D - tolerance, 0); with tolerance 0 it is the plain total variation
    sum_t |signal[t+1] - signal[t]|.
    """
    tracked = signal[0].clone()
    tv = torch.zeros_like(tracked)
    for frame in signal[1:]:
        moved = torch.minimum(torch.maximum(tracked, frame - tolerance), frame + tolerance)
        tv += (moved - tracked).abs()
        tracked = moved
    return tv


def trajectory_change(p: dict[str, torch.Tensor], tolerance: dict[str, float] | None = None) -> torch.Tensor:
    """Normalised total variation per factor (B, 5), ordered as FACTOR_NAMES, of predictions along trajectories.

    `p` holds `FactorRegressor.predict` outputs with a leading frame axis: shape_probs (N, B, 3), scale/x/y/angle4
    (N, B) and optionally orientation4_norm (N, B). Per step: shape 0.5 * L1 change of the class probabilities (each
    probability gets the dead band, then half their sum); scale/x/y the absolute change; orientation the wrapped
    change of 4θ over 2π, weighted by the regressor's confidence min(1, 2 * |mean vector|) at both frames (the
    raw (cos 4θ, sin 4θ) output is a conditional mean: near 0 for round blobs whose orientation is undefined).
    `tolerance` (default TOLERANCE; 0 for plain total variation) sets the dead band per factor.
    """
    tol = TOLERANCE if tolerance is None else tolerance
    shape = 0.5 * play_total_variation(p["shape_probs"], tol["shape"]).sum(-1)
    a = p["angle4"]
    conf = (2 * p["orientation4_norm"]).clamp(max=1) if "orientation4_norm" in p else torch.ones_like(a)
    step = (torch.remainder(a[1:] - a[:-1] + math.pi, 2 * math.pi) - math.pi) * torch.minimum(conf[1:], conf[:-1])
    unwrapped = torch.cat([torch.zeros_like(a[:1]), step.cumsum(0)]) / (2 * math.pi)
    orient = play_total_variation(unwrapped, tol["orientation"])
    scale, x, y = (play_total_variation(p[k], tol[k]) for k in ("scale", "x", "y"))
    return torch.stack([shape, scale, orient, x, y], dim=-1)


def _predict_frames(regressor, generator, path, device, chunk_size) -> dict[str, torch.Tensor]:
    """Regressor predictions for decoded latents `path` (N, B, d), each output reshaped to (N, B, ...).

    `chunk_size` frames at a time (factor_report's default 64): every frame is decoded and read on its own, so the
    numbers do not depend on it, and on a CPU 64 took half the time of 1024 (whose large buffers are handed back to
    the kernel and faulted in afresh for every chunk)."""
    n, b = path.shape[:2]
    preds = []
    for chunk in path.flatten(0, 1).split(chunk_size):
        preds.append(regressor.predict(generator.decode(chunk).to(device)))
    return {key: torch.cat([q[key] for q in preds]).reshape(n, b, *preds[0][key].shape[1:]) for key in preds[0]}


def factor_gap(potentials: list[dict]) -> float:
    """The MIG-style gap of `factor_report`'s per-potential rows ({"change": {factor: float}, "active": bool}): per
    factor, the largest minus the second-largest share among active traversals (0 where fewer exist), averaged over
    FACTOR_NAMES."""
    shares = {f: sorted((r["change"][f] / sum(r["change"].values()) for r in potentials
                         if r.get("active", True) and sum(r["change"].values()) > 0), reverse=True) + [0.0, 0.0]
              for f in FACTOR_NAMES}
    return sum(v[0] - v[1] for v in shares.values()) / len(FACTOR_NAMES)


def factor_report(flow, generator, regressor: FactorRegressor, num_samples: int = 256, seed: int = 0,
                  num_steps: int | None = None, tolerance: dict[str, float] | None = None,
                  chunk_size: int = 64, starts: str = "prior") -> dict:
    """Which dSprites factor each potential of `flow` changes, measured on `generator`'s decoded traversals.

    The starts z0: with starts="prior", z0 = generator.sample_latent(num_samples, seed); with starts="encoded", the
    posterior means generator.encode(x)[0] of `num_samples` fresh dSprites x (`dsprites.sample(num_samples, seed)`),
    i.e. traversals of real sprites. On a VAE whose shape coordinate is trimodal, prior samples between the modes
    decode to half-square half-ellipse morphs, whose shape the regressor reads differently at every step of any
    traversal; encoded sprites have one definite shape.
    For k in range(flow.num_potentials): the traversals
    flow.traverse(z0, k=k, num_steps=T, direction=±1) (T = flow.config["num_timesteps"] unless `num_steps`)
    are joined into one path of 2T + 1 frames from the -T end through z0 to the +T end, decoded, and the factors
    predicted; per factor, `trajectory_change` (total variation beyond the `tolerance` dead band, TOLERANCE by
    default, 0 for the plain total variation) is averaged over the samples.

    Returns {"potentials": [{"k", "change": {factor: float}, "total": float, "active": total >= 0.1,
                             "dominant": factor or None, "share": float}, ...],
             "summary": {"num_potentials", "share_threshold", "min_total_change", "num_active",
                         "num_disentangled" (active with share >= 0.6),
                         "covered_factors" (dominant for >= 1 active potential), "num_covered",
                         "disentangled_factors" (dominant with share >= 0.6 for an active potential),
                         "num_repeated" (active potentials whose dominant factor another active one shares),
                         "gap" (`factor_gap`, in [0, 1])},
             "settings": {"num_samples", "seed", "num_steps", "tolerance", "starts"}}.
    """
    T = int(flow.config["num_timesteps"] if num_steps is None else num_steps)
    if starts == "prior":
        z0 = generator.sample_latent(num_samples, seed)
    elif starts == "encoded":
        if not callable(getattr(generator, "encode", None)):
            raise ValueError(f"starts='encoded' needs a generator with encode(); {type(generator).__name__} has none")
        with torch.no_grad():
            z0 = generator.encode(dsprites.sample(num_samples, seed)[0].to(generator.device))[0]
    else:
        raise ValueError(f"starts must be 'prior' or 'encoded', got {starts!r}")
    was_training = regressor.training
    regressor.eval()
    device = next(regressor.parameters()).device
    potentials = []
    try:
        for k in range(int(flow.num_potentials)):
            path = traverse_both_ways(flow, z0, k, T)  # (2T + 1, B, d): -T end, ..., z0, ..., +T end
            if path.ndim != 3 or path.shape[:2] != (2 * T + 1, num_samples):
                raise ValueError(f"flow.traverse gave a path of shape {tuple(path.shape)}, expected "
                                 f"({2 * T + 1}, {num_samples}, d) from both directions")
            with torch.no_grad():
                p = _predict_frames(regressor, generator, path, device, chunk_size)
                total = trajectory_change(p, tolerance).mean(0).double()
            change = {name: float(v) for name, v in zip(FACTOR_NAMES, total)}
            s = sum(change.values())
            dominant = max(change, key=change.get) if s > 0 else None
            potentials.append({"k": k, "change": change, "total": s, "active": s >= MIN_TOTAL_CHANGE,
                               "dominant": dominant, "share": change[dominant] / s if dominant else 0.0})
    finally:
        regressor.train(was_training)
    active = [r for r in potentials if r["active"]]
    covered = [f for f in FACTOR_NAMES if any(r["dominant"] == f for r in active)]
    clean = [f for f in FACTOR_NAMES if any(r["dominant"] == f and r["share"] >= SHARE_THRESHOLD for r in active)]
    # Potentials whose main change another potential also makes: the classifier tells them apart, yet they repeat.
    repeated = sum(sum(q["dominant"] == r["dominant"] for q in active) > 1 for r in active)
    return {
        "potentials": potentials,
        "summary": {
            "num_potentials": len(potentials),
            "share_threshold": SHARE_THRESHOLD,
            "min_total_change": MIN_TOTAL_CHANGE,
            "num_active": len(active),
            "num_disentangled": sum(r["share"] >= SHARE_THRESHOLD for r in active),
            "covered_factors": covered,
            "num_covered": len(covered),
            "disentangled_factors": clean,
            "num_repeated": repeated,
            "gap": factor_gap(potentials),
        },
        "settings": {"num_samples": num_samples, "seed": seed, "num_steps": T,
                     "tolerance": dict(TOLERANCE if tolerance is None else tolerance), "starts": starts},
    }


def _format_tolerance(tol: dict | None) -> str:
    if not tol:
        return "0"
    return ", ".join(f"{f} {tol[f]:.3g}" for f in FACTOR_NAMES if f in tol)


def report_labels(report: dict) -> list[str]:
    """A short name per potential: its dominant factor and share, or its two largest factors when it moves several.
    A name that an earlier potential already has gets " #2", " #3", ...: the menu must tell them apart."""
    labels = []
    for r in report["potentials"]:
        top = sorted(FACTOR_NAMES, key=lambda f: r["change"][f], reverse=True)
        if not r.get("active", True):
            labels.append("still")
        elif r["share"] >= report["summary"]["share_threshold"]:
            labels.append(f"{top[0]} ({r['share']:.0%})")
        else:
            labels.append(f"{top[0]} + {top[1]}")
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            labels[i] = f"{label} #{seen[label]}"
    return labels


def format_report(report: dict) -> str:
    """A markdown table of `factor_report` output for model cards."""
    s = report["settings"]
    starts = ("z0 = the generator's encoding (posterior mean) of a fresh dSprites image"
              if s.get("starts") == "encoded" else "z0 ~ N(0, I)")
    lines = [
        f"Factor change along each traversal ({s['num_samples']} starts {starts}, seed {s['seed']}, "
        f"{s['num_steps']} steps each way; total variation of the regressor's predictions beyond a dead band of "
        f"{_format_tolerance(s.get('tolerance'))}; 1 = one sweep across the factor's full range):",
        "",
        "| k | " + " | ".join(FACTOR_NAMES) + " | dominant | share | next largest |",
        "|---|" + "---|" * len(FACTOR_NAMES) + "---|---|---|",
    ]
    for r in report["potentials"]:
        cells = [f"**{r['change'][f]:.3f}**" if f == r["dominant"] else f"{r['change'][f]:.3f}" for f in FACTOR_NAMES]
        dominant = (r["dominant"] or "-") if r.get("active", True) else "- (inactive)"
        runner_up = sorted(FACTOR_NAMES, key=lambda f: r["change"][f], reverse=True)[1]
        lines.append(f"| {r['k']} | " + " | ".join(cells) + f" | {dominant} | {r['share']:.2f} | {runner_up} |")
    m = report["summary"]
    lines += [
        "",
        f"{m['num_active']} of {m['num_potentials']} potentials are active (total change >= {m['min_total_change']}); "
        f"{m['num_disentangled']} of {m['num_potentials']} have one dominant factor with share >= "
        f"{m['share_threshold']}; factors covered (dominant for at least one potential): "
        f"{', '.join(m['covered_factors']) or 'none'} ({m['num_covered']} of {len(FACTOR_NAMES)}); "
        f"with share >= {m['share_threshold']}: {', '.join(m['disentangled_factors']) or 'none'}; "
        f"{m['num_repeated']} active potentials share their dominant factor with another one; factor gap "
        f"(MIG-style, 1 = each factor moved by one traversal alone) {m['gap']:.2f}.",
    ]
    return "\n".join(lines)


__all__ = ["FactorRegressor", "train_factor_regressor", "evaluate_regressor", "factor_report", "factor_gap", "format_report",
           "report_labels",
           "trajectory_change", "play_total_variation", "soften", "SHARE_THRESHOLD", "MIN_TOTAL_CHANGE", "TOLERANCE"]
