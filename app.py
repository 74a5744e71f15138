"""Gradio Space: latent traversals as potential flows (Song et al., ICML 2023). UI wiring only.

The pictures come from `pdetraversal.plots`; loading (with a download cap for Hub repos) from `hub_models.load_flow_and_generator`.

    python app.py                      # http://0.0.0.0:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT override)
    PDETRAVERSAL_POTENTIALS=user/repo python app.py   # another default: a Hub repo id or a folder

API endpoints (gradio_client), arguments in this order:
    /traverse (seed, k, num_steps, step_size, source, revision, start) -> strip PNG, GIF, landscape PNG, trajectory PNG
    /overview (seed, num_steps, step_size, source, revision, start)    -> PNG, one row per potential k
    /load     (source, revision)                                        -> info text (Markdown)
`source` is a Hub repo id or a folder; `revision` a branch, tag or commit ("" for the default); `start` "data" (z0
encodes a fresh training image, for generators that can: `Generator.data_latent`) or "prior" (z0 ~ N(0, I)); it
may be left out ("prior", as before this argument existed; the page itself preselects "data" where it can).
"""
from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: it reads this at import

import math
import random
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import torch

from hub_models import load_flow_and_generator, resolve_source
from pdetraversal import PotentialFlow, plots
from pdetraversal.hub import CheckpointError
from pdetraversal.metrics.path_shape import format_diagnostics, path_diagnostics
from pdetraversal.potentials import traverse_both_ways

