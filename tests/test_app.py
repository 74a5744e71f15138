"""app.py end to end: the Gradio app served in-process, every named endpoint driven by gradio_client.

Fixture potentials (random weights over a tiny MLP generator) live in tmp folders, so these tests never need the
shipped weights; one test checks that the shipped default itself loads and renders.
"""
import json
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from gradio_client import Client
from PIL import Image

import app
from hub_models import MLPGenerator
from pdetraversal import PotentialFlow, plots
from pdetraversal.baselines import LinearPotential, WarpedSpace
from pdetraversal.data import dsprites
from pdetraversal.metrics.path_shape import mean_step, path_shape
from pdetraversal.potentials import traverse_both_ways

STEPS = 3


def make_potentials(folder: Path, num_potentials: int, channels: int = 1, image_size: int = 8, seed: int = 0) -> str:
    """A generator and random potentials in `folder`/{generator,potentials}; returns the potentials folder."""
    torch.manual_seed(seed)
    gen = MLPGenerator(latent_dim=4, hidden_dim=16, channels=channels, image_size=image_size)
    with torch.no_grad():  # steep weights: each step changes the pixels visibly, so no two GIF frames coincide
        gen.net[0].weight.mul_(8)
        gen.net[2].weight.mul_(8)
    gen.save_pretrained(folder / "generator")
    flow = PotentialFlow(latent_dim=4, num_potentials=num_potentials, generator=str(folder / "generator"),
                         labels=[f"factor {i}" for i in range(num_potentials)])
    flow.save_pretrained(folder / "potentials")
    return str(folder / "potentials")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


REPORT_COLUMNS = ["VP %", "straightness", "|f|"]
REPORT_ROWS = {"potential (shipped)": ["11.1 ± 0.1", "0.91", "0.01"], "linear (trained)": ["22.2 ± 0.2", "1", "0"],
               "warped (trained)": ["33.3 ± 0.3", "0.7", "-"], "sefa": ["44.4 ± 0.4", "1", "-"],
               "axes": ["55.5 ± 0.5", "1", "-"], "random": ["66.6 ± 0.6", "1", "-"]}


def write_report(path: Path, generator: str) -> Path:
    """report.json as bench/reproduce.py writes it, one generator "fixture" whose source is `generator`."""
    rows = {label: {"K": 3, "step": 0.25, "cells": cells} for label, cells in REPORT_ROWS.items()}
    path.write_text(json.dumps({
        "meta": {"command": "python bench/reproduce.py --size quick", "size_name": "quick", "seeds": [0, 1, 2],
                 "hardware": "test"},
        "generators": {"fixture": {"source": generator, "columns": REPORT_COLUMNS, "rows": rows}}}))
    return path


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    out = {"main": make_potentials(root / "main", 3),
           "other": make_potentials(root / "other", 5, channels=3, image_size=16, seed=1)}
    main_gen, other_gen = str(root / "main" / "generator"), str(root / "other" / "generator")
    # Trained baselines (random weights, saved as bench/reproduce.py's fits are): two for the main generator, one
    # for the other generator (must not be listed), one whose latent_dim does not fit (skipped with a note).
    baselines = root / "baselines"
    torch.manual_seed(2)
    LinearPotential(4, 3, step_size=0.5, generator=main_gen).save_pretrained(baselines / "main-linear")
    WarpedSpace(4, 2, step_size=0.7, generator=main_gen).save_pretrained(baselines / "main-warped")
    LinearPotential(4, 5, generator=other_gen).save_pretrained(baselines / "other-linear")
    LinearPotential(5, 3, generator=main_gen).save_pretrained(baselines / "main-wide")
    out["baselines"] = str(baselines)
    out["report"] = str(write_report(root / "report.json", main_gen))
    # A copy of the main potentials where the shipped ones of generator "fixture" would be.
    shutil.copytree(out["main"], root / "shipped" / "fixture-potentials")
    out["shipped_dir"], out["shipped"] = str(root / "shipped"), str(root / "shipped" / "fixture-potentials")
    return out


@pytest.fixture(scope="module")
def client(fixtures):
    demo = app.build_demo(fixtures["main"], baselines_dir=fixtures["baselines"], report_path=fixtures["report"],
                          shipped_dir=fixtures["shipped_dir"])
    demo.queue().launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        yield Client(demo.local_url, verbose=False)
    finally:
        demo.close()


