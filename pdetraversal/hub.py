"""Hub I/O shared by potentials and generators: safetensors only, strict keys, loud errors.

No paper equation lives here. Every Hub operation goes through huggingface_hub's public API
(`hf_hub_download`, `HfApi.model_info`, `PyTorchModelHubMixin`); nothing here speaks HTTP itself.

Three guards for files named by strangers (the Space loads any repo id typed into it):
- an unreachable Hub is found with one request (`HfApi.model_info`, which does not retry) before `hf_hub_download`,
  which would retry for about 20 s before falling back to the local cache; then only the cache is used;
- the tensor shapes in the safetensors header (read without loading any data) must match the model that config.json
  describes, built first on the meta device (no memory): a 365-byte config asking for a 10^12-row layer is refused
  before anything is allocated;
- weights that are not finite (NaN, inf) are refused.
"""
from __future__ import annotations

import json
import os
import re
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx2  # huggingface_hub's HTTP client (a pinned dependency of it): its TransportError is "no connection"
import safetensors.torch
import torch
from huggingface_hub import HfApi, PyTorchModelHubMixin, constants, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors import SafetensorError, safe_open

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
COMMIT_SHA = re.compile(r"[0-9a-f]{40}")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: missing, corrupt, or not matching the model."""


def _unreachable(where: str) -> CheckpointError:
    return CheckpointError(f"the Hub cannot be reached and {where} is not in the local cache "
                           "(set HF_HUB_OFFLINE=1 to skip the retries)")


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
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as e:  # before EntryNotFoundError: it subclasses it
        if constants.HF_HUB_OFFLINE:
            raise CheckpointError(f"HF_HUB_OFFLINE is set and {what} of {where} is not in the local cache") from e
        raise _unreachable(where) from e
    except EntryNotFoundError as e:
        raise CheckpointError(f"{what} not found in Hub repo {where}") from e
    except httpx2.TransportError as e:  # connection refused, unknown host, timeout
        raise _unreachable(where) from e
    except (HfHubHTTPError, OSError) as e:
        raise CheckpointError(f"could not get {what} of {where} from the Hub: {e}") from e


def resolve_file(repo_id_or_path: str | os.PathLike, filename: str, revision: str | None = None, **download_kwargs) -> str:
    """Local path of `filename` from a folder or a Hub repo (at `revision`), with a clear error if it is absent."""
    if os.path.isdir(repo_id_or_path):
        path = Path(repo_id_or_path) / filename
        if not path.is_file():
            raise CheckpointError(f"{filename} not found in folder {repo_id_or_path}")
        return str(path)
    repo_id = str(repo_id_or_path)
    with _hub_errors(repo_id, revision, filename):
        if revision and COMMIT_SHA.fullmatch(revision) and not download_kwargs.get("force_download"):
            # A commit's files never change, so one already in the cache is served with no request at all (loads
            # pinned to a sha, as potentials pin their generator and the Space every repo, asked the Hub once per
            # file whether it was reachable).
            with suppress(LocalEntryNotFoundError):
                return hf_hub_download(repo_id, filename, revision=revision,
                                       **{**download_kwargs, "local_files_only": True})
        if not constants.HF_HUB_OFFLINE and not download_kwargs.get("local_files_only"):
            try:  # one request, no retries: is the Hub there at all?
                HfApi().model_info(repo_id, revision=revision, token=download_kwargs.get("token"))
            except httpx2.TransportError:
                return hf_hub_download(repo_id, filename, revision=revision,
                                       **{**download_kwargs, "local_files_only": True})
        return hf_hub_download(repo_id, filename, revision=revision, **download_kwargs)


def check_download_size(repo_id: str, revision: str | None, max_bytes: float,
                        filenames: tuple[str, ...] = (CONFIG_NAME, WEIGHTS_NAME)) -> str:
    """The commit sha of repo_id@revision, after checking that `filenames` there add up to at most `max_bytes`.

    For servers that load repos named by strangers (the Space): pass the sha on as the revision, so what is
    downloaded is what was measured. Offline (HF_HUB_OFFLINE) nothing is downloaded: the revision is returned as it is.
    """
    if constants.HF_HUB_OFFLINE:
        return revision
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


def in_subfolder(subfolder: str | None, filename: str) -> str:
    """`filename` inside `subfolder` of a repo, in the Hub's "/" form."""
    return f"{subfolder.strip('/')}/{filename}" if subfolder else filename


