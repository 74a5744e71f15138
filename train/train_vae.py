"""Train the dSprites VAE, the frozen generator of the paper's dSprites setting (Sec. 4), on procedural dSprites.

Every step draws a fresh batch from `pdetraversal.data.dsprites` (infinite data, no dataset download) and minimises the
negative ELBO with Adam:

    loss = E_q[-log p(x|z)] + beta * KL(q(z|x) || N(0, I)),

with a Bernoulli likelihood (binary cross-entropy with logits, summed over the 64x64 pixels) and the closed-form
Gaussian KL summed over latent dimensions, both averaged over the batch. beta = 1 is the plain VAE; beta > 1 a
beta-VAE. With --ada-gvae the batch is pairs of images that differ in one factor, and the ELBO is taken with
the pair's shared coordinates averaged (`pdetraversal.adagvae`), which ties single coordinates to single factors
without labels. With --anchor-weight w the loss gains w * Σ_j (mu_j - a_j)², coordinate j = 0..4 pulled
towards a target a_j made from factor j of the image (`pdetraversal.data.anchors`).
At the end the model is saved with `save_pretrained` (config.json + diffusion_pytorch_model.safetensors) next to a model card
README.md that records the command, the steps, the final loss terms, the time taken and which factor moves each
latent coordinate.

The shipped `hub_models/dsprites-vae` was trained from the repo root with

    python train/train_vae.py --max-steps 16000 --batch-size 64 --lr 1e-3 --latent-dim 5 --beta 2 \
        --anchor-weight 50 --factor-regressor hub_models/dsprites-factor-regressor --seed 0 \
        --output-dir hub_models/dsprites-vae     (27 min on 2 CPU cores)

and loads with `hub_models.load_generator("hub_models/dsprites-vae")`. A quick smoke run:

    python train/train_vae.py --max-steps 20 --output-dir runs/vae-smoke
"""
from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from train.flags import add_run_flags  # noqa: E402
from hub_models import resolve_source  # noqa: E402
from hub_models.dsprites_vae import DSpritesVAE  # noqa: E402
from pdetraversal import losses  # noqa: E402
from pdetraversal.data import dsprites  # noqa: E402
from pdetraversal.adagvae import share_posteriors  # noqa: E402
from pdetraversal.data.anchors import ANCHOR_NAMES, anchor_loss  # noqa: E402
from pdetraversal.metrics.factors import FactorRegressor, evaluate_regressor  # noqa: E402


