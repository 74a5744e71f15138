"""bench/load.py runs against the served app; the Space's answer cache (pdetraversal.space.models.OutputCache) serves
repeats, not neighbours; its render processes (pdetraversal.space.render.Renderer) draw the figures a request would
draw in-process, and a failed pool falls back.

The cache tests use fixture potentials (random weights over a tiny MLP generator, as tests/test_app.py makes them);
the smoke run serves the embedded default, as the Space does.
"""
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import app
from hub_models import MLPGenerator, load_flow_and_generator
from pdetraversal import PotentialFlow, plots
from pdetraversal.potentials import traverse_both_ways
from pdetraversal.space import handlers
from pdetraversal.space.frames import channels_last
from pdetraversal.space.models import ModelCache
from pdetraversal.space.public import RequestError
from pdetraversal.space.render import Renderer

REPO_ROOT = Path(__file__).resolve().parent.parent
STEPS = 3


@pytest.fixture(scope="module")
def potentials(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("load")
    torch.manual_seed(0)
    gen = MLPGenerator(latent_dim=4, hidden_dim=16, channels=1, image_size=8)
    with torch.no_grad():  # steep weights: different seeds give visibly different frames
        gen.net[0].weight.mul_(8)
        gen.net[2].weight.mul_(8)
    gen.save_pretrained(folder / "generator")
    PotentialFlow(latent_dim=4, num_potentials=3, generator=str(folder / "generator")).save_pretrained(
        folder / "potentials")
    return str(folder / "potentials")


@pytest.fixture
def models(potentials):
    return ModelCache(allow_local=True, baselines_dir=Path(potentials).parent / "none",
                          report_path=Path(potentials).parent / "none.json")


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


@pytest.mark.slow  # over 10 s: run by .ci/run's second step
def test_quick_run_prints_a_row_per_endpoint_without_errors():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "bench/load.py", "--quick"], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=150)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert re.search(r"^machine: .*\d+ CPUs", out, re.M) and "torch threads 1" in out, out
    assert f"render processes {app.RENDER_PROCESSES};" in out, out  # one per core, all started before measuring
    header = r"^endpoint +users +sent +ok +errors +p50 s +p95 s +max s +req/s +cpu s/req +client$"
    assert re.search(header, out, re.M), out
    for endpoint in ("/traverse", "/overview", "/compare"):
        m = re.search(rf"^{endpoint} +(\d+) +(\d+) +(\d+) +(\d+)" + r" +([\d.]+)" * 6 + "$", out, re.M)
        assert m, f"no row for {endpoint}:\n{out}"
        users, sent, ok, errors = map(int, m.groups()[:4])
        p50, p95, rps, cpu, client = float(m[5]), float(m[6]), float(m[8]), float(m[9]), float(m[10])
        assert (users, sent, ok, errors) == (2, 2, 2, 0), out  # --quick: 2 users x 1 request, all answered
        assert 0 < p50 <= p95 and rps > 0 and cpu > 0 and client > 0, out


@pytest.mark.slow  # over 10 s: run by .ci/run's second step
def test_profile_times_every_stage_of_a_request():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "bench/load.py", "--profile", "--requests", "1"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    stages = {name.strip(): float(ms) for name, ms in re.findall(r"^  (\S.*?) +([\d.]+)$", out, re.M)}
    for stage in ("traversal (all K, both ways)", "decoding the frames", "landscape grid (u and its gradient)",
                  "landscape figure: artists", "landscape figure: artists + drawing", "trajectory figure: artists",
                  "trajectory figure: artists + drawing", "GIF", "the whole handler",
                  f"the whole handler, {app.RENDER_PROCESSES} render processes", "output 2: PNG for gradio (896x312)"):
        assert stages.get(stage, 0) > 0, f"{stage}:\n{out}"
    assert stages["landscape figure: artists"] < stages["landscape figure: artists + drawing"], out
    for endpoint in ("/traverse", "/overview", "/compare"):  # served: rendered, then repeated from the cache
        assert re.search(rf"^  {endpoint} +[\d.]+ +[\d.]+$", out, re.M), out


