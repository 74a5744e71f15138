"""A diffusion model as a traversable generator: G(z) = deterministic DDIM sampling started from z = x_T.

The paper (Song et al., ICML 2023, Sec. 4) traverses the latent space of a frozen generator G: z -> x. For a
diffusion model the latent is the initial noise x_T of shape (C, H, W), flattened to z in R^d with d = C*H*W
(3072 for a 32x32 RGB model), and its prior is N(0, I) as for every other generator here. G(z) runs DDIM
(Song, Meng & Ermon, ICLR 2021, eq. 12) with eta = 0 through diffusers' `UNet2DModel` and `DDIMScheduler.step`:

    x0_hat = (x_t - sqrt(1 - a_t) * eps(x_t, t)) / sqrt(a_t),   x_{t-1} = sqrt(a_prev) * x0_hat + sqrt(1 - a_prev) * eps

(a = the scheduler's alphas_cumprod). Why eta = 0: with it no noise is drawn along the way, so G is a fixed,
differentiable function of z alone; a path z(t) in latent space is then a path of images, which a traversal needs.
With eta > 0 the same z would give a different image on each call. The images are mapped from [-1, 1] to [0, 1].

Cost: one decode is `num_inference_steps` UNet passes (default 10) and its backward as many again. At d in the
thousands, train/fit.py's exact Laplacian (`--laplacian exact`, d backward passes per point) is out of reach:
train on this generator with `--laplacian hutchinson`.

SeFa (`pdetraversal.baselines.sefa`) does not apply: no linear layer acts on z alone (the UNet's first layer is a
convolution applied once per step to x_t), so `latent_weight()` is None.

Layout (what `load_generator` loads): a diffusers pipeline folder or Hub repo, e.g. `google/ddpm-cifar10-32`:

    model_index.json                          names unet = UNet2DModel (anything else is refused)
    unet/config.json, unet/diffusion_pytorch_model.safetensors
    scheduler/scheduler_config.json           a DDPM or DDIM config; both load into DDIMScheduler
    pdetraversal.json                         optional: {"num_inference_steps": N}; without it N = 10

Loading is as strict as the rest of the project (`pdetraversal.hub`): safetensors only, the UNet's tensor shapes are
checked against its config on the meta device before anything is allocated, a missing, unexpected or mis-shaped
tensor is a CheckpointError naming it (diffusers itself only warns about missing ones), non-finite weights are
refused, and no code is loaded from the repo (the classes are diffusers' own, picked here, not by the repo).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from pdetraversal.hub import CheckpointError, resolve_file

from .base import Generator, load_model_strict, read_json, snapshot_root, subpath

DEFAULT_NUM_INFERENCE_STEPS = 10
MODEL_INDEX = "model_index.json"
UNET_CONFIG = "unet/config.json"
UNET_WEIGHTS = "unet/diffusion_pytorch_model.safetensors"
SCHEDULER_CONFIG = "scheduler/scheduler_config.json"
OUR_CONFIG = "pdetraversal.json"
SCHEDULER_CLASSES = ("DDPMScheduler", "DDIMScheduler")
PIPELINE_FILES = (MODEL_INDEX, UNET_CONFIG, UNET_WEIGHTS, SCHEDULER_CONFIG, OUR_CONFIG)  # all a load downloads


def _check_steps(n, where: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise CheckpointError(f"{where}: num_inference_steps must be a positive integer, got {n!r}")
    return n


def _forward_mode_attention():
    """An attention processor that torch.func.jvp can differentiate: diffusers' plain matmul-softmax one (torch's
    fused CPU attention kernel has no forward-mode derivative), with its output made contiguous (its tangent is
    otherwise strided so that the next GroupNorm's forward-mode rule fails for batches > 1). Same values."""
    from diffusers.models.attention_processor import AttnProcessor

    class ForwardModeAttnProcessor(AttnProcessor):
        # Attention passes on only the keyword arguments this signature names: keep AttnProcessor's.
        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                     *args, **kwargs):
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb,
                                    *args, **kwargs).contiguous()

    return ForwardModeAttnProcessor()


