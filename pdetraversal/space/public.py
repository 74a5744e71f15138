"""What the Space, a public page, serves and shows (no paper equation): the folders it opens, the limits of a
request, the error type of a refused one, and error texts without this server's paths.

Local folders are served only from an allow-list: the shipped model folders under hub_models/ (and
hub_models/baselines/) and the default potentials' folder. Any other folder, and any source that is neither such a
folder nor a valid Hub repo id, is refused with one message that does not say whether the path exists; the generator
a Hub repo's config names must pass the same rule (`refuse_unserved`). ALLOW_LOCAL_ENV=1 serves any folder, for
local use. Error texts never carry this server's absolute paths: the repository root and the Hub cache are cut out
of them (`public_text`).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from huggingface_hub import constants as hub_constants
from huggingface_hub.utils import HFValidationError, validate_repo_id

from hub_models import resolve_source
from pdetraversal.hub import CheckpointError, check_download_size, read_config

# The checkout holding app.py, hub_models/ and bench/ (an installed copy: the site-packages folder holding hub_models).
REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_POTENTIALS = "hub_models/dsprites-vae-potentials"
MAX_STEPS, MAX_STEP_SIZE, MAX_SEED = 50, 5.0, 2**31 - 1
ALLOW_LOCAL_ENV = "PDETRAVERSAL_ALLOW_LOCAL_PATHS"  # "1": serve any local folder (local use, never a public Space)
REFUSED_LOCAL = "local folders other than the shipped models are not served here"


class RequestError(ValueError):
    """A request the Space refuses; `message` is the one line its page shows (app.py raises it as gr.Error)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def public_text(message: str) -> str:
    """`message` without this server's absolute paths: a file in the repository by its repo-relative name, a file of
    a Hub download by its name inside that repo (the message names the repo already), the rest of the cache as
    (Hub cache). Error texts of the checkpoint loaders name the files they opened; a public page must not."""
    cache = re.escape(os.path.abspath(hub_constants.HF_HUB_CACHE))
    message = re.sub(cache + r"[/\\]models--[^/\\\s'\"]+[/\\]snapshots[/\\][0-9a-f]+[/\\]", "", message)
    message = re.sub(cache + r"[^\s'\"]*", "(Hub cache)", message)
    for root in sorted({str(REPO_ROOT), os.path.realpath(REPO_ROOT)}, key=len, reverse=True):
        message = message.replace(root + os.sep, "")
        message = re.sub(re.escape(root) + r"(?![\w.-])", ".", message)  # the root itself, not /root-other
    return message


def shown_path(path: Path) -> str:
    """A path as the page shows it: relative to the repository where it lies inside it."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _check_public(name: str, allowed: set[Path]) -> bool:
    """Whether the public page may open `name` (a source or the generator a config names): an allowed folder, or a
    valid Hub repo id that is no local folder."""
    folder = resolve_source(name)
    if os.path.isdir(folder):
        return Path(folder).resolve() in allowed
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False  # refused like a folder: an answer must not tell an existing path from a missing one
    return True


def refuse_unserved(source: str, revision: str | None, allowed: set[Path] | None, max_download_bytes: float) -> None:
    """RequestError unless `source`, and for a Hub repo the generator its config names, may be served (see
    _check_public; `allowed` None: any folder). The Hub repo's size is checked (against `max_download_bytes`) before
    its config.json is read, as the loader does."""
    if allowed is None:
        return
    hint = f"{REFUSED_LOCAL}: enter a Hub repo id (user/name) or a shipped folder such as {SHIPPED_POTENTIALS}."
    if not _check_public(source, allowed):
        raise RequestError(hint[0].upper() + hint[1:])
    if os.path.isdir(resolve_source(source)):
        return  # a shipped folder: its generator is shipped too
    try:
        sha = check_download_size(source, revision, max_download_bytes)
        generator = read_config(source, sha).get("generator")
    except CheckpointError as e:
        raise RequestError(f"Could not load potentials from '{source}': {e}") from None
    if isinstance(generator, str) and generator and not _check_public(generator, allowed):
        raise RequestError(f"Could not load potentials from '{source}': the generator its config names: {hint}")