def test_the_same_traverse_twice_is_served_from_the_cache(models, potentials):
    first = handlers.traverse(models, 7, 1, STEPS, 0.8, potentials, "", "prior")
    assert (models.outputs.hits, models.outputs.misses, len(models.outputs)) == (0, 1, 1)
    # The same controls, spelt apart.
    again = handlers.traverse(models, "7", 1.0, STEPS, "0.8", potentials, " ", "prior")
    assert (models.outputs.hits, models.outputs.misses, len(models.outputs)) == (1, 1, 1)
    for i in (0, 2, 3):
        assert np.array_equal(pixels(again[i]), pixels(first[i]))
        assert again[i] is not first[i]  # a copy: no two requests share an image object
    assert again[1] == first[1] and Path(again[1]).is_file()

    other = handlers.traverse(models, 8, 1, STEPS, 0.8, potentials, "", "prior")  # another seed: rendered anew
    assert (models.outputs.hits, models.outputs.misses, len(models.outputs)) == (1, 2, 2)
    assert not np.array_equal(pixels(other[0]), pixels(first[0])) and other[1] != first[1]
    handlers.traverse(models, 7, 2, STEPS, 0.8, potentials, "", "prior")  # another k
    handlers.traverse(models, 7, 1, STEPS + 1, 0.8, potentials, "", "prior")  # more steps
    assert (models.outputs.hits, models.outputs.misses, len(models.outputs)) == (1, 4, 4)


def test_a_cached_gif_that_aged_out_is_rendered_again(models, potentials):
    _, gif, _, _ = handlers.traverse(models, 3, 0, STEPS, 0.8, potentials, "", "prior")
    Path(gif).unlink()  # as _fresh_gif_path's sweep removes GIFs older than GIF_MAX_AGE_S
    _, again, _, _ = handlers.traverse(models, 3, 0, STEPS, 0.8, potentials, "", "prior")
    assert Path(again).is_file() and again != gif
    assert (models.outputs.hits, models.outputs.misses) == (0, 2)


def test_overview_and_compare_are_cached_apart_from_traverse(models, potentials):
    grid = handlers.overview(models, 5, STEPS, 0.8, potentials, "", "prior")
    assert np.array_equal(pixels(handlers.overview(models, 5, STEPS, 0.8, potentials, "", "prior")), pixels(grid))
    strips, shape, table = handlers.compare(models, 5, 0, STEPS, 0.8, potentials, "", "prior")
    again = handlers.compare(models, 5, 0, STEPS, 0.8, potentials, "", "prior")
    assert np.array_equal(pixels(again[0]), pixels(strips)) and again[2] == table
    assert (models.outputs.hits, models.outputs.misses, len(models.outputs)) == (2, 2, 2)
    assert not np.array_equal(pixels(handlers.overview(models, 6, STEPS, 0.8, potentials, "", "prior")), pixels(grid))


def test_bad_controls_are_refused_before_the_cache_and_never_stored(models, potentials):
    handlers.traverse(models, 1, 0, STEPS, 0.8, potentials, "", "prior")
    with pytest.raises(RequestError, match="start must be 'data' or 'prior'"):
        handlers.traverse(models, 1, 0, STEPS, 0.8, potentials, "", "sideways")
    with pytest.raises(RequestError, match="seed must be an integer"):
        handlers.traverse(models, -1, 0, STEPS, 0.8, potentials, "", "prior")
    with pytest.raises(RequestError, match="cannot encode training images"):  # the MLP generator has no encoder
        handlers.traverse(models, 1, 0, STEPS, 0.8, potentials, "", "data")
    assert len(models.outputs) == 1


def test_a_fresh_load_drops_that_sources_answers(potentials, tmp_path):
    models = ModelCache(size=1, allow_local=True, baselines_dir=tmp_path, report_path=tmp_path / "none.json")
    handlers.traverse(models, 1, 0, STEPS, 0.8, potentials, "", "prior")
    assert len(models.outputs) == 1
    other = tmp_path / "copy"
    shutil.copytree(potentials, other)
    models.get(str(other))  # evicts the first potentials (size 1)
    handlers.traverse(models, 1, 0, STEPS, 0.8, potentials, "", "prior")  # loaded again: its old answers are gone
    assert (models.outputs.hits, models.outputs.misses, len(models.outputs)) == (0, 2, 1)


def figure_args(potentials: str, k: int = 1) -> tuple[tuple, tuple, dict]:
    """A landscape's and a trajectory figure's arguments for plots.render, from the fixture potentials."""
    flow, gen = load_flow_and_generator(potentials)
    z0 = gen.sample_latent(1, seed=4)
    paths = traverse_both_ways(flow, z0.expand(3, -1), torch.arange(3), STEPS, 0.8)
    land = plots.landscape_grid(flow, paths[:, k], k, plots.landscape_times(STEPS)).numpy()
    return (land, k, "title"), (paths.numpy(), ["a", "b", "c"]), {"highlight": k, "origin_index": STEPS}


