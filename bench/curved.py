"""A benchmark where straight lines cannot win: traversals of hub_models/dsprites-swirl against its known curved
factor paths (the paper's claim of Sec. 4.1: potentials varying in space and time follow curved paths).

The generator is the label-anchored dSprites VAE behind a swirl (`hub_models.swirl`), whose factor f moves from z0
along the known curve φ⁻¹(φ(z0) + s·e_f). Methods, each one traversal per factor (k -> factor):
  true curves   the known curves themselves: the ceiling (distance 0);
  latent axes   straight lines along z_f (`pdetraversal.baselines.axes.LatentAxes`);
  best chords   per start and factor, the straight line through z0 along the chord of the true two-way path (from its
                -T end to its +T end): the best any fixed direction can do per start;
  supervised    potentials trained by train/fit.py with --supervision dsprites (potentials 0-4 follow the factor moves
                through the encoder, L_z of eq. 8); --supervised DIR;
  unsupervised  potentials trained without labels (L_J + L_k); each factor gets the potential that follows its curve
                best (`assign_factors`); --unsupervised DIR.
Metrics (`pdetraversal.metrics.curves`, `pdetraversal.metrics.factors`): the mean distance from the traversal to the
factor's true curve divided by the traversal's length (0 = on the curve) and the step/tangent cosine, both over the
four swirled factors (shape is in no swirled plane, so its path is straight; its numbers are in the second table),
and the factor share: the fraction of each traversal's change, read by the factor regressor from the decoded frames,
that is its own factor's (factor_report, starts="encoded"), over the five factors. Mean ± std over the seeds of the
starts (encoded fresh dSprites).

The potentials (train/fit.py needs SwirlVAE registered: hub_models/__init__.py imports hub_models.swirl):

    python train/fit.py --generator hub_models/dsprites-swirl --num-potentials 8 --num-timesteps 10 --max-steps 420 \\
        --no-output-tanh --supervision dsprites --output-dir runs/swirl-supervised
    python train/fit.py --generator hub_models/dsprites-swirl --num-potentials 8 --num-timesteps 10 --max-steps 900 \\
        --no-output-tanh --supervision none --output-dir runs/swirl-unsupervised
    python train/fit.py --generator hub_models/dsprites-swirl --num-potentials 8 --num-timesteps 10 --max-steps 800 \\
        --batch-size 32 --no-output-tanh --supervision dsprites --output-dir runs/swirl-supervised-b32
    python bench/curved.py --supervised runs/swirl-supervised --supervised runs/swirl-supervised-b32 \\
        --unsupervised runs/swirl-unsupervised --num-starts 128 --num-report 64 --cache runs/curved-cache.json \\
        --out bench/results/curved.md

For the unsupervised potentials the factor -> potential choice is made on the same starts it is scored on (a choice
among K, so a mild optimism). --cache keeps finished rows, so adding a method re-runs only that row.
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import hub_models.swirl  # noqa: E402,F401  -- registers SwirlVAE until hub_models/__init__.py imports it
from hub_models import load_generator, resolve_source  # noqa: E402
from hub_models.base import GENERATOR_WEIGHTS  # noqa: E402
from pdetraversal import PotentialFlow  # noqa: E402
from pdetraversal.baselines.axes import LatentAxes  # noqa: E402
from pdetraversal.data.dsprites import FACTOR_NAMES  # noqa: E402
from pdetraversal.metrics.curves import assign_factors, follow_curves  # noqa: E402
from pdetraversal.metrics.factors import FactorRegressor, factor_report  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "train"))
from make_swirl import position_step  # noqa: E402

FACTORS = list(range(len(FACTOR_NAMES)))
SWIRLED = [1, 2, 3, 4]  # scale, orientation, x, y: the factors in the default planes


class TrueCurves:
    """Traversal f follows the true curve of factor f: `generator.true_factor_path`, `step` per step."""

    def __init__(self, generator, step: float, num_timesteps: int):
        self.generator, self.step = generator, step
        self.num_potentials, self.config = len(FACTORS), {"num_timesteps": num_timesteps}

    def traverse(self, z0, k, num_steps=None, step_size=None, direction=1):
        n = self.config["num_timesteps"] if num_steps is None else num_steps
        return self.generator.true_factor_path(z0, int(k), n, self.step if step_size is None else step_size, direction)


class BestChords(TrueCurves):
    """Traversal f: the straight line through z0 along the chord of factor f's true path from its -T to its +T end,
    |chord| / 2T per step, so its ends are the true path's ends moved to pass through z0."""

    def traverse(self, z0, k, num_steps=None, step_size=None, direction=1):
        T = self.config["num_timesteps"]
        n = T if num_steps is None else num_steps
        ends = [self.generator.true_factor_path(z0, int(k), T, self.step, d)[-1] for d in (-1, 1)]
        chord = ends[1] - ends[0]
        per_step = chord / (2 * T) * (1.0 if step_size is None else step_size / self.step)
        return z0[None] + direction * torch.arange(n + 1, dtype=z0.dtype)[:, None, None] * per_step[None]


