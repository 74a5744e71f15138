"""Reproduce the paper's comparison in one command and write bench/results/REPORT.md (Song et al., ICML 2023).

What it measures, per shipped generator (a missing folder is skipped with a note):
- Methods: the shipped potentials (paper eq. 2-4, `load_traversal`); the closed-form floors built here: latent axes
  (K = min(d, K_ref)), random unit directions (K = K_ref) and SeFa (Shen & Zhou 2021, where the generator has
  `latent_weight()`); and the trained rows `potential`, `linear` and `warped` (WarpedSpace, Tzelepis et al. 2021),
  each trained by train/fit.py with seeds 0..2 at the run's size, unsupervised (L = L_u + L_f + L_J + L_k, Sec. 4.2),
  all with the same budget. K_ref is the K of the shipped potentials (the run's K where none are shipped). The
  straight lines get the same mean latent step length ‖z_{t+1} − z_t‖ as the reference potentials (the shipped ones,
  else the trained `potential` fits), measured on their traversals from the VP starts.
- Metrics: the VP score (appendix A.1, `pdetraversal.metrics.vp`), path shape and wave-equation terms
  (`path_shape`, eq. 3-4), factor alignment on dSprites-like generators (`factors.factor_report`), curve distance and
  cosine on the swirl generator (`curves`, Sec. 4.1), the IWAE log p(x) and equivariance error (eq. 11) of the MNIST
  VAE trained with its potentials against the plain VAE (Sec. 4.3, the paper's Tables 4 and 5), and the ablation of
  the paper's Table 6 (appendix A.2) on the unsupervised β-VAE.
Every cell is mean ± std over the seeds: for trained rows seed s trains the model and draws the metric's data; for
fixed rows seed s only draws the data (and the random directions).

    python bench/reproduce.py --jobs 2        # default size: under an hour on 2 CPU cores (see REPORT.md)
    python bench/reproduce.py --quick --out runs/reproduce-quick   # smoke size, minutes
    python bench/reproduce.py --full          # the paper's sizes (10,000 VP pairs, K = 32, long training): a GPU

Fits are cached in runs/reproduce/<size>-K<K>-T<T>-steps<n>-b<batch>/<generator>/<method>-s<seed>/ and reused when
present. --jobs 2 evaluates two generators at once, each in its own process with one torch thread: on 2 cores that is
about twice as fast as one process with two threads, whose small ops barely use the second core. Besides REPORT.md and
vp.png it writes report.json, the tables' cells per generator and method, which the Space's comparison view shows.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import importlib.util
import io
import json
import math
import multiprocessing
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import hub_models.mnist_vae  # noqa: E402,F401  -- registers MNISTVAE
import hub_models.swirl  # noqa: E402,F401  -- registers SwirlVAE
from hub_models import load_generator, resolve_source  # noqa: E402
from hub_models.base import GENERATOR_WEIGHTS  # noqa: E402
from pdetraversal.baselines import LatentAxes, floors, load_traversal  # noqa: E402
from pdetraversal.hub import CheckpointError  # noqa: E402
from pdetraversal.metrics.path_shape import mean_step, path_diagnostics  # noqa: E402
from pdetraversal.metrics.vp import vp_score  # noqa: E402

# name -> (generator folder, shipped potentials folder or None)
GENERATORS = {
    "dsprites-vae": ("hub_models/dsprites-vae", "hub_models/dsprites-vae-potentials"),
    "dsprites-betavae": ("hub_models/dsprites-betavae", "hub_models/dsprites-betavae-potentials"),
    "dsprites-swirl": ("hub_models/dsprites-swirl", None),
    "mnist-vae": ("hub_models/mnist-vae", "hub_models/mnist-vae-potentials"),
    "mnist-joint-vae": ("hub_models/mnist-joint-vae", "hub_models/mnist-joint-vae-potentials"),
    # real images (issue 13): a converted face DCGAN, and a VAE and an SNGAN trained here on Fashion-MNIST
    "face-dcgan": ("hub_models/face-dcgan", "hub_models/face-dcgan-potentials"),
    "fashion-vae": ("hub_models/fashion-vae", "hub_models/fashion-vae-potentials"),
    "fashion-sngan": ("hub_models/fashion-sngan", "hub_models/fashion-sngan-potentials"),
}
ABLATION_GENERATOR = "dsprites-betavae"
REGRESSOR = "hub_models/dsprites-factor-regressor"
TRAINED = ("potential", "warped", "linear")
FLOORS = ("sefa", "axes", "random")
# Table 6 rows: name -> extra fit.py arguments (the paper-faithful row reuses the `potential` fits).
ABLATIONS = {
    "paper loss (L_u + L_f + L_J + L_k)": [],
    "without L_J": ["--w-jacobian", "0"],
    "without L_f": ["--w-pde", "0"],
    "without L_u": ["--w-initial", "0"],
    "remedy: --w-diversity 1": ["--w-diversity", "1"],
    "remedy: --exact-initial": ["--exact-initial"],
    "the paper's draw: --draw step": ["--draw", "step"],
}

# Sizes. quick: a smoke size (minutes), its numbers mean nothing. default: sized for 2 CPU cores in about an hour.
# full: the paper's sizes (VP 10,000 pairs, K = 32), meant for a GPU.
# Measured CPU seconds on one torch thread (dSprites VAE, K = 8, T = 10): a VP seed of 2,000 pairs at 30 epochs 18 s;
# a factor report of 128 encoded starts 44 s (it scales with starts and K: 32 starts ~ 11 s); a fit of 50 steps at
# batch 64 15 s. So the default cuts the VP classifier to 20 epochs of 200 training pairs, the factor report to 32
# starts and the fits to 100 steps at batch 32. At that size the committed report (every generator, the ablation,
# Tables 4/5, --jobs 2) took 49 min wall and 43 min CPU on 2 cores shared with other jobs.
SIZES = {
    "quick": dict(num_potentials=4, num_timesteps=5, max_steps=10, batch_size=16, vp_pairs=200, vp_epochs=2,
                  factor_samples=8, diag_starts=16, curve_starts=8, ll_images=40, ll_samples=10, eq_sequences=40),
    "default": dict(num_potentials=8, num_timesteps=10, max_steps=100, batch_size=32, vp_pairs=2000, vp_epochs=20,
                    factor_samples=32, diag_starts=64, curve_starts=32, ll_images=500, ll_samples=100,
                    eq_sequences=500),
    "full": dict(num_potentials=32, num_timesteps=10, max_steps=10000, batch_size=64, vp_pairs=10000, vp_epochs=30,
                 factor_samples=256, diag_starts=256, curve_starts=128, ll_images=4000, ll_samples=100,
                 eq_sequences=500),
}


@contextlib.contextmanager
def stopwatch(record: dict, key: str):
    """Adds the wall seconds under record[key] and the process CPU seconds under record[key + " cpu"]: on a shared
    machine the CPU seconds (1 torch thread) are what the piece costs on an idle one."""
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        record[key] = record.get(key, 0.0) + time.perf_counter() - wall
        record[key + " cpu"] = record.get(key + " cpu", 0.0) + time.process_time() - cpu


def folder_ready(folder: str | None) -> bool:
    """A shipped folder counts once its weights and config are both written (others may still be producing it)."""
    if folder is None:
        return False
    path = Path(resolve_source(folder))
    weights = ("model.safetensors", GENERATOR_WEIGHTS)  # potentials' file, generators' (diffusers') file
    return (path / "config.json").is_file() and any((path / w).is_file() for w in weights)


def log(message: str) -> None:
    print(message, flush=True)


def _fit_module():
    spec = importlib.util.spec_from_file_location("fit", ROOT / "train" / "fit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def mean_std(values) -> tuple[float, float]:
    values = [float(v) for v in values]
    if not values:
        return math.nan, math.nan
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(values, digits: int = 1) -> str:
    """'mean ± std' of per-seed values; '-' when there are none."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    m, s = mean_std(values)
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def is_dsprites_like(generator) -> bool:
    if not callable(getattr(generator, "encode", None)):
        return False
    with torch.no_grad():
        x = generator.decode(generator.sample_latent(1, seed=0))
    return tuple(x.shape[1:]) == (1, 64, 64)


