"""The Space's loaded models: (potentials, generator) pairs by source and revision, the rendered answers kept for
them, and the page's model picker (no paper equation).

A load (`ModelCache.get`) passes the public page's allow-list (`public.refuse_unserved`), loads the potentials and
the generator their config names (with a download cap for Hub repos: `hub_models.load_flow_and_generator`), times one
image's decode for the frame budget (`frames`), measures the path diagnostics shown in its info text
(`pdetraversal.metrics.path_shape`) and builds the comparison view's methods (`comparison.add_comparison`).

Answers are cached (`OutputCache`, one per ModelCache): the same potentials and controls give the same pictures, so
a repeated request is served without rendering. The picker lists every shipped potentials folder,
`hub_models/<generator>-potentials/` with a config.json (found when asked: a new folder needs no code), as
"<generator> (K=<K>)".
"""
from __future__ import annotations

import logging
import math
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hub_models import load_flow_and_generator, resolve_source
from pdetraversal import PotentialFlow
from pdetraversal.hub import CheckpointError, read_config
from pdetraversal.metrics.path_shape import format_diagnostics, mean_step, path_diagnostics

from . import frames
from .comparison import DIAGNOSTIC_STARTS, Method, add_comparison
from .public import ALLOW_LOCAL_ENV, MAX_STEPS, REPO_ROOT, RequestError, public_text, refuse_unserved, shown_path
from .render import Renderer

log = logging.getLogger("pdetraversal.app")

MAX_HUB_DOWNLOAD_MB = 200  # refuse user-typed Hub repos whose weights + config exceed this (the Space's disk/RAM)
CACHE_SIZE = 4  # (potentials, generator) pairs kept in memory
# Rendered answers kept per (endpoint, potentials, seed, k, steps, step size, start): a /traverse answer is ~2 MB of
# pixels, so 64 of them stay near 130 MB. A hit skips the traversal and every figure (bench/load.py --pool).
OUTPUT_CACHE_SIZE = 64
# The comparison view's sources; ModelCache takes others (tests point them at fixtures).
SHIPPED_DIR = REPO_ROOT / "hub_models"  # shipped potentials live in <name>-potentials for generator <name>
BASELINES_DIR = SHIPPED_DIR / "baselines"  # trained baselines, one folder each (config.json + model.safetensors)
REPORT_PATH = REPO_ROOT / "bench" / "results" / "report.json"  # written by bench/reproduce.py


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
    frame_budget: int = 2**31  # frames a picture may decode: frames.DECODE_BUDGET_S / decode_s


