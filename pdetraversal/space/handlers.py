"""The Space's requests: input checks and the /traverse, /overview and /compare answers (the traversals are the
paper's eq. 2 paths, `pdetraversal.potentials.traverse_both_ways`; the pictures come from `pdetraversal.plots`).

Every input arrives unconverted (app.py's events run with preprocess=False) and is checked here, so a bad value,
also one that would break gradio's own conversion (a seed "abc", NaN), gets its one-line `RequestError`. An answer
is looked up in the ModelCache's OutputCache before it is rendered (`_cached`) and stored after; its matplotlib
figures go to the cache's Renderer while the request's own thread decodes its frames within the budget (`frames`).
A `progress` argument is any callable like gr.Progress, told of each chunk of decoded frames.
"""
from __future__ import annotations

import atexit
import functools
import math
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from pdetraversal import plots
from pdetraversal.potentials import traverse_both_ways

from . import frames
from .comparison import compare_pictures
from .models import Loaded, ModelCache, source_key
from .public import MAX_SEED, MAX_STEP_SIZE, MAX_STEPS, RequestError

GIF_DIR = Path(tempfile.mkdtemp(prefix="pdetraversal-gifs-"))
atexit.register(shutil.rmtree, GIF_DIR, ignore_errors=True)  # one folder per process: gone when the process ends
GIF_MAX_AGE_S = 900  # gradio copies each returned GIF into its own cache at once; ours can go soon after


# ------------------------------------------------------------------------------------------- input checks
def checked_integer(value, name: str, low: int, high: int) -> int:
    try:
        number = float(str(value).split(":")[0]) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise RequestError(f"{name} must be an integer from {low} to {high}, got {value!r}.") from None
    if not math.isfinite(number) or number != int(number) or not low <= number <= high:
        raise RequestError(f"{name} must be an integer from {low} to {high}, got {value!r}.")
    return int(number)


def _step_size(value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not 0 < number <= MAX_STEP_SIZE:  # also false for NaN
        raise RequestError(f"step size must lie in (0, {MAX_STEP_SIZE:g}], got {value!r}.")
    return number


def _start_latent(generator, seed: int, start) -> torch.Tensor:
    """z0 for the seed: a training image's code ("data") or a prior sample ("prior")."""
    if start not in ("data", "prior"):
        raise RequestError(f"start must be 'data' or 'prior', got {start!r}.")
    z0 = generator.data_latent(1, seed=seed) if start == "data" else generator.sample_latent(1, seed=seed)
    if z0 is None:
        raise RequestError(f"{type(generator).__name__} cannot encode training images: start from 'prior' instead.")
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
    seed = checked_integer(seed, "seed", 0, MAX_SEED)
    if k is not None:
        k = checked_integer(k, "k (potential index)", 0, loaded.flow.num_potentials - 1)
    return loaded, seed, k, checked_integer(num_steps, "number of steps", 1, MAX_STEPS), _step_size(step_size)


def checked(models: ModelCache, seed, k, num_steps, step_size, source, revision, start) -> Inputs:
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
    key = ((endpoint, source_key(source, revision), seed, k, num_steps, step_size, start)
           if isinstance(start, str) else None)
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


def _fresh_gif_path() -> Path:
    now = time.time()
    for old in GIF_DIR.glob("*.gif"):
        try:
            if now - old.stat().st_mtime > GIF_MAX_AGE_S:
                old.unlink()
        except FileNotFoundError:  # another request removed it first
            pass
    return GIF_DIR / f"traversal-{uuid.uuid4().hex[:12]}.gif"


def _gif_still_there(answer: tuple) -> bool:
    """Whether a stored /traverse answer's GIF is still in GIF_DIR; touching it keeps _fresh_gif_path's sweep of
    old GIFs from removing it before gradio has copied it."""
    try:
        os.utime(answer[1])
        return True
    except FileNotFoundError:
        return False


# ------------------------------------------------------------------------------------------- handlers
def traverse(models: ModelCache, seed, k, num_steps, step_size, source, revision, start="prior", progress=None):
    """-> (strip image, GIF path, landscape image, trajectory image) for potential k from the seed's z0."""
    answer, _ = _cached(models, "/traverse", seed, k, num_steps, step_size, source, revision, start,
                        functools.partial(_traverse, renderer=models.renderer, progress=progress),
                        valid=_gif_still_there)
    return _copies(answer)


def _traverse(given: Inputs, renderer, progress=None):
    flow = given.loaded.flow
    k, num_steps, step_size, z0 = given.k, given.num_steps, given.step_size, given.z0
    # All K paths from z0 at once (cheap: no decoding) for the trajectory plot; column k is the one shown.
    num_potentials = flow.num_potentials
    paths = traverse_both_ways(flow, z0.expand(num_potentials, -1), torch.arange(num_potentials), num_steps, step_size)
    # The figures first: they are drawn in the render processes while this thread decodes the frames.
    land = plots.landscape_grid(flow, paths[:, k], k, plots.landscape_times(num_steps)).numpy()
    landscape = renderer.submit("landscape", land, k, f"{k}: {flow.label(k)}")
    trajectory = renderer.submit("trajectory", paths.numpy(), [flow.label(i) for i in range(num_potentials)],
                                 highlight=k, origin_index=num_steps)
    shown = frames.shown_frames(given.loaded, num_steps, 1)
    decoded = frames.decode_frames(given.loaded, paths[shown, k:k + 1], progress)[:, 0]
    strip = plots.image_strip(decoded, min_size=frames.STRIP_MIN_SIZE, highlight=len(shown) // 2)
    gif = plots.animated_gif(decoded, _fresh_gif_path())
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
    shown = frames.shown_frames(given.loaded, given.num_steps, num_potentials)
    decoded = frames.decode_frames(given.loaded, paths[shown], progress)  # all K rows in one pass
    rows = [plots.image_strip(decoded[:, i], min_size=frames.STRIP_MIN_SIZE, highlight=len(shown) // 2)
            for i in range(num_potentials)]
    return (plots.grid(rows, [f"{i}: {flow.label(i)}" for i in range(num_potentials)]),)


def compare(models: ModelCache, seed, k, num_steps, step_size, source, revision, start="prior", progress=None):
    """-> (strips image, path-shape image, Markdown table): the seed's z0 and the k-th traversal under every method
    of the loaded generator (Loaded.methods), one strip row and one path-shape column per method."""
    answer, _ = _cached(models, "/compare", seed, k, num_steps, step_size, source, revision, start,
                        functools.partial(_compare, renderer=models.renderer, progress=progress))
    return _copies(answer)


def _compare(given: Inputs, renderer, progress=None):
    return compare_pictures(given.loaded, given.k, given.num_steps, given.step_size, given.z0, renderer, progress)