def vp_starts(generator) -> str:
    return "data" if generator.data_latent(1, seed=0) is not None else "prior"


def start_codes(generator, n: int, seed: int) -> torch.Tensor:
    z = generator.data_latent(n, seed=seed)
    return generator.sample_latent(n, seed=seed) if z is None else z


# ----------------------------------------------------------------------------------------------------- training
def train_cached(fit, generator_source: str, method: str, seed: int, size: dict, run_dir: Path,
                 extra: list[str] = ()) -> object:
    """fit.main at the run's size into run_dir (skipped when run_dir already holds the result); the loaded method."""
    if not (run_dir / "model.safetensors").is_file():
        argv = ["--generator", generator_source, "--method", method, "--num-potentials", str(size["num_potentials"]),
                "--num-timesteps", str(size["num_timesteps"]), "--max-steps", str(size["max_steps"]),
                "--batch-size", str(size["batch_size"]), "--seed", str(seed), "--output-dir", str(run_dir),
                "--no-progress", *extra]
        if method == "potential":
            argv.append("--no-output-tanh")  # as the shipped potentials: a bounded u cannot keep its step
        if (run_dir / "checkpoint.safetensors").is_file():
            argv.append("--resume")
        run_dir.mkdir(parents=True, exist_ok=True)
        captured = io.StringIO()
        with contextlib.redirect_stdout(captured):  # fit prints its path table; keep it with the run
            code = fit.main(argv)
        (run_dir / "fit.log").write_text("python train/fit.py " + " ".join(shlex.quote(a) for a in argv) + "\n"
                                         + captured.getvalue(), encoding="utf-8")
        if code in (130, 143):  # fit.py saved a checkpoint on SIGINT / SIGTERM: stop here, a rerun resumes it
            raise KeyboardInterrupt
        if code != 0:
            raise RuntimeError(f"fit.py failed ({code}) for {run_dir}")
    return load_traversal(run_dir)


# ------------------------------------------------------------------------------------------------------ metrics
def factor_summary(method, generator, regressor, size: dict, seed: int) -> dict:
    from pdetraversal.metrics.factors import factor_report

    report = factor_report(method, generator, regressor, num_samples=size["factor_samples"], seed=seed,
                           starts="encoded")
    m = report["summary"]
    shares = [r["share"] for r in report["potentials"]]
    return {"num_disentangled": m["num_disentangled"], "num_covered": m["num_covered"],
            "num_repeated": m["num_repeated"], "num_potentials": m["num_potentials"], "gap": m["gap"],
            "mean_share": sum(shares) / len(shares)}


def shape_summary(method, z0: torch.Tensor) -> dict:
    rows = path_diagnostics(method, z0)
    out = {name: statistics.mean(r[name] for r in rows) for name in ("straightness", "first_over_later", "later_step")}
    physics = [r["physics"] for r in rows if r["physics"]]
    for name in ("u_tt", "c2_laplacian", "residual"):
        out[name] = statistics.mean(p[name] for p in physics) if physics and all(r["physics"] for r in rows) else None
    return out


