"""Train the Fashion-MNIST conv VAE (`hub_models.fashion_vae.FashionVAE`), a frozen generator for the paper's
traversals (Sec. 3-4), on the 60,000 training pictures of `pdetraversal.data.fashion_mnist`.

Each step takes the next --batch-size pictures of a shuffled pass over the training split (a new seeded shuffle per
pass) and minimises the negative ELBO with Adam:

    loss = E_q[-log p(x|z)] + beta_s * KL(q(z|x) || N(0, I)),

with a Bernoulli likelihood (binary cross-entropy with logits, summed over the 32x32 pixels; `losses.elbo_terms`),
one reparameterised posterior sample per picture and the closed-form Gaussian KL, both averaged over the batch.
beta_s rises linearly from 0 to 1 over the first --kl-warmup steps, so the encoder learns to say something before the
KL term can push every posterior onto the prior.

At the end the folder gets `save_pretrained` (config.json + diffusion_pytorch_model.safetensors), `samples.png` (a
4x8 grid of decode(z), z ~ N(0, I), seed 0) and a model card README.md with the command, time, hardware, parameters
and the held-out negative ELBO (nats per picture, beta = 1, one posterior sample per picture at a fixed seed) on
2,000 test pictures (fixed seed) with its reconstruction and KL parts.

The shipped `hub_models/fashion-vae` was trained from the repository root with

    python train/train_fashion_vae.py --max-steps 7000 --batch-size 64 --num-threads 1 \
        --hardware "2 CPU cores, 1 torch thread, shared" --output-dir hub_models/fashion-vae

(its card gives the time). A quick smoke run: python train/train_fashion_vae.py --max-steps 20 --output-dir runs/fv
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

import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from tqdm import tqdm  # noqa: E402

from hub_models.fashion_vae import FashionVAE  # noqa: E402
from pdetraversal import losses  # noqa: E402
from pdetraversal.data import fashion_mnist  # noqa: E402
from train.flags import add_run_flags, hardware, positive  # noqa: E402

EVAL_NUM = 2000
EVAL_SEED = 777  # which test pictures, and the posterior samples drawn for them
SAMPLE_SEED = 0
GRID_ROWS, GRID_COLS = 4, 8


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train_fashion_vae.py",
        description="Train the Fashion-MNIST conv VAE and save it in Hub layout with a card and a sample grid.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--max-steps", type=positive(int), default=7000, help="number of Adam steps")
    p.add_argument("--batch-size", type=positive(int), default=64, help="pictures per step")
    p.add_argument("--lr", type=positive(float), default=1e-3, help="Adam learning rate")
    p.add_argument("--latent-dim", type=positive(int), default=16, help="dimension of z")
    p.add_argument("--width", type=positive(int), default=32, help="channels of the first conv layer (later layers: 2x)")
    p.add_argument("--hidden-dim", type=positive(int), default=256, help="width of the fully connected layer")
    p.add_argument("--kl-warmup", type=int, default=300,
                   help="steps over which the KL weight rises from 0 to 1 (0: off)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, the shuffles and the posterior samples")
    p.add_argument("--output-dir", default="hub_models/fashion-vae",
                   help="folder for config.json, the weights, samples.png and README.md")
    add_run_flags(p, card_hardware=True)
    return p


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    # sizes and --lr are checked by their argparse types (train/flags.py)
    for name in ("kl_warmup", "num_threads"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    return args


def batches(num: int, batch_size: int, seed: int):
    """Index batches of endless passes over range(num), each pass in a new order from one generator seeded once."""
    g = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(num, generator=g)
        for i in range(0, num - batch_size + 1, batch_size):  # the ragged end of a pass is dropped
            yield order[i:i + batch_size]


@torch.no_grad()
def evaluate(model: FashionVAE, num: int = EVAL_NUM, seed: int = EVAL_SEED, chunk: int = 500) -> dict:
    """Negative ELBO per picture (beta = 1) on `num` test pictures, with its parts: one posterior sample per picture,
    drawn from a generator seeded with `seed`, so the number is the same on every run of the same weights."""
    x = fashion_mnist.images(num, seed=seed, split="test")
    g = torch.Generator().manual_seed(seed)
    recon, kl = [], []
    for part in x.split(chunk):
        mu, logvar = model.encode(part)
        z = mu + torch.randn(mu.shape, generator=g) * torch.exp(0.5 * logvar)
        r, k = losses.elbo_terms(part, model.decode_logits(z), mu, logvar)
        recon.append(r)
        kl.append(k)
    recon, kl = torch.cat(recon), torch.cat(kl)
    return {"neg_elbo": (recon + kl).mean().item(), "recon": recon.mean().item(), "kl": kl.mean().item(),
            "active_dims": int((losses.kl_per_coordinate(*model.encode(x)).mean(0) > 0.1).sum())}


@torch.no_grad()
def decode_ms_per_image(model: FashionVAE, n: int = 256, repeats: int = 5) -> float:
    """Best of `repeats` timings of decode on n prior latents, in milliseconds per picture."""
    z = model.sample_latent(n, seed=SAMPLE_SEED)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        model.decode(z)
        best = min(best, time.perf_counter() - start)
    return 1000 * best / n


@torch.no_grad()
def write_samples(model: FashionVAE, path: Path) -> None:
    """A GRID_ROWS x GRID_COLS grid of decode(z), z ~ N(0, I) with seed SAMPLE_SEED, as a small grey PNG."""
    x = model.decode(model.sample_latent(GRID_ROWS * GRID_COLS, seed=SAMPLE_SEED))[:, 0].numpy()
    gap, (h, w) = 2, x.shape[1:]
    tile = np.ones((GRID_ROWS * (h + gap) + gap, GRID_COLS * (w + gap) + gap))
    for i, img in enumerate(x):
        r, c = divmod(i, GRID_COLS)
        tile[gap + r * (h + gap): gap + r * (h + gap) + h, gap + c * (w + gap): gap + c * (w + gap) + w] = img
    fig = Figure(figsize=(tile.shape[1] / 50, tile.shape[0] / 50), dpi=100)  # 2 output pixels per image pixel
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(tile, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    fig.savefig(path, dpi=100)


def write_card(out: Path, command: str, args, final: dict, held: dict, seconds: float, num_params: int,
               decode_ms: float) -> None:
    card = f"""---
