"""Train the SNGAN of `hub_models.sngan` on Fashion-MNIST: the GAN generator of the paper's SNGAN setting (Sec. 4,
latent dimension 128, 32x32), trained as Miyato et al. (2018) train theirs. No equation of the potential-flow paper
lives here.

Hinge loss, with D's logits on images in [-1, 1]:

    L_D = E_x[relu(1 - D(x))] + E_z[relu(1 + D(G(z)))],        L_G = -E_z[D(G(z))],

Adam (lr 2e-4, betas (0.0, 0.9)) for both, --n-dis discriminator steps (each on a fresh real batch and fresh
latents) per generator step; --max-steps counts generator steps. Only the generator is saved (save_pretrained:
config.json + diffusion_pytorch_model.safetensors), with a card README.md and a 4x8 samples.png; the discriminator
is not shipped. Ctrl-C stops after the step in progress and saves what there is (a second Ctrl-C stops at once).

Evaluation (cheap and reproducible, no Inception network): a small CNN classifier is trained here on the
Fashion-MNIST train split (fixed seed), its test accuracy reported; then, for --eval-samples generated pictures and
as many real test pictures, the mean top-class confidence, the entropy of the histogram of predicted classes
(ln 10 = 2.303 nats when all ten are equally common) and the classifier's Inception score
exp(E_x KL(p(y|x) || p(y))), between 1 and 10.

The shipped hub_models/fashion-sngan (the small default sizes; 33 min on 2 shared CPU cores, 1 thread):

    python train/train_sngan.py --max-steps 1500 --max-minutes 35 --width 32 --d-width 32 --n-dis 1 \
        --batch-size 64 --seed 0 --num-threads 1 --hardware '2 CPU cores, 1 torch thread, shared' \
        --output-dir hub_models/fashion-sngan

The paper-size model on a GPU (G width 256, D width 128, n_dis 5, batch 64, 50,000 generator steps):

    python train/train_sngan.py --full --device cuda --output-dir runs/fashion-sngan-full
"""
from __future__ import annotations

import argparse
import math
import shlex
import signal
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from tqdm import tqdm  # noqa: E402

from hub_models.sngan import SNGANDiscriminator, SNGANGenerator  # noqa: E402
from pdetraversal.data import fashion_mnist  # noqa: E402
from pdetraversal.plots import grid, image_strip  # noqa: E402
from train.flags import add_run_flags, non_negative, positive  # noqa: E402