def strip_width(num_frames: int, image_size: int) -> int:
    tile = image_size * plots.upscale_factor(image_size, image_size, 128)
    return num_frames * tile + (num_frames - 1) * 4


def test_named_endpoints(client):
    assert {"/traverse", "/overview", "/load", "/compare"} <= set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])


def test_traverse_returns_strip_gif_and_plots(client, fixtures):
    strip, gif, landscape, trajectory = client.predict(7, 1, STEPS, 0.8, fixtures["main"], "", api_name="/traverse")
    with Image.open(strip) as im:
        assert im.size == (strip_width(2 * STEPS + 1, 8), 128)
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.n_frames == 2 * (2 * STEPS + 1) - 2  # ping-pong
    for plot in (landscape, trajectory):
        with Image.open(plot) as im:
            assert im.width > 300 and im.height > 200
    # Same inputs, same pictures: the seed fixes z0.
    again = client.predict(7, 1, STEPS, 0.8, fixtures["main"], "", api_name="/traverse")
    assert np.array_equal(np.asarray(Image.open(again[0])), np.asarray(Image.open(strip)))


def test_overview_has_one_row_per_potential(client, fixtures):
    path = client.predict(7, STEPS, 0.8, fixtures["main"], "", api_name="/overview")
    tile = 8 * plots.upscale_factor(8, 8, 64)
    with Image.open(path) as im:
        assert im.height == 3 * tile + 2 * 4