library_name: pdetraversal
license: mit
tags:
- pdetraversal
- pdetraversal-generator
- vae
- fashion-mnist
---

# Fashion-MNIST conv VAE (pdetraversal generator)

A convolutional VAE (`hub_models.fashion_vae.FashionVAE`, {num_params:,} parameters,
latent dimension {args.latent_dim}, width {args.width}, hidden dimension {args.hidden_dim}) for grey 1x32x32 pictures
of clothes, a frozen generator for "Latent Traversals in Generative Models as Potential Flows" (Song et al., ICML 2023, Sec. 3-4).
`decode(z)` maps z ~ N(0, I) to pixel probabilities in [0, 1].

Data: Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, Zalando Research, MIT licence), the 60,000 training pictures,
read from Debian's `dataset-fashion-mnist` package by `pdetraversal.data.fashion_mnist` and padded from 28x28 to
32x32 with black. The licence of these weights is the data's, MIT.

![32 samples decode(z), z ~ N(0, I), seed {SAMPLE_SEED}](samples.png)

## Training

Command (from the repository root):

```
{command}
```

- steps: {args.max_steps}, batch size {args.batch_size} ({args.max_steps * args.batch_size / 60000:.1f} passes over the training split),
  Adam lr {args.lr}, beta 1 (rising linearly from 0 over the first {args.kl_warmup} steps), seed {args.seed}
- time: {seconds:.0f} s ({seconds / 60:.1f} min) on {hardware(args)}
- objective: Bernoulli reconstruction (BCE summed over the 1,024 pixels) + KL(q(z|x) ‖ N(0, I)), one posterior
  sample per picture
- final training loss terms (mean of the last {final['window']} steps, per picture): loss {final['loss']:.2f}, reconstruction
  {final['recon']:.2f}, KL {final['kl']:.2f} nats
- decode: {decode_ms:.3f} ms per picture on CPU (a batch of 256, {hardware(args)})