LATENT_DIM = 128
SMALL = {"width": 32, "d_width": 32, "n_dis": 1, "batch_size": 64, "max_steps": 1500}
FULL = {"width": 256, "d_width": 128, "n_dis": 5, "batch_size": 64, "max_steps": 50000}
SAMPLE_SEED, EVAL_SEED, REAL_SEED = 0, 2023, 7


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train_sngan.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--full", action="store_true",
                   help=f"the paper-size model and schedule (defaults {FULL}) instead of the small CPU one ({SMALL})")
    p.add_argument("--max-steps", type=positive(int), help="generator steps (default 1500, or 50000 with --full)")
    p.add_argument("--batch-size", type=positive(int), help="images per D and per G step (default 64)")
    p.add_argument("--n-dis", type=positive(int), help="discriminator steps per generator step (default 1, or 5 with --full)")
    p.add_argument("--width", type=positive(int), help="generator channels (default 32, or 256 with --full)")
    p.add_argument("--d-width", type=positive(int), help="discriminator channels (default 32, or 128 with --full)")
    p.add_argument("--max-minutes", type=non_negative, default=0.0,
                   help="wall-clock budget: stop after the generator step that passes it (0 = none); the card then "
                        "gives the --max-steps that redoes the same run")
    p.add_argument("--lr", type=positive(float), default=2e-4, help="Adam learning rate of G and D")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, the latents and the batches")
    p.add_argument("--classifier-steps", type=int, default=500,
                   help="Adam steps (batch 128) of the evaluation classifier; 0 skips the evaluation")
    p.add_argument("--eval-samples", type=positive(int), default=2000, help="generated and real pictures evaluated")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    p.add_argument("--hardware", default="", help="words for the card, e.g. '2 CPU cores, 1 torch thread, shared'")
    p.add_argument("--output-dir", default="hub_models/fashion-sngan", help="folder for the generator and its card")
    add_run_flags(p)
    return p


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, value in (FULL if args.full else SMALL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    # sizes, --lr and --max-minutes are checked by their argparse types (train/flags.py)
    if args.classifier_steps < 0 or args.num_threads < 0:
        parser.error("--classifier-steps and --num-threads must be >= 0")
    return args


# --------------------------------------------------------------------------------------------- evaluation
class Classifier(nn.Module):
    """A small CNN on (n, 1, 32, 32) pictures in [0, 1]: three conv3x3-BN-ReLU-maxpool stages (8, 16, 32
    channels), then Linear(32*16, 10); small enough to train in a few minutes on one shared CPU thread."""

    def __init__(self):
        super().__init__()
        layers, cin = [], 1
        for cout in (8, 16, 32):
            layers += [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)]
            cin = cout
        self.net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(32 * 16, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def train_classifier(steps: int, device: str, seed: int = 0) -> tuple[Classifier, float]:
    """The evaluation classifier, trained on the train split (Adam 1e-3, batch 128, seeded), and its test accuracy."""
    torch.manual_seed(seed)
    x, y = fashion_mnist.load("train")
    g = torch.Generator().manual_seed(seed)
    model = Classifier().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(steps):
        i = torch.randint(len(x), (128,), generator=g)
        loss = F.cross_entropy(model(x[i].to(device)), y[i].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    xt, yt = fashion_mnist.load("test")
    with torch.no_grad():
        pred = torch.cat([model(xt[i:i + 1000].to(device)).argmax(1).cpu() for i in range(0, len(xt), 1000)])
    return model, (pred == yt).float().mean().item()


@torch.no_grad()
def class_statistics(classifier: Classifier, images: torch.Tensor) -> dict:
    """Mean top-class confidence, entropy of the predicted-class histogram (nats), the classifier's Inception score
    exp(E KL(p(y|x) || p(y))) and the histogram itself, for (n, 1, 32, 32) pictures in [0, 1]."""
    probs = torch.cat([F.softmax(classifier(images[i:i + 500]), 1) for i in range(0, len(images), 500)]).double()
    hist = torch.bincount(probs.argmax(1), minlength=10).double() / len(probs)
    marginal = probs.mean(0)
    kl = (probs * (probs.clamp_min(1e-12).log() - marginal.log())).sum(1).mean()
    hist_entropy = -(hist[hist > 0] * hist[hist > 0].log()).sum()
    return {"confidence": probs.max(1).values.mean().item(), "hist_entropy": hist_entropy.item(),
            "inception_score": kl.exp().item(), "hist": hist.tolist()}


@torch.no_grad()
def decode_all(gen: SNGANGenerator, z: torch.Tensor, chunk: int = 250) -> tuple[torch.Tensor, float]:
    """decode(z) in chunks, and the wall time per image in milliseconds."""
    start = time.perf_counter()
    x = torch.cat([gen.decode(z[i:i + chunk]) for i in range(0, len(z), chunk)])
    if x.is_cuda:
        torch.cuda.synchronize()
    return x, 1000 * (time.perf_counter() - start) / len(z)


def sample_grid(gen: SNGANGenerator, path: Path) -> None:
    """4 rows of 8 decoded prior samples (seed 0), zoomed x2."""
    with torch.no_grad():
        x = gen.decode(gen.sample_latent(32, seed=SAMPLE_SEED)).cpu()
    grid([image_strip(x[r * 8:(r + 1) * 8], min_size=64, gap=2) for r in range(4)], gap=2).save(path, optimize=True)


# --------------------------------------------------------------------------------------------- card
def write_card(out: Path, command: str, args: argparse.Namespace, info: dict) -> None:
    hardware = args.hardware or f"device {args.device}"
    scale = ("" if args.full else "\n- a short run of a narrow model, sized for a CPU; Miyato et al.'s size and schedule "
             "(G width 256, D width 128, n_dis 5, 50,000 generator steps) is `--full`, for a GPU")
    stopped = ""
    if info["steps"] < args.max_steps:
        why = f"the {args.max_minutes:g}-minute budget (--max-minutes)" if info["budget"] else "Ctrl-C"
        # The batches and latents depend only on the seed and the step, so the step count redoes the run.
        stopped = (f"\n- stopped by {why} after {info['steps']} of {args.max_steps} generator steps; the same weights "
                   f"come from the command with `--max-steps {info['steps']}` and no --max-minutes")
    if info.get("eval"):
        e = info["eval"]
        names = fashion_mnist.CLASS_NAMES
        hist = "\n".join(f"| {n} | {g:.3f} | {r:.3f} |" for n, g, r in zip(names, e["fake"]["hist"], e["real"]["hist"]))
        evaluation = f"""## Evaluation

A small CNN classifier (`train/train_sngan.py`, `Classifier`) trained in the same run on the 60,000 training
pictures ({args.classifier_steps} Adam steps of 128, seed 0) reaches **{e['accuracy']:.4f}** accuracy on the
10,000 test pictures. It then reads {args.eval_samples} generated pictures (decode of prior samples, seed
{EVAL_SEED}) and {args.eval_samples} real test pictures (seed {REAL_SEED}):

| | generated | real test |
|---|---|---|
| mean top-class confidence | {e['fake']['confidence']:.3f} | {e['real']['confidence']:.3f} |
| entropy of the predicted-class histogram (nats; ln 10 = 2.303 is uniform) | {e['fake']['hist_entropy']:.3f} | {e['real']['hist_entropy']:.3f} |
| classifier Inception score exp(E KL(p(y\\|x) ‖ p(y))) (1 to 10) | {e['fake']['inception_score']:.2f} | {e['real']['inception_score']:.2f} |

Predicted-class shares:

| class | generated | real test |
|---|---|---|
{hist}

These numbers say whether the samples look like clothes to a classifier and whether all ten classes are drawn;
they are not an FID and not comparable with Inception scores of CIFAR-10 models.
"""
    else:
        evaluation = "## Evaluation\n\nSkipped (--classifier-steps 0).\n"
    card = f"""---
library_name: pdetraversal
license: mit
tags:
- pdetraversal
- pdetraversal-generator
- gan
- sngan
- fashion-mnist
datasets:
- zalando-datasets/fashion_mnist
---

# Fashion-MNIST SNGAN (pdetraversal generator)

The ResNet generator of SNGAN (Miyato et al. 2018, "Spectral Normalization for Generative Adversarial Networks"),
`hub_models.sngan.SNGANGenerator` ({info['params']:,} parameters, latent dimension {LATENT_DIM}, width
{args.width}), for 1x32x32 Fashion-MNIST pictures: the GAN setting of "Latent Traversals in Generative Models as
Potential Flows" (Song et al., ICML 2023, Sec. 4). `decode(z)` maps z ~ N(0, I_{LATENT_DIM}) to pixels in [0, 1]
(BatchNorm on its running statistics); `latent_weight()` is the first Linear, for SeFa.

Data: Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, MIT licence), the 60,000 training pictures, padded to 32x32
(`pdetraversal.data.fashion_mnist`); no labels are used by the GAN.

![samples](samples.png)

`samples.png`: decode of 32 prior samples (`gen.sample_latent(32, seed={SAMPLE_SEED})`).

## Training

Command (from the repository root):

```
{command}
```

- hinge loss, Adam lr {args.lr:g}, betas (0.0, 0.9), {args.n_dis} discriminator step(s) per generator step,
  batch {args.batch_size}, {info['steps']} generator steps, seed {args.seed}
- discriminator: spectral-norm ResNet of width {args.d_width} ({info['d_params']:,} parameters), **not shipped**{scale}
- time: {info['seconds']:.0f} s ({info['seconds'] / 60:.1f} min) on {hardware}
- mean of the last {info['window']} steps: D hinge loss {info['d_loss']:.3f}, G loss {info['g_loss']:.3f}
- decode: {info['decode_ms']:.2f} ms per image (batches of 250, {hardware}){stopped}

{evaluation}
## Use

```python
from hub_models import load_generator
gen = load_generator("hub_models/{out.name}")
images = gen.decode(gen.sample_latent(8, seed=0))   # (8, 1, 32, 32) in [0, 1]
```
"""
    (out / "README.md").write_text(card, encoding="utf-8")


# --------------------------------------------------------------------------------------------- training
def main(argv=None) -> SNGANGenerator:
    args = parse_args(argv)
    command = "python train/train_sngan.py " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    gen = SNGANGenerator(latent_dim=LATENT_DIM, channels=1, width=args.width).to(device).train()
    dis = SNGANDiscriminator(channels=1, width=args.d_width).to(device).train()
    opt_g = torch.optim.Adam(gen.parameters(), lr=args.lr, betas=(0.0, 0.9))
    opt_d = torch.optim.Adam(dis.parameters(), lr=args.lr, betas=(0.0, 0.9))
    real = fashion_mnist.load("train")[0].to(device) * 2 - 1  # D sees G's tanh range
    g = torch.Generator().manual_seed(args.seed)

    def latents() -> torch.Tensor:
        return torch.randn(args.batch_size, LATENT_DIM, generator=g).to(device)

    stop = {"asked": False}

    def on_sigint(signum, frame):
        if stop["asked"]:
            raise KeyboardInterrupt
        stop["asked"] = True
        print("\nCtrl-C: saving after this step (again to stop at once)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, on_sigint)
    window = min(100, args.max_steps)
    recent: list[tuple[float, float]] = []
    steps = 0
    start = time.perf_counter()
    bar = tqdm(range(args.max_steps), desc="train SNGAN", disable=not args.progress, dynamic_ncols=True)
    try:
        for step in bar:
            for _ in range(args.n_dis):
                x = real[torch.randint(len(real), (args.batch_size,), generator=g).to(device)]
                with torch.no_grad():
                    fake = gen(latents())
                d_loss = F.relu(1 - dis(x)).mean() + F.relu(1 + dis(fake)).mean()
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
            g_loss = -dis(gen(latents())).mean()
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            steps = step + 1
            recent = (recent + [(d_loss.item(), g_loss.item())])[-window:]
            if step % 10 == 0:
                bar.set_postfix(d=f"{d_loss.item():.3f}", g=f"{g_loss.item():.3f}")
            if not all(math.isfinite(v) for v in recent[-1]):
                raise RuntimeError(f"training diverged at step {step} (non-finite loss); try a smaller --lr")
            if args.max_minutes and time.perf_counter() - start > 60 * args.max_minutes:
                stop["budget"] = True
            if stop["asked"] or stop.get("budget"):
                break
    finally:
        signal.signal(signal.SIGINT, previous)
        bar.close()
    seconds = time.perf_counter() - start
    if not steps:
        raise RuntimeError("stopped before the first generator step; nothing to save")
    gen.eval().requires_grad_(False)
    info = {"steps": steps, "seconds": seconds, "budget": bool(stop.get("budget")), "window": len(recent),
            "d_loss": sum(r[0] for r in recent) / len(recent), "g_loss": sum(r[1] for r in recent) / len(recent),
            "params": sum(p.numel() for p in gen.parameters()), "d_params": sum(p.numel() for p in dis.parameters())}
    fake, info["decode_ms"] = decode_all(gen, gen.sample_latent(args.eval_samples, seed=EVAL_SEED))
    if args.classifier_steps:
        classifier, accuracy = train_classifier(args.classifier_steps, device)
        real_test = fashion_mnist.images(args.eval_samples, seed=REAL_SEED, split="test").to(device)
        info["eval"] = {"accuracy": accuracy, "fake": class_statistics(classifier, fake),
                        "real": class_statistics(classifier, real_test)}
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    gen = gen.cpu()
    gen.save_pretrained(out)
    sample_grid(gen, out / "samples.png")
    write_card(out, command, args, info)
    summary = f"saved {out} after {steps} generator steps in {seconds:.0f} s; decode {info['decode_ms']:.2f} ms/image"
    if "eval" in info:
        e = info["eval"]
        summary += (f"; classifier test accuracy {e['accuracy']:.4f}; generated / real: confidence "
                    f"{e['fake']['confidence']:.3f} / {e['real']['confidence']:.3f}, class-histogram entropy "
                    f"{e['fake']['hist_entropy']:.3f} / {e['real']['hist_entropy']:.3f}, Inception score "
                    f"{e['fake']['inception_score']:.2f} / {e['real']['inception_score']:.2f}")
    print(summary)
    return gen


if __name__ == "__main__":
    main()