class Selected:
    """Traversal i of this object is traversal ks[i] of `method`: one per factor, for factor_report."""

    def __init__(self, method, ks: list[int]):
        self.method, self.ks = method, ks
        self.num_potentials, self.config = len(ks), {"num_timesteps": method.config["num_timesteps"]}

    def traverse(self, z0, k, num_steps=None, step_size=None, direction=1):
        return self.method.traverse(z0, self.ks[int(k)], num_steps, step_size, direction)


def evaluate(method, ks: list[int], generator, regressor, seed: int, num_starts: int, num_report: int,
             num_steps: int, step: float) -> dict:
    """Curve distance, cosine and length per factor (traversal ks[f] for factor f) and each one's own-factor share."""
    z0 = generator.data_latent(num_starts, seed=seed)
    steps = {f: step for f in FACTORS}
    follow = follow_curves(Selected(method, ks), generator, z0, {f: f for f in FACTORS}, num_steps, steps)
    report = factor_report(Selected(method, ks), generator, regressor, num_samples=num_report, seed=seed,
                           num_steps=num_steps, starts="encoded")
    share = [r["change"][FACTOR_NAMES[f]] / r["total"] if r["total"] > 0 else 0.0
             for f, r in zip(FACTORS, report["potentials"])]
    return {"distance": [follow[f]["distance"] for f in FACTORS], "cosine": [follow[f]["cosine"] for f in FACTORS],
            "length": [follow[f]["length"] for f in FACTORS], "share": share}


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("--generator", default="hub_models/dsprites-swirl", help="a SwirlVAE folder (default hub_models/dsprites-swirl)")
    p.add_argument("--supervised", action="append", default=[],
                   help="folder of potentials trained with --supervision dsprites; repeat for several rows")
    p.add_argument("--unsupervised", action="append", default=[],
                   help="folder of potentials trained without labels; repeat for several rows")
    p.add_argument("--factor-regressor", default="hub_models/dsprites-factor-regressor", help="dSprites factor regressor folder")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds of the starts (default 0,1,2)")
    p.add_argument("--num-starts", type=int, default=128, help="encoded sprites per seed for the curve metrics (default 128)")
    p.add_argument("--num-report", type=int, default=128, help="encoded sprites per seed for the factor share (default 128)")
    p.add_argument("--num-steps", type=int, default=10, help="traversal steps each way (default 10)")
    p.add_argument("--step", type=float, help="step of the true paths, axes and chords (default: one x position of the anchors)")
    p.add_argument("--num-threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--out", help="also write the markdown report to this file")
    p.add_argument("--cache", help="JSON file of per-method results to reuse (keyed by method, folder, weights' "
                                   "modification time and every setting) and to extend, e.g. runs/curved-cache.json")
    args = p.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        p.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    torch.set_num_threads(args.num_threads)
    began = time.time()
    gen = load_generator(args.generator)
    if not callable(getattr(gen, "true_factor_path", None)):
        p.error(f"--generator {args.generator} has no known factor paths (true_factor_path); use a SwirlVAE")
    regressor = FactorRegressor.from_pretrained(resolve_source(args.factor_regressor)).eval()
    step = position_step() if args.step is None else args.step
    T = args.num_steps
    methods: list[tuple[str, object, list[int] | None, str, str]] = [
        ("true curves (ceiling)", TrueCurves(gen, step, T), FACTORS, "k = factor", ""),
        ("latent axes", LatentAxes(gen.latent_dim, len(FACTORS), T, step), FACTORS, "axis f for factor f", ""),
        ("best chord per start", BestChords(gen, step, T), FACTORS, "k = factor", ""),
    ]
    folders = [("supervised", f, "potentials 0-4") for f in args.supervised]
    folders += [("unsupervised", f, None) for f in args.unsupervised]
    for kind, folder, how in folders:
        flow = PotentialFlow.from_pretrained(resolve_source(folder)).eval()
        if flow.latent_dim != gen.latent_dim:
            p.error(f"{folder} has potentials over {flow.latent_dim} dimensions; the generator has {gen.latent_dim}")
        # The cache key holds the folder and its weights' time; the table names the folder.
        methods.append((f"potentials, {kind}", flow, FACTORS if how else None, how or "",
                        f"{folder}@{(Path(resolve_source(folder)) / 'model.safetensors').stat().st_mtime_ns}"))

    cache_file = Path(args.cache) if args.cache else None
    cache = json.loads(cache_file.read_text()) if cache_file and cache_file.is_file() else {}
    gen_weights = (Path(resolve_source(args.generator)) / GENERATOR_WEIGHTS).stat().st_mtime_ns
    rows = []
    for name, method, ks, how, source in methods:
        label = f"{name}, `{source.split('@')[0]}`" if source else name
        key = json.dumps([name, source, args.generator, gen_weights, seeds, args.num_starts, args.num_report, T, step])
        if key in cache:
            how, per_seed, seconds = cache[key]
            rows.append((label, how, per_seed, seconds))
            print(f"{label}: from {cache_file}", file=sys.stderr)
            continue
        t0 = time.time()
        per_seed = []
        for seed in seeds:
            chosen = ks
            if chosen is None:  # unsupervised: per factor the potential that follows its curve best
                z0 = gen.data_latent(args.num_starts, seed=seed)
                _, table = assign_factors(method, gen, z0, range(method.num_potentials), FACTORS, T,
                                          {f: step for f in FACTORS})
                chosen = [min(table, key=lambda k: math.inf if math.isnan(table[k][f]) else table[k][f])
                          for f in FACTORS]
                how = (how + "; " if how else "") + f"seed {seed}: " + ", ".join(map(str, chosen))
            per_seed.append(evaluate(method, chosen, gen, regressor, seed, args.num_starts, args.num_report, T, step))
        rows.append((label, how, per_seed, time.time() - t0))
        print(f"{label}: {time.time() - t0:.0f} s", file=sys.stderr)
        if cache_file:
            cache[key] = [how, per_seed, time.time() - t0]
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            cache_file.write_text(json.dumps(cache), encoding="utf-8")

    def over(per_seed, key, factors):
        return [statistics.mean(r[key][f] for f in factors) for r in per_seed]

    lines = [
        f"# Curved factor paths: {args.generator}",
        "",
        f"Traversals of {T} steps each way from {args.num_starts} encoded dSprites per seed (seeds {args.seeds}; the "
        f"factor share on {args.num_report}); true paths, axes and chords take {step:.4f} per step (one x position of "
        "the anchors). Distance: mean distance from the traversal's points to the factor's true curve through the same "
        "start, over the traversal's length (0 = on the curve). Cosine: between each step and the curve's tangent. "
        "Both over the four swirled factors (scale, orientation, x, y). Share: fraction of the traversal's factor "
        "change (factor regressor on decoded frames) that is its own factor's, over all five. Mean ± std over seeds.",
        "",
        "| method | traversal per factor | distance ↓ | cosine ↑ | factor share ↑ | length per step | time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, how, per_seed, seconds in rows:
        lines.append(f"| {name} | {how} | {mean_std(over(per_seed, 'distance', SWIRLED))} | "
                     f"{mean_std(over(per_seed, 'cosine', SWIRLED))} | {mean_std(over(per_seed, 'share', FACTORS))} | "
                     f"{statistics.mean(over(per_seed, 'length', FACTORS)) / (2 * T):.3f} | {seconds:.0f} |")
    lines += ["", "Per factor: distance / cosine / share (means over the seeds).", "",
              "| method | " + " | ".join(FACTOR_NAMES) + " |", "|---|" + "---|" * len(FACTOR_NAMES)]
    for name, _, per_seed, _ in rows:
        cells = [f"{statistics.mean(r['distance'][f] for r in per_seed):.3f} / "
                 f"{statistics.mean(r['cosine'][f] for r in per_seed):.3f} / "
                 f"{statistics.mean(r['share'][f] for r in per_seed):.2f}" for f in FACTORS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for name, folder, _ in folders:
        card = Path(resolve_source(folder)) / "README.md"
        if card.is_file():  # how the potentials were made, as their card (train/fit.py) says
            made = [ln[2:].strip() for ln in card.read_text(encoding="utf-8").splitlines()
                    if ln.startswith(("- Command:", "- Time:", "- Steps:"))]
            lines += ["", f"Potentials, {name}: `{folder}`. " + " ".join(m if m.endswith(".") else m + "." for m in made)]
    command = "python bench/curved.py " + " ".join(shlex.quote(a) for a in argv)
    lines += ["", f"Command: `{command}`; this run {time.time() - began:.0f} s on {torch.get_num_threads()} torch thread(s), "
              "CPU (2 cores, shared); a row's time is that of the run that measured it (rows from --cache keep theirs)."]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
