"""Generators loadable from the Hub or a folder, and the embedded default models in Hub layout."""
from __future__ import annotations

import os
from pathlib import Path

from pdetraversal.hub import CONFIG_NAME, WEIGHTS_NAME, CheckpointError, check_download_size, read_json, resolve_file

from .base import GENERATOR_CONFIG, GENERATOR_WEIGHTS, REGISTRY, Generator, subpath
from .mlp import MLPGenerator
from .dsprites_vae import DSpritesVAE
from .mnist_vae import MNISTVAE
from .swirl import SwirlVAE
from .face_dcgan import FaceDCGAN
from .fashion_vae import FashionVAE
from .sngan import SNGANGenerator
from .ddim import DDIMGenerator
from .unet_pipeline import MODEL_INDEX, PIPELINE_FILES
from .consistency import ConsistencyGenerator

PIPELINE_GENERATORS = (DDIMGenerator, ConsistencyGenerator)  # diffusers pipelines as generators, picked by their scheduler

EMBEDDED_DIR = Path(__file__).resolve().parent


def resolve_source(repo_id_or_path: str | os.PathLike) -> str:
    """A folder as given, else an embedded model (`hub_models/<name>`, found beside this package wherever it is
    installed), else the string itself as a Hub repo id. Only `hub_models/...` names are looked up beside the
    package: after `pip install`, its parent is site-packages, where "torch" or "numpy" must not resolve to folders."""
    if os.path.isdir(repo_id_or_path):
        return str(repo_id_or_path)
    parts = Path(repo_id_or_path).parts
    if len(parts) > 1 and parts[0] == EMBEDDED_DIR.name and ".." not in parts:
        embedded = EMBEDDED_DIR.joinpath(*parts[1:])
        if embedded.is_dir():
            return str(embedded)
    return str(repo_id_or_path)


def load_pipeline_generator(source: str, revision: str | None = None, subfolder: str | None = None,
                            **download_kwargs) -> Generator:
    """A diffusers pipeline folder or repo (model_index.json) as the generator its scheduler calls for."""
    where = f"{source}/{subfolder}" if subfolder else source
    index = read_json(resolve_file(source, subpath(subfolder, MODEL_INDEX), revision, **download_kwargs),
                      f"{MODEL_INDEX} of {where}")
    entry = index.get("scheduler")
    scheduler = entry[1] if isinstance(entry, list) and len(entry) == 2 else None
    for cls in PIPELINE_GENERATORS:
        if scheduler in cls.scheduler_classes:
            return cls.from_pretrained(source, revision=revision, subfolder=subfolder, **download_kwargs)
    known = [name for cls in PIPELINE_GENERATORS for name in cls.scheduler_classes]
    raise CheckpointError(f"{MODEL_INDEX} of {where} names scheduler={entry!r}; supported schedulers: {known}")


def _is_diffusers_pipeline(source: str, revision: str | None, subfolder: str | None, download_kwargs: dict) -> bool:
    try:
        resolve_file(source, subpath(subfolder, MODEL_INDEX), revision, **download_kwargs)
    except CheckpointError:
        return False
    return True


def load_generator(repo_id_or_path: str | os.PathLike, revision: str | None = None, subfolder: str | None = None,
                   **download_kwargs) -> Generator:
    """Load a generator from a Hub repo (at `revision`) or a folder, or from `subfolder` of either, in eval mode with
    gradients off, through diffusers' `from_pretrained` (see hub_models/base.py): a diffusers model (config.json
    naming a class of REGISTRY in "_class_name", + diffusion_pytorch_model.safetensors), or, where there is no
    config.json but a model_index.json, a diffusers pipeline (hub_models/ddim.py, hub_models/consistency.py)."""
    source = resolve_source(repo_id_or_path)
    where = f"{repo_id_or_path}/{subfolder}" if subfolder else str(repo_id_or_path)
    try:
        config_file = resolve_file(source, subpath(subfolder, GENERATOR_CONFIG), revision, **download_kwargs)
    except CheckpointError:
        if not _is_diffusers_pipeline(source, revision, subfolder, download_kwargs):
            raise
        return load_pipeline_generator(source, revision=revision, subfolder=subfolder,
                                       **download_kwargs).eval().requires_grad_(False)
    config = read_json(config_file, f"{GENERATOR_CONFIG} of {where}")
    name = config.get("_class_name")
    if name is None and "generator_class" in config:
        raise CheckpointError(f"{where} is in the layout of pdetraversal before 0.2 (generator_class, model.safetensors); "
                              f"convert it with: python train/convert_generator.py {where}")
    if name not in REGISTRY:
        raise CheckpointError(f"{where}: config.json names _class_name={name!r}; known classes: {sorted(REGISTRY)}")
    gen = REGISTRY[name].from_pretrained(source, revision=revision, subfolder=subfolder, **download_kwargs)
    return gen.eval().requires_grad_(False)


