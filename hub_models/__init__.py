"""Generators loadable from the Hub or a folder, and the embedded default models in Hub layout."""
from __future__ import annotations

import os
from pathlib import Path

from pdetraversal.hub import CheckpointError, check_download_size, read_config

from .base import REGISTRY, Generator
from .mlp import MLPGenerator
from .dsprites_vae import DSpritesVAE
from .mnist_vae import MNISTVAE
from .swirl import SwirlVAE

EMBEDDED_DIR = Path(__file__).resolve().parent


def resolve_source(repo_id_or_path: str | os.PathLike) -> str:
    """A folder as given, else relative to the project root (for embedded paths like `hub_models/dsprites-vae`),
    else the string itself as a Hub repo id."""
    if os.path.isdir(repo_id_or_path):
        return str(repo_id_or_path)
    in_project = EMBEDDED_DIR.parent / repo_id_or_path
    if in_project.is_dir():
        return str(in_project)
    return str(repo_id_or_path)


def load_generator(repo_id_or_path: str | os.PathLike, revision: str | None = None, **download_kwargs) -> Generator:
    """Load a generator from a Hub repo (at `revision`) or a folder, in eval mode with gradients off."""
    source = resolve_source(repo_id_or_path)
    config = read_config(source, revision, **download_kwargs)
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

    def pinned(source: str, rev: str | None) -> str | None:
        if max_download_bytes is None or os.path.isdir(source):
            return rev
        return check_download_size(source, rev, max_download_bytes)

    source = resolve_source(potentials)
    flow = load_traversal(source, revision=pinned(source, revision), **download_kwargs)
    gen_name = flow.config.get("generator")
    if not gen_name:
        raise CheckpointError(f"the config of '{potentials}' names no generator")
    try:
        gen_source = resolve_source(gen_name)
        generator = load_generator(gen_source, pinned(gen_source, flow.config.get("generator_revision")), **download_kwargs)
    except CheckpointError as e:
        raise CheckpointError(f"the generator named in the config of '{potentials}': {e}") from e
    if generator.latent_dim != flow.latent_dim:
        raise CheckpointError(f"'{potentials}' has potentials over {flow.latent_dim} latent dimensions but its "
                              f"generator '{gen_name}' takes {generator.latent_dim}")
    return flow.eval(), generator


__all__ = ["load_flow_and_generator", "REGISTRY", "Generator", "MLPGenerator", "DSpritesVAE", "MNISTVAE", "SwirlVAE", "load_generator", "resolve_source", "EMBEDDED_DIR"]
