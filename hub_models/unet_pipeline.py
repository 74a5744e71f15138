"""What the diffusion-model generators share: a frozen diffusers `UNet2DModel` and a scheduler, stored in the layout of a
diffusers pipeline, with the latent z the flattened initial noise (d = C*H*W). The maths of each is in its own module:
hub_models/ddim.py (DDIM, eq. 12 of Song, Meng & Ermon 2021) and hub_models/consistency.py (one consistency step).

Layout (a folder or Hub repo, or a subfolder of one):

    model_index.json                          names unet = ["diffusers", "UNet2DModel"] and the scheduler class
    unet/config.json, unet/diffusion_pytorch_model.safetensors
    scheduler/scheduler_config.json
    pdetraversal.json                         optional: the generator's own options (e.g. {"num_inference_steps": 10})

Loading is as strict as for every generator (hub_models/base.py): safetensors only, the UNet's shapes checked on the
meta device before anything is allocated, a missing, unexpected or mis-shaped tensor a CheckpointError naming it,
non-finite weights refused, and the classes diffusers' own, picked here, never named by the repo.
"""
from __future__ import annotations

import json
from pathlib import Path

from pdetraversal.hub import CheckpointError, read_json, resolve_file

from .base import load_model_strict, snapshot_root, subpath

MODEL_INDEX = "model_index.json"
UNET_CONFIG = "unet/config.json"
UNET_WEIGHTS = "unet/diffusion_pytorch_model.safetensors"
SCHEDULER_CONFIG = "scheduler/scheduler_config.json"
OUR_CONFIG = "pdetraversal.json"
PIPELINE_FILES = (MODEL_INDEX, UNET_CONFIG, UNET_WEIGHTS, SCHEDULER_CONFIG, OUR_CONFIG)  # all a load downloads


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


def pipeline_option(src: str, revision: str | None, subfolder: str | None, key: str, default, download_kwargs: dict):
    """`key` of the pipeline's optional pdetraversal.json (a plain diffusers repo has none: then `default`)."""
    try:
        path = resolve_file(src, subpath(subfolder, OUR_CONFIG), revision, **download_kwargs)
    except CheckpointError:
        return default
    return read_json(path, f"{OUR_CONFIG} of {src}").get(key, default)


class UNetPipeline:
    """Mixed into a `Generator` subclass (it is not one itself, so not in the registry of loadable classes) that sets
    `pipeline_class` (model_index.json's "_class_name" when saved), `scheduler_classes` (the schedulers whose configs
    it loads) and `options()` (what pdetraversal.json holds), and calls `_set_unet(unet)` in its constructor."""

    pipeline_class: str
    scheduler_classes: tuple[str, ...]

    def _set_unet(self, unet) -> None:
        from diffusers.models.attention_processor import Attention

        cfg = unet.config
        if cfg.in_channels != cfg.out_channels:
            raise CheckpointError(f"{type(self).__name__}: the UNet maps {cfg.in_channels} channels to "
                                  f"{cfg.out_channels}; it must predict a tensor of its input's shape")
        self.unet = unet.eval().requires_grad_(False)
        # L_J (pdetraversal/losses.py) differentiates G by forward mode (torch.func.jvp), which the default attention
        # cannot take (see _forward_mode_attention).
        processor = _forward_mode_attention()
        for module in self.unet.modules():
            if isinstance(module, Attention):
                module.set_processor(processor)
        size = cfg.sample_size if isinstance(cfg.sample_size, (tuple, list)) else (cfg.sample_size, cfg.sample_size)
        self.image_shape = (int(cfg.in_channels), int(size[0]), int(size[1]))
        self.latent_dim = self.image_shape[0] * self.image_shape[1] * self.image_shape[2]

    def latent_weight(self) -> None:
        # No linear map acts on z alone (the UNet's first layer is a convolution of the noisy image), so SeFa does
        # not apply.
        return None

    def options(self) -> dict:
        raise NotImplementedError

    def save_pretrained(self, save_directory, **kwargs):
        """Write the pipeline layout (see the module doc), which `load_generator` reads back."""
        if kwargs.get("push_to_hub"):
            raise NotImplementedError(f"{type(self).__name__}.save_pretrained writes a folder; push it with "
                                      "HfApi.upload_folder")
        root = Path(save_directory)
        root.mkdir(parents=True, exist_ok=True)
        self.unet.save_pretrained(root / "unet", safe_serialization=True)
        self.scheduler.save_pretrained(root / "scheduler")
        index = {"_class_name": self.pipeline_class, "unet": ["diffusers", "UNet2DModel"],
                 "scheduler": ["diffusers", type(self.scheduler).__name__]}
        (root / MODEL_INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        (root / OUR_CONFIG).write_text(json.dumps(self.options()) + "\n", encoding="utf-8")

    @classmethod
    def _read_pipeline(cls, src: str, revision: str | None, subfolder: str | None,
                       download_kwargs: dict) -> tuple[str, str, dict, dict]:
        """(where, root, unet config, scheduler config) of a pipeline whose model_index.json names a UNet2DModel and
        one of `scheduler_classes`; `root` is the local folder that holds it (a Hub snapshot folder)."""
        where = f"{src}/{subfolder}" if subfolder else src
        files = {name: resolve_file(src, subpath(subfolder, name), revision, **download_kwargs)
                 for name in (MODEL_INDEX, UNET_CONFIG, SCHEDULER_CONFIG)}
        index = read_json(files[MODEL_INDEX], f"{MODEL_INDEX} of {where}")
        if index.get("unet") != ["diffusers", "UNet2DModel"]:
            raise CheckpointError(f"{MODEL_INDEX} of {where} names unet={index.get('unet')!r}; only "
                                  "['diffusers', 'UNet2DModel'] is supported")
        entry = index.get("scheduler")
        if not (isinstance(entry, list) and len(entry) == 2 and entry[1] in cls.scheduler_classes):
            raise CheckpointError(f"{MODEL_INDEX} of {where} names scheduler={entry!r}; {cls.__name__} reads the "
                                  f"configs of {list(cls.scheduler_classes)}")
        return (where, snapshot_root(files[MODEL_INDEX], MODEL_INDEX),
                read_json(files[UNET_CONFIG], f"{UNET_CONFIG} of {where}"),
                read_json(files[SCHEDULER_CONFIG], f"{SCHEDULER_CONFIG} of {where}"))

    @staticmethod
    def _load_unet(src: str, revision: str | None, subfolder: str | None, download_kwargs: dict, where: str,
                   root: str, unet_config: dict):
        """The strictly loaded UNet (downloaded only now: a bad option fails before its weights are fetched)."""
        from diffusers import UNet2DModel

        weights = resolve_file(src, subpath(subfolder, UNET_WEIGHTS), revision, **download_kwargs)
        return load_model_strict(UNet2DModel, unet_config, root, "unet", weights, f"the UNet of {where}")

    @staticmethod
    def _scheduler(scheduler_cls, config: dict, where: str):
        try:
            return scheduler_cls.from_config(config)
        except (TypeError, ValueError, KeyError, NotImplementedError) as e:
            raise CheckpointError(f"{SCHEDULER_CONFIG} of {where} is not a usable scheduler config: {e}") from e
