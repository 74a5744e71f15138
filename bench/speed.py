"""Speed of our training step against the authors' step, on the same models and batch (paper eq. 3-6, Sec. 4.2).

    python bench/speed.py                      # MLP generator at d = 32, 128, 512 and the shipped dSprites VAE (d = 5)
    python bench/speed.py --quick              # smoke size, seconds
    python bench/speed.py --profile            # also: torch.profiler's top ops (self CPU time) of our step
    python bench/speed.py --device cuda        # also: a DCGAN-size generator, K = 32, T = 20, batch 32/128/512

What is timed, per generator: one optimisation step (zero_grad, the loss, backward, Adam) of
(a) ours, `pdetraversal.training.training_step` as train/fit.py calls it, with Hutchinson's Laplacian (1 probe),
(b) ours with the exact Laplacian (the trace of the Hessian, d backward passes),
(c) the reference: what the authors' public code computes, written here from the facts in the design notes:
    L = L_u + L_f + L_J + L_k with
    L_u = ‖∇_z u^k(z_0, 0)‖² (eq. 4), L_f = mean (∂²u/∂t² − c²·"Δu")² (eq. 3), L_J = −‖J_G(z_t)·∇_z u^k‖² (eq. 5-6,
    unbounded), L_k the classifier's cross-entropy (eq. 7), where "Δu" is grad(u_z.sum(), z), a (B, d) vector of
    Hessian row sums (one backward pass, not the trace), and ∂²u/∂t² is taken w.r.t. one time tensor shared by the
    batch, so it is the batch sum Σ_b ∂²u_b/∂t² (one backward pass each for u_t and u_tt).
(d) ours with the paper's draw (`LossConfig(draw="step")`, Sec. 4.4): one k and one t for the batch, Hutchinson,
against (e) the reference on the very same k and t.
Why the ratios are fair: all run on copies of the same PotentialFlow (the paper's MLP, eq. 2), the same frozen
generator, the same PairClassifier, the same z_0 and the same Adam, with one torch thread. The reference draws one
k and one t per step, as the authors' code does, and evaluates only that potential's weights. Against our default
draw (k and t per sample, so all K potentials are trained each step) its t is the largest of the per-sample t that
our step draws from the same seed, so both roll out the same number of prefix steps. Against (d) it draws exactly
(d)'s k and t: the same work, ours computing the true trace and per-sample ∂²u/∂t². The prefix is rolled out without
a graph in both. Warm-up steps are excluded; the methods run in interleaved rounds, round r with seed r for every
method (so a load change on a shared machine hits all of them), and each time is the median of the rounds and each
ratio the median of the rounds' ratios.

It also times the exact Laplacian alone (with the backward pass the loss needs) both ways: d backward passes
(`pdetraversal.pde.hessian_trace`) and forward-over-reverse (`pdetraversal.pde.forward_mode_laplacian`, by
`torch.func`: the JVP of ∇_z u along each basis vector e_i, vmapped over i, keeping the diagonal). Samples are
independent, so one tangent e_i serves the whole batch; vmapping over the batch instead would run `PotentialFlow`'s
check of k on batched tensors, which vmap refuses. `pde.laplacian` and the training step's exact Laplacian use
forward mode up to `pde.FORWARD_MODE_MAX_DIM`, where this table finds it faster.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.func import jvp  # noqa: E402

from hub_models import Generator, MLPGenerator, load_generator  # noqa: E402
from pdetraversal import PotentialFlow, pde  # noqa: E402
from pdetraversal.classifier import PairClassifier  # noqa: E402
from pdetraversal.training import LossConfig, check_frozen, draw_k_and_t, training_step  # noqa: E402

HEADER = (f"{'generator':<16} {'d':>4} {'B':>4} {'ours hutch ms':>14} {'ours exact ms':>14} {'reference ms':>13} "
          f"{'hutch/ref':>10} {'exact/ref':>10} | {'one k: ours ms':>14} {'reference ms':>13} {'ours/ref':>9}")
FORWARD_HEADER = (f"{'d':>4} {'B':>4} {'d backward ms':>14} {'forward-mode ms':>16} {'fwd/bwd':>8} "
                  f"{'max |diff|':>11}  note")


# ---------------------------------------------------------------------------------------------------------------
# The reference step: the authors' quantities.

def _grad(out: torch.Tensor, inp: torch.Tensor) -> torch.Tensor:
    (g,) = torch.autograd.grad(out, inp, create_graph=True, allow_unused=True)
    return torch.zeros_like(inp) if g is None else g


def reference_pde_terms(u_fn, z: torch.Tensor, t: torch.Tensor):
    """The authors' PDE quantities for u_fn(z (B, d), t (B,)) -> (B,), at one time t (a 0-dim tensor) for the batch.

    Returns (u_z (B, d), their "Laplacian" grad(u_z.sum(), z) (B, d), u_tt (0-dim)): the Laplacian's row i is the
    Hessian row sum Σ_j ∂²u/∂z_i∂z_j of sample i, and u_tt = Σ_b ∂²u_b/∂t², because t is shared."""
    if z.ndim != 2 or t.ndim != 0:
        raise ValueError(f"need z of shape (B, d) and a 0-dim shared t, got {tuple(z.shape)} and {tuple(t.shape)}")
    z = z if z.requires_grad else z.detach().requires_grad_(True)
    t = t if t.requires_grad else t.detach().requires_grad_(True)
    u = u_fn(z, t.expand(z.shape[0]))
    u_z = _grad(u.sum(), z)
    row_sums = _grad(u_z.sum(), z)
    u_t = _grad(u.sum(), t)
    u_tt = _grad(u_t, t) if u_t.requires_grad else torch.zeros_like(t)
    return u_z, row_sums, u_tt


def reference_step(flow: PotentialFlow, classifier: nn.Module, generator, z0: torch.Tensor,
                   rng: torch.Generator | None = None, draw: str = "sample"):
    """(L, logs) of the authors' step: one k and one shared t for the batch, matched to training_step's draw from
    the same seed (see the module docstring): draw "sample": its first k and its largest t; "step": its k and t."""
    check_frozen(generator)
    B = z0.shape[0]
    k_all, t_all = draw_k_and_t(flow.num_potentials, flow.num_timesteps, B, draw, rng)
    k, t_index = int(k_all[0]), int(t_all.max())
    z = z0.detach()
    with torch.no_grad():
        for i in range(t_index):
            z = z + flow.step_size * flow.velocity(z, float(i), k)
    t = torch.tensor(float(t_index), dtype=z0.dtype, device=z0.device, requires_grad=True)
    u_z, row_sums, u_tt = reference_pde_terms(lambda zz, tt: flow.potential(zz, tt, k), z, t)
    loss_f = (u_tt - flow.wave_speed[k] ** 2 * row_sums).pow(2).mean()
    loss_u = flow.velocity(z0.detach(), 0.0, k).pow(2).sum(-1).mean()
    step = flow.step_size * u_z
    z_start = z.detach()
    x_t, jv = jvp(generator.decode, (z_start,), (step,))
    loss_j = -jv.pow(2).flatten(1).sum(1).mean()
    logits = classifier(x_t.detach(), generator.decode(z_start + step))
    loss_k = F.cross_entropy(logits, torch.full((B,), k, device=z0.device))
    total = loss_u + loss_f + loss_j + loss_k
    return total, {"loss": total.item(), "L_u": loss_u.item(), "L_f": loss_f.item(), "L_J": loss_j.item(),
                   "L_k": loss_k.item()}


# ---------------------------------------------------------------------------------------------------------------
# The exact Laplacian by forward-over-reverse mode.

def forward_mode_laplacian(flow: PotentialFlow, z: torch.Tensor, t: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Δ_z u^k(z, t) per sample -> (B,) by forward over reverse mode (`pde.forward_mode_laplacian`).

    Differentiable w.r.t. the flow's parameters (torch.func transforms pass the outer autograd graph through)."""
    return pde.forward_mode_laplacian(lambda zz, tt: flow.potential(zz, tt, k), z, t)