def read_json(path: str, what: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{what} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{what} is not a JSON object")
    return data


def read_config(repo_id_or_path: str | os.PathLike, revision: str | None = None, subfolder: str | None = None,
                **download_kwargs) -> dict:
    path = resolve_file(repo_id_or_path, in_subfolder(subfolder, CONFIG_NAME), revision, **download_kwargs)
    return read_json(path, f"{CONFIG_NAME} of {repo_id_or_path}")


def header_shapes(weights_file: str) -> dict[str, tuple[int, ...]]:
    """The tensor shapes a safetensors file declares, from its header alone (no tensor data is read)."""
    try:
        with safe_open(weights_file, framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{weights_file} is not a readable safetensors file: {e}") from e


def _check_shapes(name: str, weights_file: str, found: dict, expected: dict) -> None:
    problems = [f"missing key '{k}'" for k in expected if k not in found]
    problems += [f"unexpected key '{k}'" for k in found if k not in expected]
    problems += [f"key '{k}' has shape {found[k]}, the model expects {expected[k]}"
                 for k in expected if k in found and found[k] != expected[k]]
    if problems:
        more = f"; and {len(problems) - 4} more" if len(problems) > 4 else ""
        raise CheckpointError(f"checkpoint {weights_file} does not match {name}: " + "; ".join(problems[:4]) + more)


def load_state_strict(model: torch.nn.Module, weights_file: str, map_location: str = "cpu") -> None:
    """Load a safetensors file into `model`, naming every missing, unexpected or wrongly shaped tensor, and
    refusing tensors that hold NaN or inf."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    _check_shapes(type(model).__name__, weights_file, header_shapes(weights_file), expected)
    try:
        state = safetensors.torch.load_file(weights_file, device=map_location)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{weights_file} is not a readable safetensors file: {e}") from e
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"checkpoint {weights_file} holds non-finite values (NaN or inf) in "
                              + ", ".join(f"'{k}'" for k in bad) + ": refusing to load it")
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
        result = super().save_pretrained(save_directory, config=config, **kwargs)
        # safetensors writes through a private temp file (mode 0600); give the weights the mode of the config.json
        # written beside them (the umask's), so whoever may read the config may read the weights.
        weights, config_file = Path(save_directory) / WEIGHTS_NAME, Path(save_directory) / CONFIG_NAME
        if weights.is_file() and config_file.is_file():
            weights.chmod(config_file.stat().st_mode & 0o777)
        return result

    @classmethod
    def _from_pretrained(cls, *, model_id, revision, cache_dir, force_download, local_files_only, token,
                         map_location: str = "cpu", strict: bool = True, **model_kwargs):
        if not strict:
            raise ValueError(f"{cls.__name__} always loads strictly; strict=False is not supported")
        weights = resolve_file(model_id, WEIGHTS_NAME, revision, cache_dir=cache_dir, force_download=force_download,
                               local_files_only=local_files_only, token=token)
        # The sizes in config.json are a stranger's word: build the model on the meta device first (shapes, no
        # memory) and compare with the file's header before anything real is allocated.
        with torch.device("meta"):
            skeleton = cls(**model_kwargs)
        _check_shapes(cls.__name__, weights, header_shapes(weights),
                      {k: tuple(v.shape) for k, v in skeleton.state_dict().items()})
        del skeleton
        model = cls(**model_kwargs)
        load_state_strict(model, weights, map_location)
        model.eval()
        return model

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *, revision: str | None = None,
                        subfolder: str | None = None, **kwargs):
        """Load strictly from a folder or Hub repo (at `revision`), or from `subfolder` of either."""
        download = {k: kwargs[k] for k in ("cache_dir", "force_download", "local_files_only", "token") if k in kwargs}
        # Fetch config.json through our resolver first, so an unknown repo or revision gets our message.
        read_config(pretrained_model_name_or_path, revision, subfolder, **download)
        if subfolder:  # the mixin reads only a repo's root: fetch both files, then load the local folder they are in
            weights = resolve_file(pretrained_model_name_or_path, in_subfolder(subfolder, WEIGHTS_NAME), revision,
                                   **download)
            return super().from_pretrained(str(Path(weights).parent), **kwargs)
        return super().from_pretrained(pretrained_model_name_or_path, revision=revision, **kwargs)
