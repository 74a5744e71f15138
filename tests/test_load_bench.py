"""bench/load.py runs against the served app, and app.py's answer cache (OutputCache) serves repeats, not neighbours.

The cache tests use fixture potentials (random weights over a tiny MLP generator, as tests/test_app.py makes them);
the smoke run serves the embedded default, as the Space does.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import app
from hub_models import MLPGenerator
from pdetraversal import PotentialFlow

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
    return app.ModelCache(allow_local=True, baselines_dir=Path(potentials).parent / "none",
                          report_path=Path(potentials).parent / "none.json")


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def test_quick_run_prints_a_row_per_endpoint_without_errors():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "bench/load.py", "--quick"], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=150)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert re.search(r"^machine: .*\d+ CPUs", out, re.M) and "torch threads 1" in out, out
    assert re.search(r"^endpoint +users +sent +ok +errors +p50 s +p95 s +max s +req/s$", out, re.M), out
    for endpoint in ("/traverse", "/overview", "/compare"):
        m = re.search(rf"^{endpoint} +(\d+) +(\d+) +(\d+) +(\d+) +([\d.]+) +([\d.]+) +([\d.]+) +([\d.]+)$", out, re.M)
        assert m, f"no row for {endpoint}:\n{out}"
        users, sent, ok, errors = map(int, m.groups()[:4])
        p50, p95, rps = float(m[5]), float(m[6]), float(m[8])
        assert (users, sent, ok, errors) == (2, 2, 2, 0), out  # --quick: 2 users x 1 request, all answered
        assert 0 < p50 <= p95 and rps > 0, out


def test_the_same_traverse_twice_is_served_from_the_cache(models, potentials):
    first = app.traverse(models, 7, 1, STEPS, 0.8, potentials, "", "prior")
    assert (models.outputs.hits, models.outputs.misses, len(models.outputs)) == (0, 1, 1)
    again = app.traverse(models, "7", 1.0, STEPS, "0.8", potentials, " ", "prior")  # the same controls, spelt apart
    assert (models.outputs.hits, models.outputs.misses, len(models.outputs)) == (1, 1, 1)
    for i in (0, 2, 3):
        assert np.array_equal(pixels(again[i]), pixels(first[i]))
        assert again[i] is not first[i]  # a copy: no two requests share an image object
    assert again[1] == first[1] and Path(again[1]).is_file()

    other = app.traverse(models, 8, 1, STEPS, 0.8, potentials, "", "prior")  # another seed: rendered anew
    assert (models.outputs.hits, models.outputs.misses, len(models.outputs)) == (1, 2, 2)
    assert not np.array_equal(pixels(other[0]), pixels(first[0])) and other[1] != first[1]
    app.traverse(models, 7, 2, STEPS, 0.8, potentials, "", "prior")  # another k
    app.traverse(models, 7, 1, STEPS + 1, 0.8, potentials, "", "prior")  # more steps
    assert (models.outputs.hits, models.outputs.misses, len(models.outputs)) == (1, 4, 4)


def test_a_cached_gif_that_aged_out_is_rendered_again(models, potentials):
    _, gif, _, _ = app.traverse(models, 3, 0, STEPS, 0.8, potentials, "", "prior")
    Path(gif).unlink()  # as _fresh_gif_path's sweep removes GIFs older than GIF_MAX_AGE_S
    _, again, _, _ = app.traverse(models, 3, 0, STEPS, 0.8, potentials, "", "prior")
    assert Path(again).is_file() and again != gif
    assert (models.outputs.hits, models.outputs.misses) == (0, 2)


def test_overview_and_compare_are_cached_apart_from_traverse(models, potentials):
    grid = app.overview(models, 5, STEPS, 0.8, potentials, "", "prior")
    assert np.array_equal(pixels(app.overview(models, 5, STEPS, 0.8, potentials, "", "prior")), pixels(grid))
    strips, shape, table = app.compare(models, 5, 0, STEPS, 0.8, potentials, "", "prior")
    again = app.compare(models, 5, 0, STEPS, 0.8, potentials, "", "prior")
    assert np.array_equal(pixels(again[0]), pixels(strips)) and again[2] == table
    assert (models.outputs.hits, models.outputs.misses, len(models.outputs)) == (2, 2, 2)
    assert not np.array_equal(pixels(app.overview(models, 6, STEPS, 0.8, potentials, "", "prior")), pixels(grid))


def test_bad_controls_are_refused_before_the_cache_and_never_stored(models, potentials):
    app.traverse(models, 1, 0, STEPS, 0.8, potentials, "", "prior")
    with pytest.raises(app.gr.Error, match="start must be 'data' or 'prior'"):
        app.traverse(models, 1, 0, STEPS, 0.8, potentials, "", "sideways")
    with pytest.raises(app.gr.Error, match="seed must be an integer"):
        app.traverse(models, -1, 0, STEPS, 0.8, potentials, "", "prior")
    with pytest.raises(app.gr.Error, match="cannot encode training images"):  # the MLP generator has no encoder
        app.traverse(models, 1, 0, STEPS, 0.8, potentials, "", "data")
    assert len(models.outputs) == 1


def test_a_fresh_load_drops_that_sources_answers(potentials, tmp_path):
    models = app.ModelCache(size=1, allow_local=True, baselines_dir=tmp_path, report_path=tmp_path / "none.json")
    app.traverse(models, 1, 0, STEPS, 0.8, potentials, "", "prior")
    assert len(models.outputs) == 1
    other = tmp_path / "copy"
    shutil.copytree(potentials, other)
    models.get(str(other))  # evicts the first potentials (size 1)
    app.traverse(models, 1, 0, STEPS, 0.8, potentials, "", "prior")  # loaded again: its old answers are gone
    assert (models.outputs.hits, models.outputs.misses, len(models.outputs)) == (0, 2, 1)
