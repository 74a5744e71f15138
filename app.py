"""Gradio Space: latent traversals as potential flows (Song et al., ICML 2023). UI wiring only.

The pictures come from `pdetraversal.plots`; loading (with a download cap for Hub repos) from `hub_models.load_flow_and_generator`.

    python app.py                      # http://0.0.0.0:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT override)
    PDETRAVERSAL_POTENTIALS=user/repo python app.py   # another default: a Hub repo id or a folder

API endpoints (gradio_client), arguments in this order:
    /traverse (seed, k, num_steps, step_size, source, revision, start) -> strip PNG, GIF, landscape PNG, trajectory PNG
    /overview (seed, num_steps, step_size, source, revision, start)    -> PNG, one row per potential k
    /load     (source, revision)                                        -> info text (Markdown)
    /models   ()                                                        -> the model picker's choices: a list of
              {"label", "source"}, the page's default first; any `source` of it goes to the endpoints above
    /compare  (seed, k, num_steps, step_size, source, revision, start) -> strips PNG (one row per method),
              path-shape PNG (one column per method), table (Markdown)
`/compare` runs the same z0 and k under every method there is for the loaded potentials' generator: the potentials,
the trained baselines shipped under hub_models/baselines/ for that generator, and the closed-form floors (SeFa, latent
axes, random directions) at the benchmark's matched step; the table adds each method's row of bench/results/report.json.
`source` is a Hub repo id or a folder; `revision` a branch, tag or commit ("" for the default); `start` "data" (z0
encodes a fresh training image, for generators that can: `Generator.data_latent`) or "prior" (z0 ~ N(0, I)); it
may be left out ("prior", as before this argument existed; the page itself preselects "data" where it can).

The page's model picker lists every shipped potentials folder, `hub_models/<generator>-potentials/` with a
config.json (found when the app is built: a new folder needs no code), as "<generator> (K=<K>)"; picking one fills
the source box, loads it as Load does and renders. The source box still takes any Hub repo id or folder.

Slow generators (a diffusion model decodes one image in ~10 UNet passes, hub_models/ddim.py): at load, the time of
one image's decode is measured, and every picture then decodes at most DECODE_BUDGET_S worth of frames. A strip of
2S + 1 frames over that budget shows fewer, evenly spaced, z0 and both ends kept (never fewer than 3 per strip); the
page and the load's info text say so. Frames are decoded in chunks of about PROGRESS_EVERY_S, each reported to
gr.Progress (unit "frames"). The paths themselves (trajectories, landscapes, path shapes) are never thinned.

The Space is a public page, so it serves local folders only from an allow-list: the shipped model folders under
hub_models/ (and hub_models/baselines/) and the default potentials' folder. Any other folder, and any source that is
neither such a folder nor a valid Hub repo id, is refused with one message that does not say whether the path exists;
the generator a Hub repo's config names must pass the same rule. `PDETRAVERSAL_ALLOW_LOCAL_PATHS=1` (or
`build_demo(allow_local_paths=True)`) serves any folder, for local use. Error texts never carry this server's absolute
paths: the repository root and the Hub cache are cut out of them (`_public`).

Every input arrives unconverted (the events run with preprocess=False) and is checked by the handlers, so a bad
value, also one that would break gradio's own conversion (a seed "abc", NaN), gets the handler's message. A rejected
request is logged as one warning line on the logger "pdetraversal.app", without a traceback. The page's Run checks the
controls once (a private step) and only then renders strip and overview side by side, so a bad click shows one
message; a page opens already rendered for its opening controls (computed once per set of controls).

Answers are cached (`OutputCache`, per ModelCache): the same potentials and controls give the same pictures, so a
repeated request is served without rendering. The matplotlib figures (landscape, trajectories, path shapes) are drawn
by a pool of spawned render processes, one per core (`Renderer`; PDETRAVERSAL_RENDER_PROCESSES=0 draws them in the
server process), while the request's own thread decodes its frames; each process keeps its figures and draws them
again (`plots.render`). bench/load.py measures the Space under concurrent users (bench/results/load.md).
"""
from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: it reads this at import

import atexit
import functools
import json
import logging
import math
import multiprocessing
import random
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import torch
from huggingface_hub import constants as hub_constants
from huggingface_hub.utils import HFValidationError, validate_repo_id
from PIL import Image, ImageDraw

from hub_models import load_flow_and_generator, resolve_source
from pdetraversal import PotentialFlow, plots
from pdetraversal.baselines import floors, load_traversal
from pdetraversal.hub import CheckpointError, check_download_size, read_config
from pdetraversal.metrics.path_shape import format_diagnostics, mean_step, path_diagnostics, path_shape
from pdetraversal.potentials import traverse_both_ways

log = logging.getLogger("pdetraversal.app")

REPO_ROOT = Path(__file__).resolve().parent
SHIPPED_POTENTIALS = "hub_models/dsprites-vae-potentials"
DEFAULT_POTENTIALS = os.environ.get("PDETRAVERSAL_POTENTIALS", SHIPPED_POTENTIALS)
MAX_HUB_DOWNLOAD_MB = 200  # refuse user-typed Hub repos whose weights + config exceed this (the Space's disk/RAM)
MAX_STEPS, MAX_STEP_SIZE, MAX_SEED = 50, 5.0, 2**31 - 1
CACHE_SIZE = 4  # (potentials, generator) pairs kept in memory
# Rendered answers kept per (endpoint, potentials, seed, k, steps, step size, start): a /traverse answer is ~2 MB of
# pixels, so 64 of them stay near 130 MB. A hit skips the traversal and every figure (bench/load.py --pool).
OUTPUT_CACHE_SIZE = 64
CORES = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
# The matplotlib figures are drawn in this many spawned processes (`Renderer`): drawing is Python-bound, so in the
# server's own process it held the GIL and ran one figure at a time however many cores there were.
# PDETRAVERSAL_RENDER_PROCESSES=0 draws them in this process.
RENDER_PROCESSES_ENV = "PDETRAVERSAL_RENDER_PROCESSES"


