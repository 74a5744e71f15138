"""Build hub_models/dsprites-swirl: the anchored dSprites VAE behind a swirl, G'(z) = G(φ(z)) (`hub_models.swirl`).

No training: the inner VAE's weights are copied from --source and the swirl is set by --planes and --strength. The
card written with it measures how curved the true factor paths are (`pdetraversal.metrics.curves.curve_shape`) on
traversals of --num-steps steps each way from encoded sprites, with the step of one x position of the anchors.

    python train/make_swirl.py --source hub_models/dsprites-vae --output-dir hub_models/dsprites-swirl
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import hub_models.swirl  # noqa: E402,F401  -- registers SwirlVAE until hub_models/__init__.py imports it
from hub_models import load_generator  # noqa: E402
from hub_models.swirl import SwirlVAE  # noqa: E402
from pdetraversal.data import dsprites  # noqa: E402
from pdetraversal.data.anchors import anchor_targets  # noqa: E402
from pdetraversal.metrics.curves import curve_shape  # noqa: E402


def position_step() -> float:
    """Mean anchored latent distance between neighbouring x positions (the same for y): the benchmark's step."""
    idx = torch.zeros(dsprites.FACTOR_SIZES[3], 5, dtype=torch.long)
    idx[:, 3] = torch.arange(dsprites.FACTOR_SIZES[3])
    a = anchor_targets(idx)[:, 3]
    return float((a[1:] - a[:-1]).mean())


def measure(gen: SwirlVAE, num_starts: int, num_steps: int, step: float, seed: int) -> list[dict]:
    """Per factor: the mean chord/arc ratio and the mean and median largest turn of the true two-way paths."""
    z0 = gen.data_latent(num_starts, seed=seed)
    rows = []
    for f, name in enumerate(dsprites.FACTOR_NAMES):
        path = torch.cat([gen.true_factor_path(z0, f, num_steps, step, -1).flip(0),
                          gen.true_factor_path(z0, f, num_steps, step, 1)[1:]])
        shape = curve_shape(path)
        rows.append({"factor": name, "chord_arc": float(shape["chord_arc"].mean()),
                     "turn_mean": float(shape["max_turn_deg"].mean()), "turn_median": float(shape["max_turn_deg"].median())})
    return rows


