"""Train the dSprites factor regressor that scores traversals (`pdetraversal.metrics.factors`), the evaluation of the
paper's dSprites setting (Sec. 4) on our procedural dSprites.

Every step draws a fresh batch of procedural dSprites (half of it blurred, so that soft VAE frames are read
correctly) and minimises `pdetraversal.metrics.factors.regressor_loss` (cross-entropy on shape, MSEs on scale, x, y and
(cos 4θ, sin 4θ), plus auxiliary MSEs on θ for hearts and 2θ for hearts and ellipses) with Adam and a cosine
learning-rate decay. The model is saved with `save_pretrained` next to a model card README.md with
its held-out errors.

The shipped `hub_models/dsprites-factor-regressor` was trained from the repo root with

    python train/train_factor_regressor.py --max-steps 2500 --batch-size 64 --lr 1e-3 --seed 0 --num-threads 1

and loads with `FactorRegressor.from_pretrained("hub_models/dsprites-factor-regressor")`. A quick smoke run:

    python train/train_factor_regressor.py --max-steps 20 --output-dir runs/regressor-smoke
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

from train.flags import add_run_flags  # noqa: E402
from pdetraversal.metrics.factors import FactorRegressor, evaluate_regressor, train_factor_regressor  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train_factor_regressor.py",
        description="Train the dSprites factor regressor on procedural dSprites and save it in Hub layout.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--max-steps", type=int, default=2500, help="number of Adam steps")
    p.add_argument("--batch-size", type=int, default=64, help="images per step (each batch freshly generated)")
    p.add_argument("--lr", type=float, default=1e-3, help="initial Adam learning rate (cosine decay to 2%% of it)")
    p.add_argument("--width", type=int, default=32, help="channels of the first conv layer (later layers: 2x)")
    p.add_argument("--hidden-dim", type=int, default=128, help="width of the fully connected layer")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                   help="blur half of every batch so that soft generator frames are read correctly")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and of the data stream")
    p.add_argument("--output-dir", default="hub_models/dsprites-factor-regressor",
                   help="folder to write config.json, model.safetensors and README.md to")
    add_run_flags(p)
    return p


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("max_steps", "batch_size", "width", "hidden_dim"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.num_threads < 0:
        parser.error(f"--num-threads must be >= 0, got {args.num_threads}")
    if not (args.lr > 0 and math.isfinite(args.lr)):
        parser.error(f"--lr must be a positive number, got {args.lr}")
    return args


def _row(name: str, binary: dict, soft: dict, key: str, fmt: str) -> str:
    return f"| {name} | {format(binary[key], fmt)} | {format(soft[key], fmt)} |"


def write_card(out: Path, command: str, args: argparse.Namespace, binary: dict, soft: dict, seconds: float,
               num_params: int) -> None:
    rows = "\n".join([
        _row("shape accuracy", binary, soft, "shape_accuracy", ".4f"),
        _row("scale accuracy (nearest of 6 values)", binary, soft, "scale_accuracy", ".4f"),
        _row("x mean abs. error (pixels)", binary, soft, "x_mae_px", ".3f"),
        _row("y mean abs. error (pixels)", binary, soft, "y_mae_px", ".3f"),
        _row("orientation median abs. error (degrees, θ mod 90°)", binary, soft, "orientation_median_error_deg", ".2f"),
        _row("orientation mean abs. error (degrees, θ mod 90°)", binary, soft, "orientation_mean_error_deg", ".2f"),
        _row("orientation within 9° (one step)", binary, soft, "orientation_within_9deg", ".4f"),
    ])
    card = f"""---
library_name: pdetraversal
license: apache-2.0
tags:
- pdetraversal
- pdetraversal-factor-regressor
- dsprites
datasets: []
---

# dSprites factor regressor (pdetraversal evaluation model)

A small conv net (`pdetraversal.metrics.factors.FactorRegressor`, {num_params:,} parameters) that reads the ground-truth
factors of a 64x64 dSprites image: shape (3 classes), scale, x, y (each normalised to [0, 1]) and orientation as
(cos 4θ, sin 4θ); 4θ because a square is only defined up to a quarter turn. `pdetraversal.metrics.factors.factor_report`
uses it to say which factor each learned potential moves (the dSprites evaluation of "Latent Traversals in
Generative Models as Potential Flows", Song et al., ICML 2023, Sec. 4).

Data: no dataset file. Every step drew a fresh batch of procedural dSprites from `pdetraversal.data.dsprites`
(drawn by this project's own code, so the `datasets` field is empty on purpose); with `--augment`, half of each
batch is blurred with a Gaussian of random width (sigma 0.3 to 1.2 px) so that soft VAE frames are read correctly.

## Training

Command (from the repository root):

```
{command}
```

- steps: {args.max_steps}, batch size {args.batch_size}, Adam lr {args.lr} with cosine decay, augment {args.augment},
  seed {args.seed}
- time: {seconds:.0f} s on CPU

## Held-out errors ({binary['num_images']} fresh images, seed 999)

| metric | binary images | blurred images (every image, sigma 0.3 to 1.2 px) |
|---|---|---|
{rows}

## Use

```python
from pdetraversal.metrics.factors import FactorRegressor
reg = FactorRegressor.from_pretrained("hub_models/dsprites-factor-regressor")
factors = reg.predict(images)   # images (B, 1, 64, 64) in [0, 1]
```
"""
    (out / "README.md").write_text(card, encoding="utf-8")


def main(argv=None) -> FactorRegressor:
    args = parse_args(argv)
    argv_list = list(sys.argv[1:] if argv is None else argv)
    command = "python train/train_factor_regressor.py " + " ".join(shlex.quote(a) for a in argv_list)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    start = time.perf_counter()
    model = train_factor_regressor(args.max_steps, batch_size=args.batch_size, seed=args.seed, progress=args.progress,
                                   lr=args.lr, augment=args.augment, width=args.width, hidden_dim=args.hidden_dim)
    seconds = time.perf_counter() - start
    binary = evaluate_regressor(model)
    soft = evaluate_regressor(model, soft=True)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)  # writes a generic README.md only when none exists; ours replaces it below
    write_card(out, command, args, binary, soft, seconds, sum(p.numel() for p in model.parameters()))
    print(f"saved {out} after {args.max_steps} steps in {seconds:.0f} s; held-out (binary): " +
          ", ".join(f"{k} {v:.4g}" for k, v in binary.items()))
    print("held-out (blurred): " + ", ".join(f"{k} {v:.4g}" for k, v in soft.items()))
    return model


if __name__ == "__main__":
    main()
