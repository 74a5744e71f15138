"""A consistency model as a traversable generator: G(z) = one step of the consistency function from x_T = sigma_max z.

The paper (Song et al., ICML 2023, Sec. 4) traverses the latent space of a frozen generator G: z -> x. A consistency
model (Song, Dhariwal, Chen & Sutskever, ICML 2023, "Consistency Models", eq. 5 and appendix C) is a network
f_theta(x, sigma) that maps a noisy image at any noise level sigma in [sigma_min, sigma_max] straight to the clean
image at the end of the probability-flow ODE's trajectory through it:

    f_theta(x, sigma) = c_skip(sigma) x + c_out(sigma) F_theta(c_in(sigma) x, t(sigma))
    c_skip = sigma_data^2 / ((sigma - sigma_min)^2 + sigma_data^2)
    c_out  = (sigma - sigma_min) sigma_data / sqrt(sigma^2 + sigma_data^2)
    c_in   = 1 / sqrt(sigma^2 + sigma_data^2),   t(sigma) = 250 log(sigma)

with sigma_data = 0.5, sigma_min = 0.002 and sigma_max = 80 in the released models (c_skip = 1 and c_out = 0 at
sigma_min: the boundary condition f(x, sigma_min) = x). F_theta is diffusers' `UNet2DModel`; every scaling here is
taken from the scheduler's own methods (`CMStochasticIterativeScheduler.init_noise_sigma`,
`get_scalings_for_boundary_condition`, `sigma_to_t`, and the factor of its `scale_model_input`), so G is what
diffusers' `ConsistencyModelPipeline` computes with `num_inference_steps=1` (tests/test_consistency.py checks this
against `scheduler.step`).

The latent is the initial noise divided by its scale, z = x_T / sigma_max, flattened to z in R^d with d = C*H*W
(12288 for ImageNet 64x64), so that its prior is N(0, I) as for every other generator here. G(z) = f_theta(sigma_max z,
sigma_max), clamped to [-1, 1] and mapped to [0, 1]. Why one step: it is the model's defining use (multistep sampling
adds fresh noise between steps, so the same z would give a different image on each call); with one step no noise is
drawn at all (the scheduler multiplies its noise by 0 at the last step), and G is a fixed, differentiable function of
z alone, so a path z(t) is a path of images, which a traversal needs.

Cost: one decode is one UNet pass (hub_models/ddim.py runs 10 by default), its derivatives (backward, or L_J's forward
mode) a few passes more. At d in the thousands train/fit.py's exact Laplacian (d backward passes per point) is out of
reach: train on this generator with `--laplacian hutchinson`.

SeFa (`pdetraversal.baselines.sefa`) does not apply: no linear layer acts on z alone (the UNet's first layer is a
convolution of c_in x), so `latent_weight()` is None.

Meant for the openai consistency models in diffusers' layout (all MIT, as openai/consistency_models; sizes are fp32
UNet weights, parameter counts computed from the conversion configs):

    openai/diffusers-cd_imagenet64_l2      ImageNet 64x64, class-conditional (1000 classes), 296M parameters,
                                           1.18 GB; d = 12288. Has unet/diffusion_pytorch_model.safetensors: loads.
    openai/diffusers-cd_imagenet64_lpips,  the same network; -ct_imagenet64 trained in isolation (201 training
    openai/diffusers-ct_imagenet64         steps). cd_imagenet64_lpips held only a pickle (.bin) when last looked at,
                                           ct_imagenet64 not checked: a repo without the safetensors file is refused.
    openai/diffusers-cd_bedroom256_l2, -cd_bedroom256_lpips, -cd_cat256_l2, -cd_cat256_lpips, -ct_bedroom256,
    -ct_cat256                             LSUN 256x256, unconditional, 526M parameters, 2.11 GB; d = 196608. Their
                                           UNets are pickles (.bin) only: refused until converted to safetensors.

Layout (what `load_generator` loads), e.g. `openai/diffusers-cd_imagenet64_l2`:

    model_index.json                          names unet = UNet2DModel, scheduler = CMStochasticIterativeScheduler
    unet/config.json, unet/diffusion_pytorch_model.safetensors
    scheduler/scheduler_config.json           sigma_min, sigma_max, sigma_data (and a training schedule, unused)
    pdetraversal.json                         optional: {"class_label": k} for a class-conditional UNet; without
                                              it (a plain openai repo) class 0

A class-conditional UNet (`num_class_embeds` set) is decoded at one fixed class label, so that G is a function of z
alone; it is checked against num_class_embeds before the weights are read. Loading is as strict as DDIM's
(hub_models/ddim.py): safetensors only, tensor shapes checked on the meta device first, a missing, unexpected or
mis-shaped tensor is a CheckpointError naming it, non-finite weights are refused, and the classes are diffusers' own,
picked here, never named by the repo.
"""
from __future__ import annotations

import math

import torch

from pdetraversal.hub import CheckpointError

from .base import Generator
from .unet_pipeline import UNetPipeline, pipeline_option

SCHEDULER_CLASSES = ("CMStochasticIterativeScheduler",)
DEFAULT_CLASS_LABEL = 0  # what from_pretrained picks for a class-conditional repo without pdetraversal.json


