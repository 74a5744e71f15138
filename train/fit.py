"""Train K potentials for a frozen generator (paper Sec. 4.2, L = L_u + L_f + L_J + L_k) and publish them.

The embedded default (dSprites VAE; potentials 0-4 follow the five factor moves through L_z, paper eq. 8, and
5-7 learn without labels; about 4 minutes on 2 CPU cores):

    python train/fit.py --generator hub_models/dsprites-vae --num-potentials 8 --num-timesteps 10 \\
        --max-steps 1500 --no-output-tanh --supervision dsprites \\
        --factor-regressor hub_models/dsprites-factor-regressor --output-dir runs/dsprites-vae-potentials

(the shipped hub_models/dsprites-vae-potentials is that run, written there with --output-dir pointed at it)

The paper's unsupervised setting (no labels; K = 32, T = 10 as in the paper), and a baseline with the same losses:

    python train/fit.py --generator hub_models/dsprites-betavae --num-potentials 32 --num-timesteps 10 \
        --factor-regressor hub_models/dsprites-factor-regressor --output-dir runs/betavae-potentials
    python train/fit.py --generator hub_models/dsprites-betavae --method linear --output-dir runs/betavae-linear

Publish to the Hub (one commit with weights, config and card) and continue an interrupted run:

    python train/fit.py --generator user/my-generator --output-dir runs/mine --push-to-hub --hub-model-id user/mine
    python train/fit.py --generator user/my-generator --output-dir runs/mine --resume

Checkpoints go to DIR/checkpoint.safetensors every --checkpoint-every steps and once more when the last step is
done (written to a temporary file, fsync'ed, then renamed over the old one), so a run killed at any point (kill -9,
power loss) loses at most one interval; each carries the last 50 steps' loss terms and the time spent, so the card of
a resumed run is the card the uninterrupted run would have written, except the time it took. --resume says which step
it continues from; a truncated or corrupt checkpoint is a one-line error that leaves the file as it is.

Ctrl-C (SIGINT) or SIGTERM lets the step in progress finish, writes a checkpoint of it, prints one line with the
command that resumes, and exits 130 / 143; a second signal stops at once, keeping the last checkpoint written.
A loss term or gradient that turns NaN or infinite stops the run before the update (exit 1) with one line naming
the step and the terms: the checkpoint then holds the last good step, and no potentials or card are written.
At the end DIR always gets the potentials first (save_pretrained); the push comes after, and a failed push leaves
DIR intact and prints how to retry.

Data parallel on several GPUs or machines: `accelerate launch --multi_gpu --num_processes 8 train/fit.py ...` (add
--num_machines, --machine_rank, --main_process_ip and --main_process_port for several machines; on CPUs the same
--multi_gpu launch runs gloo processes). Every process draws its own --batch-size latents per step, from seeds
derived from (seed, step, process index); the gradients are averaged over the processes before each Adam step, so
all hold the same weights. Process 0 alone writes the checkpoints, the potentials and the card and pushes; a signal
or a non-finite term on any process stops all of them at the same step. Any number of processes can resume any
checkpoint. A plain `python train/fit.py` is one process, draws exactly what it did before this option existed
(process 0's stream) and does not need accelerate.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
from huggingface_hub import HfApi, ModelCard, ModelCardData  # noqa: E402
from safetensors import SafetensorError, safe_open  # noqa: E402
from safetensors.torch import load_file, save  # noqa: E402
from tqdm import tqdm  # noqa: E402

from hub_models import load_generator, resolve_source, split_reference  # noqa: E402
from train.flags import non_negative, positive  # noqa: E402
from pdetraversal import PotentialFlow  # noqa: E402
from pdetraversal.baselines import METHODS, RandomDirections, SeFa  # noqa: E402
from pdetraversal.data.dsprites import FACTOR_NAMES  # noqa: E402
from pdetraversal.classifier import PairClassifier  # noqa: E402
from pdetraversal.hub import CheckpointError  # noqa: E402
from pdetraversal.training import DRAWS, LossConfig, training_step  # noqa: E402
from pdetraversal.data.dsprites_moves import dsprites_matching_loss  # noqa: E402
from pdetraversal.metrics.path_shape import format_diagnostics, path_diagnostics  # noqa: E402

CHECKPOINT = "checkpoint.safetensors"
EXACT_LAPLACIAN_MAX_DIM = 64  # --laplacian auto: beyond this the exact trace's d backward passes dominate the step
# Arguments that define the model and the optimisation: a resumed run must use the same ones.
RESUME_MUST_MATCH = ("method", "generator", "revision", "num_potentials", "num_timesteps", "hidden_dim", "output_tanh", "step_size",
                     "batch_size", "lr", "seed", "laplacian", "num_probes", "supervision", "matching_sequences", "exact_initial",
                     "w_diversity", "draw")


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump: the problem is the message
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    g = p.add_argument_group("generator")
    g.add_argument("--generator", required=True, help="Hub repo id or folder of the frozen generator (a diffusers model: config.json + "
                   "diffusion_pytorch_model.safetensors, or a diffusers pipeline); owner/repo/subfolder for one inside a repo")
    g.add_argument("--revision", help="branch, tag or commit of the generator repo; the resolved commit sha is recorded")
    m = p.add_argument_group("potentials")
    m.add_argument("--method", choices=sorted(METHODS), default="potential",
                   help="potential: the paper's MLP potentials. linear: u = a_k·z with the same losses (the paper's "
                        "controlled baseline). warped: WarpedSpace RBFs (Tzelepis et al. 2021), trained without the PDE "
                        "terms (--w-initial and --w-pde set to 0). sefa, axes, random: closed-form straight lines, saved "
                        "without training (default potential)")
    m.add_argument("--num-potentials", type=positive(int), default=8, help="K, the number of potentials (default 8)")
    m.add_argument("--num-timesteps", type=positive(int), default=10, help="T, the traversal length trained for (>= 2, default 10)")
    m.add_argument("--hidden-dim", type=positive(int), help="width of each potential's MLP (default: the latent dim, as in the paper)")
    m.add_argument("--output-tanh", action=argparse.BooleanOptionalAction, default=True,
                   help="end each potential with tanh, so |u| < 1, as the paper does except for StyleGAN2 (default on); "
                        "a bounded u cannot keep a large step over a long path: its gradient integrates to at most 2")
    m.add_argument("--exact-initial", action=argparse.BooleanOptionalAction, default=False,
                   help="remedy outside the paper: u = tanh(t)·MLP, so ∇u(z, 0) = 0 holds exactly and traversals "
                        "start still; the paper's L_u (eq. 4) is only a penalty (default off)")
    m.add_argument("--step-size", type=positive(float), default=1.0, help="step size of the flow during training and the default for traversals (default 1.0)")
    m.add_argument("--supervision", choices=("none", "dsprites"), default="none",
                   help="none: every potential learns without labels (L_J + L_k). dsprites: potentials 0-4 also follow "
                        "the five dSprites factor moves (shape, scale, orientation, x, y) through L_z on the generator's "
                        "encoder (paper eq. 8); needs a generator with encode(), e.g. hub_models/dsprites-vae, and K >= 5; "
                        "potentials 5.. stay unlabelled (default none)")
    m.add_argument("--matching-sequences", type=positive(int), default=16,
                   help="real factor sequences per step for the L_z of --supervision; encoding their frames is most of "
                        "a supervised step's cost (default 16)")
    m.add_argument("--labels", help="comma-separated name per potential (default: the dominant factor when --factor-regressor is given)")
    o = p.add_argument_group("optimisation")
    o.add_argument("--max-steps", type=positive(int), default=1500, help="training steps (default 1500)")
    o.add_argument("--batch-size", type=positive(int), default=64, help="latents per step (default 64)")
    o.add_argument("--lr", type=positive(float), default=1e-3, help="Adam learning rate for potentials and classifier (default 1e-3)")
    o.add_argument("--laplacian", choices=("auto", "exact", "hutchinson"), default="auto",
                   help="Δu in L_f (eq. 5): the exact trace of the Hessian (d backward passes per point) or Hutchinson's "
                        f"unbiased estimate; auto picks exact up to d = {EXACT_LAPLACIAN_MAX_DIM} and Hutchinson above "
                        "(default auto)")
    o.add_argument("--num-probes", type=positive(int), default=1, help="Rademacher probes for --laplacian hutchinson (default 1)")
    o.add_argument("--draw", choices=DRAWS, default="sample",
                   help="sample: every latent of a batch draws its own k and t, so each step trains all K potentials; "
                        "step: one k and one t for the whole batch, the paper's draw (Sec. 4.4), one potential per "
                        "step (default sample)")
    o.add_argument("--seed", type=int, default=0, help="seed for initialisation, latents, k and t (default 0)")
    o.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device (default: cuda if available)")
    w = p.add_argument_group("loss weights")
    for name, default, what in (("initial", 1.0, "L_u, the initial condition"), ("pde", 1.0, "L_f, the wave equation"),
                                ("jacobian", 1.0, "L_J, the image-space speed"), ("classifier", 1.0, "L_k, the classifier"),
                                ("matching", 100.0, "L_z, the latent matching of --supervision")):
        w.add_argument(f"--w-{name}", type=non_negative, default=default, help=f"weight of {what} (default {default:g})")
    # L_z is a squared latent step (about 0.02 per pair on the shipped VAE): at weight 10, one of three seeds let a
    # supervised potential go nearly still, which the classifier alone can tell apart; at 100 none of three did.
    w.add_argument("--w-diversity", type=non_negative, default=0.0,
                   help="remedy outside the paper: weight of L_div, the squared cosine between the image-space steps of "
                        "two different potentials at the same point, against potentials that repeat one change "
                        "(default 0: the paper's loss)")
    w.add_argument("--jacobian-saturation", type=positive(float), default=0.1,
                   help="RMS pixel change per step at which L_J stops rewarding speed (default 0.1)")
    io = p.add_argument_group("output")
    io.add_argument("--output-dir", required=True, help="folder for the potentials (config.json, model.safetensors, README.md) and the checkpoint")
    io.add_argument("--checkpoint-every", type=positive(int), default=250, help="steps between checkpoints (default 250)")
    io.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.safetensors")
    io.add_argument("--factor-regressor", help="dSprites factor regressor folder: measure what each potential changes and report it in the card")
    io.add_argument("--report-samples", type=positive(int), default=256,
                    help="starts per factor report of --factor-regressor; its cost grows with starts × K (default 256)")
    io.add_argument("--no-progress", action="store_true", help="no progress bar")
    h = p.add_argument_group("Hub")
    h.add_argument("--push-to-hub", action="store_true", help="after saving, publish DIR as one commit to --hub-model-id")
    h.add_argument("--hub-model-id", help="repo id to publish to, e.g. user/dsprites-potentials; user/repo/subfolder "
                   "publishes into that subfolder (e.g. beside a generator in user/repo/generator)")
    h.add_argument("--private", action="store_true", help="create the Hub repo as private")
    h.add_argument("--token", help="Hub token (default: the logged-in token or HF_TOKEN)")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.num_timesteps < 2:
        parser.error("--num-timesteps must be >= 2 (a traversal needs at least one step after t = 0)")
    if args.push_to_hub and not args.hub_model_id:
        parser.error("--push-to-hub needs --hub-model-id")
    if args.supervision == "dsprites" and args.num_potentials < len(FACTOR_NAMES):
        parser.error(f"--supervision dsprites ties potentials 0-4 to the five factors: needs --num-potentials >= "
                     f"{len(FACTOR_NAMES)}, got {args.num_potentials}")
    if args.labels is not None:
        args.labels = [s.strip() for s in args.labels.split(",")]
        if len(args.labels) != args.num_potentials:
            parser.error(f"--labels has {len(args.labels)} names for --num-potentials {args.num_potentials}")
    if args.method not in TRAINED and args.resume:
        parser.error(f"--method {args.method} is closed form: there is nothing to resume")
    checkpoint = Path(args.output_dir) / CHECKPOINT
    if args.resume and not checkpoint.is_file():
        parser.error(f"--resume: no checkpoint at {checkpoint}")
    if not args.resume and checkpoint.is_file():
        parser.error(f"{checkpoint} exists: pass --resume to continue it, or choose another --output-dir")
    return args


TRAINED = ("potential", "linear", "warped")  # the others are closed form: no optimisation


def build_method(args, generator, pin: str | None):
    """The traversal method of --method for `generator`; its constructor arguments are the config saved with it."""
    common = dict(num_timesteps=args.num_timesteps, step_size=args.step_size, generator=args.generator,
                  generator_revision=pin, labels=args.labels)
    d, K = generator.latent_dim, args.num_potentials
    if args.method == "potential":
        return PotentialFlow(d, K, args.hidden_dim, output_tanh=args.output_tanh, exact_initial=args.exact_initial, **common)
    if args.method == "sefa":
        return SeFa.from_generator(generator, K, **common)
    if args.method == "random":
        return RandomDirections(d, K, seed=args.seed, **common)
    return METHODS[args.method](d, K, **common)  # linear, warped, axes


def pick_laplacian(args, d: int, say: bool = True) -> None:
    """Resolve --laplacian auto for latent dim d (in args, so the card and a resumed run see what was used)."""
    if args.laplacian == "auto":
        args.laplacian = "exact" if d <= EXACT_LAPLACIAN_MAX_DIM else "hutchinson"
        if args.laplacian == "hutchinson" and say:
            print(f"note: d = {d} > {EXACT_LAPLACIAN_MAX_DIM}: Δu by Hutchinson's estimate ({args.num_probes} probe(s)); "
                  "pass --laplacian exact for the exact trace", file=sys.stderr)
    elif args.laplacian == "exact" and d > 4 * EXACT_LAPLACIAN_MAX_DIM and say:
        print(f"note: --laplacian exact at d = {d} costs {d} backward passes per point; --laplacian hutchinson "
              "costs one per probe", file=sys.stderr)


def generator_pin(source: str, revision: str | None, token) -> str | None:
    """The commit sha of a Hub generator (so published potentials name the exact weights); None for a folder."""
    if os.path.isdir(source):
        return None
    return HfApi(token=token).model_info(source, revision=revision).sha


def save_checkpoint(path: Path, step: int, flow, classifier, optimizer, args, history: list[dict], seconds: float,
                    processes: list[list[int]] | None = None) -> None:
    """Everything --resume needs to continue exactly, and the card's numbers so far (`history`: the logs of the
    last 50 steps; `seconds` spent training; `processes`: [first step, number of processes] for each part of the
    run, since the data drawn depends on how many processes drew it; default one process throughout)."""
    tensors = {f"flow.{k}": v for k, v in flow.state_dict().items()}
    tensors.update({f"classifier.{k}": v for k, v in classifier.state_dict().items()})
    opt = optimizer.state_dict()
    for i, state in opt["state"].items():
        tensors.update({f"optim.{i}.{k}": torch.as_tensor(v) for k, v in state.items()})
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:  # the loop stops before a non-finite update, so this would be a bug: never overwrite a good checkpoint with it
        raise RuntimeError(f"refusing to write a checkpoint with non-finite values in {', '.join(bad[:3])}")
    meta = {"step": str(step), "param_groups": json.dumps(opt["param_groups"]),
            "args": json.dumps({k: getattr(args, k) for k in RESUME_MUST_MATCH}),
            "history": json.dumps(history), "seconds": repr(float(seconds)),  # JSON and repr round-trip floats exactly
            "processes": json.dumps(processes or [[0, 1]])}
    data = save(tensors, metadata=meta)
    tmp = path.with_suffix(".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename, or a crash could leave a renamed but empty file
        os.replace(tmp, path)  # atomic: a crash mid-write leaves the previous checkpoint
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if os.name == "posix":  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def load_checkpoint(path: Path, flow, classifier, optimizer, args) -> tuple[int, list[dict], float, list[list[int]]]:
    """Restores the state save_checkpoint wrote; returns (step, history, seconds, processes). A file that cannot be
    read is a one-line error that leaves it untouched."""
    def corrupt(reason):
        return SystemExit(f"error: checkpoint {path} is corrupt or truncated: {reason}; delete it or restore a copy")

    try:
        with safe_open(path, "pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(path)
        step, param_groups = int(meta["step"]), json.loads(meta["param_groups"])
        saved = json.loads(meta["args"])
        history, seconds = json.loads(meta.get("history", "[]")), float(meta.get("seconds", "0"))
        processes = json.loads(meta.get("processes", "[[0, 1]]"))  # written before data parallel: one process
    except KeyError as e:
        raise corrupt(f"its metadata lacks {e}") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise corrupt(e) from None
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise corrupt(f"non-finite values in {', '.join(bad[:3])}")
    # Checkpoints from before a flag existed used its default.
    saved = {"method": "potential", "exact_initial": False, "w_diversity": 0.0, "matching_sequences": 16, "draw": "sample",
             **saved}
    changed = [f"--{k.replace('_', '-')} {saved.get(k)} -> {getattr(args, k)}" for k in RESUME_MUST_MATCH if saved.get(k) != getattr(args, k)]
    if changed:
        raise SystemExit(f"error: --resume with different settings than the checkpoint: {', '.join(changed)}")
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, i, name = key.split(".", 2)
            state.setdefault(int(i), {})[name] = value
    try:
        flow.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("flow.")})
        classifier.load_state_dict({k[11:]: v for k, v in tensors.items() if k.startswith("classifier.")})
        optimizer.load_state_dict({"state": state, "param_groups": param_groups})
    except (RuntimeError, ValueError, KeyError) as e:
        raise corrupt(f"its tensors do not fit this model ({' '.join(str(e).split())[:300]})") from None
    return step, history, seconds, processes


def folder_link(generator: str, output_dir: str) -> str:
    """The card's reference to a generator folder: a link relative to the card when both lie in the same tree (this
    repository, or both outside it), which is how it reads in a checkout; otherwise the name alone, since a relative
    link from outside into the repository (../../<somewhere>/hub_models/...) resolves nowhere once the folder is copied or published."""
    target, card = Path(resolve_source(generator)).resolve(), Path(output_dir).resolve()
    if target.is_relative_to(REPO_ROOT) == card.is_relative_to(REPO_ROOT):
        return f"[`{generator}`]({os.path.relpath(target, card)})"
    where = "the folder of that name in the pdetraversal repository" if target.is_relative_to(REPO_ROOT) else "a local folder"
    return f"`{generator}` ({where})"


def write_card(args, flow, final: dict, seconds: float, report: dict | None, argv,
               prior_report: dict | None = None, diagnostics: tuple[str, list[dict]] | None = None,
               processes: list[list[int]] | None = None) -> None:
    from pdetraversal.metrics.factors import format_report

    gen_repo = split_reference(args.generator)[0]
    is_hub = not os.path.isdir(gen_repo)
    data = ModelCardData(library_name="pdetraversal", license="apache-2.0",
                         tags=["latent-traversal", "potential-flow", "pdetraversal"],
                         base_model=gen_repo if is_hub else None, base_model_relation="adapter" if is_hub else None)
    # The command of the whole run: a resumed one trains exactly what it would have without the interruption.
    processes = processes or [[0, 1]]
    command = launcher(processes[-1][1]) + " " + " ".join(shlex.quote(a) for a in argv if a != "--resume")
    terms = ", ".join(f"{k} = {v:.4g}" for k, v in final.items())
    labels = "\n".join(f"| {k} | {flow.label(k)} |" for k in range(flow.num_potentials))
    if args.supervision == "dsprites":
        supervision = ("Supervision: potentials 0-4 were tied to the dSprites factor moves shape, scale, orientation, x, y "
                       f"(L_z of eq. 8 on real factor sequences encoded by the generator, weight {args.w_matching}; "
                       "`pdetraversal.data.dsprites_moves`); "
                       "any further potentials learned without labels.")
    else:
        weighted = [name for name, w in (("L_u", args.w_initial), ("L_f", args.w_pde), ("L_J", args.w_jacobian),
                                         ("L_k", args.w_classifier), ("L_div", args.w_diversity)) if w]
        supervision = (f"Supervision: none; every potential learned without labels (L = {' + '.join(weighted) or '0'}; "
                       "the terms with weight 0 are still measured below).")
    if is_hub:
        generator_link = f"[`{args.generator}`](https://huggingface.co/{gen_repo})"
    else:
        generator_link = folder_link(args.generator, args.output_dir)
    parallel = ""
    if processes != [[0, 1]]:  # data parallel for some or all steps: say how the latents were drawn
        ends = [first for first, _ in processes[1:]] + [args.max_steps]
        parts = "; ".join(f"steps {first}-{last - 1} on {n} process{'es' if n > 1 else ''}"
                          for (first, n), last in zip(processes, ends))
        parallel = (f"\n- Data parallel ({parts}): every process drew its own batch from seeds of (seed, step, process "
                    "index) and the gradients were averaged over the processes before each update")
    if final:
        training = f"""- Method: `{args.method}`
