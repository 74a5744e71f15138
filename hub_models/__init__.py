"""Generators loadable from the Hub or a folder, and the embedded default models in Hub layout."""
from __future__ import annotations

import os
from pathlib import Path

from pdetraversal.hub import CheckpointError, read_config

from .base import REGISTRY, Generator
from .mlp import MLPGenerator

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


__all__ = ["Generator", "MLPGenerator", "load_generator", "resolve_source", "EMBEDDED_DIR"]