REPO_ROOT = Path(__file__).resolve().parent
SHIPPED_POTENTIALS = "hub_models/dsprites-vae-potentials"
DEFAULT_POTENTIALS = os.environ.get("PDETRAVERSAL_POTENTIALS", SHIPPED_POTENTIALS)
MAX_HUB_DOWNLOAD_MB = 200  # refuse user-typed Hub repos whose weights + config exceed this (the Space's disk/RAM)
MAX_STEPS, MAX_STEP_SIZE, MAX_SEED = 50, 5.0, 2**31 - 1
CACHE_SIZE = 4  # (potentials, generator) pairs kept in memory
DIAGNOSTIC_STARTS = 64  # traversals per potential behind the path diagnostics shown on load
GIF_DIR = Path(tempfile.mkdtemp(prefix="pdetraversal-gifs-"))
GIF_MAX_AGE_S = 900  # gradio copies each returned GIF into its own cache at once; ours can go soon after

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
Potentials load from a folder or a Hub repo id (user-typed repos up to {MAX_HUB_DOWNLOAD_MB} MB);
the generator named in their config is loaded with them.
"""


@dataclass
class Loaded:
    flow: PotentialFlow
    generator: torch.nn.Module
    info: str
    start: str  # where the page starts z0: "data" when the generator can encode training images, else "prior"


class ModelCache:
    """LRU of loaded (potentials, generator) pairs keyed by (source, revision). The lock guards only the dict, so a
    slow download never stalls requests for models already loaded (two first requests may both load; harmless)."""

    def __init__(self, size: int = CACHE_SIZE):
        self.size, self._items, self._lock = size, OrderedDict(), threading.Lock()

    def get(self, source: str | None, revision: str | None = None) -> Loaded:
        source, revision = (source or "").strip(), (revision or "").strip() or None
        if not source:
            raise gr.Error("Enter a Hub repo id (user/name) or a folder holding config.json and model.safetensors.")
        key = (source, revision)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        loaded = _load(source, revision)
        with self._lock:
            self._items[key] = loaded
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return loaded


def _load(source: str, revision: str | None) -> Loaded:
    try:
        flow, generator = load_flow_and_generator(source, revision, max_download_bytes=MAX_HUB_DOWNLOAD_MB * 1e6)
    except (CheckpointError, ValueError, OSError) as e:
        raise gr.Error(f"Could not load potentials from '{source}': {e}") from None
    with torch.no_grad():
        shape = tuple(generator.decode(generator.sample_latent(1, seed=0)).shape[1:])
    local = os.path.isdir(resolve_source(source))
    where = f"{source}@{revision}" if revision and not local else source
    if revision and local:
        where += f" (a folder: revision '{revision}' ignored)"
    info = (f"**{where}**: K = {flow.num_potentials} potentials over a {flow.latent_dim}-dim latent space, trained "
            f"for T = {flow.num_timesteps} steps of size {flow.step_size:g}. Generator: `{flow.config['generator']}` "
            f"({type(generator).__name__}, images {'×'.join(map(str, shape))}).")
    z0 = generator.data_latent(DIAGNOSTIC_STARTS, seed=0)
    start = "data" if z0 is not None else "prior"
    z0 = generator.sample_latent(DIAGNOSTIC_STARTS, seed=0) if z0 is None else z0
    info += (f"\n\nAlong the paths ({DIAGNOSTIC_STARTS} starts from the {'data' if start == 'data' else 'prior'}, "
             f"{flow.num_timesteps} steps; `pdetraversal.metrics.path_shape`): straightness 1 is a straight line; "
             "first / later ≪ 1 means the initial condition holds; the wave equation does work only where |u_tt| and "
             "|c²Δu| are clearly above 0 and |f| is much smaller than both.\n\n"
             + format_diagnostics(path_diagnostics(flow, z0)))
    return Loaded(flow, generator, info, start)


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


# ------------------------------------------------------------------------------------------- handlers
def traverse(models: ModelCache, seed, k, num_steps, step_size, source, revision, start="prior"):
    """-> (strip image, GIF path, landscape image, trajectory image) for potential k from the seed's z0."""
    loaded = models.get(source, revision)
    flow, gen = loaded.flow, loaded.generator
    seed = _integer(seed, "seed", 0, MAX_SEED)
    k = _integer(k, "k (potential index)", 0, flow.num_potentials - 1)
    num_steps = _integer(num_steps, "number of steps", 1, MAX_STEPS)
    step_size = _step_size(step_size)
    z0 = _start_latent(gen, seed, start)
    # All K paths from z0 at once (cheap: no decoding) for the trajectory plot; column k is the one shown.
    num_potentials = flow.num_potentials
    paths = traverse_both_ways(flow, z0.expand(num_potentials, -1), torch.arange(num_potentials), num_steps, step_size)
    frames = plots.decode_frames(gen, paths[:, k:k + 1])[:, 0]
    strip = plots.image_strip(frames, highlight=num_steps)
    gif = plots.animated_gif(frames, _fresh_gif_path())
    landscape = plots.figure_to_image(plots.landscape_figure(
        flow, paths[:, k], k, plots.landscape_times(num_steps), title=f"{k}: {flow.label(k)}"))
    trajectory = plots.figure_to_image(plots.trajectory_figure(
        paths, [flow.label(i) for i in range(num_potentials)], highlight=k, origin_index=num_steps))
    return strip, str(gif), landscape, trajectory


def overview(models: ModelCache, seed, num_steps, step_size, source, revision, start="prior"):
    """-> one image, a row per potential k, all from the seed's z0."""
    loaded = models.get(source, revision)
    seed = _integer(seed, "seed", 0, MAX_SEED)
    num_steps = _integer(num_steps, "number of steps", 1, MAX_STEPS)
    step_size = _step_size(step_size)
    z0 = _start_latent(loaded.generator, seed, start)
    return plots.overview(loaded.flow, loaded.generator, z0, num_steps, step_size)