## Held-out evaluation ({EVAL_NUM:,} test pictures, seed {EVAL_SEED})

| metric | value |
|---|---|
| negative ELBO per picture (nats, 1x32x32 Bernoulli pixels, beta = 1) | {held['neg_elbo']:.2f} |
| ... reconstruction −log p(x|z) | {held['recon']:.2f} |
| ... KL(q(z|x) ‖ N(0, I)) | {held['kl']:.2f} |
| latent coordinates in use (mean KL > 0.1 nats) | {held['active_dims']} of {args.latent_dim} |

The ELBO uses one posterior sample per picture (fixed seed): a bound on −log p(x) estimated once, not an IWAE
estimate. Fashion-MNIST pixels are grey levels, not binary, so the Bernoulli −log p(x|z) has a floor above 0 (the
entropy of the grey levels themselves); compare these numbers only with other Bernoulli models on the same padding.

## Use

```python
from hub_models import load_generator
gen = load_generator("hub_models/fashion-vae")
images = gen.decode(gen.sample_latent(8, seed=0))   # (8, 1, 32, 32) in [0, 1]
z0 = gen.data_latent(8, seed=0)                      # posterior means of 8 test pictures
```
"""
    (out / "README.md").write_text(card, encoding="utf-8")


def main(argv=None) -> FashionVAE:
    args = parse_args(argv)
    argv_list = list(sys.argv[1:] if argv is None else argv)
    command = "python train/train_fashion_vae.py " + " ".join(shlex.quote(a) for a in argv_list)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    try:
        train_x, _ = fashion_mnist.load("train")
        fashion_mnist.load("test")  # fail now, not after training
    except FileNotFoundError as e:
        raise SystemExit(f"train_fashion_vae.py: {e}") from None
    torch.manual_seed(args.seed)
    model = FashionVAE(latent_dim=args.latent_dim, width=args.width, hidden_dim=args.hidden_dim).train()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    window = min(100, args.max_steps)
    recent: list[tuple[float, float, float]] = []
    stream = batches(len(train_x), args.batch_size, args.seed)
    start = time.perf_counter()
    bar = tqdm(range(args.max_steps), desc="train Fashion VAE", disable=not args.progress, dynamic_ncols=True)
    for step in bar:
        x = train_x[next(stream)]
        beta = min(1.0, (step + 1) / args.kl_warmup) if args.kl_warmup else 1.0
        logits, mu, logvar = model(x)
        recon, kl = (v.mean() for v in losses.elbo_terms(x, logits, mu, logvar))
        loss = recon + beta * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        # the card reports the beta = 1 loss, whatever the warm-up weight was
        recent = (recent + [((recon + kl).item(), recon.item(), kl.item())])[-window:]
        if step % 10 == 0 or step == args.max_steps - 1:
            bar.set_postfix(loss=f"{recent[-1][0]:.1f}", recon=f"{recon.item():.1f}", kl=f"{kl.item():.2f}")
    seconds = time.perf_counter() - start
    if not all(math.isfinite(v) for row in recent for v in row):
        raise RuntimeError("training diverged (non-finite loss); try a smaller --lr")
    final = {"window": len(recent),
             **{k: sum(r[i] for r in recent) / len(recent) for i, k in enumerate(("loss", "recon", "kl"))}}
    model.eval().requires_grad_(False)
    held = evaluate(model)
    decode_ms = decode_ms_per_image(model)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    write_samples(model, out / "samples.png")
    num_params = sum(p.numel() for p in model.parameters())
    write_card(out, command, args, final, held, seconds, num_params, decode_ms)
    print(f"saved {out} after {args.max_steps} steps in {seconds:.0f} s ({num_params:,} parameters): final loss "
          f"{final['loss']:.2f} (recon {final['recon']:.2f}, KL {final['kl']:.2f}); held-out -ELBO/picture "
          f"{held['neg_elbo']:.2f} (recon {held['recon']:.2f}, KL {held['kl']:.2f}, {held['active_dims']} active "
          f"coordinates); decode {decode_ms:.3f} ms/picture")
    return model


if __name__ == "__main__":
    main()