def source_key(source: str | None, revision: str | None) -> tuple[str, str | None]:
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
    PDETRAVERSAL_ALLOW_LOCAL_PATHS at each load. The last failure per key is kept for the page's info line.
    `outputs` keeps the handlers' rendered answers for the potentials loaded here; `renderer` draws their figures
    (default: in this process)."""

    def __init__(self, size: int = CACHE_SIZE, baselines_dir: str | Path | None = None,
                 report_path: str | Path | None = None, shipped_dir: str | Path | None = None,
                 allow_local: bool | None = None, also_allowed: tuple[str, ...] = (),
                 renderer: Renderer | None = None):
        self.size, self._items, self._lock = size, OrderedDict(), threading.Lock()
        self._failures: OrderedDict[tuple, str] = OrderedDict()
        # None: the module constants, read at load time (so a monkeypatched constant is seen).
        self._places = {"baselines_dir": baselines_dir, "report_path": report_path, "shipped_dir": shipped_dir}
        self.allow_local, self.also_allowed = allow_local, tuple(also_allowed)
        self.outputs = OutputCache()
        self.renderer = Renderer(0) if renderer is None else renderer

    def get(self, source: str | None, revision: str | None = None) -> Loaded:
        key = source_key(source, revision)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        try:
            if not key[0]:
                raise RequestError("Enter a Hub repo id (user/name) or a folder of potentials (config.json + "
                                   "model.safetensors).")
            loaded = _load(*key, allowed=self.allowed_folders(), **self._places)
        except RequestError as e:
            with self._lock:
                self._failures[key] = e.message
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
            return self._failures.get(source_key(source, revision))

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


def _load(source: str, revision: str | None, allowed: set[Path] | None = None, baselines_dir=None,
          report_path=None, shipped_dir=None) -> Loaded:
    refuse_unserved(source, revision, allowed, MAX_HUB_DOWNLOAD_MB * 1e6)
    try:
        flow, generator = load_flow_and_generator(source, revision, max_download_bytes=MAX_HUB_DOWNLOAD_MB * 1e6)
    except (CheckpointError, ValueError, OSError) as e:
        raise RequestError(f"Could not load potentials from '{source}': {e}") from None
    with torch.no_grad():
        warm_up = generator.decode(generator.sample_latent(1, seed=0))
    shape = tuple(warm_up.shape[1:])
    frames.channels_last(generator, warm_up)
    decode_s = frames.seconds_per_image(generator)
    frame_budget = frames.frame_budget(decode_s)
    local = os.path.isdir(resolve_source(source))
    where = f"{source}@{revision}" if revision and not local else source
    if revision and local:
        where += f" (a folder: revision '{revision}' ignored)"
    info = (f"**{where}**: K = {flow.num_potentials} potentials over a {flow.latent_dim}-dim latent space, trained "
            f"for T = {flow.num_timesteps} steps of size {flow.step_size:g}. Generator: `{flow.config['generator']}` "
            f"({type(generator).__name__}, images {'×'.join(map(str, shape))}).")
    if frame_budget < flow.num_potentials * (2 * MAX_STEPS + 1):  # the biggest picture: the overview at MAX_STEPS
        info += (f"\n\n**Slow generator:** decoding one image took {frames.duration_text(decode_s)} here, so a "
                 f"picture decodes at most {frame_budget} frames (about {frames.DECODE_BUDGET_S:g} s); longer "
                 "traversals show fewer frames, evenly spaced, with z<sub>0</sub> and both ends.")
    z0 = generator.data_latent(DIAGNOSTIC_STARTS, seed=0)
    start = "data" if z0 is not None else "prior"
    z0 = generator.sample_latent(DIAGNOSTIC_STARTS, seed=0) if z0 is None else z0
    info += (f"\n\nAlong the paths ({DIAGNOSTIC_STARTS} starts from the {'data' if start == 'data' else 'prior'}, "
             f"{flow.num_timesteps} steps; `pdetraversal.metrics.path_shape`): straightness 1 is a straight line; "
             "first / later ≪ 1 means the initial condition holds; the wave equation does work only where |u_tt| and "
             "|c²Δu| are clearly above 0 and |f| is much smaller than both.\n\n"
             + format_diagnostics(path_diagnostics(flow, z0)))
    loaded = Loaded(flow, generator, public_text(info), start, line_step=mean_step(flow, z0), decode_s=decode_s,
                    frame_budget=frame_budget)
    add_comparison(loaded, source, Path(BASELINES_DIR if baselines_dir is None else baselines_dir),
                   Path(REPORT_PATH if report_path is None else report_path),
                   Path(SHIPPED_DIR if shipped_dir is None else shipped_dir))
    return loaded


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
            log.warning("model picker: %s left out: %s", shown_path(folder), public_text(str(e)))
            continue
        label = _model_label(config, folder.name)
        if label in labels:  # two folders for one generator and K: tell them apart by folder
            label += f" [{folder.name}]"
        labels.add(label)
        models.append((label, shown_path(folder)))
    return models


def same_source(a: str | None, b: str | None) -> bool:
    """Whether two sources name the same potentials: one folder, or one Hub repo id."""
    a, b = (a or "").strip(), (b or "").strip()
    fa, fb = resolve_source(a), resolve_source(b)
    if os.path.isdir(fa) and os.path.isdir(fb):
        return Path(fa).resolve() == Path(fb).resolve()
    return a == b


def picker_choices(default_source: str, default: Loaded, shipped_dir=None) -> list[tuple[str, str]]:
    """The shipped models, the default potentials first (added under their source's name if not shipped)."""
    choices = shipped_models(shipped_dir)
    first = [c for c in choices if same_source(c[1], default_source)]
    if not first:
        first = [(f"{public_text(default_source)} (K={default.flow.num_potentials})", default_source)]
    return first + [c for c in choices if c not in first]