def write_card(out: Path, args, argv, gen: SwirlVAE, rows: list[dict], step: float, seconds: float,
               others: dict[float, list[dict]]) -> None:
    command = "python train/make_swirl.py " + " ".join(shlex.quote(a) for a in argv)
    names = dsprites.FACTOR_NAMES
    planes = ", ".join(f"(z_{i}, z_{j}) = ({names[i]}, {names[j]})" for i, j in gen.planes)
    table = "\n".join(f"| {r['factor']} | {r['chord_arc']:.2f} | {r['turn_mean']:.0f}° | {r['turn_median']:.0f}° |" for r in rows)
    n_params = sum(p.numel() for p in gen.parameters())
    swirled = {names[i] for plane in gen.planes for i in plane}

    def summary(rs):  # means over the swirled factors
        picked = [r for r in rs if r["factor"] in swirled]
        return (sum(r["chord_arc"] for r in picked) / len(picked), sum(r["turn_median"] for r in picked) / len(picked))

    choice = "; ".join(f"at α = {a:g} they average {summary(rs)[0]:.2f} and {summary(rs)[1]:.0f}°"
                       for a, rs in sorted(others.items()))
    text = f"""---
library_name: pdetraversal
license: apache-2.0
tags:
- pdetraversal
- pdetraversal-generator
- vae
- dsprites
- benchmark
datasets: []
---

# dSprites swirl: the anchored dSprites VAE behind a known curved warp (pdetraversal generator)

`hub_models.swirl.SwirlVAE`: G'(z) = G(φ(z)), where G is the decoder of [`{args.source}`](../{Path(args.source).name})
(a `DSpritesVAE`, {n_params:,} parameters, latent dimension {gen.latent_dim}) and φ is a swirl: in each plane {planes},
φ turns the pair of coordinates about the origin by the angle α·r, r the radius in that plane, α = {gen.strength:g}
radians per unit radius. A turn keeps r, so φ⁻¹ turns by −α·r. Coordinate z_0 (shape) is not swirled.

## Why it exists

The inner VAE was trained with its coordinates anchored to the dSprites factor labels (z_0..z_4 = shape, scale,
orientation, x, y; `pdetraversal.data.anchors`), so on it the straight latent axes already are the factors and no
method can beat them. Behind the swirl the factor paths are curves, and known ones: factor f moves from z_0 along

    γ_f(s) = φ⁻¹(φ(z_0) + s·e_f)           (`SwirlVAE.true_factor_path`)

This makes a benchmark where straight lines cannot win: it tests the paper's claim (Song et al., ICML 2023, Sec. 4.1)
that potentials varying in space and time follow curved paths a linear direction cannot (`bench/curved.py`,
`pdetraversal.metrics.curves`). The factor labels were used to train the inner VAE, not to build the warp.

- φ has Jacobian determinant 1 and keeps every plane's radius, so it maps N(0, I) to N(0, I): prior samples of this
  generator decode to the same distribution of images as prior samples of the inner VAE.
- `encode(x)` returns (φ⁻¹(inner mean), inner log-variance): the log-variance is the inner posterior's, in inner
  coordinates; only the means are used (L_z of `train/fit.py --supervision dsprites`, `data_latent`).
- `latent_weight()` is None: the swirl comes before the first linear layer, so SeFa does not apply.
- The weights are the inner VAE's, unchanged, under the prefix `inner.`; this folder is self-contained.

## How curved the factor paths are

True two-way paths of {args.num_steps} steps each way from {args.num_starts} encoded sprites (seed {args.seed}), step
{step:.4f} (the mean anchored latent distance between neighbouring x positions) for every factor:

| factor | chord / arc | largest turn between two steps (mean) | (median) |
|---|---|---|---|
{table}

α = {gen.strength:g} was chosen so that every swirled factor's path turns by well over 45° within one traversal, while
the path is not yet a tight spiral: over the swirled factors, chord / arc averages {summary(rows)[0]:.2f} and the median
largest turn {summary(rows)[1]:.0f}°; {choice}.

## Made by

```
{command}
```

{seconds:.1f} s on 2 CPU cores, 1 torch thread, shared (no training: weights copied, warp set, paths measured).

## Use

```python
import hub_models.swirl  # registers SwirlVAE (until hub_models/__init__.py imports it)
from hub_models import load_generator
gen = load_generator("hub_models/dsprites-swirl")
z0 = gen.data_latent(4, seed=0)
path = gen.true_factor_path(z0, factor=3, num_steps=10, step={step:.4f})   # (11, 4, 5): x moves, along a curve
frames = gen.decode(path.flatten(0, 1))
```
"""
    (out / "README.md").write_text(text, encoding="utf-8")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", default="hub_models/dsprites-vae", help="folder or Hub repo of the inner DSpritesVAE")
    p.add_argument("--output-dir", default="hub_models/dsprites-swirl", help="folder to write")
    p.add_argument("--planes", default="3,4;1,2", help="swirled coordinate pairs, 'i,j;k,l' (default 3,4;1,2: x-y, scale-orientation)")
    p.add_argument("--strength", type=float, default=1.0, help="α, radians of turn per unit radius (default 1.0)")
    p.add_argument("--num-starts", type=int, default=256, help="encoded sprites the card's curvature is measured on")
    p.add_argument("--num-steps", type=int, default=10, help="steps each way of the measured paths (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the measured sprites")
    p.add_argument("--compare-strengths", default="0.5,1.5", help="other α measured for the card (default 0.5,1.5)")
    args = p.parse_args(argv)
    try:
        planes = [[int(i) for i in pair.split(",")] for pair in args.planes.split(";")]
    except ValueError:
        p.error(f"--planes must look like '3,4;1,2', got {args.planes!r}")
    torch.set_num_threads(1)
    began = time.time()
    inner = load_generator(args.source)
    if type(inner).__name__ != "DSpritesVAE":
        raise SystemExit(f"error: --source {args.source} is a {type(inner).__name__}, not a DSpritesVAE")
    config = inner.config
    gen = SwirlVAE(**{k: config[k] for k in ("latent_dim", "width", "hidden_dim")}, planes=planes, strength=args.strength)
    gen.inner.load_state_dict(inner.state_dict(), strict=True)
    gen.eval().requires_grad_(False)
    step = position_step()
    with torch.no_grad():
        rows = measure(gen, args.num_starts, args.num_steps, step, args.seed)
        others = {}
        for a in (float(v) for v in args.compare_strengths.split(",") if v.strip()):
            alt = SwirlVAE(**{k: config[k] for k in ("latent_dim", "width", "hidden_dim")}, planes=planes, strength=a)
            alt.inner.load_state_dict(gen.inner.state_dict())
            others[a] = measure(alt.eval(), args.num_starts, args.num_steps, step, args.seed)
    out = Path(args.output_dir)
    gen.save_pretrained(out)
    seconds = time.time() - began
    write_card(out, args, argv, gen, rows, step, seconds, others)
    for r in rows:
        print(f"{r['factor']:12s} chord/arc {r['chord_arc']:.3f}  largest turn mean {r['turn_mean']:.1f}°  median {r['turn_median']:.1f}°")
    print(f"saved {out} in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