def test_load_another_folder_then_use_its_larger_k(client, fixtures):
    info = client.predict(fixtures["other"], "", api_name="/load")
    assert "K = 5" in info and "MLPGenerator" in info and "3×16×16" in info
    rows = [line for line in info.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert "straightness" in info and "|c²Δu|" in info and [int(r.split("|")[1]) for r in rows] == list(range(5))
    strip, gif, _, _ = client.predict(0, 4, STEPS, 1.0, fixtures["other"], "", api_name="/traverse")
    with Image.open(strip) as im:
        assert im.size == (strip_width(2 * STEPS + 1, 16), 128) and im.mode == "RGB"
    overview = client.predict(0, STEPS, 1.0, fixtures["other"], "", api_name="/overview")
    with Image.open(overview) as im:
        assert im.height == 5 * 64 + 4 * 4


@pytest.mark.parametrize("args, message", [
    ((0, 3, STEPS, 1.0), "k (potential index) must be an integer from 0 to 2, got 3"),
    ((0, -1, STEPS, 1.0), "from 0 to 2"),
    ((0, "x", STEPS, 1.0), "k (potential index) must be an integer"),
    ((0, 0, 0, 1.0), "less than minimum value 1"),       # the slider's own range check
    ((0, 0, 51, 1.0), "greater than maximum value 50"),
    ((0, 0, STEPS, 0.0), "step size must lie in (0, 5]"),
    ((0, 0, STEPS, 7.0), "greater than maximum value 5"),
    ((-1, 0, STEPS, 1.0), "less than minimum value 0"),
])
def test_bad_inputs_give_clear_errors(client, fixtures, args, message):
    with pytest.raises(Exception) as err:
        client.predict(*args, fixtures["main"], "", api_name="/traverse")
    assert message in str(err.value)
    assert "Traceback" not in str(err.value)


def test_start_defaults_to_prior_and_data_needs_an_encoder(client, fixtures):
    # Calls written before the start argument existed get the prior, as they did then.
    omitted = client.predict(7, 1, STEPS, 0.8, fixtures["main"], "", api_name="/traverse")[0]
    prior = client.predict(7, 1, STEPS, 0.8, fixtures["main"], "", "prior", api_name="/traverse")[0]
    assert np.array_equal(np.asarray(Image.open(omitted)), np.asarray(Image.open(prior)))
    assert app.ModelCache().get(fixtures["main"]).start == "prior"  # what the page preselects for it
    with pytest.raises(Exception, match="MLPGenerator cannot encode training images: start from 'prior' instead"):
        client.predict(7, 1, STEPS, 0.8, fixtures["main"], "", "data", api_name="/traverse")
    with pytest.raises(Exception, match="cannot encode"):
        client.predict(7, STEPS, 0.8, fixtures["main"], "", "data", api_name="/overview")


@pytest.mark.parametrize("source, message", [
    ("/no/such/folder", "'/no/such/folder' is neither an existing folder nor a valid Hub repo id"),
    ("   ", "Enter a Hub repo id"),
])
def test_bad_sources_give_clear_errors(client, source, message):
    with pytest.raises(Exception) as err:
        client.predict(source, "", api_name="/load")
    assert message in str(err.value)


def test_a_folder_that_is_not_a_checkpoint_gives_a_clear_error(client, tmp_path):
    (tmp_path / "config.json").write_text('{"latent_dim": 4, "num_potentials": 2}')
    with pytest.raises(Exception) as err:
        client.predict(str(tmp_path), "", api_name="/load")
    assert "Could not load potentials" in str(err.value) and "model.safetensors not found" in str(err.value)


def test_a_config_naming_a_bad_generator_gives_a_clear_error(client, fixtures, tmp_path):
    PotentialFlow(latent_dim=4, num_potentials=2, generator="/gone/generator").save_pretrained(tmp_path / "gone")
    with pytest.raises(Exception) as err:
        client.predict(str(tmp_path / "gone"), "", api_name="/load")
    assert "the generator named in the config of" in str(err.value) and "'/gone/generator'" in str(err.value)
    generator = str(Path(fixtures["main"]).parent / "generator")  # latent_dim 4
    PotentialFlow(latent_dim=5, num_potentials=2, generator=generator).save_pretrained(tmp_path / "misfit")
    with pytest.raises(Exception) as err:
        client.predict(str(tmp_path / "misfit"), "", api_name="/load")
    assert "potentials over 5 latent dimensions" in str(err.value) and "takes 4" in str(err.value)


def test_model_cache_is_a_small_lru(fixtures, tmp_path):
    cache = app.ModelCache(size=2)
    first = cache.get(fixtures["main"])
    assert cache.get(f"  {fixtures['main']} ", "") is first  # same key after stripping; "" means no revision
    third = make_potentials(tmp_path, 2)
    cache.get(fixtures["other"])
    cache.get(third)
    assert cache.get(fixtures["main"]) is not first  # evicted, loaded again


def test_hub_repo_size_cap(hub, fixtures, monkeypatch):
    from huggingface_hub import HfApi

    HfApi().create_repo("tester/app-potentials", exist_ok=True)
    HfApi().upload_folder(repo_id="tester/app-potentials", folder_path=fixtures["main"])
    loaded = app.ModelCache().get("tester/app-potentials")
    assert loaded.flow.num_potentials == 3
    monkeypatch.setattr(app, "MAX_HUB_DOWNLOAD_MB", 1e-4)  # 100 bytes
    with pytest.raises(app.gr.Error, match="over the download limit of 0.0001 MB"):
        app.ModelCache().get("tester/app-potentials")
    with pytest.raises(app.gr.Error, match="not found"):
        app.ModelCache().get("tester/no-such-repo")


def test_shipped_default_starts_from_encoded_sprites():
    # "data" starts at the VAE's code of the seed's dSprites image: the strip's z0 frame is its reconstruction.
    models = app.ModelCache()
    loaded = models.get(app.SHIPPED_POTENTIALS)
    gen = loaded.generator
    assert loaded.start == "data"
    z0 = app._start_latent(gen, 5, "data")
    image = dsprites.sample(1, seed=5)[0]
    with torch.no_grad():
        assert torch.equal(z0, gen.encode(image)[0])
        recon = gen.decode(z0)
    assert ((recon > 0.5) == (image > 0.5)).float().mean() > 0.98
    strip = app.traverse(models, 5, 2, 4, 1.0, app.SHIPPED_POTENTIALS, "", "data")[0]
    tile = 64 * plots.upscale_factor(64, 64, 128)
    z0_tile = np.asarray(strip)[:, 4 * (tile + 4):4 * (tile + 4) + tile]  # frame 4 of 9: z0
    expected = np.asarray(plots.image_strip(recon))
    assert np.abs(z0_tile.astype(int) - expected.astype(int)).max() <= 1
    assert not np.array_equal(np.asarray(strip), np.asarray(app.traverse(
        models, 5, 2, 4, 1.0, app.SHIPPED_POTENTIALS, "", "prior")[0]))


def test_shipped_default_loads_and_renders():
    folder = app.REPO_ROOT / app.SHIPPED_POTENTIALS
    assert folder.is_dir(), f"the embedded default potentials {folder} are missing: the Space would not start"
    models = app.ModelCache()
    loaded = models.get(app.SHIPPED_POTENTIALS)
    assert loaded.flow.config["generator"] and loaded.generator.latent_dim == loaded.flow.latent_dim
    strip, gif, landscape, trajectory = app.traverse(models, 0, loaded.flow.num_potentials - 1, 5, 1.0,
                                                     app.SHIPPED_POTENTIALS, "")
    c, h, w = loaded.generator.decode(loaded.generator.sample_latent(1, seed=0)).shape[1:]
    assert strip.height == h * plots.upscale_factor(h, w, 128)
    assert Path(gif).is_file() and landscape.width > 300 and trajectory.width > 300
    grid = app.overview(models, 0, 5, 1.0, app.SHIPPED_POTENTIALS, "")
    tile = h * plots.upscale_factor(h, w, 64)
    assert grid.height == loaded.flow.num_potentials * tile + (loaded.flow.num_potentials - 1) * 4


# ------------------------------------------------------------------------------------------- the comparison view
MAIN_METHODS = ["potentials (loaded)", "linear (main-linear)", "warped (main-warped)", "sefa", "axes", "random"]


def table_rows(table: str) -> dict[str, list[str]]:
    """The comparison table's body rows by method name (cells stripped; the report's \\| escapes kept)."""
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if line.startswith("| ") and cells[0] not in ("method",) and not set(cells[0]) <= {"-"}:
            rows[cells[0]] = cells
    return rows


def strips_height(num_methods: int, image_size: int) -> int:
    tile = image_size * plots.upscale_factor(image_size, image_size, 128)
    return num_methods * tile + (num_methods - 1) * 4


def test_compare_shows_every_method_of_the_generator(client, fixtures):
    strips, shape, table = client.predict(7, 1, STEPS, 0.8, fixtures["main"], "", api_name="/compare")
    rows = table_rows(table)
    assert list(rows) == MAIN_METHODS  # the other generator's baseline is not there, the misfit is skipped
    assert "other-linear" not in table
    assert "baseline `main-wide` skipped: its latent_dim is 5, the generator's 4" in table
    with Image.open(strips) as im:
        assert im.height == strips_height(6, 8)  # one strip per method
        strip = np.asarray(im.convert("RGB"))
    with Image.open(shape) as im:
        assert im.size == (round((2.4 * 6 + 0.5) * 80), round(4.8 * 80))  # one column per method
    # The potentials' row is exactly /traverse's strip (right-aligned after the labels).
    alone = np.asarray(Image.open(client.predict(7, 1, STEPS, 0.8, fixtures["main"], "", api_name="/traverse")[0]))
    assert np.array_equal(strip[:128, -alone.shape[1]:], alone[..., :3])
    # Report: the header carries its columns (pipes escaped); trained baselines and floors get their rows' cells.
    assert "| VP % | straightness | \\|f\\| |" in table
    assert rows["linear (main-linear)"][6:] == ["linear (trained)", *REPORT_ROWS["linear (trained)"]]
    assert rows["axes"][6:] == ["axes", *REPORT_ROWS["axes"]]
    assert rows["potentials (loaded)"][6:] == ["not in the report: trained elsewhere", "-", "-", "-"]
    assert "python bench/reproduce.py --size quick" in table and "size quick, seeds 0, 1, 2" in table
    assert "mean ± std over seeds; the shipped folder is one of those fits" in table


def test_compare_numbers_are_those_of_the_traversals(client, fixtures):
    table = client.predict(7, 1, STEPS, 0.8, fixtures["main"], "", api_name="/compare")[2]
    rows = table_rows(table)
    loaded = app.ModelCache().get(fixtures["main"])
    flow, gen = loaded.flow, loaded.generator
    # The floors' step is the potentials' mean step from the 64 prior starts of seed 0 (bench/reproduce.py's match).
    step = mean_step(flow, gen.sample_latent(64, seed=0))
    assert 0.01 < step < 10
    for name in ("sefa", "axes", "random"):
        assert rows[name][2] == f"{step:.4g}"
        assert next(m for m in loaded.methods if m.name == name).model.step_size == step
    assert rows["potentials (loaded)"][2] == "0.8" and rows["linear (main-linear)"][2] == "0.5"  # own saved step
    assert rows["axes"][3] == "1.0000" and rows["axes"][4] == "0.00"  # a straight line
    assert rows["linear (main-linear)"][3] == "1.0000"
    # The potentials' straightness and turning are those of the + half of the same traversal.
    z0 = gen.sample_latent(1, seed=7)
    path = traverse_both_ways(flow, z0, torch.tensor([1]), STEPS, 0.8)[STEPS:]
    shape = path_shape(path)
    assert rows["potentials (loaded)"][3] == f"{float(shape['straightness'][0]):.4f}"
    assert rows["potentials (loaded)"][4] == f"{float(shape['turning_deg'][0]):.2f}"
    assert float(rows["potentials (loaded)"][3]) < 0.9999  # random potentials bend: the column tells them apart


def test_compare_k_out_of_range_for_one_method_or_the_potentials(client, fixtures):
    strips, _, table = client.predict(0, 2, STEPS, 0.8, fixtures["main"], "", api_name="/compare")
    rows = table_rows(table)
    assert rows["warped (main-warped)"][3] == "k = 2 out of range for this method (K = 2)"
    assert rows["random"][3] != "-" and rows["sefa"][3] != "-"
    with Image.open(strips) as im:
        assert im.height == strips_height(6, 8)  # the warped row is a placeholder strip
    with pytest.raises(Exception) as err:
        client.predict(0, 3, STEPS, 0.8, fixtures["main"], "", api_name="/compare")
    assert "k (potential index) must be an integer from 0 to 2, got 3" in str(err.value)


def test_compare_other_generator_lists_its_own_baseline(client, fixtures):
    strips, shape, table = client.predict(0, 4, STEPS, 1.0, fixtures["other"], "", api_name="/compare")
    rows = table_rows(table)
    # K = 5 over d = 4: axes and SeFa have 4 directions, so k = 4 is out of range for them only.
    assert list(rows) == ["potentials (loaded)", "linear (other-linear)", "sefa", "axes", "random"]
    assert rows["axes"][3] == rows["sefa"][3] == "k = 4 out of range for this method (K = 4)"
    assert "has no entry for the generator" in table and "VP %" not in table
    with Image.open(strips) as im:
        assert im.height == strips_height(5, 16)
    with Image.open(shape) as im:
        assert im.width == round((2.4 * 5 + 0.5) * 80)


def test_compare_shipped_potentials_get_their_report_row(fixtures):
    models = app.ModelCache(baselines_dir=fixtures["baselines"], report_path=fixtures["report"],
                            shipped_dir=fixtures["shipped_dir"])
    table = app.compare(models, 0, 0, STEPS, 1.0, fixtures["shipped"], "")[2]
    assert table_rows(table)["potentials (loaded)"][6:] == ["potential (shipped)", *REPORT_ROWS["potential (shipped)"]]


def test_compare_without_a_readable_report_still_answers(fixtures, tmp_path):
    demo = app.build_demo(fixtures["main"], baselines_dir=fixtures["baselines"], report_path=tmp_path / "none.json")
    demo.queue().launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        strips, _, table = Client(demo.local_url, verbose=False).predict(0, 0, STEPS, 1.0, fixtures["main"], "",
                                                                         api_name="/compare")
    finally:
        demo.close()
    assert "none.json` is not there" in table and "VP %" not in table
    assert list(table_rows(table)) == MAIN_METHODS and table_rows(table)["axes"][3] == "1.0000"
    with Image.open(strips) as im:
        assert im.height == strips_height(6, 8)
    (tmp_path / "bad.json").write_text("{not json")
    models = app.ModelCache(baselines_dir=fixtures["baselines"], report_path=tmp_path / "bad.json")
    table = app.compare(models, 0, 0, STEPS, 1.0, fixtures["main"], "")[2]
    assert "bad.json` could not be read (JSONDecodeError" in table and list(table_rows(table)) == MAIN_METHODS
    (tmp_path / "odd.json").write_text(json.dumps({"generators": {"x": {"columns": []}}}))  # no "source"
    models = app.ModelCache(baselines_dir=fixtures["baselines"], report_path=tmp_path / "odd.json")
    assert "odd.json` could not be read (KeyError" in app.compare(models, 0, 0, STEPS, 1.0, fixtures["main"], "")[2]