def backward_passes_laplacian(flow: PotentialFlow, z: torch.Tensor, t: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Δ_z u^k(z, t) per sample -> (B,) by d backward passes (`pde.hessian_trace`), whatever d."""
    z = z.detach().requires_grad_(True)
    (grad_z,) = torch.autograd.grad(flow.potential(z, t, k).sum(), z, create_graph=True)
    return pde.hessian_trace(grad_z, z, "exact")


# ---------------------------------------------------------------------------------------------------------------
# A DCGAN-size generator (Radford et al. 2016): z = 100 -> 3×64×64, about 3.6M parameters.

class DCGANGenerator(Generator):
    def __init__(self, latent_dim: int = 100, width: int = 64, channels: int = 3):
        super().__init__()
        self.latent_dim = latent_dim
        w = width

        def up(cin, cout):
            return [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]

        self.net = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, 8 * w, 4, 1, 0, bias=False), nn.BatchNorm2d(8 * w), nn.ReLU(True),  # 4×4
            *up(8 * w, 4 * w), *up(4 * w, 2 * w), *up(2 * w, w),  # 8, 16, 32
            nn.ConvTranspose2d(w, channels, 4, 2, 1, bias=False),  # 64×64
        )

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        self.check_latent(z)
        return torch.sigmoid(self.net(z[:, :, None, None]))


# ---------------------------------------------------------------------------------------------------------------
# Timing.

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Method:
    """One way of taking a step, on its own copy of the flow and classifier (same initial weights) and its own Adam."""

    def __init__(self, name: str, flow, classifier, generator, z0, step_fn):
        self.name, self.generator, self.z0, self.step_fn = name, generator, z0, step_fn
        self.flow, self.classifier = copy.deepcopy(flow), copy.deepcopy(classifier)
        self.params = [*self.flow.parameters(), *self.classifier.parameters()]
        self.optimizer = torch.optim.Adam(self.params, lr=1e-3)
        self.times: list[float] = []

    def step(self, seed: int = 0) -> None:
        rng = torch.Generator().manual_seed(seed)  # the same seed, so the same k and t draws, for every method
        self.optimizer.zero_grad(set_to_none=True)
        loss, _ = self.step_fn(self.flow, self.classifier, self.generator, self.z0, rng)
        loss.backward()
        self.optimizer.step()

    def timed_step(self, seed: int) -> float:
        device = self.z0.device
        sync(device)
        start = time.perf_counter()
        self.step(seed)
        sync(device)
        return time.perf_counter() - start


def ours(laplacian: str, draw: str = "sample"):
    cfg = LossConfig(laplacian=laplacian, num_probes=1, draw=draw)
    return lambda flow, classifier, generator, z0, rng: training_step(flow, classifier, generator, z0, cfg, rng)


def reference(draw: str):
    return lambda flow, classifier, generator, z0, rng: reference_step(flow, classifier, generator, z0, rng, draw)


def time_methods(methods: list[Method], warmup: int, repeats: int) -> dict[str, float]:
    """Median seconds per step of each method, over `repeats` interleaved rounds after `warmup` untimed steps.
    Round r runs every method with seed r, so methods that draw alike see the same k and t in each round."""
    for m in methods:
        for i in range(warmup):
            m.step(repeats + i)
    for r in range(repeats):
        # Rotating the order keeps any method from always running right after the same neighbour.
        for m in methods[r % len(methods):] + methods[:r % len(methods)]:
            m.times.append(m.timed_step(r))
    return {m.name: statistics.median(m.times) for m in methods}


def ratio(methods: list[Method], name: str, to: str) -> float:
    """Median over the rounds of name's time / to's time in the same round (same seed, same load)."""
    a, b = (next(m for m in methods if m.name == n).times for n in (name, to))
    return statistics.median(x / y for x, y in zip(a, b))


def make_methods(generator, latent_dim: int, batch: int, K: int, T: int, device: torch.device,
                 with_exact: bool, one_k: bool = False) -> list[Method]:
    torch.manual_seed(0)
    flow = PotentialFlow(latent_dim, K, num_timesteps=T).to(device)
    x = generator.decode(generator.sample_latent(1, seed=0))
    classifier = PairClassifier(K, channels=x.shape[1], image_size=max(x.shape[2:])).to(device)
    z0 = generator.sample_latent(batch, seed=1)
    specs = [("hutchinson", ours("hutchinson"))] + ([("exact", ours("exact"))] if with_exact else [])
    specs.append(("reference", reference("sample")))
    if one_k:
        specs += [("hutch one k", ours("hutchinson", "step")), ("ref one k", reference("step"))]
    return [Method(name, flow, classifier, generator, z0, fn) for name, fn in specs]


def step_table(args, device: torch.device) -> None:
    print(f"\n== training step, K = {args.num_potentials}, T = {args.num_timesteps}, warm-up {args.warmup}, "
          f"median of {args.repeats} ==")
    print(HEADER)
    cases = [(f"mlp d={d}", d, lambda d=d: MLPGenerator(d, args.mlp_hidden, 1, args.mlp_image_size)) for d in args.dims]
    if not args.no_vae:
        cases.append(("dsprites-vae", None, lambda: load_generator("hub_models/dsprites-vae")))
    for name, _, build in cases:
        generator = build().to(device).eval().requires_grad_(False)
        d = generator.latent_dim
        with_exact = d <= args.exact_max_dim
        methods = make_methods(generator, d, args.batch_size, args.num_potentials, args.num_timesteps, device,
                               with_exact, one_k=True)
        times = time_methods(methods, args.warmup, args.repeats)
        ms = {k: 1000 * v for k, v in times.items()}
        exact = f"{ms['exact']:>14.1f}" if with_exact else f"{'(skipped)':>14}"
        exact_ratio = f"{ratio(methods, 'exact', 'reference'):>10.2f}" if with_exact else f"{'-':>10}"
        print(f"{name:<16} {d:>4} {args.batch_size:>4} {ms['hutchinson']:>14.1f} {exact} {ms['reference']:>13.1f} "
              f"{ratio(methods, 'hutchinson', 'reference'):>10.2f} {exact_ratio} | {ms['hutch one k']:>14.1f} "
              f"{ms['ref one k']:>13.1f} {ratio(methods, 'hutch one k', 'ref one k'):>9.2f}", flush=True)
    if any(d > args.exact_max_dim for d in args.dims):
        print(f"(exact skipped above d = {args.exact_max_dim}: --exact-max-dim)")


def median_seconds(fn, warmup: int, repeats: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def forward_mode_table(args, device: torch.device) -> None:
    print(f"\n== exact Laplacian, forward + backward to the weights, K = {args.num_potentials}, median of "
          f"{args.repeats} ==")
    print(FORWARD_HEADER)
    for d in args.dims:
        if d > args.exact_max_dim:
            print(f"{d:>4} {args.batch_size:>4} {'(skipped: --exact-max-dim)':>31}")
            continue
        torch.manual_seed(0)
        flow = PotentialFlow(d, args.num_potentials).to(device)
        z = torch.randn(args.batch_size, d, device=device)
        t = torch.rand(args.batch_size, device=device) * args.num_timesteps
        k = torch.randint(args.num_potentials, (args.batch_size,)).to(device)

        def backward_passes():
            lap = backward_passes_laplacian(flow, z, t, k)
            lap.pow(2).mean().backward()
            return lap

        def forward_mode():
            lap = forward_mode_laplacian(flow, z, t, k)
            lap.pow(2).mean().backward()
            return lap

        diff = (backward_passes() - forward_mode()).abs().max().item()
        bwd = median_seconds(backward_passes, args.warmup, args.repeats, device)
        fwd = median_seconds(forward_mode, args.warmup, args.repeats, device)
        note = "forward mode wins" if fwd < bwd else "d backward passes win"
        print(f"{d:>4} {args.batch_size:>4} {1000 * bwd:>14.1f} {1000 * fwd:>16.1f} {fwd / bwd:>8.2f} {diff:>11.2e}  "
              f"{note}", flush=True)


def dcgan_table(args, device: torch.device) -> None:
    K, T = args.dcgan_potentials, args.dcgan_timesteps
    torch.manual_seed(0)
    generator = DCGANGenerator().to(device).eval().requires_grad_(False)
    n_params = sum(p.numel() for p in generator.parameters())
    print(f"\n== DCGAN-size generator ({n_params / 1e6:.2f}M parameters, z = 100, 3×64×64) on {device}, K = {K}, "
          f"T = {T}, warm-up {max(args.warmup, 2)}, median of {args.repeats} ==")
    print(f"{'B':>4} {'method':<11} {'ms/step':>9} {'steps/s':>8} {'peak MiB':>9}  ratio to reference")
    for batch in args.dcgan_batches:
        methods = make_methods(generator, 100, batch, K, T, device, with_exact=True)
        peaks = {}
        for m in methods:
            # Peak memory from one step of each method alone; the timing below interleaves them.
            m.step()
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            m.step()
            peaks[m.name] = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        times = time_methods(methods, max(args.warmup - 2, 0), args.repeats)
        for m in methods:
            peak = f"{peaks[m.name]:>9.0f}" if peaks[m.name] is not None else f"{'n/a':>9}"
            print(f"{batch:>4} {m.name:<11} {1000 * times[m.name]:>9.1f} {1 / times[m.name]:>8.2f} {peak}  "
                  f"{ratio(methods, m.name, 'reference'):.2f}", flush=True)
        del methods


def profile_ours(args, device: torch.device) -> None:
    from torch.profiler import ProfilerActivity, profile

    d = args.profile_dim
    generator = MLPGenerator(d, args.mlp_hidden, 1, args.mlp_image_size).to(device).eval().requires_grad_(False)
    for name in ("hutchinson", "reference"):
        method = next(m for m in make_methods(generator, d, args.batch_size, args.num_potentials, args.num_timesteps,
                                              device, with_exact=False) if m.name == name)
        for _ in range(max(args.warmup, 1)):
            method.step()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            for _ in range(args.profile_steps):
                method.step()
        print(f"\n== profiler: {name} step, MLP generator d = {d}, B = {args.batch_size}, {args.profile_steps} steps, "
              f"top ops by self CPU time ==")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile_rows))


def hardware_line(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return (f"{cpu}{gpu}; torch {torch.__version__}, {torch.get_num_threads()} torch thread(s), "
            f"python {platform.python_version()}")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda; cuda also runs the DCGAN table (default cpu)")
    p.add_argument("--quick", action="store_true", help="smoke size: tiny dims, batch and repeats")
    p.add_argument("--profile", action="store_true", help="torch.profiler pass over our step and the reference's")
    p.add_argument("--dcgan", action="store_true", help="run the DCGAN table on --device even without cuda")
    p.add_argument("--dims", type=positive_int, nargs="+", default=[32, 128, 512], help="MLP generator latent sizes")
    p.add_argument("--batch-size", type=positive_int, default=64, help="latents per step (default 64, as train/fit.py)")
    p.add_argument("--num-potentials", type=positive_int, default=8, help="K (default 8, as train/fit.py)")
    p.add_argument("--num-timesteps", type=positive_int, default=10, help="T (default 10, as train/fit.py)")
    p.add_argument("--mlp-hidden", type=positive_int, default=256, help="hidden width of the MLP generator")
    p.add_argument("--mlp-image-size", type=positive_int, default=64,
                   help="image side of the MLP generator (1 channel)")
    p.add_argument("--no-vae", action="store_true", help="leave out the shipped dSprites VAE")
    p.add_argument("--exact-max-dim", type=positive_int, default=512,
                   help="skip the exact Laplacian above this d (its d backward passes take minutes per step)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per method (default 2)")
    p.add_argument("--repeats", type=positive_int, default=5, help="timed rounds; cells are medians (default 5)")
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads (default 1)")
    p.add_argument("--dcgan-batches", type=positive_int, nargs="+", help="DCGAN batch sizes (default 32 128 512 on "
                   "cuda, 32 on cpu)")
    p.add_argument("--dcgan-potentials", type=positive_int, default=32, help="K of the DCGAN table (default 32)")
    p.add_argument("--dcgan-timesteps", type=positive_int, default=20, help="T of the DCGAN table (default 20)")
    p.add_argument("--profile-dim", type=positive_int, default=128, help="MLP latent size of --profile (default 128)")
    p.add_argument("--profile-steps", type=positive_int, default=3, help="profiled steps (default 3)")
    p.add_argument("--profile-rows", type=positive_int, default=15, help="ops listed (default 15)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.warmup < 0:
        raise SystemExit(f"error: --warmup must be >= 0, got {args.warmup}")
    if args.num_timesteps < 2 or args.dcgan_timesteps < 2:
        raise SystemExit("error: T must be >= 2 (t is drawn from 0..T-2)")
    if args.quick:
        args.dims, args.batch_size, args.num_potentials, args.num_timesteps = [8, 16], 8, 4, 4
        args.mlp_hidden, args.mlp_image_size, args.warmup, args.repeats = 32, 16, 1, 2
        args.dcgan_batches, args.dcgan_potentials, args.dcgan_timesteps = args.dcgan_batches or [2], 4, 3
        args.profile_dim, args.profile_steps = 8, 1
    torch.set_num_threads(args.threads)
    run_dcgan = args.dcgan
    if args.device.startswith("cuda"):
        if torch.cuda.is_available():
            run_dcgan = True
        else:
            print("no CUDA device here: running everything on the CPU instead (the DCGAN table at batch 32 only "
                  "unless --dcgan-batches)")
            args.device, run_dcgan = "cpu", True
    try:
        device = torch.device(args.device)
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError) as e:
        raise SystemExit(f"error: --device {args.device}: {e}") from None
    if args.dcgan_batches is None:
        args.dcgan_batches = [32, 128, 512] if device.type == "cuda" else [32]
    print(f"bench/speed.py, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"hardware: {hardware_line(device)}")
    step_table(args, device)
    forward_mode_table(args, device)
    if run_dcgan:
        dcgan_table(args, device)
    if args.profile:
        profile_ours(args, device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
