"""Generators loadable from the Hub or a folder, and the embedded default models in Hub layout."""
from __future__ import annotations

import os
from pathlib import Path

from pdetraversal.hub import CONFIG_NAME, WEIGHTS_NAME, CheckpointError, check_download_size, read_config, resolve_file

from .base import REGISTRY, Generator
from .mlp import MLPGenerator
from .dsprites_vae import DSpritesVAE
from .mnist_vae import MNISTVAE
from .swirl import SwirlVAE
from .ddim import MODEL_INDEX, PIPELINE_FILES, DDIMGenerator

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


def _is_diffusers_pipeline(source: str, revision: str | None, download_kwargs: dict) -> bool:
    if os.path.isdir(source):
        return os.path.isfile(os.path.join(source, MODEL_INDEX))
    try:
        resolve_file(source, MODEL_INDEX, revision, **download_kwargs)
    except CheckpointError:
        return False
    return True


def load_generator(repo_id_or_path: str | os.PathLike, revision: str | None = None, **download_kwargs) -> Generator:
    """Load a generator from a Hub repo (at `revision`) or a folder, in eval mode with gradients off: our layout
    (config.json naming generator_class), or, where there is no config.json but a model_index.json, a diffusers
    pipeline as a DDIMGenerator."""
    source = resolve_source(repo_id_or_path)
    try:
        config = read_config(source, revision, **download_kwargs)
    except CheckpointError:
        # No config.json of ours: a diffusers pipeline (model_index.json) is a DDIM generator (hub_models/ddim.py).
        if not _is_diffusers_pipeline(source, revision, download_kwargs):
            raise
        return DDIMGenerator.from_pretrained(source, revision=revision, **download_kwargs).eval().requires_grad_(False)
    name = config.get("generator_class")
    if name not in REGISTRY:
        raise CheckpointError(
            f"{repo_id_or_path}: config.json names generator_class={name!r}; known classes: {sorted(REGISTRY)}"
        )
    gen = REGISTRY[name].from_pretrained(source, revision=revision, **download_kwargs)
    return gen.eval().requires_grad_(False)


def load_flow_and_generator(potentials: str | os.PathLike, revision: str | None = None,
                            max_download_bytes: float | None = None, **download_kwargs):
    """Potentials (any method of `pdetraversal.baselines.METHODS`) from a Hub repo (at `revision`) or a folder, and
    the generator their config names, pinned to the revision recorded there. Raises CheckpointError if either cannot
    be loaded or the two do not fit together.

    With `max_download_bytes`, each Hub repo is first checked to need at most that much (see check_download_size).
    """
    from pdetraversal.baselines import load_traversal

    def pinned(source: str, rev: str | None, files: tuple[str, ...] = (CONFIG_NAME, WEIGHTS_NAME)) -> str | None:
        if max_download_bytes is None or os.path.isdir(source):
            return rev
        return check_download_size(source, rev, max_download_bytes, files)

    source = resolve_source(potentials)
    flow = load_traversal(source, revision=pinned(source, revision), **download_kwargs)
    gen_name = flow.config.get("generator")
    if not gen_name:
        raise CheckpointError(f"the config of '{potentials}' names no generator")
    try:
        gen_source = resolve_source(gen_name)
        # Either layout may be what is downloaded: ours, or a diffusers pipeline's (hub_models/ddim.py).
        rev = pinned(gen_source, flow.config.get("generator_revision"), (CONFIG_NAME, WEIGHTS_NAME, *PIPELINE_FILES))
        generator = load_generator(gen_source, rev, **download_kwargs)
    except CheckpointError as e:
        raise CheckpointError(f"the generator named in the config of '{potentials}': {e}") from e
    if generator.latent_dim != flow.latent_dim:
        raise CheckpointError(f"'{potentials}' has potentials over {flow.latent_dim} latent dimensions but its "
                              f"generator '{gen_name}' takes {generator.latent_dim}")
    return flow.eval(), generator


__all__ = ["load_flow_and_generator", "REGISTRY", "Generator", "MLPGenerator", "DSpritesVAE", "MNISTVAE", "SwirlVAE", "DDIMGenerator", "load_generator", "resolve_source", "EMBEDDED_DIR"]