def curve_summary(method, generator, size: dict, seed: int, step: float) -> dict:
    """Per swirled factor the traversal that follows its true curve best (assign_factors' distances), then that
    traversal's distance and cosine (follow_curves); means over the swirled factors."""
    from pdetraversal.metrics.curves import assign_factors, follow_curves

    factors = sorted({f for plane in generator.planes for f in plane})
    z0 = generator.data_latent(size["curve_starts"], seed=seed)
    T = int(method.num_timesteps)
    steps = {f: step for f in range(generator.latent_dim)}
    _, table = assign_factors(method, generator, z0, range(method.num_potentials), factors, T, steps)
    distances, cosines, chosen = [], [], []
    for f in factors:
        k = min(table, key=lambda kk: math.inf if math.isnan(table[kk][f]) else table[kk][f])
        r = follow_curves(method, generator, z0, {k: f}, T, steps)[k]
        distances.append(r["distance"])
        cosines.append(r["cosine"])
        chosen.append(k)
    return {"distance": statistics.mean(distances), "cosine": statistics.mean(cosines), "chosen": chosen}


def evaluate_method(method, generator, size: dict, seed: int, starts: str, regressor, swirl_step) -> dict:
    timing: dict[str, float] = {}
    with stopwatch(timing, "vp"):
        vp = vp_score(method, generator, num_pairs=size["vp_pairs"], seeds=(seed,), epochs=size["vp_epochs"],
                      starts=starts)
    out = {"vp": vp["mean"], "chance": vp["chance"], "K": method.num_potentials}
    with stopwatch(timing, "path shape"):
        out["shape"] = shape_summary(method, start_codes(generator, size["diag_starts"], seed))
    if regressor is not None:
        with stopwatch(timing, "factors"):
            out["factors"] = factor_summary(method, generator, regressor, size, seed)
    if swirl_step is not None:
        with stopwatch(timing, "curves"):
            out["curves"] = curve_summary(method, generator, size, seed, swirl_step)
    out["timing"] = timing
    out["seconds"] = sum(v for k, v in timing.items() if not k.endswith(" cpu"))
    return out


def evaluate_generator(name: str, generator_source: str, shipped: str | None, size: dict, seeds, runs_dir: Path,
                       regressor_source: str = REGRESSOR, fit=None) -> dict:
    """Every method on one generator: {"methods": {label: {"per_seed": [...], ...}}, "notes": [...], ...}."""
    fit = fit or _fit_module()
    generator = load_generator(generator_source)
    d = generator.latent_dim
    notes: list[str] = []
    timings: dict[str, float] = {}
    dsprites_like = is_dsprites_like(generator)
    regressor = None
    if dsprites_like:
        from pdetraversal.metrics.factors import FactorRegressor

        regressor = FactorRegressor.from_pretrained(resolve_source(regressor_source)).eval()
    swirl_step = None
    if callable(getattr(generator, "true_factor_path", None)) and hasattr(generator, "planes"):
        sys.path.insert(0, str(ROOT / "train"))
        from make_swirl import position_step

        swirl_step = position_step()
    starts = vp_starts(generator)

    # Trained rows: the same budget for all three.
    t0 = time.perf_counter()
    trained, fit_seconds = {}, {}
    for method in TRAINED:
        trained[method] = []
        for seed in seeds:
            key = f"{method}-s{seed}"
            try:
                with stopwatch(fit_seconds, key):
                    trained[method].append(train_cached(fit, generator_source, method, seed, size,
                                                        runs_dir / name / key))
            except (RuntimeError, SystemExit) as e:  # one failed fit must not sink the whole report
                notes.append(f"fit {method} seed {seed} failed ({e}): row left out")
                trained[method] = None
                break
            log(f"  {name}: fit {method} seed {seed} ({fit_seconds[key]:.1f} s wall, {fit_seconds[key + ' cpu']:.1f} s CPU)")
    timings["training"] = time.perf_counter() - t0

    # Reference for the lines' step and K: the shipped potentials, else the trained potential fits.
    methods: dict[str, list] = {}
    z_ref = start_codes(generator, size["diag_starts"], 0)
    flow = None
    if folder_ready(shipped):
        try:
            flow = load_traversal(resolve_source(shipped))
        except CheckpointError as e:
            notes.append(f"{shipped} could not be loaded ({e}): no shipped-potentials row")
    if flow is not None:
        if flow.latent_dim != d:
            notes.append(f"{shipped} has potentials over {flow.latent_dim} dimensions, the generator {d}: skipped")
        else:
            methods["potential (shipped)"] = [flow] * len(seeds)
    elif shipped is not None and not folder_ready(shipped):
        notes.append(f"{shipped} is not there (yet): no shipped-potentials row")
    ref = methods["potential (shipped)"][0] if "potential (shipped)" in methods else None
    if ref is not None:
        step = mean_step(ref, z_ref)
        K_ref, T_ref, ref_name = ref.num_potentials, int(ref.num_timesteps), "the shipped potentials"
    elif trained["potential"]:
        step = statistics.mean(mean_step(m, z_ref) for m in trained["potential"])
        K_ref, T_ref, ref_name = size["num_potentials"], size["num_timesteps"], "the trained potential fits"
    else:
        step, K_ref, T_ref, ref_name = 1.0, size["num_potentials"], size["num_timesteps"], "fit.py's default (no potentials)"
    for method in TRAINED:
        if trained[method]:
            methods[f"{method} (trained)"] = trained[method]
    per_seed_floors = [floors(generator, K_ref, T_ref, step, seed=s) for s in seeds]
    if "sefa" not in per_seed_floors[0]:
        notes.append(f"SeFa skipped: {type(generator).__name__} has no linear first layer on z (latent_weight() is None)")
    for floor in per_seed_floors[0]:
        methods[floor] = [f[floor] for f in per_seed_floors]  # only the random directions differ between seeds

    results = {}
    t0 = time.perf_counter()
    for label, per_seed_methods in methods.items():
        rows = []
        for seed, method in zip(seeds, per_seed_methods):
            rows.append(evaluate_method(method, generator, size, seed, starts, regressor, swirl_step))
        results[label] = {"per_seed": rows, "K": rows[0]["K"], "chance": rows[0]["chance"],
                          "step": mean_step(per_seed_methods[0], z_ref)}
        log(f"  {name}: {label}: VP {fmt([r['vp'] for r in rows])} % ("
            + ", ".join(f"{piece} {sum(r['timing'][piece] for r in rows):.1f} s" for piece in rows[0]["timing"]
                        if not piece.endswith(" cpu")) + f"; CPU {sum(r['timing'][p] for r in rows for p in r['timing'] if p.endswith(' cpu')):.1f} s)")
    timings["metrics"] = time.perf_counter() - t0
    return {"name": name, "source": generator_source, "latent_dim": d, "methods": results, "notes": notes,
            "line_step": step, "line_step_from": ref_name, "K_ref": K_ref, "T_ref": T_ref, "starts": starts,
            "dsprites_like": dsprites_like, "swirl": swirl_step is not None, "timings": timings,
            "fit_seconds": fit_seconds}