def _process_count(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit():
        raise ValueError(f"{name} must be a whole number of processes (0: none), got {value!r}")
    return int(value)


RENDER_PROCESSES = _process_count(RENDER_PROCESSES_ENV, CORES)
# Requests rendered at once (gradio's queue): two per core while figures go to render processes, since a request
# waiting on its figures leaves its core to another request's torch work; one per core when they are drawn here.
RENDER_CONCURRENCY = 2 * CORES if RENDER_PROCESSES > 0 else CORES
# matplotlib's font cache is shared and not thread-safe: two figures drawn at once in one process failed with
# "FT_Load_Glyph ... invalid outline" (and could take the process down) under bench/load.py. Figures drawn in this
# process (no render processes) are drawn one at a time.
_MATPLOTLIB = threading.Lock()
DIAGNOSTIC_STARTS = 64  # traversals per potential behind the path diagnostics shown on load
GIF_DIR = Path(tempfile.mkdtemp(prefix="pdetraversal-gifs-"))
atexit.register(shutil.rmtree, GIF_DIR, ignore_errors=True)  # one folder per process: gone when the process ends
GIF_MAX_AGE_S = 900  # gradio copies each returned GIF into its own cache at once; ours can go soon after
# Decoding per picture (strip, overview or comparison): about this many seconds at the per-image time measured at
# load. A fast VAE (ms per image) never reaches it; a diffusion model (~1 s per image on the Space's CPU) would take
# minutes for an overview's K·(2S + 1) frames.
DECODE_BUDGET_S = 20.0
MIN_FRAMES = 3  # a strip keeps at least its two ends and z0, whatever the budget
# One image's decode is timed at load (after a warm-up) up to this many times, stopping once this long was spent:
# the least is kept, since a shared machine only ever adds time (measured 1-10 ms for one 1-ms VAE decode).
DECODE_REPEATS, DECODE_TIMING_S = 3, 0.5
PROGRESS_EVERY_S = 1.0  # decode in chunks of about this long, each reported to gr.Progress
# ... and of at most this many latents: the overview's 168 dSprites frames decoded 1.3-1.7x faster in chunks of 64
# than in one batch (whose activations outgrow the CPU caches), to the same pixels; MNIST-sized images neither gain
# nor lose.
DECODE_CHUNK = 64
# The comparison view's sources; build_demo / ModelCache take others (tests point them at fixtures).
SHIPPED_DIR = REPO_ROOT / "hub_models"  # shipped potentials live in <name>-potentials for generator <name>
BASELINES_DIR = SHIPPED_DIR / "baselines"  # trained baselines, one folder each (config.json + model.safetensors)
REPORT_PATH = REPO_ROOT / "bench" / "results" / "report.json"  # written by bench/reproduce.py
ALLOW_LOCAL_ENV = "PDETRAVERSAL_ALLOW_LOCAL_PATHS"  # "1": serve any local folder (local use, never a public Space)
REFUSED_LOCAL = "local folders other than the shipped models are not served here"
# Strip frames at no less than 64 px (upscaled by whole factors below that, e.g. MNIST's 28 px to 84), shown at their
# pixel size: a frame shrunk by the page hides the small changes (a few degrees of rotation) a traversal makes.
STRIP_MIN_SIZE = 64
# The strip and overview keep their pixel size and scroll sideways when wider than the page; their images carry no
# toolbar, which would sit on the last frame / the top-right cell.
CSS = """
#strip .image-container, #overview .image-container, #compare-strips .image-container { overflow-x: auto; }
#strip .image-container > button, #overview .image-container > button, #compare-strips .image-container > button {
  width: max-content; min-width: 100%; }
#strip img, #overview img, #compare-strips img { max-width: none; width: auto; height: auto; object-fit: none; }
"""

HEADER = f"""
# Latent traversals as potential flows
A generator maps a latent code z to an image. This Space moves z along **learned potential flows**
(Song, Keller, Sebe, Welling, ICML 2023, [arXiv:2304.12944](https://arxiv.org/abs/2304.12944)):
each of K scalar potentials u<sup>k</sup>(z, t) defines a traversal z<sub>t+1</sub> = z<sub>t</sub> ± ∇<sub>z</sub>u<sup>k</sup>(z<sub>t</sub>, t)
that should change one thing about the image (shape, scale, rotation, position...).
**k** picks the potential; the **seed** picks the starting code z<sub>0</sub> (marked orange in the strips): the
code of a training image, for generators that can encode one, or a sample of the prior N(0, I).
Below the images: u<sup>k</sup>(·, t) on the plane through z<sub>0</sub> spanned by the path's two principal directions
(arrows: the gradient field the traversal follows) and the path's coordinates against t.
**Compare methods** (at the bottom) runs the same z<sub>0</sub> and k under the baselines and straight-line floors
for this generator, with their rows of the benchmark report.
Pick one of the shipped models, or load potentials from a folder or a Hub repo id (user-typed repos up to
{MAX_HUB_DOWNLOAD_MB} MB); the generator named in their config is loaded with them.
"""


@dataclass
class Method:
    """One traversal method of the comparison view."""
    name: str                  # as the view shows it
    model: torch.nn.Module     # anything with the traversal interface (pdetraversal.traversal.Traversal)
    report_label: str | None   # its row in report.json; None: not in the report
    page_step: bool = False    # True: the page's step-size slider; False: its own saved step (model.step_size)


@dataclass
class Loaded:
    flow: PotentialFlow
    generator: torch.nn.Module
    info: str
    start: str  # where the page starts z0: "data" when the generator can encode training images, else "prior"
    line_step: float = math.nan  # mean_step of the potentials from the diagnostic starts: the floors' step
    methods: list[Method] = field(default_factory=list)  # the potentials first, then baselines, then floors
    report: dict | None = None  # {"name", "path", "meta", "columns", "rows"}: this generator's report.json entry
    notes: list[str] = field(default_factory=list)  # what the comparison view left out, and why
    decode_s: float = 0.0  # seconds to decode one image, measured at load
    frame_budget: int = 2**31  # frames a picture may decode: DECODE_BUDGET_S / decode_s


def _key(source: str | None, revision: str | None) -> tuple[str, str | None]:
    return (source or "").strip(), (revision or "").strip() or None


class OutputCache:
    """Thread-safe LRU of rendered answers. A key starts with its (source, revision) key, so a fresh load of those
    potentials drops their answers (`drop`): a Hub repo's default branch may have moved. `hits` / `misses` count
    lookups (bench/load.py and the tests read them)."""

    def __init__(self, size: int = OUTPUT_CACHE_SIZE):
        self.size, self._items, self._lock = size, OrderedDict(), threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: tuple, valid=None):
        """The answer stored under `key`, or None; `valid(answer)` False also counts as a miss and drops it."""
        with self._lock:
            value = self._items.get(key)
            if value is not None and valid is not None and not valid(value):
                del self._items[key]
                value = None
            if value is None:
                self.misses += 1
            else:
                self.hits += 1
                self._items.move_to_end(key)
            return value

    def put(self, key: tuple, value) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def drop(self, source_key: tuple) -> None:
        with self._lock:
            for key in [key for key in self._items if key[1] == source_key]:
                del self._items[key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


class ModelCache:
    """LRU of loaded (potentials, generator) pairs keyed by (source, revision). The lock guards only the dict, so a
    slow download never stalls requests for models already loaded (two first requests may both load; harmless).

    `allow_local`: serve any local folder (True) or only the shipped ones and `also_allowed` (False); None reads
    PDETRAVERSAL_ALLOW_LOCAL_PATHS at each load. The last failure per key is kept for the page's info line."""

    def __init__(self, size: int = CACHE_SIZE, baselines_dir: str | Path | None = None,
                 report_path: str | Path | None = None, shipped_dir: str | Path | None = None,
                 allow_local: bool | None = None, also_allowed: tuple[str, ...] = ()):
        self.size, self._items, self._lock = size, OrderedDict(), threading.Lock()
        self._failures: OrderedDict[tuple, str] = OrderedDict()
        # None: the module constants, read at load time (so a monkeypatched constant is seen).
        self._places = {"baselines_dir": baselines_dir, "report_path": report_path, "shipped_dir": shipped_dir}
        self.allow_local, self.also_allowed = allow_local, tuple(also_allowed)
        self.outputs = OutputCache()  # the handlers' rendered answers for the potentials loaded here

    def get(self, source: str | None, revision: str | None = None) -> Loaded:
        key = _key(source, revision)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        try:
            if not key[0]:
                raise gr.Error("Enter a Hub repo id (user/name) or a folder of potentials (config.json + "
                               "model.safetensors).")
            loaded = _load(*key, allowed=self.allowed_folders(), **self._places)
        except gr.Error as e:
            with self._lock:
                self._failures[key] = str(e.message)
                while len(self._failures) > self.size:
                    self._failures.popitem(last=False)
            raise
        self.outputs.drop(key)  # answers rendered from an earlier load of this key may be stale
        with self._lock:
            self._failures.pop(key, None)
            self._items[key] = loaded
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return loaded

    def failure(self, source: str | None, revision: str | None = None) -> str | None:
        """Why the last load of (source, revision) failed; None if it did not (or is forgotten)."""
        with self._lock:
            return self._failures.get(_key(source, revision))

    def allowed_folders(self) -> set[Path] | None:
        """The resolved folders this cache may load from; None: any folder (local use)."""
        allow = self.allow_local
        if allow is None:
            allow = os.environ.get(ALLOW_LOCAL_ENV, "").strip().lower() in ("1", "true", "yes")
        if allow:
            return None
        places = self._places
        roots = [Path(SHIPPED_DIR if places["shipped_dir"] is None else places["shipped_dir"]),
                 Path(BASELINES_DIR if places["baselines_dir"] is None else places["baselines_dir"])]
        folders = {p.resolve() for root in roots if root.is_dir() for p in root.iterdir()
                   if (p / "config.json").is_file()}
        return folders | {Path(resolve_source(f)).resolve() for f in self.also_allowed
                          if os.path.isdir(resolve_source(f))}


def _public(message: str) -> str:
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


def _refuse_unserved(source: str, revision: str | None, allowed: set[Path] | None) -> None:
    """gr.Error unless `source`, and for a Hub repo the generator its config names, may be served (see _check_public).
    The Hub repo's size is checked before its config.json is read, as the loader does."""
    if allowed is None:
        return
    hint = f"{REFUSED_LOCAL}: enter a Hub repo id (user/name) or a shipped folder such as {SHIPPED_POTENTIALS}."
    if not _check_public(source, allowed):
        raise gr.Error(hint[0].upper() + hint[1:])
    if os.path.isdir(resolve_source(source)):
        return  # a shipped folder: its generator is shipped too
    try:
        sha = check_download_size(source, revision, MAX_HUB_DOWNLOAD_MB * 1e6)
        generator = read_config(source, sha).get("generator")
    except CheckpointError as e:
        raise gr.Error(f"Could not load potentials from '{source}': {e}") from None
    if isinstance(generator, str) and generator and not _check_public(generator, allowed):
        raise gr.Error(f"Could not load potentials from '{source}': the generator its config names: {hint}")


def _load(source: str, revision: str | None, allowed: set[Path] | None = None, baselines_dir=None,
          report_path=None, shipped_dir=None) -> Loaded:
    _refuse_unserved(source, revision, allowed)
    try:
        flow, generator = load_flow_and_generator(source, revision, max_download_bytes=MAX_HUB_DOWNLOAD_MB * 1e6)
    except (CheckpointError, ValueError, OSError) as e:
        raise gr.Error(f"Could not load potentials from '{source}': {e}") from None
    with torch.no_grad():
        warm_up = generator.decode(generator.sample_latent(1, seed=0))
    shape = tuple(warm_up.shape[1:])
    _channels_last(generator, warm_up)
    decode_s = _seconds_per_image(generator)
    frame_budget = int(min(DECODE_BUDGET_S / max(decode_s, 1e-9), 2**31))
    local = os.path.isdir(resolve_source(source))
    where = f"{source}@{revision}" if revision and not local else source
    if revision and local:
        where += f" (a folder: revision '{revision}' ignored)"
    info = (f"**{where}**: K = {flow.num_potentials} potentials over a {flow.latent_dim}-dim latent space, trained "
            f"for T = {flow.num_timesteps} steps of size {flow.step_size:g}. Generator: `{flow.config['generator']}` "
            f"({type(generator).__name__}, images {'×'.join(map(str, shape))}).")
    if frame_budget < flow.num_potentials * (2 * MAX_STEPS + 1):  # the biggest picture: the overview at MAX_STEPS
        info += (f"\n\n**Slow generator:** decoding one image took {_duration(decode_s)} here, so a picture decodes "
                 f"at most {frame_budget} frames (about {DECODE_BUDGET_S:g} s); longer traversals show fewer frames, "
                 "evenly spaced, with z<sub>0</sub> and both ends.")
    z0 = generator.data_latent(DIAGNOSTIC_STARTS, seed=0)
    start = "data" if z0 is not None else "prior"
    z0 = generator.sample_latent(DIAGNOSTIC_STARTS, seed=0) if z0 is None else z0
    info += (f"\n\nAlong the paths ({DIAGNOSTIC_STARTS} starts from the {'data' if start == 'data' else 'prior'}, "
             f"{flow.num_timesteps} steps; `pdetraversal.metrics.path_shape`): straightness 1 is a straight line; "
             "first / later ≪ 1 means the initial condition holds; the wave equation does work only where |u_tt| and "
             "|c²Δu| are clearly above 0 and |f| is much smaller than both.\n\n"
             + format_diagnostics(path_diagnostics(flow, z0)))
    loaded = Loaded(flow, generator, _public(info), start, line_step=mean_step(flow, z0), decode_s=decode_s,
                    frame_budget=frame_budget)
    _add_comparison(loaded, source, Path(BASELINES_DIR if baselines_dir is None else baselines_dir),
                    Path(REPORT_PATH if report_path is None else report_path),
                    Path(SHIPPED_DIR if shipped_dir is None else shipped_dir))
    return loaded


def _channels_last(generator, decoded: torch.Tensor) -> None:
    """Convolution weights in channels-last layout, kept if the generator still decodes latent seed 0 to `decoded`
    (up to 1e-4): on the CPU the shipped convolutional generators then decoded 10-40% faster, the VAEs to the same
    bits, the GANs within 5e-6. A generator that views a convolution's output as flat raises instead, and stays as
    it was."""
    if not any(p.dim() == 4 for p in generator.parameters()):
        return  # no convolutions: nothing to lay out
    generator.to(memory_format=torch.channels_last)
    try:
        with torch.no_grad():
            same = torch.allclose(generator.decode(generator.sample_latent(1, seed=0)), decoded, atol=1e-4)
    except RuntimeError:
        same = False
    if not same:
        generator.to(memory_format=torch.contiguous_format)


def _seconds_per_image(generator) -> float:
    """The least measured time of one image's decode, over DECODE_REPEATS tries or DECODE_TIMING_S of them
    (one for a generator slower than that), after the caller's warm-up decode of one image."""
    z = generator.sample_latent(1, seed=1)
    times = []
    with torch.no_grad():
        while len(times) < DECODE_REPEATS and sum(times) < DECODE_TIMING_S:
            start = time.perf_counter()
            generator.decode(z)
            times.append(time.perf_counter() - start)
    return min(times)


def _duration(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1e3:.0f} ms"


# ------------------------------------------------------------------------------------------- the model picker
def _model_label(config: dict, fallback: str) -> str:
    """"<generator> (K=<K>)": the name of the generator the potentials' config names, and their count."""
    generator = config.get("generator")
    name = Path(generator).name if isinstance(generator, str) and generator else fallback
    return f"{name} (K={config.get('num_potentials', '?')})"


def shipped_models(shipped_dir: str | Path | None = None) -> list[tuple[str, str]]:
    """(label, source) of every `<shipped_dir>/*-potentials/` holding a config.json, by folder name; source is
    what the source box takes (repo-relative inside the repository). A folder whose config does not read is left
    out with a warning in the log: the picker lists only what can load."""
    root = Path(SHIPPED_DIR if shipped_dir is None else shipped_dir)
    models, labels = [], set()
    for folder in sorted(root.glob("*-potentials")):
        if not (folder / "config.json").is_file():
            continue
        try:
            config = read_config(str(folder))
        except (CheckpointError, OSError, ValueError) as e:
            log.warning("model picker: %s left out: %s", _shown_path(folder), _public(str(e)))
            continue
        label = _model_label(config, folder.name)
        if label in labels:  # two folders for one generator and K: tell them apart by folder
            label += f" [{folder.name}]"
        labels.add(label)
        models.append((label, _shown_path(folder)))
    return models


def _same_source(a: str | None, b: str | None) -> bool:
    """Whether two sources name the same potentials: one folder, or one Hub repo id."""
    a, b = (a or "").strip(), (b or "").strip()
    fa, fb = resolve_source(a), resolve_source(b)
    if os.path.isdir(fa) and os.path.isdir(fb):
        return Path(fa).resolve() == Path(fb).resolve()
    return a == b


def _picker_choices(default_source: str, default: Loaded, shipped_dir) -> list[tuple[str, str]]:
    """The shipped models, the default potentials first (added under their source's name if not shipped)."""
    choices = shipped_models(shipped_dir)
    first = [c for c in choices if _same_source(c[1], default_source)]
    if not first:
        first = [(f"{_public(default_source)} (K={default.flow.num_potentials})", default_source)]
    return first + [c for c in choices if c not in first]


# ------------------------------------------------------------------------------------------- the comparison's methods
def _shown_path(path: Path) -> str:
    """A path as the view shows it: relative to the repository where it lies inside it."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _read_report(report_path: Path, generator_source: str) -> tuple[dict | None, str | None]:
    """This generator's entry of report.json as {"name", "path", "meta", "columns", "rows"}, or None and why not."""
    shown = _shown_path(report_path)
    if not report_path.is_file():
        return None, f"`{shown}` is not there (bench/reproduce.py writes it): no report columns."
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
        generators = report["generators"]
        for name, entry in generators.items():
            if entry["source"] == generator_source:
                columns = [str(c) for c in entry["columns"]]
                rows = {str(label): {"K": row.get("K"), "step": row.get("step"), "cells": list(row["cells"])}
                        for label, row in entry["rows"].items()}
                return {"name": name, "path": shown, "meta": dict(report.get("meta") or {}), "columns": columns,
                        "rows": rows}, None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        return None, f"`{shown}` could not be read ({type(e).__name__}: {e}): no report columns."
    return None, f"`{shown}` has no entry for the generator `{generator_source}`: no report columns."


def _add_comparison(loaded: Loaded, source: str, baselines_dir: Path, report_path: Path, shipped_dir: Path) -> None:
    """Fill `loaded.methods`, `.report` and `.notes`: once per load, since floors and baselines do not change."""
    flow, gen = loaded.flow, loaded.generator
    generator_source = flow.config["generator"]
    loaded.report, note = _read_report(report_path, generator_source)
    if note:
        loaded.notes.append(note)
    # The shipped potentials of generator <name> are <shipped_dir>/<name>-potentials (bench/reproduce.py's mapping).
    name = loaded.report["name"] if loaded.report else Path(str(generator_source)).name
    shipped = shipped_dir / f"{name}-potentials"
    folder = resolve_source(source)
    is_shipped = os.path.isdir(folder) and shipped.is_dir() and Path(folder).resolve() == shipped.resolve()
    loaded.methods.append(Method("potentials (loaded)", flow, "potential (shipped)" if is_shipped else None,
                                 page_step=True))

    if baselines_dir.is_dir():
        for folder in sorted(p for p in baselines_dir.iterdir() if (p / "config.json").is_file()):
            try:
                if read_config(str(folder)).get("generator") != generator_source:
                    continue  # a baseline for another generator
                model = load_traversal(str(folder))
            except (CheckpointError, ValueError, OSError, TypeError) as e:
                loaded.notes.append(f"baseline `{folder.name}` skipped: it does not load ({e}).")
                continue
            if model.latent_dim != gen.latent_dim:
                loaded.notes.append(f"baseline `{folder.name}` skipped: its latent_dim is {model.latent_dim}, the "
                                    f"generator's {gen.latent_dim}.")
                continue
            method = type(model).method_name  # the key load_traversal read from config.json
            loaded.methods.append(Method(f"{method} ({folder.name})", model, f"{method} (trained)"))

    # The floors exactly as bench/reproduce.py builds them: the potentials' K and T, their mean step from z_ref.
    for label, model in floors(gen, flow.num_potentials, int(flow.num_timesteps), loaded.line_step).items():
        loaded.methods.append(Method(label, model.eval(), label))


# ------------------------------------------------------------------------------------------- input checks
def _integer(value, name: str, low: int, high: int) -> int:
    try:
        number = float(str(value).split(":")[0]) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise gr.Error(f"{name} must be an integer from {low} to {high}, got {value!r}.") from None
    if not math.isfinite(number) or number != int(number) or not low <= number <= high:
        raise gr.Error(f"{name} must be an integer from {low} to {high}, got {value!r}.")
    return int(number)


def _step_size(value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not 0 < number <= MAX_STEP_SIZE:  # also false for NaN
        raise gr.Error(f"step size must lie in (0, {MAX_STEP_SIZE:g}], got {value!r}.")
    return number


def _k_choices(flow: PotentialFlow) -> list[tuple[str, int]]:
    return [(f"{k}: {flow.label(k)}", k) for k in range(flow.num_potentials)]


def _fresh_gif_path() -> Path:
    now = time.time()
    for old in GIF_DIR.glob("*.gif"):
        try:
            if now - old.stat().st_mtime > GIF_MAX_AGE_S:
                old.unlink()
        except FileNotFoundError:  # another request removed it first
            pass
    return GIF_DIR / f"traversal-{uuid.uuid4().hex[:12]}.gif"


def _start_latent(generator, seed: int, start) -> torch.Tensor:
    """z0 for the seed: a training image's code ("data") or a prior sample ("prior")."""
    if start not in ("data", "prior"):
        raise gr.Error(f"start must be 'data' or 'prior', got {start!r}.")
    z0 = generator.data_latent(1, seed=seed) if start == "data" else generator.sample_latent(1, seed=seed)
    if z0 is None:
        raise gr.Error(f"{type(generator).__name__} cannot encode training images: start from 'prior' instead.")
    return z0


@dataclass
class Inputs:
    """A request's controls, checked and converted."""
    loaded: Loaded
    seed: int
    k: int | None
    num_steps: int
    step_size: float
    z0: torch.Tensor


def _checked_controls(models: ModelCache, seed, k, num_steps, step_size, source, revision):
    """The checks before z0, in the page's order: -> (loaded, seed, k, num_steps, step_size); k=None: no k."""
    loaded = models.get(source, revision)
    seed = _integer(seed, "seed", 0, MAX_SEED)
    if k is not None:
        k = _integer(k, "k (potential index)", 0, loaded.flow.num_potentials - 1)
    return loaded, seed, k, _integer(num_steps, "number of steps", 1, MAX_STEPS), _step_size(step_size)


def _checked(models: ModelCache, seed, k, num_steps, step_size, source, revision, start) -> Inputs:
    """Every check the renderers make, in one place (the page runs it once before rendering); k=None: no k."""
    loaded, seed, k, num_steps, step_size = _checked_controls(models, seed, k, num_steps, step_size, source, revision)
    return Inputs(loaded, seed, k, num_steps, step_size, _start_latent(loaded.generator, seed, start))


def _cached(models: ModelCache, endpoint: str, seed, k, num_steps, step_size, source, revision, start, render,
            valid=None):
    """`render(Inputs)`'s answer for these controls, from models.outputs when it was rendered before.

    The key holds the checked values (seed "7" and 7 are one answer) and depends only on the potentials and the
    controls, since a seed fixes z0. It is looked up before z0 is computed (encoding a training image costs as much
    as a small traversal); an answer is only ever stored for controls that passed every check, start included."""
    loaded, seed, k, num_steps, step_size = _checked_controls(models, seed, k, num_steps, step_size, source, revision)
    key = (endpoint, _key(source, revision), seed, k, num_steps, step_size, start) if isinstance(start, str) else None
    answer = models.outputs.get(key, valid) if key else None
    if answer is not None:
        return answer, True
    given = Inputs(loaded, seed, k, num_steps, step_size, _start_latent(loaded.generator, seed, start))
    answer = render(given)
    if key:
        models.outputs.put(key, answer)
    return answer, False


def _copies(answer: tuple) -> tuple:
    """A stored answer as a caller may keep it: its images copied, so no two requests share one."""
    return tuple(a.copy() if isinstance(a, Image.Image) else a for a in answer)


class Renderer:
    """Draws figures (`plots.render`) in `processes` spawned processes, so the figures of concurrent requests use
    every core and leave this process's GIL to gradio and torch.

    The pool starts on first use (`start` starts it early); each process draws a landscape and a trajectory figure
    as it starts (`plots.render_process_start`), so no request pays for importing matplotlib or loading fonts. With
    0 processes, or once the pool could not start or a process died, figures are drawn in this process, one at a
    time (_MATPLOTLIB), and the reason is logged as one warning."""

    def __init__(self, processes: int):
        self.processes, self._pool, self._lock = processes, None, threading.Lock()
        self.in_process = processes < 1  # True: no pool (none asked for, or it failed)

    def start(self) -> None:
        with self._lock:
            if self._pool is not None or self.in_process:
                return
            try:
                self._pool = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=plots.render_process_start)
                for _ in range(self.processes):  # the pool starts a process per piece of work, up to `processes`
                    self._pool.submit(int)
            except (OSError, RuntimeError, ValueError) as e:  # e.g. no semaphores in a sandbox
                self._give_up(f"the render processes did not start ({type(e).__name__}: {e})")

    def wait_started(self, timeout: float = 120.0) -> bool:
        """Start the pool and wait until every process has started (and drawn its warm-up figures); False when
        that took longer than `timeout` or figures are drawn here. bench/load.py waits so before it measures."""
        self.start()
        pool, seen, deadline = self._pool, set(), time.monotonic() + timeout
        while pool is not None and len(seen) < self.processes and time.monotonic() < deadline:
            try:  # a process answers as soon as it is free: ask again until each has answered
                seen.update(f.result(max(0.0, deadline - time.monotonic()))
                            for f in [pool.submit(os.getpid) for _ in range(self.processes)])
            except Exception:  # a timeout or a broken pool: not started
                return False
        return pool is not None and len(seen) >= self.processes

    def submit(self, kind: str, *args, **kwargs):
        """Start drawing plots.render(kind, *args, **kwargs); -> a function that waits for it as an RGB PIL image
        (drawn here instead if its process died)."""
        self.start()
        pool = self._pool
        if pool is not None:
            try:
                drawn = pool.submit(plots.render, kind, *args, **kwargs)
            except (BrokenProcessPool, RuntimeError) as e:  # RuntimeError: the pool was shut down meanwhile
                self._failed(pool, e)
            else:
                def result() -> Image.Image:
                    try:
                        return Image.fromarray(drawn.result())
                    except BrokenProcessPool as e:
                        self._failed(pool, e)
                    return self._here(kind, *args, **kwargs)
                return result
        image = self._here(kind, *args, **kwargs)
        return lambda: image

    @staticmethod
    def _here(kind: str, *args, **kwargs) -> Image.Image:
        with _MATPLOTLIB:
            return Image.fromarray(plots.render(kind, *args, **kwargs))

    def _failed(self, pool: ProcessPoolExecutor, error: Exception) -> None:
        with self._lock:
            if self._pool is pool:  # the first request to see it says why; the others just draw here
                self._give_up(f"a render process failed ({type(error).__name__}: {error})")

    def _give_up(self, why: str) -> None:  # with self._lock held
        log.warning("%s: figures are drawn in the server process from now on", why)
        pool, self._pool, self.in_process = self._pool, None, True
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def shutdown(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


RENDERER = Renderer(RENDER_PROCESSES)
atexit.register(RENDERER.shutdown)


def _gif_still_there(answer: tuple) -> bool:
    """Whether a stored /traverse answer's GIF is still in GIF_DIR; touching it keeps _fresh_gif_path's sweep of
    old GIFs from removing it before gradio has copied it."""
    try:
        os.utime(answer[1])
        return True
    except FileNotFoundError:
        return False


# ------------------------------------------------------------------------------------------- frames within the budget
def frame_indices(num_steps: int, max_frames: int) -> torch.Tensor:
    """Which of a traversal's 2S + 1 frames (z0 at index S) to decode: all of them when they fit in `max_frames`,
    else an odd number 2m + 1 <= max(max_frames, MIN_FRAMES) evenly spaced from one end to the other, z0 in the
    middle."""
    total = 2 * num_steps + 1
    if max_frames >= total:
        return torch.arange(total)
    half = (max(max_frames, MIN_FRAMES) - 1) // 2
    # Symmetric about z0; the spacing S / m >= 1 keeps the rounded indices distinct.
    return torch.linspace(-num_steps, num_steps, 2 * half + 1).round().long() + num_steps


def _shown_frames(loaded: Loaded, num_steps: int, strips: int) -> torch.Tensor:
    """frame_indices for one of `strips` strips that share a picture's decode budget."""
    return frame_indices(num_steps, loaded.frame_budget // max(strips, 1))


def _decode(loaded: Loaded, path: torch.Tensor, progress=None) -> torch.Tensor:
    """(N, B, d) latents -> (N, B, C, H, W) images in [0, 1], in chunks of about PROGRESS_EVERY_S of decoding (at
    most DECODE_CHUNK latents), each reported as progress((done, total), unit="frames") when `progress` is given."""
    flat = path.reshape(-1, path.shape[-1])
    chunk = max(1, min(DECODE_CHUNK, int(PROGRESS_EVERY_S / max(loaded.decode_s, 1e-9))))
    images = []
    if progress is not None:
        progress((0, len(flat)), desc="Decoding frames", unit="frames")
    with torch.no_grad():
        for i in range(0, len(flat), chunk):
            images.append(loaded.generator.decode(flat[i:i + chunk]))
            if progress is not None:
                progress((min(i + chunk, len(flat)), len(flat)), desc="Decoding frames", unit="frames")
    images = torch.cat(images).clamp(0, 1)
    return images.reshape(*path.shape[:2], *images.shape[1:])


def frames_note(loaded: Loaded, num_steps: int) -> str:
    """What the page says under the strip when the budget thinned its frames or the overview's ("" when not)."""
    total = 2 * num_steps + 1
    strip = len(_shown_frames(loaded, num_steps, 1))
    row = len(_shown_frames(loaded, num_steps, loaded.flow.num_potentials))
    if strip == row == total:
        return ""
    return (f"**Frames capped:** one image takes {_duration(loaded.decode_s)} to decode with this generator, so a "
            f"picture decodes at most {loaded.frame_budget} frames (about {DECODE_BUDGET_S:g} s). Of the "
            f"traversal's {total} frames the strip shows {strip} and each overview row {row}, evenly spaced, with "
            "z<sub>0</sub> and both ends.")


# ------------------------------------------------------------------------------------------- handlers
def traverse(models: ModelCache, seed, k, num_steps, step_size, source, revision, start="prior", progress=None):
    """-> (strip image, GIF path, landscape image, trajectory image) for potential k from the seed's z0.
    `progress`: a gr.Progress (or any callable like it) told of each chunk of decoded frames."""
    answer, _ = _cached(models, "/traverse", seed, k, num_steps, step_size, source, revision, start,
                        functools.partial(_traverse, progress=progress), valid=_gif_still_there)
    return _copies(answer)


def _traverse(given: Inputs, progress=None):
    flow = given.loaded.flow
    k, num_steps, step_size, z0 = given.k, given.num_steps, given.step_size, given.z0
    # All K paths from z0 at once (cheap: no decoding) for the trajectory plot; column k is the one shown.
    num_potentials = flow.num_potentials
    paths = traverse_both_ways(flow, z0.expand(num_potentials, -1), torch.arange(num_potentials), num_steps, step_size)
    # The figures first: they are drawn in the render processes while this thread decodes the frames.
    land = plots.landscape_grid(flow, paths[:, k], k, plots.landscape_times(num_steps)).numpy()
    landscape = RENDERER.submit("landscape", land, k, f"{k}: {flow.label(k)}")
    trajectory = RENDERER.submit("trajectory", paths.numpy(), [flow.label(i) for i in range(num_potentials)],
                                 highlight=k, origin_index=num_steps)
    shown = _shown_frames(given.loaded, num_steps, 1)
    frames = _decode(given.loaded, paths[shown, k:k + 1], progress)[:, 0]
    strip = plots.image_strip(frames, min_size=STRIP_MIN_SIZE, highlight=len(shown) // 2)
    gif = plots.animated_gif(frames, _fresh_gif_path())
    landscape, trajectory = landscape(), trajectory()
    return strip, str(gif), landscape, trajectory


def overview(models: ModelCache, seed, num_steps, step_size, source, revision, start="prior", progress=None):
    """-> one image, a row per potential k, all from the seed's z0 (plots.overview's picture, with the rows' frames
    within the decode budget)."""
    answer, _ = _cached(models, "/overview", seed, None, num_steps, step_size, source, revision, start,
                        functools.partial(_overview, progress=progress))
    return _copies(answer)[0]


def _overview(given: Inputs, progress=None):
    flow, num_potentials = given.loaded.flow, given.loaded.flow.num_potentials
    paths = traverse_both_ways(flow, given.z0.expand(num_potentials, -1), torch.arange(num_potentials),
                               given.num_steps, given.step_size)
    shown = _shown_frames(given.loaded, given.num_steps, num_potentials)
    frames = _decode(given.loaded, paths[shown], progress)  # all K rows in one pass
    rows = [plots.image_strip(frames[:, i], min_size=STRIP_MIN_SIZE, highlight=len(shown) // 2)
            for i in range(num_potentials)]
    return (plots.grid(rows, [f"{i}: {flow.label(i)}" for i in range(num_potentials)]),)


def _cell(text) -> str:
    """A Markdown table cell: pipes escaped (the report's columns include |u_tt|)."""
    return str(text).replace("|", "\\|")


def _placeholder_strip(size: tuple[int, int], text: str) -> Image.Image:
    """A grey strip of the given (width, height) with `text`: stands in for a method that has no k-th path, so the
    picture keeps one row per method."""
    image = Image.new("RGB", size, plots.GAP_COLOUR)
    ImageDraw.Draw(image).text((8, size[1] / 2), text, fill="black", font=plots._font(16), anchor="lm")
    return image


def compare(models: ModelCache, seed, k, num_steps, step_size, source, revision, start="prior", progress=None):
    """-> (strips image, path-shape image, Markdown table): the seed's z0 and the k-th traversal under every method
    of the loaded generator (Loaded.methods), one strip row and one path-shape column per method."""
    answer, _ = _cached(models, "/compare", seed, k, num_steps, step_size, source, revision, start,
                        functools.partial(_compare, progress=progress))
    return _copies(answer)


def _compare(given: Inputs, progress=None):
    loaded = given.loaded
    k, num_steps, step_size, z0 = given.k, given.num_steps, given.step_size, given.z0

    paths, steps = [], []
    for method in loaded.methods:
        step = step_size if method.page_step else float(method.model.step_size)
        inside = k < method.model.num_potentials
        steps.append(step)
        paths.append(traverse_both_ways(method.model, z0, torch.tensor([k]), num_steps, step)[:, 0] if inside else None)
    drawn = [p for p in paths if p is not None]  # the potentials' own path is always there: k was checked above
    shown = _shown_frames(loaded, num_steps, len(drawn))
    frames = _decode(loaded, torch.stack(drawn, 1)[shown], progress)  # one decoding pass for all methods
    strips, notes, shapes, j = [], [], [], 0
    for method, path in zip(loaded.methods, paths):
        if path is None:
            notes.append(f"k = {k} out of range for this method (K = {method.model.num_potentials})")
            strips.append(None)
            shapes.append(None)
            continue
        strips.append(plots.image_strip(frames[:, j], min_size=STRIP_MIN_SIZE, highlight=len(shown) // 2))
        j += 1
        notes.append(None)
        shapes.append({name: float(v[0]) for name, v in path_shape(path[num_steps:, None]).items()})
    size = next(s for s in strips if s is not None).size
    rows = [s if s is not None else _placeholder_strip(size, n) for s, n in zip(strips, notes)]
    names = [m.name for m in loaded.methods]
    strip_image = plots.grid(rows, names)
    titles = [n if s is None else f"{n}\nstraightness (+ half) {s['straightness']:.3f}" for n, s in zip(names, shapes)]
    shape_image = RENDERER.submit("path_shape", [None if p is None else p.numpy() for p in paths], titles,
                                  origin_index=num_steps, notes=notes)()
    table = _compare_table(loaded, k, num_steps, steps, shapes, notes, len(shown))
    return strip_image, shape_image, _public(table)


def _compare_table(loaded: Loaded, k: int, num_steps: int, steps, shapes, notes, shown: int) -> str:
    report = loaded.report
    columns = report["columns"] if report else []
    header = ["method", "K", "step size", "this path: straightness", "turning (deg/step)", "first / later",
              "report row", *columns]
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    for method, step, shape, note in zip(loaded.methods, steps, shapes, notes):
        if shape is None:
            mine = [note, "-", "-"]
        else:
            ratio = shape["first_step"] / max(shape["later_step"], 1e-30)
            mine = [f"{shape['straightness']:.4f}", f"{shape['turning_deg']:.2f}", f"{ratio:.2f}"]
        row = report["rows"].get(method.report_label) if report and method.report_label else None
        if method.report_label is None:
            where = "not in the report: trained elsewhere"
        elif report is None:
            where = method.report_label + " (no report)"
        elif row is None:
            where = method.report_label + " (not in the report)"
        else:
            where = method.report_label
        cells = [(row["cells"][i] if row and i < len(row["cells"]) else "-") for i in range(len(columns))]
        lines.append("| " + " | ".join(_cell(c) for c in [method.name, method.model.num_potentials, f"{step:.4g}",
                                                          *mine, where, *cells]) + " |")
    text = [f"**k = {k}, {num_steps} steps each way from the same z<sub>0</sub>.** The potentials use the page's step "
            "size; every other method uses its own saved step size: the trained baselines the one they were trained "
            f"with, the straight-line floors (SeFa, axes, random) the potentials' mean step length "
            f"{loaded.line_step:.4g} (from {DIAGNOSTIC_STARTS} starts of seed 0, as bench/reproduce.py matches them). "
            "Straightness (chord / arc; 1 is a straight line), turning and first / later are for this traversal's "
            "+ half; the report's columns are its benchmark over many starts.", "", *lines, ""]
    if shown < 2 * num_steps + 1:
        text.insert(1, f"*Frames capped:* one image takes {_duration(loaded.decode_s)} to decode with this generator: "
                       f"each strip shows {shown} of its {2 * num_steps + 1} frames, evenly spaced (the paths and "
                       "their shapes are the full ones).")
        text.insert(1, "")
    if report:
        meta = report["meta"]
        seeds = ", ".join(map(str, meta.get("seeds", []))) or "?"
        text.append(f"Report columns: generator `{report['name']}` of `{report['path']}`, from "
                    f"`{meta.get('command', '?')}` (size {meta.get('size_name', '?')}, seeds {seeds}).")
        if any(m.report_label and m.report_label.endswith("(trained)") for m in loaded.methods):
            text[-1] += (" For the trained baselines the report's row is mean ± std over seeds; the shipped folder "
                         "is one of those fits.")
    if loaded.notes:
        text += ["", *(f"- {note}" for note in loaded.notes)]
    return "\n".join(text)


# ------------------------------------------------------------------------------------------- the UI
def _answering(endpoint: str, fn):
    """`fn` for gradio: a gr.Error it raises is logged as one line (which request, why), its text is made public
    (`_public`), and gradio prints no traceback for it. Other exceptions are bugs and keep gradio's traceback."""
    @functools.wraps(fn)  # gradio reads the API's parameter names from the signature (via __wrapped__)
    def answer(*args):
        try:
            return fn(*args)
        except gr.Error as e:
            message = _public(str(e.message))
            log.warning("rejected %s: %s", endpoint, " ".join(message.split()))
            raise gr.Error(message, print_exception=False) from None
    return answer


def build_demo(default_potentials: str | None = None, baselines_dir: str | Path | None = None,
               report_path: str | Path | None = None, shipped_dir: str | Path | None = None,
               allow_local_paths: bool | None = None) -> gr.Blocks:
    """The Blocks app; `default_potentials` overrides DEFAULT_POTENTIALS, the others BASELINES_DIR, REPORT_PATH and
    SHIPPED_DIR (tests point them at fixtures). `allow_local_paths`: serve any local folder (True), or only the shipped
    ones and the default potentials' folder (False); None reads PDETRAVERSAL_ALLOW_LOCAL_PATHS at each load.
    Serve it with `launch(demo, ...)`, which adds the page's CSS."""
    default_source = default_potentials or DEFAULT_POTENTIALS
    RENDERER.start()  # its processes start while the default potentials load
    models = ModelCache(baselines_dir=baselines_dir, report_path=report_path, shipped_dir=shipped_dir,
                        allow_local=allow_local_paths, also_allowed=(default_source,))
    try:
        default = models.get(default_source)
    except gr.Error as e:
        raise RuntimeError(f"The default potentials '{default_source}' do not load: {e.message} "
                           "(set PDETRAVERSAL_POTENTIALS to a folder or Hub repo id).") from None
    flow = default.flow
    choices = _picker_choices(default_source, default, shipped_dir)

    # Thin wrappers: gradio names the API parameters after these signatures, and hands each a gr.Progress (found by
    # its default value) that the decoding reports to.
    @functools.partial(_answering, "/traverse")
    def traverse_fn(seed, k, num_steps, step_size, source, revision, start, progress=gr.Progress()):
        return traverse(models, seed, k, num_steps, step_size, source, revision, start, progress)

    @functools.partial(_answering, "/overview")
    def overview_fn(seed, num_steps, step_size, source, revision, start, progress=gr.Progress()):
        return overview(models, seed, num_steps, step_size, source, revision, start, progress)

    @functools.partial(_answering, "/compare")
    def compare_fn(seed, k, num_steps, step_size, source, revision, start, progress=gr.Progress()):
        return compare(models, seed, k, num_steps, step_size, source, revision, start, progress)

    def models_fn() -> list[dict[str, str]]:
        """The model picker's choices, the page's default first: [{"label", "source"}]; pass a source to /load,
        /traverse, /overview or /compare."""
        return [{"label": label, "source": value} for label, value in choices]

    @functools.partial(_answering, "/load")
    def load_fn(source, revision):
        return models.get(source, revision).info

    @functools.partial(_answering, "Run")
    def check_fn(seed, k, num_steps, step_size, source, revision, start):
        # The page's Run checks once, then renders strip and overview side by side: one message for a bad click.
        _checked(models, seed, k, num_steps, step_size, source, revision, start)

    def after_load_fn(source, revision):  # runs after a successful load, from the cache
        loaded = models.get(source, revision)
        picked = next((value for _, value in choices if _same_source(value, source)), None)
        return gr.Dropdown(choices=_k_choices(loaded.flow), value=0), loaded.start, gr.Dropdown(value=picked)

    def note_fn(num_steps, source, revision):  # after a render: say whether its frames were capped
        try:
            return frames_note(models.get(source, revision), _integer(num_steps, "number of steps", 1, MAX_STEPS))
        except gr.Error:  # the render said why already
            return ""

    def load_failed_fn(source, revision):  # the info line must not go on describing the previous potentials
        why = models.failure(source, revision) or "see the message above"
        return f"**Not loaded:** {_public(why)}"

    opening: dict[tuple, tuple] = {}  # the pictures a page opens on, per controls: every visitor opens on the same

    @functools.partial(_answering, "page open")
    def opening_fn(seed, k, num_steps, step_size, source, revision, start, progress=gr.Progress()):
        key = tuple(str(v) for v in (seed, k, num_steps, step_size, source, revision, start))
        pictures = opening.get(key)
        if pictures is None or not Path(pictures[1]).is_file():  # its GIF ages out of GIF_DIR
            pictures = (*traverse(models, seed, k, num_steps, step_size, source, revision, start, progress),
                        overview(models, seed, num_steps, step_size, source, revision, start, progress))
            if len(opening) >= CACHE_SIZE:
                opening.clear()
            opening[key] = pictures
        return pictures

    with gr.Blocks(title="Potential-flow latent traversals") as demo:
        gr.Markdown(HEADER)
        picker = gr.Dropdown(choices=choices, value=choices[0][1], label="Model (shipped potentials)",
                             elem_id="picker")
        with gr.Row():
            source = gr.Textbox(value=default_source, label="Potentials: Hub repo id or folder", scale=3)
            revision = gr.Textbox(value="", label="Revision (branch, tag or commit; empty: default)", scale=1)
            load_btn = gr.Button("Load", scale=0)
        info = gr.Markdown(default.info, elem_id="info")
        with gr.Row():
            seed = gr.Number(value=0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed (z0)")
            seed_btn = gr.Button("Random seed", scale=0)
            # Custom values stay allowed so API calls can pass any k for the potentials they name;
            # the handler checks the range against those potentials.
            k = gr.Dropdown(choices=_k_choices(flow), value=0, label="Potential k", allow_custom_value=True)
            num_steps = gr.Slider(1, MAX_STEPS, value=min(flow.num_timesteps, MAX_STEPS), step=1,
                                  label="Steps each way")
            step_size = gr.Slider(0.01, MAX_STEP_SIZE, value=min(flow.step_size, MAX_STEP_SIZE), step=0.01,
                                  label="Step size")  # 0 is no step: the handler refuses it, so the slider too
            start = gr.Radio([("a training image, encoded", "data"), ("a prior sample N(0, I)", "prior")],
                             value="prior", label="Start z0 from")
        run_btn = gr.Button("Run", variant="primary")
        # Strip and overview carry their titles above them: a label badge would hide the first frames.
        gr.Markdown("**Traversal of potential k:** − end ← z<sub>0</sub> (between the orange bars) → + end. "
                    "The page opens on seed 0 and k = 0; press **Run** for other controls.")
        frames_info = gr.Markdown(frames_note(default, min(flow.num_timesteps, MAX_STEPS)), elem_id="frames-note")
        strip = gr.Image(type="pil", format="png", show_label=False, elem_id="strip", buttons=[])
        with gr.Row():
            gif = gr.Image(type="filepath", label="Animated GIF (download)", elem_id="gif",
                           buttons=["download", "fullscreen"], scale=1)
            landscape = gr.Image(type="pil", format="png", label="Potential landscape u^k(·, t)",
                                 elem_id="landscape", scale=3)
        trajectory = gr.Image(type="pil", format="png", label="Trajectories z_t against t (all k; selected in red)",
                              elem_id="trajectory")
        gr.Markdown("**All K potentials from the same z<sub>0</sub>**, one row each")
        overview_img = gr.Image(type="pil", format="png", show_label=False, elem_id="overview", buttons=[])

        gr.Markdown("## Compare methods\nThe seed's z<sub>0</sub> and potential k under every method there is for "
                    "this generator: the loaded potentials, the trained baselines shipped for it, and the "
                    "straight-line floors of the benchmark (SeFa, latent axes, random directions), one row each, "
                    "with their rows of the benchmark report. Uses the seed, k, steps, step size, start and "
                    "potentials above.")
        compare_btn = gr.Button("Compare")
        compare_strips = gr.Image(type="pil", format="png", show_label=False, elem_id="compare-strips", buttons=[])
        compare_shape = gr.Image(type="pil", format="png", label="Path shape per method", elem_id="compare-shape")
        compare_table = gr.Markdown(elem_id="compare-table")

        controls = [seed, k, num_steps, step_size, source, revision, start]
        pictures = [strip, gif, landscape, trajectory]
        # preprocess=False: the handlers get the values as sent and check them all (see the module docstring).
        raw = {"preprocess": False}
        seed_btn.click(lambda: random.randint(0, MAX_SEED), None, seed, queue=False, api_visibility="private")
        # The API's default start stays "prior"; each page opens on real images where the generator can encode them,
        # already rendered for the opening controls.
        opened = demo.load(lambda src, rev: models.get(src, rev).start, [source, revision], [start],
                           api_visibility="private")
        opened.success(opening_fn, controls, [*pictures, overview_img], api_visibility="private",
                       concurrency_id="render", **raw)
        opened.success(note_fn, [num_steps, source, revision], [frames_info], api_visibility="private", **raw)

        def rendering(checked, public: bool):
            """Strip and overview side by side (and the frames note) once `checked` succeeded."""
            visibility = "public" if public else "private"
            checked.success(traverse_fn, controls, pictures, api_name="traverse" if public else None,
                            api_visibility=visibility, concurrency_id="render", **raw)
            checked.success(overview_fn, [seed, num_steps, step_size, source, revision, start], [overview_img],
                            api_name="overview" if public else None, api_visibility=visibility,
                            concurrency_id="render", **raw)
            checked.success(note_fn, [num_steps, source, revision], [frames_info], api_visibility="private", **raw)

        # /load answers with the info text only; the k menu (and the picker) are set by a private follow-up step.
        def loading(trigger, api_name: str | None = None):
            """Load the source box's potentials when `trigger` fires; -> the step after a successful load."""
            loaded = trigger(load_fn, [source, revision], [info], api_name=api_name,
                             api_visibility="public" if api_name else "private", **raw)
            loaded.failure(load_failed_fn, [source, revision], [info], api_visibility="private")
            return loaded.success(after_load_fn, [source, revision], [k, start, picker], api_visibility="private")

        loading(load_btn.click, "load")
        loading(source.submit)
        # Picking a model is typing its source and loading it, then Run.
        picked = picker.input(lambda choice: (choice or "", ""), [picker], [source, revision], queue=False,
                              api_visibility="private")
        rendering(loading(picked.then).success(check_fn, controls, None, concurrency_limit=None,
                                               api_visibility="private", **raw), public=False)
        # All renderers share one group of RENDER_CONCURRENCY slots (one per core), whichever event asks.
        rendering(run_btn.click(check_fn, controls, None, concurrency_limit=None, api_visibility="private", **raw),
                  public=True)
        compare_btn.click(compare_fn, controls, [compare_strips, compare_shape, compare_table], api_name="compare",
                          concurrency_id="render", **raw)
        gr.api(models_fn, api_name="models", queue=False)
    demo.queue(default_concurrency_limit=RENDER_CONCURRENCY, max_size=16)
    return demo


def launch(demo: gr.Blocks, **launch_kwargs):
    """demo.launch with the page's CSS (gradio 6 takes CSS at launch, not in gr.Blocks)."""
    return demo.launch(css=CSS, **launch_kwargs)


if __name__ == "__main__":
    # A request is many small tensor ops: on the 2-core CPU one torch thread per request (two requests run at once)
    # measured up to 30x faster than two threads per request fighting for the cores (bench/bench_app.py --threads).
    torch.set_num_threads(int(os.environ.get("PDETRAVERSAL_TORCH_THREADS", "1")))
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # A Space is stopped with SIGTERM: leave through the exit handlers, which stop the render processes cleanly.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    launch(build_demo(), server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"))