class DDIMGenerator(Generator):
    """G(z) = DDIM (eta = 0) from x_T = z.view(C, H, W) through a frozen diffusers UNet2DModel; see the module doc.

    Built from a loaded `unet` and a scheduler config (any diffusers scheduler config; DDIM reads its betas and
    prediction type from it). Load one with `hub_models.load_generator(folder_or_repo)` or `from_pretrained`.
    """

    scheduler_classes = SCHEDULER_CLASSES

    def __init__(self, unet, scheduler, num_inference_steps: int = DEFAULT_NUM_INFERENCE_STEPS):
        from diffusers import DDIMScheduler
        from diffusers.models.attention_processor import Attention

        super().__init__()
        self.num_inference_steps = _check_steps(num_inference_steps, type(self).__name__)
        self.unet = unet.eval().requires_grad_(False)
        # L_J (pdetraversal/losses.py) differentiates G by forward mode (torch.func.jvp), which the default attention
        # cannot take (see _forward_mode_attention).
        processor = _forward_mode_attention()
        for module in self.unet.modules():
            if isinstance(module, Attention):
                module.set_processor(processor)
        self.scheduler = DDIMScheduler.from_config(scheduler.config)
        self.scheduler.set_timesteps(self.num_inference_steps)
        cfg = unet.config
        size = cfg.sample_size if isinstance(cfg.sample_size, (tuple, list)) else (cfg.sample_size, cfg.sample_size)
        if cfg.in_channels != cfg.out_channels:
            raise CheckpointError(f"the UNet maps {cfg.in_channels} channels to {cfg.out_channels}; DDIM needs a noise "
                                  "prediction of the input's shape")
        self.image_shape = (int(cfg.in_channels), int(size[0]), int(size[1]))
        self.latent_dim = self.image_shape[0] * self.image_shape[1] * self.image_shape[2]

    def latent_weight(self) -> None:
        # No linear map acts on z alone (the UNet's first layer is a convolution of every x_t), so SeFa does not apply.
        return None

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(n, C*H*W) -> (n, C, H, W) in [0, 1]; differentiable in z (the UNet's own parameters are frozen)."""
        self.check_latent(z)
        param = next(self.unet.parameters())
        x = z.to(device=param.device, dtype=param.dtype).reshape(-1, *self.image_shape)
        for t in self.scheduler.timesteps:
            eps = self.unet(x, t.to(x.device)).sample
            # eta = 0: no noise is drawn, so the update is a deterministic function of x (and thus of z).
            x = self.scheduler.step(eps, t, x, eta=0.0).prev_sample
        return (x.clamp(-1, 1) + 1) / 2

    def save_pretrained(self, save_directory, **kwargs):
        """Write the diffusers pipeline layout (see the module doc), which `load_generator` reads back."""
        if kwargs.get("push_to_hub"):
            raise NotImplementedError("DDIMGenerator.save_pretrained writes a folder; push it with HfApi.upload_folder")
        root = Path(save_directory)
        root.mkdir(parents=True, exist_ok=True)
        self.unet.save_pretrained(root / "unet", safe_serialization=True)
        self.scheduler.save_pretrained(root / "scheduler")
        index = {"_class_name": "DDIMPipeline", "unet": ["diffusers", "UNet2DModel"],
                 "scheduler": ["diffusers", "DDIMScheduler"]}
        (root / MODEL_INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        (root / OUR_CONFIG).write_text(json.dumps({"num_inference_steps": self.num_inference_steps}) + "\n",
                                       encoding="utf-8")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *, revision: str | None = None,
                        subfolder: str | None = None, num_inference_steps: int | None = None,
                        **download_kwargs) -> "DDIMGenerator":
        """Load a diffusers pipeline folder or Hub repo (at `revision`, in `subfolder`) strictly; see the module doc.

        `num_inference_steps` overrides the repo's pdetraversal.json (default 10)."""
        from diffusers import DDIMScheduler, UNet2DModel

        src = str(pretrained_model_name_or_path)
        where = f"{src}/{subfolder}" if subfolder else src
        files = {name: resolve_file(src, subpath(subfolder, name), revision, **download_kwargs)
                 for name in (MODEL_INDEX, UNET_CONFIG, UNET_WEIGHTS, SCHEDULER_CONFIG)}
        index = read_json(files[MODEL_INDEX], f"{MODEL_INDEX} of {where}")
        if index.get("unet") != ["diffusers", "UNet2DModel"]:
            raise CheckpointError(f"{MODEL_INDEX} of {where} names unet={index.get('unet')!r}; only "
                                  "['diffusers', 'UNet2DModel'] is supported")
        scheduler_entry = index.get("scheduler")
        if not (isinstance(scheduler_entry, list) and len(scheduler_entry) == 2
                and scheduler_entry[1] in SCHEDULER_CLASSES):
            raise CheckpointError(f"{MODEL_INDEX} of {where} names scheduler={scheduler_entry!r}; supported: "
                                  f"{list(SCHEDULER_CLASSES)} (their configs load into DDIMScheduler)")
        if num_inference_steps is None:
            num_inference_steps = pipeline_option(src, revision, subfolder, "num_inference_steps",
                                                  DEFAULT_NUM_INFERENCE_STEPS, download_kwargs)
        _check_steps(num_inference_steps, where)
        # Hub files land in one snapshot folder per commit; diffusers then reads only that folder (no requests).
        root = snapshot_root(files[MODEL_INDEX], MODEL_INDEX)
        unet_config = read_json(files[UNET_CONFIG], f"{UNET_CONFIG} of {where}")
        unet = load_model_strict(UNet2DModel, unet_config, root, "unet", files[UNET_WEIGHTS],
                                 f"the UNet of {where}")
        try:
            scheduler = DDIMScheduler.from_config(read_json(files[SCHEDULER_CONFIG], f"{SCHEDULER_CONFIG} of {where}"))
        except (TypeError, ValueError, KeyError, NotImplementedError) as e:
            raise CheckpointError(f"{SCHEDULER_CONFIG} of {where} is not a usable scheduler config: {e}") from e
        return cls(unet, scheduler, num_inference_steps).eval()


def pipeline_option(src: str, revision: str | None, subfolder: str | None, key: str, default, download_kwargs: dict):
    """`key` of the pipeline's optional pdetraversal.json (a plain diffusers repo has none: then `default`)."""
    try:
        path = resolve_file(src, subpath(subfolder, OUR_CONFIG), revision, **download_kwargs)
    except CheckpointError:
        return default
    return read_json(path, f"{OUR_CONFIG} of {src}").get(key, default)