def ablation(generator_source: str, name: str, size: dict, seeds, runs_dir: Path, regressor_source: str = REGRESSOR,
             fit=None, paper_row: bool = True) -> dict:
    """Table 6: potentials trained without one loss term, or with a remedy; VP and factor alignment per seed.
    paper_row=False leaves the paper-loss row's per_seed empty: it is the generator's "potential (trained)" row
    (the same fits, the same metrics), which the caller has from evaluate_generator."""
    from pdetraversal.metrics.factors import FactorRegressor

    fit = fit or _fit_module()
    generator = load_generator(generator_source)
    regressor = FactorRegressor.from_pretrained(resolve_source(regressor_source)).eval() if is_dsprites_like(generator) else None
    starts = vp_starts(generator)
    rows = {}
    for label, extra in ABLATIONS.items():
        if not extra and not paper_row:
            rows[label] = {"per_seed": [], "args": extra}
            continue
        folder = "potential" if not extra else "ablation-" + "".join(c for c in " ".join(extra) if c.isalnum() or c == "-").strip("-")
        per_seed = []
        for seed in seeds:
            timing: dict[str, float] = {}
            with stopwatch(timing, "fit"):
                method = train_cached(fit, generator_source, "potential", seed, size,
                                      runs_dir / name / f"{folder}-s{seed}", extra)
            with stopwatch(timing, "metrics"):
                vp = vp_score(method, generator, num_pairs=size["vp_pairs"], seeds=(seed,), epochs=size["vp_epochs"],
                              starts=starts)
                row = {"vp": vp["mean"], "chance": vp["chance"]}
                if regressor is not None:
                    row["factors"] = factor_summary(method, generator, regressor, size, seed)
            row["timing"] = timing
            row["seconds"] = timing["fit"] + timing["metrics"]
            per_seed.append(row)
        rows[label] = {"per_seed": per_seed, "args": extra}
        log(f"  ablation {label}: VP {fmt([r['vp'] for r in per_seed])} % ({sum(r['seconds'] for r in per_seed):.1f} s)")
    return {"name": name, "rows": rows}


def likelihood_equivariance(plain, joint, joint_flow, images: torch.Tensor, sequences: torch.Tensor,
                            transformations: torch.Tensor, num_samples: int) -> dict:
    """Tables 4/5: IWAE log p(x) of each VAE on the same held-out images; the equivariance error (eq. 11) of the
    joint model's potentials (k = the sequence's transformation) with its ∇u = 0 reference, and the plain VAE's."""
    from pdetraversal.metrics.equivariance import equivariance_error
    from pdetraversal.metrics.likelihood import evaluate_log_likelihood

    out = {"log_px": {}, "equivariance": {}}
    for label, vae in (("plain VAE", plain), ("joint VAE + potentials", joint)):
        if vae is not None:
            out["log_px"][label] = evaluate_log_likelihood(vae, images, num_samples)
    if joint is not None and joint_flow is not None:
        out["equivariance"]["joint"] = equivariance_error(joint_flow, joint.encode, joint.decode, sequences,
                                                          transformations)
    if plain is not None:
        # The plain VAE has no potentials tied to the transformations: only its ∇u = 0 reference is defined.
        zero = LatentAxes(plain.latent_dim, 1, sequences.shape[0] - 1, 0.0)
        out["equivariance"]["plain"] = equivariance_error(zero, plain.encode, plain.decode, sequences, 0)
    return out


