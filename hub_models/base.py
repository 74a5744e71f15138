"""The generator contract every traversable model follows: G: z -> x (the paper's frozen generator, Sec. 3-4).

The layer is diffusers': a generator is a `diffusers.ModelMixin` + `ConfigMixin` whose constructor is decorated with
`@register_to_config`, so its constructor arguments are its config. It is stored as diffusers stores models:

    config.json                           the constructor's arguments, "_class_name" and "_diffusers_version"
    diffusion_pytorch_model.safetensors   the weights

at the root of a folder or Hub repo, or in a subfolder of it (one repo may hold a generator and its potentials side
by side). `load_generator` reads "_class_name" and looks it up in a fixed registry of the classes in this package:
no code is ever loaded from a repo.

`Generator.from_pretrained` loads through diffusers' own `ModelMixin.from_pretrained`, and is stricter than it:
diffusers only warns about missing or unexpected tensors, so the file's header is first checked against the model
the config describes, built on the meta device (no memory; a tiny config asking for a 10^12-row layer is refused
before anything is allocated); any missing, unexpected or mis-shaped tensor is a CheckpointError naming it;
non-finite weights are refused; only safetensors is read. Weights stored in half precision load as float32.
"""
from __future__ import annotations

from pathlib import Path

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import FrozenDict

from pdetraversal.hub import CheckpointError, _check_shapes, header_shapes, read_json, resolve_file
from pdetraversal.hub import in_subfolder as subpath

REGISTRY: dict[str, type["Generator"]] = {}
GENERATOR_WEIGHTS = "diffusion_pytorch_model.safetensors"
GENERATOR_CONFIG = "config.json"


def load_model_strict(cls: type[ModelMixin], config: dict, root: str, subfolder: str | None, weights: str,
                      what: str) -> ModelMixin:
    """`cls.from_pretrained(root, subfolder)` through diffusers, from a local folder (no requests), after checking the
    safetensors header at `weights` against `cls.from_config(config)` built on the meta device; every missing,
    unexpected or mis-shaped tensor and every non-finite weight is a CheckpointError naming `what`."""
    try:
        with torch.device("meta"):  # the config's sizes are a stranger's word: shapes first, no memory
            skeleton = cls.from_config(config)
    except (TypeError, ValueError, KeyError, AttributeError, RuntimeError) as e:
        raise CheckpointError(f"the config of {what} does not describe a {cls.__name__}: {e}") from e
    _check_shapes(cls.__name__, weights, header_shapes(weights),
                  {k: tuple(v.shape) for k, v in skeleton.state_dict().items()})
    del skeleton
    try:
        model, info = ModelMixin.from_pretrained.__func__(
            cls, root, subfolder=subfolder, use_safetensors=True, output_loading_info=True, local_files_only=True,
            torch_dtype=torch.float32)
    except (OSError, ValueError, RuntimeError, TypeError) as e:
        raise CheckpointError(f"could not load {what}: {e}") from e
    # The header check above leaves nothing here; diffusers would only have warned, so check once more.
    problems = [f"{kind.replace('_', ' ')[:-1]} '{k}'" for kind in ("missing_keys", "unexpected_keys")
                for k in info.get(kind, [])]
    problems += [f"mismatched key {m}" for m in info.get("mismatched_keys", [])] + list(info.get("error_msgs", []))
    if problems:
        raise CheckpointError(f"checkpoint {weights} does not match {cls.__name__}: " + "; ".join(problems))
    bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"checkpoint {weights} holds non-finite values (NaN or inf) in "
                              + ", ".join(f"'{k}'" for k in bad) + ": refusing to load it")
    # diffusers records the folder it read (a snapshot path of this machine) in the config; it is no one's business.
    model._internal_dict = FrozenDict({k: v for k, v in model.config.items() if k != "_name_or_path"})
    return model.eval()


def snapshot_root(path: str, filename: str) -> str:
    """The folder that holds `filename` (e.g. "sub/config.json") where `path` is that file: for a Hub repo, its
    snapshot folder, which diffusers can then read without any request."""
    root = Path(path)
    for _ in Path(filename).parts:
        root = root.parent
    return str(root)


class Generator(ModelMixin, ConfigMixin):
    """A frozen generator: `latent_dim`, `sample_latent(n, seed)`, `decode(z)` -> images in [0, 1], and optionally
    `encode(x)`, `data_latent(n, seed)` and `latent_weight()`.

    Subclasses decorate `__init__` with `diffusers.configuration_utils.register_to_config` and set
    `self.latent_dim` in it."""

    config_name = GENERATOR_CONFIG
    latent_dim: int

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        REGISTRY[cls.__name__] = cls

    def sample_latent(self, n: int, seed: int | None = None) -> torch.Tensor:
        """n draws from the prior p(z) = N(0, I); the same seed gives the same latents on any machine."""
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        return torch.randn(n, self.latent_dim, generator=g).to(self.device)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(n, latent_dim) -> (n, C, H, W) in [0, 1]; differentiable in z."""
        raise NotImplementedError

    def data_latent(self, n: int, seed: int | None = None) -> torch.Tensor | None:
        """Codes of n fresh images of the training data (e.g. a VAE's posterior means), or None when the generator
        cannot encode or has no data source. Traversals from these start at real images, not at prior samples."""
        return None

    def latent_weight(self) -> torch.Tensor | None:
        """The weight of the first layer acting on z, shape (out, latent_dim), for SeFa
        (`pdetraversal.baselines.sefa`); None when the generator has no linear first layer on z."""
        return None

    def check_latent(self, z: torch.Tensor) -> None:
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"{type(self).__name__} expects latents of shape (n, {self.latent_dim}), got {tuple(z.shape)}")

    def save_pretrained(self, save_directory, **kwargs):
        """config.json + diffusion_pytorch_model.safetensors (diffusers' layout), weights as readable as the config."""
        kwargs.setdefault("safe_serialization", True)
        if not kwargs["safe_serialization"]:
            raise ValueError("generators are saved as safetensors only")
        super().save_pretrained(save_directory, **kwargs)
        # safetensors writes through a private temp file (mode 0600); give the weights the config's mode (the umask's).
        weights, config = Path(save_directory) / GENERATOR_WEIGHTS, Path(save_directory) / GENERATOR_CONFIG
        if weights.is_file() and config.is_file():
            weights.chmod(config.stat().st_mode & 0o777)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *, revision: str | None = None,
                        subfolder: str | None = None, **download_kwargs) -> "Generator":
        """Load strictly (see the module doc) from a folder or Hub repo (at `revision`, in `subfolder`).
        `download_kwargs` go to `hf_hub_download` (cache_dir, token, local_files_only, force_download)."""
        src = str(pretrained_model_name_or_path)
        where = f"{src}/{subfolder}" if subfolder else src
        config_name = subpath(subfolder, GENERATOR_CONFIG)
        config_file = resolve_file(src, config_name, revision, **download_kwargs)
        config = read_json(config_file, f"{GENERATOR_CONFIG} of {where}")
        name = config.get("_class_name")
        if name != cls.__name__:
            raise CheckpointError(f"{where}: config.json names _class_name={name!r}, not {cls.__name__}")
        weights = resolve_file(src, subpath(subfolder, GENERATOR_WEIGHTS), revision, **download_kwargs)
        return load_model_strict(cls, config, snapshot_root(config_file, config_name), subfolder, weights, where)