# ------------------------------------------------------------------------------------------- the UI
def build_demo(default_potentials: str | None = None) -> gr.Blocks:
    """The Blocks app; `default_potentials` overrides DEFAULT_POTENTIALS (tests point it at a fixture)."""
    models = ModelCache()
    default_source = default_potentials or DEFAULT_POTENTIALS
    try:
        default = models.get(default_source)
    except gr.Error as e:
        raise RuntimeError(f"The default potentials '{default_source}' do not load: {e.message} "
                           "(set PDETRAVERSAL_POTENTIALS to a folder or Hub repo id).") from None
    flow = default.flow

    # Thin wrappers: gradio names the API parameters after these signatures.
    def traverse_fn(seed, k, num_steps, step_size, source, revision, start):
        return traverse(models, seed, k, num_steps, step_size, source, revision, start)

    def overview_fn(seed, num_steps, step_size, source, revision, start):
        return overview(models, seed, num_steps, step_size, source, revision, start)

    def load_fn(source, revision):
        return models.get(source, revision).info

    def after_load_fn(source, revision):  # runs after a successful load, from the cache
        loaded = models.get(source, revision)
        return gr.Dropdown(choices=_k_choices(loaded.flow), value=0), loaded.start

    with gr.Blocks(title="Potential-flow latent traversals") as demo:
        gr.Markdown(HEADER)
        with gr.Row():
            source = gr.Textbox(value=default_source, label="Potentials: Hub repo id or folder", scale=3)
            revision = gr.Textbox(value="", label="Revision (branch, tag or commit; empty: default)", scale=1)
            load_btn = gr.Button("Load", scale=0)
        info = gr.Markdown(default.info)
        with gr.Row():
            seed = gr.Number(value=0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed (z0)")
            seed_btn = gr.Button("Random seed", scale=0)
            # Custom values stay allowed so API calls can pass any k for the potentials they name;
            # the handler checks the range against those potentials.
            k = gr.Dropdown(choices=_k_choices(flow), value=0, label="Potential k", allow_custom_value=True)
            num_steps = gr.Slider(1, MAX_STEPS, value=min(flow.num_timesteps, MAX_STEPS), step=1,
                                  label="Steps each way")
            step_size = gr.Slider(0.0, MAX_STEP_SIZE, value=min(flow.step_size, MAX_STEP_SIZE), step=0.05,
                                  label="Step size")
            start = gr.Radio([("a training image, encoded", "data"), ("a prior sample N(0, I)", "prior")],
                             value="prior", label="Start z0 from")
        run_btn = gr.Button("Run", variant="primary")
        # Strip and overview carry their titles above them: a label badge would hide the first frames.
        gr.Markdown("**Traversal of potential k:** − end ← z<sub>0</sub> (between the orange bars) → + end")
        strip = gr.Image(type="pil", format="png", show_label=False, elem_id="strip")
        with gr.Row():
            gif = gr.Image(type="filepath", label="Animated GIF (download)", elem_id="gif",
                           buttons=["download", "fullscreen"], scale=1)
            landscape = gr.Image(type="pil", format="png", label="Potential landscape u^k(·, t)",
                                 elem_id="landscape", scale=3)
        trajectory = gr.Image(type="pil", format="png", label="Trajectories z_t against t (all k; selected in red)",
                              elem_id="trajectory")
        gr.Markdown("**All K potentials from the same z<sub>0</sub>**, one row each")
        overview_img = gr.Image(type="pil", format="png", show_label=False, elem_id="overview")

        seed_btn.click(lambda: random.randint(0, MAX_SEED), None, seed, queue=False, api_visibility="private")
        # The API's default start stays "prior"; each page opens on real images where the generator can encode them.
        demo.load(lambda src, rev: models.get(src, rev).start, [source, revision], [start],
                  api_visibility="private")
        # /load answers with the info text only; the k menu is refreshed by a private follow-up step.
        for trigger, api_name in ((load_btn.click, "load"), (source.submit, None)):
            trigger(load_fn, [source, revision], [info], api_name=api_name,
                    api_visibility="public" if api_name else "private"
                    ).success(after_load_fn, [source, revision], [k, start], api_visibility="private")
        # Both renderers share one concurrency slot pair so a click never runs more than two jobs at once.
        run_btn.click(traverse_fn, [seed, k, num_steps, step_size, source, revision, start],
                      [strip, gif, landscape, trajectory], api_name="traverse", concurrency_id="render")
        run_btn.click(overview_fn, [seed, num_steps, step_size, source, revision, start], [overview_img],
                      api_name="overview", concurrency_id="render")
    demo.queue(default_concurrency_limit=2, max_size=16)
    return demo


if __name__ == "__main__":
    # A request is many small tensor ops: on the 2-core CPU one torch thread per request (two requests run at once)
    # measured up to 30x faster than two threads per request fighting for the cores (bench/bench_app.py --threads).
    torch.set_num_threads(int(os.environ.get("PDETRAVERSAL_TORCH_THREADS", "1")))
    build_demo().launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"))