def mnist_section(size: dict, seed: int = 0) -> tuple[dict | None, list[str]]:
    notes = []
    plain_dir, (joint_dir, joint_pot) = GENERATORS["mnist-vae"][0], GENERATORS["mnist-joint-vae"]
    plain = load_generator(plain_dir) if folder_ready(plain_dir) else None
    joint = load_generator(joint_dir) if folder_ready(joint_dir) else None
    flow = load_traversal(resolve_source(joint_pot)) if folder_ready(joint_pot) else None
    for folder, model in ((plain_dir, plain), (joint_dir, joint), (joint_pot, flow)):
        if model is None:
            notes.append(f"{folder} is not there (yet)")
    if plain is None and joint is None:
        return None, notes
    from pdetraversal.data import mnist

    n_seq = max(1, size["ll_images"] // mnist.NUM_STATES)
    frames, _ = mnist.sequences(n_seq, seed=(777, seed), split="test")
    images = frames.flatten(0, 1)[: size["ll_images"]]
    seqs, kinds = mnist.sequences(size["eq_sequences"], seed=(778, seed), split="test")
    return likelihood_equivariance(plain, joint, flow, images, seqs, kinds, size["ll_samples"]), notes


# ------------------------------------------------------------------------------------------------------- report
def findings(gens: list[dict], abl: dict | None, mnist_res: dict | None = None) -> list[str]:
    lines = []
    if mnist_res is not None:
        ll, eq = mnist_res["log_px"], mnist_res["equivariance"]
        if len(ll) == 2:
            p, j = ll["plain VAE"]["mean"], ll["joint VAE + potentials"]["mean"]
            lines.append(f"- MNIST log p(x) (IWAE): joint VAE {j:.2f} vs plain VAE {p:.2f} nats/image: the joint model "
                         f"is {'NOT ' if j < p else ''}at least as likely (paper Table 4 reports it no worse).")
        if "joint" in eq:
            e, r = eq["joint"]["per_pixel"], eq["joint"]["reference_per_pixel"]
            lines.append(f"- MNIST equivariance error (eq. 11): joint potentials {e:.4f} vs ∇u = 0 reference {r:.4f}: "
                         f"the flows {'do NOT ' if e >= r else ''}move the code the way the true transformations do.")
    for g in gens:
        m = g["methods"]
        vp = {label: mean_std(r["vp"] for r in v["per_seed"]) for label, v in m.items()}
        for pot in ("potential (shipped)", "potential (trained)"):
            if pot not in vp:
                continue
            beaten, not_beaten = [], []
            for floor in FLOORS:
                if floor in vp:
                    (a, sa), (b, sb) = vp[pot], vp[floor]
                    (beaten if a - sa > b + sb else not_beaten).append(f"{floor} {b:.1f}")
            text = f"- **{g['name']}**, {pot}: VP {vp[pot][0]:.1f} ± {vp[pot][1]:.1f} %"
            if not_beaten:
                text += f"; does NOT clearly beat (mean − std ≤ floor mean + std): {', '.join(not_beaten)}"
            if beaten:
                text += f"; beats: {', '.join(beaten)}"
            if g["dsprites_like"] and not g["swirl"]:
                share = {label: mean_std(r["factors"]["num_disentangled"] for r in v["per_seed"]) for label, v in m.items()}
                best_floor = max((f for f in FLOORS if f in share), key=lambda f: share[f][0])
                text += (f"; traversals with ≥ 60% share {share[pot][0]:.1f} of {m[pot]['K']} vs best floor "
                         f"{best_floor} {share[best_floor][0]:.1f} of {m[best_floor]['K']}")
            if g["swirl"]:
                dist = {label: mean_std(r["curves"]["distance"] for r in v["per_seed"]) for label, v in m.items()}
                text += f"; curve distance {dist[pot][0]:.3f} vs axes {dist['axes'][0]:.3f} (lower is better)"
            if g["name"] == "dsprites-vae" and not_beaten:
                text += (" — likely reason: this VAE was trained WITH the factor labels (anchored), so its latent axes "
                         "already are the factors and straight lines are the right answer")
            lines.append(text + ".")
        if "warped (trained)" in m and "potential (trained)" in m:
            ratio = m["warped (trained)"]["step"] / max(m["potential (trained)"]["step"], 1e-12)
            if ratio > 2:
                lines.append(f"- **{g['name']}**: WarpedSpace steps are unit-normalised and {ratio:.1f}× longer in z than "
                             "the trained potentials' (the 'mean step' column): part of its VP lead may be that it moves "
                             "farther, not that its directions are better.")
        order = [label for label in ("potential (trained)", "warped (trained)", "sefa", "linear (trained)") if label in vp]
        ranked = sorted(order, key=lambda label: -vp[label][0])
        holds = (vp.get("potential (trained)", (0,))[0] >= vp.get("warped (trained)", (0,))[0] >=
                 max(vp.get("sefa", (-1,))[0], vp.get("linear (trained)", (-1,))[0]))
        lines.append(f"- **{g['name']}**: the paper's VP ranking potential > WarpedSpace > SeFa / linear "
                     f"{'holds (≥)' if holds else 'does NOT hold'} at this size: "
                     + " > ".join(f"{label.split(' ')[0]} {vp[label][0]:.1f}" for label in ranked) + ".")
    if abl is not None and "paper loss (L_u + L_f + L_J + L_k)" in abl["rows"]:
        base = mean_std(r["vp"] for r in abl["rows"]["paper loss (L_u + L_f + L_J + L_k)"]["per_seed"])
        worse = [label for label, v in abl["rows"].items() if mean_std(r["vp"] for r in v["per_seed"])[0] < base[0]]
        lines.append(f"- Ablation on {abl['name']}: paper loss VP {base[0]:.1f} ± {base[1]:.1f} %; rows below it: "
                     f"{', '.join(worse) or 'none'}.")
    # Where the potentials fail to beat a floor, that comes first.
    return sorted(lines, key=lambda line: "NOT" not in line)


def vp_cell(g: dict, label: str) -> str:
    v = g["methods"][label]
    cell = fmt([r["vp"] for r in v["per_seed"]])
    return cell if v["K"] == g["K_ref"] else f"{cell} ({100.0 / v['K']:.1f})"


def method_cells(g: dict, v: dict) -> tuple[list[str], list[str]]:
    """The factor / curve / path-shape columns of one method's row ("mean ± std" over its seeds): (names, cells)."""
    rs, names, cells = v["per_seed"], [], []
    if g["dsprites_like"]:
        names += ["≥ 60% share", "factors covered", "repeated", "gap", "mean share"]
        cells += [fmt([r["factors"][k] for r in rs]) for k in ("num_disentangled", "num_covered", "num_repeated")]
        cells += [fmt([r["factors"][k] for r in rs], 2) for k in ("gap", "mean_share")]
    if g["swirl"]:
        names += ["curve distance ↓", "curve cosine ↑"]
        cells += [fmt([r["curves"][k] for r in rs], 3) for k in ("distance", "cosine")]
    sh = [r["shape"] for r in rs]
    names += ["straightness", "first / later", "|u_tt|", "|c²Δu|", "|f|"]
    cells += [fmt([x["straightness"] for x in sh], 3), fmt([x["first_over_later"] for x in sh], 2)]
    cells += [fmt([x[k] for x in sh], 3) for k in ("u_tt", "c2_laplacian", "residual")]
    return names, cells


def report_json(gens: list[dict], meta: dict) -> dict:
    """What the Space's comparison view shows beside each method: the report's cells, per generator and method."""
    out = {"meta": {k: meta[k] for k in ("command", "size_name", "seeds", "hardware")}, "generators": {}}
    for g in gens:
        rows = {}
        for label, v in g["methods"].items():
            names, cells = method_cells(g, v)
            rows[label] = {"K": v["K"], "step": v["step"], "cells": [fmt([r["vp"] for r in v["per_seed"]])] + cells}
        out["generators"][g["name"]] = {"source": g["source"], "columns": ["VP %"] + names, "rows": rows}
    return out


def write_report(out: Path, gens: list[dict], abl: dict | None, mnist_res: dict | None, notes: list[str],
                 meta: dict) -> str:
    out.mkdir(parents=True, exist_ok=True)
    L: list[str] = ["# Reproduction report: Latent Traversals as Potential Flows (Song et al., ICML 2023)", ""]
    if meta["size_name"] == "quick":
        L += ["**Smoke size (--quick): these numbers only show that the pipeline runs; they measure nothing.**", ""]
    L += ["## Findings", ""] + (findings(gens, abl, mnist_res) or ["- no generator was evaluated"]) + [""]
    if notes:
        L += ["Notes: " + "; ".join(notes) + ".", ""]

    L += ["## VP score (paper Tables 1 and 3)", "",
          "Test accuracy (%) of the pair classifier (appendix A.1), mean ± std over seeds "
          f"{meta['seeds']}; {meta['size']['vp_pairs']} pairs per seed, 10% train, {meta['size']['vp_epochs']} epochs. "
          "Straight lines (sefa, axes, random) take the same mean latent step as the reference potentials "
          "(the shipped ones, else the trained potential fits), measured on their traversals from the same starts: "
          "the 'step' column. In parentheses: the chance level 100/K of a row whose K differs from the generator's "
          "reference K (axes and SeFa have at most d directions).", "",
          "| method | " + " | ".join(g["name"] for g in gens) + " |", "|---|" + "---|" * len(gens)]
    labels = list(dict.fromkeys(label for g in gens for label in g["methods"]))
    for label in labels:
        cells = [vp_cell(g, label) if label in g["methods"] else "-" for g in gens]
        L.append(f"| {label} | " + " | ".join(cells) + " |")
    L += ["", "| generator | d | K (ref) | T | VP starts | line step (from) | chance % |", "|---|---|---|---|---|---|---|"]
    for g in gens:
        L.append(f"| {g['name']} | {g['latent_dim']} | {g['K_ref']} | {g['T_ref']} | {g['starts']} | "
                 f"{g['line_step']:.4f} ({g['line_step_from']}) | {100.0 / g['K_ref']:.1f} |")

    L += ["", "## Factor alignment and path shape", ""]
    for g in gens:
        columns = ["K", "mean step"] + method_cells(g, next(iter(g["methods"].values())))[0]
        L += [f"### {g['name']}", "", "| method | " + " | ".join(c.replace("|", "\\|") for c in columns) + " |",
              "|---|" + "---|" * len(columns)]
        for label, v in g["methods"].items():
            L.append(f"| {label} | {v['K']} | {v['step']:.4f} | " + " | ".join(method_cells(g, v)[1]) + " |")
        L.append("")
        if g["notes"]:
            L += ["Notes: " + "; ".join(g["notes"]) + ".", ""]
    L += ["Factor columns (dSprites-like generators, `factor_report`, encoded starts): traversals with one factor at "
          "≥ 60% of their change, factors that are some traversal's main change (of 5), traversals repeating another's "
          "main factor, the MIG-style factor gap (`factors.factor_gap`: per factor the largest minus the second-largest "
          "share any traversal gives it, averaged over the five; 1 = each factor moved by one traversal alone). Curve columns (swirl): per swirled factor the traversal that follows its true curve best, its "
          "distance / length and step-tangent cosine. Path columns (`path_diagnostics`): chord / arc, first step over "
          "later steps, and the wave-equation terms of eq. 3 ('-' for straight lines, which have none).", ""]

    L += ["## Log-likelihood and equivariance (paper Tables 4 and 5)", ""]
    if mnist_res is None:
        L += ["Not in this run: no MNIST VAE was evaluated (left out by --only, or its folder is missing).", ""]
    else:
        L += ["| model | IWAE log p(x) (nats/image) | images | S |", "|---|---|---|---|"]
        for label, r in mnist_res["log_px"].items():
            L.append(f"| {label} | {r['mean']:.2f} ± {r['sem']:.2f} (sem) | {r['num_images']} | {r['num_samples']} |")
        L += ["", "| equivariance error (eq. 11, L1 per pixel) | value | ∇u = 0 reference | sequences |", "|---|---|---|---|"]
        eq = mnist_res["equivariance"]
        if "joint" in eq:
            L.append(f"| joint VAE, its potentials | {eq['joint']['per_pixel']:.4f} | {eq['joint']['reference_per_pixel']:.4f} | "
                     f"{eq['joint']['num_sequences']} |")
        if "plain" in eq:
            L.append(f"| plain VAE (no potentials for the transformations) | - | {eq['plain']['reference_per_pixel']:.4f} | "
                     f"{eq['plain']['num_sequences']} |")
        L.append("")
    L += ["## Ablation (paper Table 6)", ""]
    if abl is None:
        L += [f"Not in this run: --no-ablation, --only without {ABLATION_GENERATOR}, or "
              f"{GENERATORS[ABLATION_GENERATOR][0]} is missing.", ""]
    else:
        L += [f"Potentials on {abl['name']} (unsupervised), the same budget as the trained rows; mean ± std over seeds.", "",
              "| training | VP % | ≥ 60% share | factors covered | repeated | gap |", "|---|---|---|---|---|---|"]
        for label, v in abl["rows"].items():
            rs = v["per_seed"]
            fac = "".join(f" {fmt([r['factors'][k] for r in rs], 2 if k == 'gap' else 1) if 'factors' in rs[0] else '-'} |"
                          for k in ("num_disentangled", "num_covered", "num_repeated", "gap"))
            L.append(f"| {label} | {fmt([r['vp'] for r in rs])} |{fac}")
        L.append("")
    L += ["## Time per piece", "", "Wall seconds / process CPU seconds, summed over the seeds (a fit from the cache "
          "counts only its load). On a shared machine the CPU seconds (1 torch thread) are the cost on an idle one.", "",
          "| generator | method | fit | VP | path shape | factors | curves |", "|---|---|---|---|---|---|---|"]
    for g in gens:
        for label, v in g["methods"].items():
            method = label.split(" ")[0]
            cells = []
            if "(trained)" in label:
                keys = [f"{method}-s{s}" for s in meta["seeds"] if f"{method}-s{s}" in g["fit_seconds"]]
                cells.append(f"{sum(g['fit_seconds'][k] for k in keys):.1f} / "
                             f"{sum(g['fit_seconds'][k + ' cpu'] for k in keys):.1f}")
            else:
                cells.append("-")
            for piece in ("vp", "path shape", "factors", "curves"):
                rs = [r["timing"] for r in v["per_seed"] if piece in r["timing"]]
                cells.append(f"{sum(t[piece] for t in rs):.1f} / {sum(t[piece + ' cpu'] for t in rs):.1f}" if rs else "-")
            L.append(f"| {g['name']} | {label} | " + " | ".join(cells) + " |")
    L += ["", "## How this was made", "",
          f"- Command: `{meta['command']}`",
          f"- Size `{meta['size_name']}`: " + ", ".join(f"{k} {v}" for k, v in meta["size"].items()),
          f"- Hardware: {meta['hardware']}",
          "- Time per section (wall / process CPU): " + ", ".join(
              f"{k} {v:.0f} / {meta['timings'].get(k + ' cpu', math.nan):.0f} s" for k, v in meta["timings"].items()
              if not k.endswith(" cpu")), ""]
    text = "\n".join(L)
    (out / "REPORT.md").write_text(text, encoding="utf-8")
    (out / "report.json").write_text(json.dumps(report_json(gens, meta), indent=1, ensure_ascii=False) + "\n",
                                     encoding="utf-8")
    return text


def plot_vp(out: Path, gens: list[dict]) -> Path | None:
    if not gens:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(gens), figsize=(4 * len(gens), 3.6), squeeze=False)
    for ax, g in zip(axes[0], gens):
        labels = list(g["methods"])
        stats = [mean_std(r["vp"] for r in g["methods"][label]["per_seed"]) for label in labels]
        ax.bar(range(len(labels)), [s[0] for s in stats], yerr=[s[1] for s in stats], capsize=3, color="tab:blue")
        ax.axhline(100.0 / g["K_ref"], color="grey", ls="--", lw=1, label="chance (K ref)")
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
        ax.set_title(g["name"], fontsize=9)
        ax.set_ylim(0, 100)
        ax.set_ylabel("VP %")
    fig.tight_layout()
    path = out / "vp.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------------------- main
