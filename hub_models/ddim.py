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

Loading, saving and the forward-mode-safe attention are hub_models/unet_pipeline.py's, shared with the consistency
generator: as strict as for every generator (diffusers itself only warns about missing tensors).
"""
from __future__ import annotations

import torch

from pdetraversal.hub import CheckpointError

from .base import Generator
from .unet_pipeline import PIPELINE_FILES, UNetPipeline, pipeline_option

DEFAULT_NUM_INFERENCE_STEPS = 10
SCHEDULER_CLASSES = ("DDPMScheduler", "DDIMScheduler")


def _check_steps(n, where: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise CheckpointError(f"{where}: num_inference_steps must be a positive integer, got {n!r}")
    return n


class DDIMGenerator(UNetPipeline, Generator):
    """G(z) = DDIM (eta = 0) from x_T = z.view(C, H, W) through a frozen diffusers UNet2DModel; see the module doc.

    Built from a loaded `unet` and a scheduler config (any diffusers scheduler config; DDIM reads its betas and
    prediction type from it). Load one with `hub_models.load_generator(folder_or_repo)` or `from_pretrained`.
    """

    pipeline_class = "DDIMPipeline"
    scheduler_classes = SCHEDULER_CLASSES

    def __init__(self, unet, scheduler, num_inference_steps: int = DEFAULT_NUM_INFERENCE_STEPS):
        from diffusers import DDIMScheduler

        super().__init__()
        self.num_inference_steps = _check_steps(num_inference_steps, type(self).__name__)
        self._set_unet(unet)
        self.scheduler = DDIMScheduler.from_config(scheduler.config)
        self.scheduler.set_timesteps(self.num_inference_steps)

    def options(self) -> dict:
        return {"num_inference_steps": self.num_inference_steps}

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

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *, revision: str | None = None,
                        subfolder: str | None = None, num_inference_steps: int | None = None,
                        **download_kwargs) -> "DDIMGenerator":
        """Load a diffusers pipeline folder or Hub repo (at `revision`, in `subfolder`) strictly; see the module doc.

        `num_inference_steps` overrides the repo's pdetraversal.json (default 10)."""
        from diffusers import DDIMScheduler

        src = str(pretrained_model_name_or_path)
        where, root, unet_config, scheduler_config = cls._read_pipeline(src, revision, subfolder, download_kwargs)
        if num_inference_steps is None:
            num_inference_steps = pipeline_option(src, revision, subfolder, "num_inference_steps",
                                                  DEFAULT_NUM_INFERENCE_STEPS, download_kwargs)
        _check_steps(num_inference_steps, where)
        unet = cls._load_unet(src, revision, subfolder, download_kwargs, where, root, unet_config)
        return cls(unet, cls._scheduler(DDIMScheduler, scheduler_config, where), num_inference_steps).eval()


__all__ = ["DDIMGenerator", "PIPELINE_FILES", "DEFAULT_NUM_INFERENCE_STEPS"]