def elbo_terms(x: torch.Tensor, logits: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(reconstruction, kl), each averaged over the batch (the per-sample terms of `losses.elbo_terms`)."""
    recon, kl = losses.elbo_terms(x, logits, mu, logvar)
    return recon.mean(), kl.mean()


@torch.no_grad()
def evaluate(model: DSpritesVAE, num: int = 1000, seed: int = 12345, anchored: bool = False) -> dict:
    """Held-out reconstruction quality (z = mu): mean BCE per image, KL per image, pixel accuracy at 0.5, foreground
    IoU; with `anchored`, also the mean squared distance of mu_0..4 from the images' anchor targets."""
    was_training = model.training
    model.eval()
    x, factors = dsprites.sample(num, seed=seed)
    logits, mu, logvar = model(x, sample=False)
    recon, kl = elbo_terms(x, logits, mu, logvar)
    acc = ((logits > 0).float() == x).float().mean()
    fg = x > 0.5
    iou = ((logits > 0) & fg).sum() / ((logits > 0) | fg).sum()
    model.train(was_training)
    anchor = {"anchor": anchor_loss(mu, factors).mean().item()} if anchored else {}
    return {"recon": recon.item(), "kl": kl.item(), "pixel_accuracy": acc.item(), "foreground_iou": iou.item(), **anchor}


@torch.no_grad()
def latent_factors(model: DSpritesVAE, num: int = 5000, seed: int = 54321) -> list[dict]:
    """Which factor moves each latent coordinate: over `num` fresh one-factor pairs, the mean |change of mu_j| when
    factor f alone changes, per coordinate j and factor f; plus the coordinate's mean KL (near 0: unused)."""
    first, second, factor = dsprites.one_factor_pairs(num, seed=seed)
    mu1, logvar1 = model.encode(dsprites.render(first))
    mu2, _ = model.encode(dsprites.render(second))
    kl = losses.kl_per_coordinate(mu1, logvar1).mean(0)
    moves = torch.stack([(mu2 - mu1)[factor == f].abs().mean(0) for f in range(len(dsprites.FACTOR_NAMES))], 1)
    return [{"kl": kl[j].item(), "moves": dict(zip(dsprites.FACTOR_NAMES, moves[j].tolist()))} for j in range(len(kl))]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train_vae.py",
        description="Train the dSprites conv VAE on freshly sampled procedural dSprites and save it in Hub layout.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--max-steps", type=int, default=5000, help="number of Adam steps")
    p.add_argument("--batch-size", type=int, default=64, help="images per step (each batch freshly generated)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--latent-dim", type=int, default=10, help="dimension of z")
    p.add_argument("--width", type=int, default=32, help="channels of the first conv layer (later layers: 2x)")
    p.add_argument("--hidden-dim", type=int, default=256, help="width of the fully connected layer")
    p.add_argument("--beta", type=float, default=2.0, help="weight of the KL term (1 = plain VAE, >1 = beta-VAE)")
    p.add_argument("--ada-gvae", action="store_true",
                   help="weakly supervised: each batch is batch-size/2 pairs of images that differ in one factor, and "
                        "the pair's shared latent coordinates are averaged (Ada-GVAE, Locatello et al. 2020); "
                        "this is what makes single coordinates follow single factors")
    p.add_argument("--anchor-weight", type=float, default=0.0,
                   help="supervised: weight of the pull of the first five posterior-mean coordinates towards the "
                        "image's factor labels (shape, scale, orientation, x, y; `pdetraversal.data.anchors`); "
                        "0 = off; coordinates beyond the fifth stay free")
    p.add_argument("--factor-regressor",
                   help="dSprites factor regressor (folder or Hub id, e.g. hub_models/dsprites-factor-regressor): report "
                        "in the card how well the reconstructions keep each factor")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and of the data stream")
    p.add_argument("--output-dir", default="hub_models/dsprites-vae",
                   help="folder to write config.json, diffusion_pytorch_model.safetensors and README.md to")
    add_run_flags(p)
    return p


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("max_steps", "batch_size", "latent_dim", "width", "hidden_dim"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.ada_gvae and args.batch_size % 2:
        parser.error(f"--ada-gvae needs an even --batch-size (it holds pairs), got {args.batch_size}")
    if not (args.anchor_weight >= 0 and math.isfinite(args.anchor_weight)):
        parser.error(f"--anchor-weight must be a non-negative number, got {args.anchor_weight}")
    if args.anchor_weight and args.ada_gvae:
        parser.error("--anchor-weight and --ada-gvae are two different supervisions; pick one")
    if args.anchor_weight and args.latent_dim < len(ANCHOR_NAMES):
        parser.error(f"--anchor-weight anchors {len(ANCHOR_NAMES)} coordinates: "
                     f"--latent-dim must be >= {len(ANCHOR_NAMES)}, got {args.latent_dim}")
    if args.num_threads < 0:
        parser.error(f"--num-threads must be >= 0, got {args.num_threads}")
    if not (args.lr > 0 and math.isfinite(args.lr)):
        parser.error(f"--lr must be a positive number, got {args.lr}")
    if not (args.beta >= 0 and math.isfinite(args.beta)):
        parser.error(f"--beta must be a non-negative number, got {args.beta}")
    return args


def latent_table(rows: list[dict]) -> str:
    names = dsprites.FACTOR_NAMES
    lines = ["| z_j | KL (nats) | " + " | ".join(names) + " | moved mainly by | share |",
             "|---|---|" + "---|" * len(names) + "---|---|"]
    for j, r in enumerate(rows):
        total = sum(r["moves"].values())
        top = max(r["moves"], key=r["moves"].get)
        used = r["kl"] >= 0.1
        lines.append(f"| {j} | {r['kl']:.2f} | " + " | ".join(f"{r['moves'][f]:.3f}" for f in names)
                     + (f" | {top} | {r['moves'][top] / total:.2f} |" if used else " | (unused) | |"))
    return "\n".join(lines)


def factors_kept(model: DSpritesVAE, source: str) -> str:
    """Card section: the factor regressor read on the reconstructions decode(mu(x)) of fresh images, against x's labels."""
    regressor = FactorRegressor.from_pretrained(resolve_source(source))
    m = evaluate_regressor(regressor, num=1500, seed=2024, transform=lambda x: model.decode(model.encode(x)[0]))
    rows = [("shape read right", "shape_accuracy", ".3f")]
    rows += [(f"... of {name}s", f"shape_accuracy_{name}", ".3f") for name in dsprites.SHAPE_NAMES]
    rows += [("scale read right (nearest of 6 values)", "scale_accuracy", ".3f"),
             ("x mean abs. error (pixels)", "x_mae_px", ".2f"), ("y mean abs. error (pixels)", "y_mae_px", ".2f"),
             ("orientation within 9° (θ mod 90°)", "orientation_within_9deg", ".3f")]
    table = "\n".join(f"| {label} | {m[key]:{fmt}} |" for label, key, fmt in rows)
    return f"""## Factors kept by the reconstructions

The factor regressor `{source}` read on the reconstructions decode(mu(x)) of 1,500 fresh images (seed 2024),
against the factors of x. Potentials can only move factors the generator draws.

| read on reconstructions | value |
|---|---|
{table}

"""


def write_card(out: Path, command: str, args: argparse.Namespace, final: dict, held_out: dict, seconds: float,
               num_params: int, latents: list[dict], kept: str = "") -> None:
    if args.ada_gvae:
        objective = ("Weakly supervised (Ada-GVAE, Locatello et al. 2020): each batch held pairs of images that differ "
                     "in exactly one factor (which one was not given to the model), and the latent coordinates a pair "
                     "agrees on were averaged between its two posteriors before the ELBO (`pdetraversal.adagvae`).")
    elif args.anchor_weight:
        n = len(ANCHOR_NAMES)
        free = f"; z_{n} and up were left free" if args.latent_dim > n else ""
        objective = (f"Supervised by the factor labels (`pdetraversal.data.anchors`): the posterior means of z_0..z_{n - 1} "
                     f"were pulled towards targets made from each image's factors ({', '.join(ANCHOR_NAMES)}), with "
                     f"{args.anchor_weight:g} times the squared error added to the loss{free}. On the held-out images "
                     f"below the squared error is {held_out['anchor']:.3f} per image, summed over the {n} "
                     f"coordinates. The orientation target runs over one period of the shape's symmetry (a square's "
                     f"quarter turn, an ellipse's half turn, a heart's full turn) at one slope for all shapes, so its "
                     f"range depends on the shape, and a change of shape alone moves z_2 too (table below).")
    else:
        objective = "Unsupervised: the beta-VAE ELBO on independent images; nothing ties single coordinates to single factors."
    card = f"""---
library_name: pdetraversal
license: apache-2.0
tags:
- pdetraversal
- pdetraversal-generator
- vae
- dsprites
datasets: []
---

# dSprites conv VAE (pdetraversal generator)

A convolutional VAE (`hub_models.dsprites_vae.DSpritesVAE`, {num_params:,} parameters, latent dimension
{args.latent_dim}) for 64x64 binary dSprites images. It is the frozen generator of the dSprites setting of
"Latent Traversals in Generative Models as Potential Flows" (Song et al., ICML 2023, Sec. 4); `decode(z)` maps
z ~ N(0, I) to pixel probabilities in [0, 1].

Data: no dataset file. Every step drew a fresh batch of procedural dSprites from `pdetraversal.data.dsprites`
(3 shapes x 6 scales x 40 orientations x 32 x 32 positions, drawn by this project's own code, so the
`datasets` field is empty on purpose).

## Training

Command (from the repository root):

```
{command}
```

- steps: {args.max_steps}, batch size {args.batch_size}, Adam lr {args.lr}, beta {args.beta}, seed {args.seed}
- time: {seconds:.0f} s on CPU ({args.max_steps / seconds:.1f} steps/s)
- final training loss terms (mean of the last {final['window']} steps, per image): loss {final['loss']:.2f},
  reconstruction (BCE summed over pixels) {final['recon']:.2f}, KL {final['kl']:.2f} nats

{objective}

## Held-out reconstruction (1000 fresh images, seed 12345, z = mu)

| metric | value |
|---|---|
| BCE per image (nats, summed over 4096 pixels) | {held_out['recon']:.2f} |
| BCE per pixel | {held_out['recon'] / 4096:.4f} |
| KL per image (nats) | {held_out['kl']:.2f} |
| pixel accuracy (threshold 0.5) | {held_out['pixel_accuracy']:.4f} |
| foreground IoU (threshold 0.5) | {held_out['foreground_iou']:.3f} |

## Latent coordinates and factors

Mean |change of the posterior mean mu_j| when one factor alone changes (5,000 fresh one-factor pairs, seed
54321); a coordinate with KL under 0.1 nats is unused (the decoder ignores it). A coordinate that follows one
factor has a share near 1.

{latent_table(latents)}

{kept}Shape is the factor a dSprites VAE learns last: short runs decode squares and hearts as rounded blobs, and potentials
trained on a generator can only find the factors it encodes.

## Use

```python
from hub_models import load_generator
gen = load_generator("hub_models/dsprites-vae")
images = gen.decode(gen.sample_latent(8, seed=0))   # (8, 1, 64, 64) in [0, 1]
```
"""
    (out / "README.md").write_text(card, encoding="utf-8")


def main(argv=None) -> DSpritesVAE:
    args = parse_args(argv)
    argv_list = list(sys.argv[1:] if argv is None else argv)
    command = "python train/train_vae.py " + " ".join(shlex.quote(a) for a in argv_list)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    torch.manual_seed(args.seed)
    model = DSpritesVAE(latent_dim=args.latent_dim, width=args.width, hidden_dim=args.hidden_dim)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    window = min(100, args.max_steps)
    recent: list[tuple[float, float, float]] = []
    start = time.perf_counter()
    bar = tqdm(range(args.max_steps), desc="train VAE", disable=not args.progress, dynamic_ncols=True)
    for step in bar:
        # Data seed per step: a reproducible, never repeating stream of batches.
        if args.ada_gvae:
            first, second, _ = dsprites.one_factor_pairs(args.batch_size // 2, seed=(args.seed, step))
            x = dsprites.render(torch.cat([first, second]))
            (mu1, mu2), (logvar1, logvar2) = (v.chunk(2) for v in model.encode(x))
            mu1, logvar1, mu2, logvar2 = share_posteriors(mu1, logvar1, mu2, logvar2)
            mu, logvar = torch.cat([mu1, mu2]), torch.cat([logvar1, logvar2])
            logits = model.decode_logits(mu + torch.randn_like(mu) * torch.exp(0.5 * logvar))
        else:
            x, factors = dsprites.sample(args.batch_size, seed=(args.seed, step))
            logits, mu, logvar = model(x)
        recon, kl = elbo_terms(x, logits, mu, logvar)
        anchor = anchor_loss(mu, factors).mean() if args.anchor_weight else torch.zeros(())
        loss = recon + args.beta * kl + args.anchor_weight * anchor
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        recent = (recent + [(loss.item(), recon.item(), kl.item())])[-window:]
        if step % 10 == 0 or step == args.max_steps - 1:
            bar.set_postfix(loss=f"{loss.item():.1f}", recon=f"{recon.item():.1f}", kl=f"{kl.item():.2f}",
                            **({"anchor": f"{anchor.item():.3f}"} if args.anchor_weight else {}))
    seconds = time.perf_counter() - start
    if not all(math.isfinite(v) for row in recent for v in row):
        raise RuntimeError("training diverged (non-finite loss); try a smaller --lr")
    final = {"window": len(recent), **{k: sum(r[i] for r in recent) / len(recent) for i, k in enumerate(("loss", "recon", "kl"))}}
    model.eval()
    held_out = evaluate(model, anchored=bool(args.anchor_weight))
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)  # writes a generic README.md only when none exists; ours replaces it below
    kept = factors_kept(model, args.factor_regressor) if args.factor_regressor else ""
    write_card(out, command, args, final, held_out, seconds, sum(p.numel() for p in model.parameters()),
               latent_factors(model), kept)
    print(f"saved {out} after {args.max_steps} steps in {seconds:.0f} s: loss {final['loss']:.2f} "
          f"(recon {final['recon']:.2f}, KL {final['kl']:.2f}); held-out BCE/image {held_out['recon']:.2f}, "
          f"pixel accuracy {held_out['pixel_accuracy']:.4f}, foreground IoU {held_out['foreground_iou']:.3f}")
    return model


if __name__ == "__main__":
    main()