def run_job(kind: str, name: str, size: dict, seeds, runs_dir: Path, num_threads: int) -> tuple[object, dict]:
    """One piece of the run: ("generator", name), ("ablation", name) or ("mnist", _); (its result, its timings)."""
    torch.set_num_threads(num_threads)
    timings: dict[str, float] = {}
    log(f"{name}: started")
    with stopwatch(timings, name if kind != "ablation" else "ablation"):
        if kind == "generator":
            folder, shipped = GENERATORS[name]
            value = evaluate_generator(name, folder, shipped, size, seeds, runs_dir)
        elif kind == "ablation":
            # The paper-loss row comes from the generator's own job (the same fits): not trained twice.
            value = ablation(GENERATORS[name][0], name, size, seeds, runs_dir, paper_row=False)
        else:
            value = mnist_section(size)
    log(f"{name}: done in {sum(v for k, v in timings.items() if not k.endswith(' cpu')):.0f} s wall")
    return value, timings


def run_jobs(jobs: list[tuple[str, str]], size: dict, seeds, runs_dir: Path, num_threads: int, workers: int) -> list:
    """run_job for each, in this process (workers = 1) or in a pool of `workers` fresh processes."""
    if workers == 1:
        return [run_job(kind, name, size, seeds, runs_dir, num_threads) for kind, name in jobs]
    # spawn: a fresh interpreter per worker (torch and forked thread pools do not mix).
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_job, kind, name, size, seeds, runs_dir, num_threads) for kind, name in jobs]
        return [f.result() for f in futures]


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    size_group = p.add_mutually_exclusive_group()
    size_group.add_argument("--full", action="store_true", help="the paper's sizes (meant for a GPU)")
    size_group.add_argument("--quick", action="store_true", help="smoke size: minutes, numbers mean nothing")
    p.add_argument("--out", default="bench/results", help="folder for REPORT.md and vp.png (default bench/results)")
    p.add_argument("--runs", default="runs/reproduce", help="cache of the fits (default runs/reproduce)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    p.add_argument("--only", nargs="+", choices=sorted(GENERATORS), help="evaluate only these generators")
    p.add_argument("--no-ablation", action="store_true", help="skip the Table 6 ablation")
    p.add_argument("--num-threads", type=int, default=1, help="torch threads per process (default 1)")
    p.add_argument("--jobs", type=int, default=1,
                   help="generators evaluated at once, each in its own process (default 1; 2 on 2 cores)")
    args = p.parse_args(argv)
    size_name = "full" if args.full else "quick" if args.quick else "default"
    size = SIZES[size_name]
    torch.set_num_threads(args.num_threads)
    began, began_cpu = time.perf_counter(), time.process_time()
    # The cache folder names every setting a fit depends on, so a changed size never reuses a stale fit.
    runs_dir = Path(args.runs) / (f"{size_name}-K{size['num_potentials']}-T{size['num_timesteps']}"
                                  f"-steps{size['max_steps']}-b{size['batch_size']}")
    if args.jobs < 1:
        p.error(f"--jobs must be >= 1, got {args.jobs}")
    notes: list[str] = []
    jobs = []
    for name in args.only or GENERATORS:
        folder, shipped = GENERATORS[name]
        if folder_ready(folder):
            jobs.append(("generator", name))
        else:
            log(f"note: {folder} is not there (yet): {name} skipped")
            notes.append(f"{folder} missing: {name} skipped")
    if not args.no_ablation and (args.only is None or ABLATION_GENERATOR in args.only):
        if folder_ready(GENERATORS[ABLATION_GENERATOR][0]):
            jobs.append(("ablation", ABLATION_GENERATOR))
        else:
            log(f"note: {GENERATORS[ABLATION_GENERATOR][0]} is not there (yet): ablation skipped")
    if args.only is None or {"mnist-vae", "mnist-joint-vae"} & set(args.only):
        jobs.append(("mnist", "log p(x) + equivariance"))
    jobs.sort(key=lambda job: "mnist" in job[0] + job[1])  # the long dSprites jobs first: a shorter tail in parallel
    results = run_jobs(jobs, size, args.seeds, runs_dir, args.num_threads, args.jobs)
    timings: dict[str, float] = {}
    for (kind, name), (value, job_timing) in zip(jobs, results):
        timings.update(job_timing)
    gens = [value for (kind, _), (value, _) in zip(jobs, results) if kind == "generator"]
    abl = next((value for (kind, _), (value, _) in zip(jobs, results) if kind == "ablation"), None)
    mnist_res, mnist_notes = next((value for (kind, _), (value, _) in zip(jobs, results) if kind == "mnist"),
                                  (None, []))
    notes += [f"Tables 4/5: {n}" for n in mnist_notes]
    if abl is not None:  # the paper-loss row is the generator's own trained potentials, evaluated there
        paper = next(g for g in gens if g["name"] == ABLATION_GENERATOR)["methods"].get("potential (trained)")
        label = next(label for label, extra in ABLATIONS.items() if not extra)
        if paper is None:
            del abl["rows"][label]
        else:
            abl["rows"][label]["per_seed"] = paper["per_seed"]
    timings["total"] = time.perf_counter() - began
    # Each job's CPU seconds were measured in the process that ran it.
    timings["total cpu"] = time.process_time() - began_cpu if args.jobs == 1 else sum(
        v for k, v in timings.items() if k.endswith(" cpu"))
    meta = {"command": "python bench/reproduce.py " + " ".join(shlex.quote(a) for a in argv), "size_name": size_name,
            "size": size, "seeds": args.seeds, "timings": timings,
            "hardware": f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {args.jobs} process(es) × "
                        f"{args.num_threads} torch thread(s)"}
    out = Path(args.out)
    write_report(out, gens, abl, mnist_res, notes, meta)
    plot_vp(out, gens)
    log(f"wrote {out / 'REPORT.md'} in {timings['total']:.0f} s wall, {timings['total cpu']:.0f} s CPU")
    return {"generators": gens, "ablation": abl, "mnist": mnist_res, "meta": meta}


if __name__ == "__main__":
    main()