- Steps: {args.max_steps}, batch {args.batch_size}{" per process" if parallel else ""}, Adam lr {args.lr}, T = {args.num_timesteps}, Laplacian: {args.laplacian}, k and t drawn per {args.draw}
- {supervision}{parallel}
- Time: {seconds / 60:.1f} min on {args.device} ({torch.get_num_threads()} threads{" per process" if parallel else ""})
- Final loss terms (mean of the last 50 steps): {terms}
- Auxiliary classifier accuracy (mean of the last 50 steps): {final["acc"]:.1%}. It says that the K traversals
  differ from one another, not that any of them changes one thing: several potentials moving the same factor at
  different speeds or places are told apart as easily."""
    else:
        training = f"- Method: `{args.method}`, closed form: no training (T = {args.num_timesteps}, step {args.step_size})"
    text = f"""---
{data.to_yaml()}
---

# Potential flows for {generator_link}

{flow.num_potentials} potentials u^k(z, t) over the {flow.latent_dim}-dimensional latent space of the generator
{generator_link}{f" (revision `{flow.config['generator_revision']}`)" if flow.config.get("generator_revision") else ""},
trained with [pdetraversal](https://arxiv.org/abs/2304.12944) (Song et al., ICML 2023, "Latent Traversals in
Generative Models as Potential Flows"). Traversal k follows z_(t+1) = z_t + ∇_z u^k(z_t, t).

```python
from hub_models import load_flow_and_generator

flow, gen = load_flow_and_generator("<this repo or folder>")   # the generator at the revision the config names
path = flow.traverse(gen.sample_latent(4, seed=0), k=0)   # ({flow.num_timesteps + 1}, 4, {flow.latent_dim})
frames = gen.decode(path.flatten(0, 1))
```

## Training

- Command: `{command}`
{training}

## Potentials

| k | label |
|---|---|
{labels}
"""
    if diagnostics is not None:
        starts, rows = diagnostics
        text += (f"\n## Along the paths\n\nPositive traversals of {flow.num_timesteps} steps from {starts}"
                 "`pdetraversal.metrics.path_shape`): straightness is chord / arc length (1 = a straight line); "
                 "turning the mean angle between consecutive steps; first / later compares the first step with the "
                 "mean of the others (the initial condition L_u asks for a small first step); |u_tt|, |c²Δu| and the "
                 "residual |f| of the wave equation (eq. 3) are means over the path's points. A small |f| shows the "
                 "wave equation at work only when |u_tt| and |c²Δu| are clearly larger; when both are near 0, u is "
                 "close to linear in z and constant in t, and f = 0 holds trivially.\n\n"
                 + format_diagnostics(rows) + "\n")
    if report is not None:
        text += "\n## What each potential changes\n\n" + format_report(report) + "\n"
        m = report["summary"]
        verdict = [
            f"- Most potentials put >= 60% of their change on one factor: "
            f"{'yes' if m['num_disentangled'] > m['num_potentials'] / 2 else 'no'} ({m['num_disentangled']} of {m['num_potentials']}).",
            f"- All five factors covered, each the main change of some potential: "
            f"{'yes' if m['num_covered'] == 5 else 'no'} ({m['num_covered']} of 5).",
            f"- Potentials whose main factor another potential also moves: {m['num_repeated']}.",
        ]
        if prior_report is not None:
            p = prior_report["summary"]
            verdict.append(f"- The same measured from {prior_report['settings']['num_samples']} starts z0 ~ N(0, I) "
                           f"instead: {p['num_disentangled']} of {p['num_potentials']} with one factor at >= 60%, "
                           f"{p['num_covered']} of 5 factors covered ({', '.join(p['covered_factors']) or 'none'}).")
        text += ("\n### Against the aims\n\n" + "\n".join(verdict) + "\n\nThe factors are read by a regressor from the "
                 "generator's decoded frames, so a factor the generator draws poorly (see its card) reads as changing "
                 "along every traversal; the next-largest column then tells the potentials apart.\n")
    (Path(args.output_dir) / "README.md").write_text(text, encoding="utf-8")


def push(args) -> None:
    # owner/repo/subfolder publishes into a subfolder, e.g. beside the generator (hub_models.split_reference)
    parts = args.hub_model_id.split("/")
    repo_id, path_in_repo = "/".join(parts[:2]), "/".join(parts[2:]) or None
    api = HfApi(token=args.token)
    api.create_repo(repo_id, private=args.private, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=args.output_dir, path_in_repo=path_in_repo,
                             allow_patterns=["config.json", "model.safetensors", "README.md"],
                             commit_message=f"Potentials trained with pdetraversal ({args.max_steps} steps)")
    print(f"published {args.hub_model_id} at {info.oid}")


class Interrupted(Exception):
    """SIGINT or SIGTERM reached fit.py; `signum` says which."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Signals:
    """SIGINT and SIGTERM while fitting. Inside `deferred()` (a training step) a first signal only sets `pending`,
    so the step finishes and its state can be saved whole; a second one, or any outside, raises Interrupted at once.
    Installed only in the main thread (signal handlers can be set nowhere else); the old handlers come back on exit."""

    def __init__(self):
        self.pending: int | None = None
        self._deferring = False
        self._old: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        for s, handler in self._old.items():
            if handler is not None:  # None: a handler set outside Python, which cannot be put back from here
                signal.signal(s, handler)

    def _handle(self, signum, frame):
        if self._deferring and self.pending is None:
            self.pending = signum
            return
        raise Interrupted(signum)

    def deferred(self, on: bool) -> None:
        self._deferring = on


class Progress:
    """What an interruption can report: the step the checkpoint on disk holds (None: no checkpoint known)."""

    def __init__(self):
        self.saved: int | None = None
        self.done = False  # the potentials are saved and the checkpoint removed
        self.processes = 1  # how many fit together: the resume command starts as many


def resume_command(argv, processes: int = 1) -> str:
    return launcher(processes) + " " + " ".join(shlex.quote(a) for a in argv) + ("" if "--resume" in argv else " --resume")


def interrupted_line(signum: int, args, argv, progress: Progress) -> str:
    name, out = signal.Signals(signum).name, Path(args.output_dir)
    if progress.done:
        return (f"interrupted ({name}) during the push: the potentials are saved in {out}; retry with: hf upload "
                f"{args.hub_model_id} {out} . --include config.json --include model.safetensors --include README.md")
    if progress.saved is None and not args.resume:
        return f"interrupted ({name}) before any step was saved: nothing to resume; run the command again to start over"
    held = "is untouched" if progress.saved is None else f"holds step {progress.saved} of {args.max_steps}"
    return f"interrupted ({name}): {out / CHECKPOINT} {held}; resume with: {resume_command(argv, progress.processes)}"


def non_finite_terms(loss: torch.Tensor, logs: dict) -> str:
    """'name = value' for each loss term that is NaN or infinite ('' when all are finite)."""
    bad = [f"{k} = {v}" for k, v in logs.items() if not math.isfinite(v)]
    if not bad and not torch.isfinite(loss):
        bad = [f"loss = {loss.item()}"]
    return ", ".join(bad)


# Process r's seeds are offset by r·2^20 steps. torch's CPU generator keeps only the low 32 bits of a seed (2^32
# would give every process the same latents), so within a run no two (step, process) pairs share a seed as long as
# --max-steps <= 2^20 and there are at most 2^12 processes.
RANK_SEED_STRIDE = 2**20


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """The seed of the latents, k and t of `step` on process `rank`. Derived from (seed, step) alone, a resumed run
    draws what the uninterrupted one would have; process 0 (a single process) keeps the stream fit.py has always
    drawn, seed·1_000_003 + step."""
    return seed * 1_000_003 + step + rank * RANK_SEED_STRIDE


def matching_seed(seed: int, step: int, rank: int = 0) -> tuple[int, ...]:
    """The seed of the L_z factor sequences of `step` on process `rank` (process 0: the single-process seed)."""
    return (seed, step) if rank == 0 else (seed, step, rank)


class Processes:
    """The processes fitting together: one for a plain `python train/fit.py`, or those `accelerate launch` started
    (WORLD_SIZE > 1 in the environment), each with its own share of the batch (data parallel).

    Gradients are averaged by hand (`exchange`), not by wrapping the potentials and the classifier in
    DistributedDataParallel (`accelerator.prepare`): DDP syncs only gradients of a forward() called through its
    wrapper, while training_step drives the flow through potential() and velocity() and the classifier separately,
    and DDP's all-reduce runs inside backward(), so a process that skips backward() on a non-finite loss would leave
    the others waiting in it for ever. Here backward() is local; then one all-reduce carries every process's stop
    flags and loss terms, so all stop at the same step or none does, and (none stopping) a second one averages the
    gradients, so all take the same update. The mean of the processes' gradients is the gradient of the loss
    averaged over all their latents, since every term is a mean over an equal batch. The classifier's BatchNorm
    running statistics, which each process updates from its own batch, are averaged in that second all-reduce (for
    the running mean, exactly the statistic of the whole batch), or the processes' states would drift apart."""

    def __init__(self, accelerator=None):
        self.accelerator = accelerator
        self.rank = accelerator.process_index if accelerator is not None else 0
        self.size = accelerator.num_processes if accelerator is not None else 1
        self.is_main = self.rank == 0

    def wait(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()

    def main_first(self):
        """A block process 0 runs first (the Hub download of the generator, once), then the others."""
        return self.accelerator.main_process_first() if self.accelerator is not None else contextlib.nullcontext()

    def exchange(self, params, buffers, problem: str, logs: dict, pending: int | None) -> tuple[bool, dict, int | None]:
        """Returns (whether any process saw a non-finite term, the loss terms averaged over the processes, the
        signal any process has pending); unless one saw a non-finite term, averages the gradients of `params` and
        the tensors `buffers` over the processes, in place."""
        flags = [float(bool(problem)), float(pending == signal.SIGINT), float(pending == signal.SIGTERM)]
        device = params[0].device
        stats = self.accelerator.reduce(torch.tensor([*flags, *logs.values()], dtype=torch.float64, device=device), "sum")
        anywhere, sigint, sigterm = stats[:3].tolist()
        terms = {k: v / self.size for k, v in zip(logs, stats[3:].tolist())}
        signum = signal.SIGINT if sigint else signal.SIGTERM if sigterm else None
        if not anywhere:
            # A parameter without a gradient gets the mean too (zero here), in case another process gave it one.
            grads = [q.grad if q.grad is not None else torch.zeros_like(q) for q in params]
            tensors = [*grads, *buffers]
            mean = self.accelerator.reduce(torch.cat([t.reshape(-1) for t in tensors]), "mean")
            for q, g in zip(params, mean[:sum(g.numel() for g in grads)].split([g.numel() for g in grads])):
                q.grad = g.view_as(q).clone()
            for b, m in zip(buffers, mean[sum(g.numel() for g in grads):].split([b.numel() for b in buffers])):
                b.copy_(m.view_as(b))
        return anywhere > 0, terms, signum


def start_processes(args) -> Processes:
    """One process, or (launched with WORLD_SIZE > 1) the process group of accelerate, which moves --device to
    this process's GPU (or keeps the CPU: --device cpu, or no GPU; gloo then)."""
    raw = os.environ.get("WORLD_SIZE", "1")
    try:
        world = int(raw)
    except ValueError:
        raise SystemExit(f"error: WORLD_SIZE={raw!r} in the environment is not a number of processes") from None
    if world <= 1:
        return Processes()
    if args.max_steps > RANK_SEED_STRIDE or world > 2**32 // RANK_SEED_STRIDE:
        raise SystemExit(f"error: {world} processes and --max-steps {args.max_steps}: data parallel runs give each "
                         f"process distinct seeds for up to {RANK_SEED_STRIDE} steps and {2**32 // RANK_SEED_STRIDE} "
                         "processes")
    try:
        from accelerate import Accelerator  # only here: a single process does not need it
    except ImportError:
        raise SystemExit(f"error: launched as {world} processes (WORLD_SIZE={world}), which needs accelerate: "
                         "pip install accelerate==1.15.0") from None
    accelerator = Accelerator(cpu=args.device == "cpu" or not torch.cuda.is_available())
    args.device = "cpu" if accelerator.device.type == "cpu" else str(accelerator.device)
    return Processes(accelerator)


def launcher(size: int) -> str:
    """How to start `size` processes of fit.py (on one machine; several machines add their --num_machines etc.)."""
    return "python train/fit.py" if size == 1 else f"accelerate launch --multi_gpu --num_processes {size} train/fit.py"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)  # before the process group forms: no process has written anything yet
    procs = start_processes(args)
    progress = Progress()
    progress.processes = procs.size
    with Signals() as signals:
        try:
            return fit(args, argv, signals, progress, procs)
        except Interrupted as e:
            if procs.is_main:
                print(interrupted_line(e.signum, args, argv, progress), file=sys.stderr)
            return 128 + e.signum  # the shell's code for a process ended by that signal


def fit(args, argv, signals: Signals, progress: Progress, procs: Processes | None = None) -> int:
    procs = procs or Processes()
    out = Path(args.output_dir)
    if procs.is_main:
        out.mkdir(parents=True, exist_ok=True)
    try:
        with procs.main_first():
            source, subfolder = split_reference(args.generator)
            generator = load_generator(source, args.revision, subfolder, token=args.token).to(args.device)
            pin = generator_pin(source, args.revision, args.token)
    except (CheckpointError, ValueError, OSError) as e:
        raise SystemExit(f"error: cannot load --generator {args.generator}: {e}") from None
    pick_laplacian(args, generator.latent_dim, say=procs.is_main)
    x = generator.decode(generator.sample_latent(1, seed=0))
    can_encode = callable(getattr(generator, "encode", None))
    if args.supervision == "dsprites" and not (can_encode and tuple(x.shape[1:]) == (1, 64, 64)):
        raise SystemExit(f"error: --supervision dsprites needs a 64x64 one-channel generator with encode(); "
                         f"{args.generator} gives {tuple(x.shape[1:])} images" + ("" if can_encode else " and has no encode()"))

    torch.manual_seed(args.seed)
    try:
        flow = build_method(args, generator, pin).to(args.device)
    except ValueError as e:  # e.g. SeFa on a generator without a linear first layer, more axes than latent dims
        raise SystemExit(f"error: --method {args.method}: {e}") from None
    if args.method in TRAINED and not flow.pde_terms and (args.w_initial or args.w_pde):
        if procs.is_main:
            print(f"note: --method {args.method} is trained without the PDE terms: --w-initial and --w-pde set to 0",
                  file=sys.stderr)
        args.w_initial = args.w_pde = 0.0
    classifier = PairClassifier(args.num_potentials, channels=x.shape[1], image_size=max(x.shape[2:])).to(args.device)
    params = [*flow.parameters(), *classifier.parameters()]
    # The classifier's BatchNorm statistics (and batch counts), which every forward in training mode updates.
    buffers = [*flow.buffers(), *classifier.buffers()]
    optimizer = torch.optim.Adam(params, lr=args.lr)
    losses = LossConfig(args.w_initial, args.w_pde, args.w_jacobian, args.w_classifier, args.jacobian_saturation,
                        args.laplacian, args.num_probes, args.w_diversity, args.draw)
    checkpoint = out / CHECKPOINT
    # The card's numbers cover the whole run: a resumed run continues the last 50 steps' logs and the time spent.
    start, history, seconds_before, processes = 0, [], 0.0, [[0, procs.size]]
    if args.resume:  # every process loads the same checkpoint: they start from the same state
        start, history, seconds_before, processes = load_checkpoint(checkpoint, flow, classifier, optimizer, args)
        progress.saved = start
        if procs.is_main:
            print(f"resuming from step {start} of {args.max_steps} ({checkpoint})", file=sys.stderr)
        if processes[-1][1] != procs.size:
            processes = [*processes, [start, procs.size]]
            if procs.is_main:
                print(f"note: the checkpoint was written by {processes[-2][1]} process(es), this run has {procs.size}: "
                      f"from step {start} on it draws other latents than the first run would have", file=sys.stderr)

    supervised = len(FACTOR_NAMES) if args.supervision == "dsprites" else 0  # potentials 0-4, one per factor
    end = args.max_steps if args.method in TRAINED else 0
    began = time.time()

    def checkpoint_at(done: int) -> None:
        if procs.is_main:  # the others hold the same state; they wait for this write in the next all-reduce or wait()
            save_checkpoint(checkpoint, done, flow, classifier, optimizer, args, history,
                            seconds_before + time.time() - began, processes)
        progress.saved = done

    bar = tqdm(range(start, end), initial=start, total=args.max_steps, disable=args.no_progress or not procs.is_main,
               desc="fit", dynamic_ncols=True)
    signals.deferred(True)
    try:
        for step in bar:
            # Seeds derived from (seed, step) make a resumed run draw exactly what the uninterrupted one would have;
            # the process index gives each process its own latents (a single process is process 0).
            seed = step_seed(args.seed, step, procs.rank)
            z0 = generator.sample_latent(args.batch_size, seed=seed)
            rng = torch.Generator().manual_seed(seed)
            buffers_before = [b.clone() for b in buffers]
            loss, logs = training_step(flow, classifier, generator, z0, losses, rng, supervised)
            if supervised:
                loss_z = dsprites_matching_loss(flow, generator, args.matching_sequences,
                                                matching_seed(args.seed, step, procs.rank))
                loss = loss + args.w_matching * loss_z
                logs = {**logs, "loss": loss.item(), "L_z": loss_z.item()}
            optimizer.zero_grad(set_to_none=True)
            problem = non_finite_terms(loss, logs)
            if not problem:
                loss.backward()
                grads = [q.grad for q in params if q.grad is not None]
                if grads and not torch.stack([torch.isfinite(g).all() for g in grads]).all():
                    problem = "the gradient, though every term is finite: " + ", ".join(f"{k} = {v:.4g}" for k, v in logs.items())
            stop_anywhere, agreed_signal = bool(problem), None
            if procs.size > 1:  # from here on every process decides alike: on the terms and flags of all of them
                stop_anywhere, logs, agreed_signal = procs.exchange(
                    params, [b for b in buffers if b.is_floating_point()], problem, logs, signals.pending)
            if stop_anywhere:
                # Nothing of this step has touched the weights, and its forward's statistics (perhaps NaN) are
                # undone: keep that state, so that no step already done is lost.
                for b, before in zip(buffers, buffers_before):
                    b.copy_(before)
                bar.close()
                if step > (progress.saved or 0):
                    checkpoint_at(step)
                procs.wait()  # the checkpoint is on disk before any process says so or exits
                kept = (f"{checkpoint} holds the last good state (step {progress.saved})" if progress.saved is not None
                        else "no step had completed, nothing saved")
                where = f" (process {procs.rank} of {procs.size})" if procs.size > 1 else ""
                if problem:  # the processes that saw it name their terms; the others stop quietly
                    print(f"error: not finite at step {step}{where}: {problem}; stopped before the update, {kept}; "
                          "no potentials written", file=sys.stderr)
                return 1
            optimizer.step()
            history = (history + [logs])[-50:]
            if step % 10 == 0 or step == args.max_steps - 1:
                bar.set_postfix({k: f"{sum(h[k] for h in history) / len(history):.3g}" for k in logs})
            # One process reads its own flag as late as it can; several use the one they all received, or a
            # signal reaching one process between the all-reduce and here would let it stop a step before the others.
            pending = signals.pending if procs.size == 1 else agreed_signal
            if pending is not None or (step + 1) % args.checkpoint_every == 0 or step + 1 == end:
                # The last step's too: a signal or a kill during the report then costs no training.
                checkpoint_at(step + 1)
            if pending is not None:
                bar.close()
                procs.wait()  # as above: process 0's checkpoint first
                raise Interrupted(pending)
    finally:
        signals.deferred(False)
        bar.close()
    seconds = seconds_before + time.time() - began
    final = {k: sum(h[k] for h in history) / len(history) for k in history[0]} if history else {}
    if not procs.is_main:
        # Process 0 alone reports, saves, writes the card and pushes; the others hold the same weights. Waiting
        # until DIR is complete (not through the push, which may outlast the process group's timeout) means the
        # launch ends only with DIR written.
        procs.wait()
        return 0

    report = prior_report = None
    if args.factor_regressor:
        from pdetraversal.metrics.factors import FactorRegressor, factor_report, report_labels

        regressor = FactorRegressor.from_pretrained(resolve_source(args.factor_regressor))
        # Traversals of encoded sprites when the generator can encode; the prior-start numbers go in the card too.
        n = args.report_samples
        report = factor_report(flow, generator, regressor, n, starts="encoded" if can_encode else "prior")
        prior_report = factor_report(flow, generator, regressor, n) if can_encode else None
        if args.labels is None:
            flow.set_labels(report_labels(report))

    z_diag = generator.data_latent(256, seed=0)
    starts = ("the codes of 256 data images (the generator's data_latent; " if z_diag is not None
              else "256 prior samples z0 ~ N(0, I) (")
    z_diag = generator.sample_latent(256, seed=0) if z_diag is None else z_diag
    rows = path_diagnostics(flow, z_diag)
    print(f"along the paths from {starts.split(' (')[0]}:\n" + format_diagnostics(rows))

    flow.cpu().save_pretrained(out)
    write_card(args, flow, final, seconds, report, argv, prior_report, (starts, rows), processes)
    checkpoint.unlink(missing_ok=True)  # the run is complete; DIR now holds only the published files
    checkpoint.with_suffix(".tmp").unlink(missing_ok=True)  # left by a run killed while writing a checkpoint
    progress.done = True
    print(f"saved {flow.num_potentials} potentials to {out}" + (f" (classifier accuracy {final['acc']:.1%})" if final else ""))
    procs.wait()

    if args.push_to_hub:
        if flow.config["generator_revision"] is None:
            print(f"note: these potentials name the local generator folder {args.generator}; to let others load both, "
                  "push the generator too (generator.push_to_hub(repo_id)) and train with --generator <its repo id>",
                  file=sys.stderr)
        try:
            push(args)
        except Exception as e:  # noqa: BLE001 -- any failure: the local result stays, say how to retry
            print(f"error: push to {args.hub_model_id} failed: {e}\nThe potentials are saved in {out}. Retry with:\n"
                  f"  hf upload {args.hub_model_id} {out} . --include config.json --include model.safetensors --include README.md",
                  file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