def test_render_processes_draw_what_the_server_process_draws(potentials):
    landscape, trajectory, options = figure_args(potentials)
    here = Renderer(0)
    pool = Renderer(2)
    try:
        assert pool.wait_started(timeout=120) and not here.wait_started()
        pids = {f.result() for f in [pool._pool.submit(os.getpid) for _ in range(8)]}
        assert os.getpid() not in pids and len(pids) <= 2
        images = {}
        for renderer in (here, pool):  # landscape and trajectory at once: submit gives a function that waits
            drawn = renderer.submit("landscape", *landscape), renderer.submit("trajectory", *trajectory, **options)
            images[renderer] = [wait() for wait in drawn]
        for mine, theirs in zip(images[here], images[pool]):
            assert mine.mode == theirs.mode == "RGB" and np.array_equal(pixels(mine), pixels(theirs))
        assert images[here][0].size == (round(80 * (3.4 * 3 + 1.0)), round(80 * 3.9))  # 3 panels at 80 dpi
    finally:
        pool.shutdown()


def test_a_dead_render_process_falls_back_to_drawing_here(potentials, caplog):
    landscape, _, _ = figure_args(potentials, k=2)
    expected = Renderer(0).submit("landscape", *landscape)()
    pool = Renderer(1)
    try:
        assert pool.wait_started(timeout=120)
        os.kill(pool._pool.submit(os.getpid).result(), signal.SIGKILL)  # the pool's own process: it breaks
        with caplog.at_level(logging.WARNING, logger="pdetraversal.app"):
            first = pool.submit("landscape", *landscape)()
            second = pool.submit("landscape", *landscape)()
        assert np.array_equal(pixels(first), pixels(expected)) and np.array_equal(pixels(second), pixels(expected))
        assert pool.in_process and pool._pool is None
        warnings = [r.getMessage() for r in caplog.records if r.name == "pdetraversal.app"]
        assert len(warnings) == 1 and "a render process failed (BrokenProcessPool" in warnings[0], warnings
    finally:
        pool.shutdown()


def test_a_pool_that_cannot_start_draws_here(potentials, monkeypatch, caplog):
    landscape, _, _ = figure_args(potentials)

    def refused(*args, **kwargs):
        raise OSError(38, "Function not implemented")  # as a sandbox without POSIX semaphores answers

    monkeypatch.setattr("pdetraversal.space.render.ProcessPoolExecutor", refused)
    pool = Renderer(2)
    with caplog.at_level(logging.WARNING, logger="pdetraversal.app"):
        image = pool.submit("landscape", *landscape)()
    assert pool.in_process and not pool.wait_started()
    assert np.array_equal(pixels(image), pixels(Renderer(0).submit("landscape", *landscape)()))
    assert any("render processes did not start (OSError" in r.getMessage() for r in caplog.records)


def test_the_render_process_count_setting(monkeypatch):
    monkeypatch.setenv(app.RENDER_PROCESSES_ENV, " 3 ")
    assert app._process_count(app.RENDER_PROCESSES_ENV, 2) == 3
    monkeypatch.setenv(app.RENDER_PROCESSES_ENV, "")
    assert app._process_count(app.RENDER_PROCESSES_ENV, 2) == 2
    monkeypatch.setenv(app.RENDER_PROCESSES_ENV, "two")
    with pytest.raises(ValueError, match="PDETRAVERSAL_RENDER_PROCESSES must be a whole number of processes"):
        app._process_count(app.RENDER_PROCESSES_ENV, 2)


class TinyConvGenerator(torch.nn.Module):
    """z (n, 2) -> (n, 2, 8, 8) through one transposed convolution; `flat_view`: flattens the output with .view
    first, which a channels-last output refuses."""

    def __init__(self, flat_view: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.fc, self.conv = torch.nn.Linear(2, 4 * 4 * 4), torch.nn.ConvTranspose2d(4, 2, 4, 2, 1)
        self.flat_view = flat_view

    def sample_latent(self, n: int, seed: int = 0) -> torch.Tensor:
        return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.fc(z).view(-1, 4, 4, 4))
        return torch.sigmoid(x.view(len(z), -1).view(-1, 2, 8, 8) if self.flat_view else x)


def test_convolutions_go_channels_last_only_where_they_decode_the_same():
    plain = TinyConvGenerator()
    with torch.no_grad():
        before = plain.decode(plain.sample_latent(1))
    channels_last(plain, before)
    assert plain.conv.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(plain.decode(plain.sample_latent(1)), before, rtol=0, atol=1e-6)
    viewing = TinyConvGenerator(flat_view=True)
    with torch.no_grad():
        before = viewing.decode(viewing.sample_latent(1))
    channels_last(viewing, before)  # .view of a channels-last output raises: left as it was
    assert not viewing.conv.weight.is_contiguous(memory_format=torch.channels_last)