def check_class_label(label, num_class_embeds, class_embed_type, where: str) -> int | None:
    """`label` for a UNet with these config values: an int in [0, num_class_embeds) for a class-conditional one,
    None for an unconditional one; anything else is a CheckpointError."""
    if class_embed_type is not None:
        raise CheckpointError(f"{where}: the UNet has class_embed_type={class_embed_type!r}; only an embedding of "
                              "num_class_embeds integer labels (class_embed_type None) is supported")
    if num_class_embeds is None:
        if label is not None:
            raise CheckpointError(f"{where}: class_label={label!r} given, but the UNet is unconditional "
                                  "(num_class_embeds is None)")
        return None
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < num_class_embeds:
        raise CheckpointError(f"{where}: the UNet is class-conditional; class_label must be an integer in "
                              f"[0, {num_class_embeds}), got {label!r}")
    return label


def _check_noise_levels(config, where: str) -> None:
    values = {k: config.get(k) for k in ("sigma_min", "sigma_max", "sigma_data")}
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
               for v in values.values()) or not values["sigma_min"] < values["sigma_max"]:
        raise CheckpointError(f"{where}: the scheduler needs finite 0 < sigma_min < sigma_max and sigma_data > 0, "
                              f"got {values}")


class ConsistencyGenerator(UNetPipeline, Generator):
    """G(z) = f_theta(sigma_max z, sigma_max) through a frozen diffusers UNet2DModel, one step; see the module doc.

    Built from a loaded `unet`, a scheduler (any diffusers scheduler whose config holds the consistency model's
    sigmas; it is rebuilt as CMStochasticIterativeScheduler) and, for a class-conditional UNet, the `class_label` to
    decode at (required there, refused otherwise). Load one with `hub_models.load_generator(folder_or_repo)` or
    `from_pretrained`.
    """

    pipeline_class = "ConsistencyModelPipeline"
    scheduler_classes = SCHEDULER_CLASSES

    def __init__(self, unet, scheduler, class_label: int | None = None):
        from diffusers import CMStochasticIterativeScheduler

        super().__init__()
        name = type(self).__name__
        cfg = unet.config
        self.class_label = check_class_label(class_label, cfg.num_class_embeds, cfg.class_embed_type, name)
        self._set_unet(unet)
        _check_noise_levels(scheduler.config, name)
        self.scheduler = CMStochasticIterativeScheduler.from_config(scheduler.config)
        # x_T ~ N(0, init_noise_sigma^2 I), init_noise_sigma = sigma_max: the one noise level the single step runs at.
        self.sigma_max = float(self.scheduler.init_noise_sigma)
        c_skip, c_out = self.scheduler.get_scalings_for_boundary_condition(
            torch.tensor(self.sigma_max, dtype=torch.float64))
        self.c_skip, self.c_out = float(c_skip), float(c_out)
        # scale_model_input divides by this; it reads the scheduler's step state, so the factor is taken once here.
        self.c_in = 1.0 / math.sqrt(self.sigma_max ** 2 + self.scheduler.config.sigma_data ** 2)
        self.timestep = float(self.scheduler.sigma_to_t(self.sigma_max))

    def options(self) -> dict:
        return {"class_label": self.class_label}

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(n, C*H*W) -> (n, C, H, W) in [0, 1]; differentiable in z (the UNet's own parameters are frozen)."""
        self.check_latent(z)
        param = next(self.unet.parameters())
        x = z.to(device=param.device, dtype=param.dtype).reshape(-1, *self.image_shape) * self.sigma_max
        # The UNet's timestep embedding is computed in float32 whatever it is given: float32 works on every device.
        t = torch.tensor(self.timestep, dtype=torch.float32, device=param.device)
        labels = None
        if self.class_label is not None:
            labels = torch.full((x.shape[0],), self.class_label, dtype=torch.long, device=param.device)
        out = self.unet(x * self.c_in, t, class_labels=labels).sample
        denoised = self.c_skip * x + self.c_out * out
        # The scheduler clamps here when clip_denoised is set; images in [0, 1] need it either way.
        return (denoised.clamp(-1, 1) + 1) / 2

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *, revision: str | None = None,
                        subfolder: str | None = None, class_label: int | None = None,
                        **download_kwargs) -> "ConsistencyGenerator":
        """Load a diffusers consistency-model pipeline folder or Hub repo (at `revision`, in `subfolder`) strictly;
        see the module doc. `class_label` overrides the repo's pdetraversal.json (default 0 for a class-conditional
        UNet)."""
        from diffusers import CMStochasticIterativeScheduler

        src = str(pretrained_model_name_or_path)
        where, root, unet_config, scheduler_config = cls._read_pipeline(src, revision, subfolder, download_kwargs)
        _check_noise_levels(scheduler_config, f"the scheduler config of {where}")
        conditional = unet_config.get("num_class_embeds") is not None
        if class_label is None:
            class_label = pipeline_option(src, revision, subfolder, "class_label",
                                          DEFAULT_CLASS_LABEL if conditional else None, download_kwargs)
            if class_label is None and conditional:  # {"class_label": null} from an unconditional model's save
                class_label = DEFAULT_CLASS_LABEL
        # Before the weights (1.2 GB for ImageNet 64) are downloaded: a bad label fails at once.
        check_class_label(class_label, unet_config.get("num_class_embeds"), unet_config.get("class_embed_type"),
                          where)
        unet = cls._load_unet(src, revision, subfolder, download_kwargs, where, root, unet_config)
        return cls(unet, cls._scheduler(CMStochasticIterativeScheduler, scheduler_config, where), class_label).eval()