def split_reference(name: str | os.PathLike) -> tuple[str, str | None]:
    """A folder or Hub repo, and the subfolder inside it: "owner/repo/sub/dir" (a Hub repo id has exactly one "/")
    is ("owner/repo", "sub/dir"); a folder, an embedded model or a plain repo id has no subfolder."""
    source = resolve_source(name)
    parts = str(name).split("/")
    looks_like_a_path = os.path.isabs(name) or parts[0] in (".", "..", EMBEDDED_DIR.name) or "" in parts
    if os.path.isdir(source) or len(parts) <= 2 or looks_like_a_path:
        return source, None
    return "/".join(parts[:2]), "/".join(parts[2:])


def load_flow_and_generator(potentials: str | os.PathLike, revision: str | None = None,
                            max_download_bytes: float | None = None, **download_kwargs):
    """Potentials (any method of `pdetraversal.baselines.METHODS`) from a Hub repo (at `revision`) or a folder, and
    the generator their config names, pinned to the revision recorded there. Either may be a subfolder of a repo,
    named "owner/repo/subfolder" (see split_reference), so one repo can hold a generator and its potentials. Raises
    CheckpointError if either cannot be loaded or the two do not fit together.

    With `max_download_bytes`, each Hub repo is first checked to need at most that much (see check_download_size).
    """
    from pdetraversal.baselines import load_traversal

    def pinned(source: str, rev: str | None, subfolder: str | None, files: tuple[str, ...]) -> str | None:
        if max_download_bytes is None or os.path.isdir(source):
            return rev
        return check_download_size(source, rev, max_download_bytes, tuple(subpath(subfolder, f) for f in files))

    source, subfolder = split_reference(potentials)
    flow = load_traversal(source, revision=pinned(source, revision, subfolder, (CONFIG_NAME, WEIGHTS_NAME)),
                          subfolder=subfolder, **download_kwargs)
    gen_name = flow.config.get("generator")
    if not gen_name:
        raise CheckpointError(f"the config of '{potentials}' names no generator")
    try:
        gen_source, gen_subfolder = split_reference(gen_name)
        # Either layout may be what is downloaded: a diffusers model's or a diffusers pipeline's.
        rev = pinned(gen_source, flow.config.get("generator_revision"), gen_subfolder,
                     (GENERATOR_CONFIG, GENERATOR_WEIGHTS, *PIPELINE_FILES))
        generator = load_generator(gen_source, rev, gen_subfolder, **download_kwargs)
    except CheckpointError as e:
        raise CheckpointError(f"the generator named in the config of '{potentials}': {e}") from e
    if generator.latent_dim != flow.latent_dim:
        raise CheckpointError(f"'{potentials}' has potentials over {flow.latent_dim} latent dimensions but its "
                              f"generator '{gen_name}' takes {generator.latent_dim}")
    return flow.eval(), generator


__all__ = ["load_flow_and_generator", "REGISTRY", "Generator", "MLPGenerator", "DSpritesVAE", "MNISTVAE", "SwirlVAE", "FaceDCGAN", "FashionVAE", "SNGANGenerator", "DDIMGenerator", "ConsistencyGenerator", "load_generator", "load_pipeline_generator", "split_reference", "resolve_source", "EMBEDDED_DIR"]
