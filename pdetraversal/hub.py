"""Hub I/O shared by potentials and generators: safetensors only, strict keys, loud errors.

No paper equation lives here. Every Hub operation goes through huggingface_hub's public API
(`hf_hub_download`, `PyTorchModelHubMixin`); nothing here speaks HTTP itself.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

import safetensors.torch
import torch
from huggingface_hub import HfApi, PyTorchModelHubMixin, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors import SafetensorError

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: missing, corrupt, or not matching the model."""


@contextmanager
def _hub_errors(repo_id: str, revision: str | None, what: str):
    """Turn huggingface_hub's exceptions for `what` in repo_id@revision into one-line CheckpointErrors."""
    where = f"{repo_id}@{revision}" if revision else repo_id
    try:
        yield
    except HFValidationError as e:
        raise CheckpointError(f"'{repo_id}' is neither an existing folder nor a valid Hub repo id") from e
    except RepositoryNotFoundError as e:
        raise CheckpointError(f"Hub repo '{repo_id}' not found (and no such local folder)") from e
    except RevisionNotFoundError as e:
        raise CheckpointError(f"revision '{revision}' not found in Hub repo '{repo_id}'") from e
    except EntryNotFoundError as e:
        raise CheckpointError(f"{what} not found in Hub repo {where}") from e
    except LocalEntryNotFoundError as e:
        raise CheckpointError(f"{what} of {where} is not in the local cache and the Hub cannot be reached") from e
    except (HfHubHTTPError, OSError) as e:
        raise CheckpointError(f"could not get {what} of {where} from the Hub: {e}") from e


def resolve_file(repo_id_or_path: str | os.PathLike, filename: str, revision: str | None = None, **download_kwargs) -> str:
    """Local path of `filename` from a folder or a Hub repo (at `revision`), with a clear error if it is absent."""
    if os.path.isdir(repo_id_or_path):
        path = Path(repo_id_or_path) / filename
        if not path.is_file():
            raise CheckpointError(f"{filename} not found in folder {repo_id_or_path}")
        return str(path)
    with _hub_errors(str(repo_id_or_path), revision, filename):
        return hf_hub_download(str(repo_id_or_path), filename, revision=revision, **download_kwargs)


def check_download_size(repo_id: str, revision: str | None, max_bytes: float,
                        filenames: tuple[str, ...] = (CONFIG_NAME, WEIGHTS_NAME)) -> str:
    """The commit sha of repo_id@revision, after checking that `filenames` there add up to at most `max_bytes`.

    For servers that load repos named by strangers (the Space): pass the sha on as the revision, so what is
    downloaded is what was measured.
    """
    with _hub_errors(repo_id, revision, "the file list"):
        info = HfApi().model_info(repo_id, revision=revision, files_metadata=True)
    where = f"{repo_id}@{revision}" if revision else repo_id
    sizes = [s.size for s in info.siblings or [] if s.rfilename in filenames]
    if any(size is None for size in sizes):
        raise CheckpointError(f"the Hub did not report file sizes for {where}; refusing to download it")
    total = sum(sizes)
    if total > max_bytes:
        raise CheckpointError(f"{where} needs {total / 1e6:.2f} MB, over the download limit of {max_bytes / 1e6:g} MB")
    return info.sha


def read_config(repo_id_or_path: str | os.PathLike, revision: str | None = None, **download_kwargs) -> dict:
    path = resolve_file(repo_id_or_path, CONFIG_NAME, revision, **download_kwargs)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{CONFIG_NAME} of {repo_id_or_path} is not valid JSON: {e}") from e


def load_state_strict(model: torch.nn.Module, weights_file: str, map_location: str = "cpu") -> None:
    """Load a safetensors file into `model`, naming every missing, unexpected or wrongly shaped tensor."""
    try:
        state = safetensors.torch.load_file(weights_file, device=map_location)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{weights_file} is not a readable safetensors file: {e}") from e
    expected = model.state_dict()
    problems = [f"missing key '{k}'" for k in expected if k not in state]
    problems += [f"unexpected key '{k}'" for k in state if k not in expected]
    problems += [
        f"key '{k}' has shape {tuple(state[k].shape)}, the model expects {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if problems:
        raise CheckpointError(f"checkpoint {weights_file} does not match {type(model).__name__}: " + "; ".join(problems))
    model.load_state_dict(state, strict=True)


class HubModule(PyTorchModelHubMixin):
    """PyTorchModelHubMixin that loads only `model.safetensors`, always strictly, with readable errors.

    The stock mixin falls back to pickled `pytorch_model.bin` and loads with strict=False; we want neither.
    A traversal method sets `method_name` (its key in `pdetraversal.baselines.METHODS`): save_pretrained then also
    writes `method` into config.json, so `load_traversal` can pick the class. No constructor takes `method`, so
    from_pretrained (which passes on only the config keys that the constructor names) ignores it.
    """

    method_name: str | None = None

    def save_pretrained(self, save_directory, *, config=None, **kwargs):
        if self.method_name is not None:
            config = {**(config or self._hub_mixin_config or {}), "method": self.method_name}
        return super().save_pretrained(save_directory, config=config, **kwargs)

    @classmethod
    def _from_pretrained(cls, *, model_id, revision, cache_dir, force_download, local_files_only, token,
                         map_location: str = "cpu", strict: bool = True, **model_kwargs):
        if not strict:
            raise ValueError(f"{cls.__name__} always loads strictly; strict=False is not supported")
        model = cls(**model_kwargs)
        weights = resolve_file(model_id, WEIGHTS_NAME, revision, cache_dir=cache_dir, force_download=force_download,
                               local_files_only=local_files_only, token=token)
        load_state_strict(model, weights, map_location)
        model.eval()
        return model

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *, revision: str | None = None, **kwargs):
        # Fetch config.json through our resolver first, so an unknown repo or revision gets our message.
        read_config(pretrained_model_name_or_path, revision,
                    **{k: kwargs[k] for k in ("cache_dir", "force_download", "local_files_only", "token") if k in kwargs})
        return super().from_pretrained(pretrained_model_name_or_path, revision=revision, **kwargs)
