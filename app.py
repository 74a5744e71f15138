"""Gradio Space: latent traversals as potential flows (Song et al., ICML 2023). UI wiring only.

The requests are answered by `pdetraversal.space` (its modules public, models, comparison, frames, render and
handlers); the pictures come from `pdetraversal.plots`.

    python app.py                      # http://0.0.0.0:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT override)
    PDETRAVERSAL_POTENTIALS=user/repo python app.py   # another default: a Hub repo id or a folder

API endpoints (gradio_client), arguments in this order:
    /traverse (seed, k, num_steps, step_size, source, revision, start) -> strip PNG, GIF, landscape PNG, trajectory PNG
    /overview (seed, num_steps, step_size, source, revision, start)    -> PNG, one row per potential k
    /load     (source, revision)                                        -> info text (Markdown)
    /models   ()                                                        -> the model picker's choices: a list of
              {"label", "source"}, the page's default first; any `source` of it goes to the endpoints above
    /compare  (seed, k, num_steps, step_size, source, revision, start) -> strips PNG (one row per method),
              path-shape PNG (one column per method), table (Markdown); see `pdetraversal.space.comparison`
`source` is a Hub repo id or a folder; `revision` a branch, tag or commit ("" for the default); `start` "data" (z0
encodes a fresh training image, for generators that can: `Generator.data_latent`) or "prior" (z0 ~ N(0, I)); it
may be left out ("prior", as before this argument existed; the page itself preselects "data" where it can).

The page's model picker lists every shipped potentials folder (`space.models.shipped_models`, read when the app is
built: a new folder needs no code); picking one fills the source box, loads it as Load does and renders. The source
box still takes any Hub repo id or folder. Slow generators show fewer frames per strip (`space.frames`); the page and
the load's info text say so, and decoding reports to gr.Progress (unit "frames").

The page serves local folders only from an allow-list (`space.public`); `PDETRAVERSAL_ALLOW_LOCAL_PATHS=1` (or
`build_demo(allow_local_paths=True)`) serves any folder, for local use. The events run with preprocess=False, so
every input reaches the handlers' checks unconverted. A refused request (`RequestError`) is shown as gr.Error with
its text made public and logged as one warning line on the logger "pdetraversal.app", without a traceback. The
page's Run checks the controls once (a private step) and only then renders strip and overview side by side, so a
bad click shows one message; a page opens already rendered for its opening controls (computed once per set of
controls). The figures are drawn by PDETRAVERSAL_RENDER_PROCESSES spawned processes (default one per core; 0 draws
them in the server process: `space.render`).
"""
from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: it reads this at import

import atexit
import functools
import logging
import random
import signal
import sys
from pathlib import Path

import gradio as gr
import torch

from pdetraversal import PotentialFlow
from pdetraversal.space.frames import frames_note
from pdetraversal.space.handlers import checked, checked_integer, compare, overview, traverse
from pdetraversal.space.models import CACHE_SIZE, MAX_HUB_DOWNLOAD_MB, ModelCache, picker_choices, same_source
from pdetraversal.space.public import MAX_SEED, MAX_STEP_SIZE, MAX_STEPS, SHIPPED_POTENTIALS, RequestError, public_text
from pdetraversal.space.render import Renderer

log = logging.getLogger("pdetraversal.app")

DEFAULT_POTENTIALS = os.environ.get("PDETRAVERSAL_POTENTIALS", SHIPPED_POTENTIALS)
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
RENDERER = Renderer(RENDER_PROCESSES)  # build_demo's models draw their figures with it
atexit.register(RENDERER.shutdown)

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


def _k_choices(flow: PotentialFlow) -> list[tuple[str, int]]:
    return [(f"{k}: {flow.label(k)}", k) for k in range(flow.num_potentials)]


def _shown(fn):
    """`fn` for gradio, which shows the text of a gr.Error only: a RequestError it raises becomes one."""
    @functools.wraps(fn)
    def answer(*args):
        try:
            return fn(*args)
        except RequestError as e:
            raise gr.Error(e.message) from None
    return answer


def _answering(endpoint: str, fn):
    """`fn` for gradio: a RequestError it raises is logged as one line (which request, why), its text is made public
    (`public_text`), and it becomes a gr.Error for which gradio prints no traceback. Other exceptions are bugs and
    keep gradio's traceback."""
    @functools.wraps(fn)  # gradio reads the API's parameter names from the signature (via __wrapped__)
    def answer(*args):
        try:
            return fn(*args)
        except RequestError as e:
            message = public_text(e.message)
            log.warning("rejected %s: %s", endpoint, " ".join(message.split()))
            raise gr.Error(message, print_exception=False) from None
    return answer


def build_demo(default_potentials: str | None = None, baselines_dir: str | Path | None = None,
               report_path: str | Path | None = None, shipped_dir: str | Path | None = None,
               allow_local_paths: bool | None = None) -> gr.Blocks:
    """The Blocks app; `default_potentials` overrides DEFAULT_POTENTIALS, the others space.models' BASELINES_DIR,
    REPORT_PATH and SHIPPED_DIR (tests point them at fixtures). `allow_local_paths`: serve any local folder (True),
    or only the shipped ones and the default potentials' folder (False); None reads PDETRAVERSAL_ALLOW_LOCAL_PATHS at
    each load.
    Serve it with `launch(demo, ...)`, which adds the page's CSS."""
    default_source = default_potentials or DEFAULT_POTENTIALS
    RENDERER.start()  # its processes start while the default potentials load
    models = ModelCache(baselines_dir=baselines_dir, report_path=report_path, shipped_dir=shipped_dir,
                        allow_local=allow_local_paths, also_allowed=(default_source,), renderer=RENDERER)
    try:
        default = models.get(default_source)
    except RequestError as e:
        raise RuntimeError(f"The default potentials '{default_source}' do not load: {e.message} "
                           "(set PDETRAVERSAL_POTENTIALS to a folder or Hub repo id).") from None
    flow = default.flow
    choices = picker_choices(default_source, default, shipped_dir)

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
        checked(models, seed, k, num_steps, step_size, source, revision, start)

    @_shown
    def after_load_fn(source, revision):  # runs after a successful load, from the cache
        loaded = models.get(source, revision)
        picked = next((value for _, value in choices if same_source(value, source)), None)
        return gr.Dropdown(choices=_k_choices(loaded.flow), value=0), loaded.start, gr.Dropdown(value=picked)

    def note_fn(num_steps, source, revision):  # after a render: say whether its frames were capped
        try:
            loaded = models.get(source, revision)
            return frames_note(loaded, checked_integer(num_steps, "number of steps", 1, MAX_STEPS))
        except RequestError:  # the render said why already
            return ""

    def load_failed_fn(source, revision):  # the info line must not go on describing the previous potentials
        why = models.failure(source, revision) or "see the message above"
        return f"**Not loaded:** {public_text(why)}"

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
        opened = demo.load(_shown(lambda src, rev: models.get(src, rev).start), [source, revision], [start],
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
