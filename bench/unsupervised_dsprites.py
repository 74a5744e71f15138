"""Unsupervised potentials (paper Sec. 4.2, L = L_u + L_f + L_J + L_k) against straight-line floors on a dSprites VAE.

The paper's flow z_{t+1} = z_t + ∇_z u^k(z_t, t) (eq. 2) is only worth its training if its traversals change
single factors more often than the cheapest traversals one could take without training: straight lines
z_i = z_0 ± i·s·e along (b) the latent axes e_1..e_d and (c) random unit directions. The line step s is set to
the potentials' own mean latent step length ‖z_{t+1} − z_t‖ (measured on their traversals from the same starts),
so that all methods move the same distance through the latent space.

Every method is scored by `pdetraversal.metrics.factors.factor_report` on traversals of encoded sprites
(starts="encoded"), once per seed (the seed picks the sprites and the random directions), and reported as
mean ± std over the seeds: how many traversals put >= 60% of their change on one factor, how many factors are
some traversal's main change, and how many traversals share their main factor with another one (redundancy).
Per potential it also prints the path straightness, chord / arc length of the positive traversal z_0 .. z_T,
averaged over the starts (1 = a straight line).

    python bench/unsupervised_dsprites.py --potentials hub_models/dsprites-betavae-potentials \\
        --factor-regressor hub_models/dsprites-factor-regressor --seeds 0 1 2 --num-samples 256

Public: `StraightLines`, `latent_axes`, `random_directions`, `encoded_starts`, `step_lengths`, `straightness`,
`summarize`, `compare`, `format_tables`, `main`.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from hub_models import load_flow_and_generator, resolve_source  # noqa: E402
from pdetraversal.data import dsprites  # noqa: E402
from pdetraversal.data.dsprites import FACTOR_NAMES  # noqa: E402
from pdetraversal.metrics.factors import FactorRegressor, factor_report  # noqa: E402


class StraightLines:
    """K fixed unit directions d_k as traversals: traverse(z0, k) = [z0 + direction · step_size · i · d_k]_{i=0..S}.

    It has the part of PotentialFlow's interface that `factor_report` and `traverse_both_ways` use
    (`traverse`, `num_potentials`, `num_timesteps`, `step_size`, `config["num_timesteps"]`, `label`).
    """

    def __init__(self, directions: torch.Tensor, step_size: float, num_timesteps: int, names: list[str] | None = None):
        if directions.ndim != 2 or directions.shape[0] < 1:
            raise ValueError(f"directions must be a (K, d) tensor with K >= 1, got shape {tuple(directions.shape)}")
        norms = directions.norm(dim=1)
        if not bool((norms > 0).all()):
            raise ValueError("every direction must be non-zero")
        if not step_size > 0:
            raise ValueError(f"step_size must be > 0, got {step_size}")
        if names is not None and len(names) != directions.shape[0]:
            raise ValueError(f"got {len(names)} names for {directions.shape[0]} directions")
        self.directions = directions / norms[:, None]  # unit length: the step length is exactly step_size
        self.num_potentials, self.latent_dim = self.directions.shape
        self.num_timesteps, self.step_size = int(num_timesteps), float(step_size)
        self.names = names
        self.config = {"num_timesteps": self.num_timesteps, "step_size": self.step_size}

    def label(self, k: int) -> str:
        return self.names[k] if self.names else f"line {k}"

    def traverse(self, z0: torch.Tensor, k: int, num_steps: int | None = None, step_size: float | None = None,
                 direction: int = 1) -> torch.Tensor:
        """(num_steps + 1, B, d), the line through z0 along d_k, detached."""
        if direction not in (1, -1):
            raise ValueError(f"direction must be +1 or -1, got {direction}")
        if z0.ndim != 2 or z0.shape[1] != self.latent_dim:
            raise ValueError(f"z0 must have shape (B, {self.latent_dim}), got {tuple(z0.shape)}")
        if not 0 <= int(k) < self.num_potentials:
            raise IndexError(f"direction index k={k} out of range 0..{self.num_potentials - 1}")
        n = self.num_timesteps if num_steps is None else int(num_steps)
        step = (self.step_size if step_size is None else step_size) * direction
        d = self.directions[int(k)].to(z0)
        i = torch.arange(n + 1, dtype=z0.dtype, device=z0.device)
        return (z0.detach()[None] + step * i[:, None, None] * d[None, None]).detach()


def latent_axes(latent_dim: int, step_size: float, num_timesteps: int) -> StraightLines:
    """Lines z + s·e_i along the latent coordinates i = 0..d-1."""
    return StraightLines(torch.eye(latent_dim), step_size, num_timesteps, [f"axis z_{i}" for i in range(latent_dim)])


def random_directions(num: int, latent_dim: int, step_size: float, num_timesteps: int, seed: int) -> StraightLines:
    """`num` directions uniform on the unit sphere (normalised Gaussians, torch generator seeded by `seed`)."""
    g = torch.Generator().manual_seed(seed)
    return StraightLines(torch.randn(num, latent_dim, generator=g), step_size, num_timesteps,
                         [f"random {i}" for i in range(num)])


@torch.no_grad()
def encoded_starts(generator, num_samples: int, seed: int) -> torch.Tensor:
    """The z0 of factor_report(starts="encoded"): posterior means of `dsprites.sample(num_samples, seed)`."""
    return generator.encode(dsprites.sample(num_samples, seed)[0].to(generator.device))[0]


def _path(flow, z0: torch.Tensor, k: int, num_steps: int, direction: int) -> torch.Tensor:
    return flow.traverse(z0, k, num_steps, None, direction=direction).detach()


def step_lengths(flow, z0: torch.Tensor, num_steps: int | None = None) -> torch.Tensor:
    """(K,): per traversal k, the mean latent step ‖z_{t+1} − z_t‖ over the starts, both directions and all steps."""
    n = flow.num_timesteps if num_steps is None else num_steps
    out = []
    for k in range(flow.num_potentials):
        steps = [_path(flow, z0, k, n, s).diff(dim=0).norm(dim=-1) for s in (1, -1)]  # each (n, B)
        out.append(torch.stack(steps).mean())
    return torch.stack(out)


def straightness(flow, z0: torch.Tensor, k: int, num_steps: int | None = None) -> torch.Tensor:
    """(B,): chord / arc length of the positive traversal z_0 .. z_S of k from each start (1 = straight; 0 = back
    where it began). A start that does not move at all (arc 0) counts as straight."""
    n = flow.num_timesteps if num_steps is None else num_steps
    path = _path(flow, z0, k, n, 1)
    arc = path.diff(dim=0).norm(dim=-1).sum(0)
    chord = (path[-1] - path[0]).norm(dim=-1)
    return torch.where(arc > 0, chord / arc.clamp_min(1e-12), torch.ones_like(arc))


def summarize(report: dict) -> dict:
    """Counts from one factor_report: traversals with one factor at >= the share threshold, factors covered, and
    redundancy: active traversals whose main factor is also the main factor of another active traversal, and the
    size of the largest such group."""
    m = report["summary"]
    active = [r for r in report["potentials"] if r["active"]]
    per_factor = Counter(r["dominant"] for r in active)
    return {
        "num": m["num_potentials"],
        "num_active": m["num_active"],
        "num_disentangled": m["num_disentangled"],
        "num_covered": m["num_covered"],
        "covered_factors": m["covered_factors"],
        "disentangled_factors": m["disentangled_factors"],
        "num_sharing": sum(c for c in per_factor.values() if c > 1),
        "largest_group": max(per_factor.values(), default=0),
        "dominant_counts": {f: per_factor.get(f, 0) for f in FACTOR_NAMES},
    }


def compare(flow, generator, regressor, seeds=(0, 1, 2), num_samples: int = 256, num_random: int | None = None,
            progress: bool = True) -> dict:
    """Run the three methods on every seed. Returns {"methods": {name: [summary per seed]}, "step_length": [per
    seed], "straightness": (K,) mean over all seeds' starts, "potential_steps": (K,) same for step lengths,
    "reports": {name: [factor_report per seed]}, "settings": {...}}."""
    T = int(flow.num_timesteps)
    num_random = flow.num_potentials if num_random is None else num_random
    methods: dict[str, list] = {"potentials": [], "latent axes": [], "random directions": []}
    reports: dict[str, list] = {name: [] for name in methods}
    step_per_seed, straight, steps_k = [], [], []
    for seed in seeds:
        z0 = encoded_starts(generator, num_samples, seed)
        per_k = step_lengths(flow, z0, T)
        step = float(per_k.mean())
        step_per_seed.append(step)
        steps_k.append(per_k)
        straight.append(torch.stack([straightness(flow, z0, k, T).mean() for k in range(flow.num_potentials)]))
        lines = {"potentials": flow,
                 "latent axes": latent_axes(flow.latent_dim, step, T),
                 "random directions": random_directions(num_random, flow.latent_dim, step, T, seed)}
        for name, method in lines.items():
            began = time.perf_counter()
            report = factor_report(method, generator, regressor, num_samples=num_samples, seed=seed, starts="encoded")
            reports[name].append(report)
            methods[name].append(summarize(report))
            if progress:
                s = methods[name][-1]
                print(f"seed {seed} {name}: {s['num_disentangled']}/{s['num']} at >= 60%, {s['num_covered']} factors "
                      f"covered, step {step:.3f} ({time.perf_counter() - began:.0f} s)", file=sys.stderr, flush=True)
    return {"methods": methods, "reports": reports, "step_length": step_per_seed,
            "straightness": torch.stack(straight).mean(0).tolist(), "potential_steps": torch.stack(steps_k).mean(0).tolist(),
            "settings": {"seeds": list(seeds), "num_samples": num_samples, "num_timesteps": T, "starts": "encoded"}}


def _mean_std(values) -> str:
    values = [float(v) for v in values]
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f} ± {std:.1f}"


def format_tables(result: dict, labels: list[str] | None = None) -> str:
    """Markdown: the comparison table (mean ± std over seeds), the main-factor counts, and per-potential straightness."""
    seeds = result["settings"]["seeds"]
    lines = [f"Traversals of {result['settings']['num_samples']} encoded sprites per seed, "
             f"{result['settings']['num_timesteps']} steps each way; mean ± std over seeds {', '.join(map(str, seeds))}; "
             f"line step = the potentials' mean latent step "
             f"({', '.join(f'{s:.3f}' for s in result['step_length'])} per seed).", "",
             "| method | traversals | active | one factor ≥ 60% | factors covered (of 5) | sharing a main factor | "
             "largest group on one factor |",
             "|---|---|---|---|---|---|---|"]
    for name, runs in result["methods"].items():
        lines.append(f"| {name} | {runs[0]['num']} | " + " | ".join(
            _mean_std(r[key] for r in runs)
            for key in ("num_active", "num_disentangled", "num_covered", "num_sharing", "largest_group")) + " |")
    lines += ["", "Main factor of the active traversals (mean over seeds), and the factors reached at ≥ 60% in any seed:", "",
              "| method | " + " | ".join(FACTOR_NAMES) + " | ≥ 60% on |", "|---|" + "---|" * len(FACTOR_NAMES) + "---|"]
    for name, runs in result["methods"].items():
        reached = sorted({f for r in runs for f in r["disentangled_factors"]}, key=FACTOR_NAMES.index)
        lines.append(f"| {name} | " + " | ".join(f"{statistics.mean(r['dominant_counts'][f] for r in runs):.1f}"
                                                  for f in FACTOR_NAMES) + f" | {', '.join(reached) or 'none'} |")
    first = result["reports"]["potentials"][0]["potentials"]
    lines += ["", f"Per potential: straightness (chord / arc of the positive traversal, mean over all seeds' starts), "
              f"mean latent step, and main factor and share at seed {seeds[0]}:", "",
              "| k | label | straightness | step | main factor (share) |", "|---|---|---|---|---|"]
    for k, (st, sl, r) in enumerate(zip(result["straightness"], result["potential_steps"], first)):
        main = f"{r['dominant']} ({r['share']:.2f})" if r["active"] else "inactive"
        lines.append(f"| {k} | {labels[k] if labels else ''} | {st:.3f} | {sl:.3f} | {main} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("--potentials", default="hub_models/dsprites-betavae-potentials",
                   help="folder or Hub id of the potentials (their config names the generator)")
    p.add_argument("--factor-regressor", default="hub_models/dsprites-factor-regressor", help="dSprites factor regressor")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the starts and random directions")
    p.add_argument("--num-samples", type=int, default=256, help="encoded starts per seed")
    p.add_argument("--num-random", type=int, help="random directions (default: as many as potentials)")
    p.add_argument("--num-threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--json", help="also write the numbers to this JSON file")
    args = p.parse_args(argv)
    if args.num_samples < 2 or args.num_threads < 1 or (args.num_random is not None and args.num_random < 1):
        p.error("--num-samples must be >= 2, --num-threads and --num-random >= 1")
    torch.set_num_threads(args.num_threads)
    flow, generator = load_flow_and_generator(args.potentials)
    if not callable(getattr(generator, "encode", None)):
        p.error(f"the generator of {args.potentials} has no encode(); this benchmark starts from encoded sprites")
    regressor = FactorRegressor.from_pretrained(resolve_source(args.factor_regressor)).eval()
    # The run is a million decodes and regressions of 64x64 frames; channels-last convolutions are ~25% faster on
    # CPU and agree with the default layout to float rounding (2e-7 on the regressor's outputs).
    generator.to(memory_format=torch.channels_last)
    regressor.to(memory_format=torch.channels_last)
    began = time.perf_counter()
    result = compare(flow, generator, regressor, args.seeds, args.num_samples, args.num_random)
    seconds = time.perf_counter() - began
    print(format_tables(result, [flow.label(k) for k in range(flow.num_potentials)]))
    print(f"\n({seconds:.0f} s, {args.num_threads} torch thread(s))")
    if args.json:
        Path(args.json).write_text(json.dumps({k: v for k, v in result.items() if k != "reports"}
                                              | {"seconds": seconds}, indent=1), encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
