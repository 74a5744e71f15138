"""app.py end to end: the Gradio app served in-process, every named endpoint driven by gradio_client.

Fixture potentials (random weights over a tiny MLP generator) live in tmp folders, so these tests never need the
shipped weights; one test checks that the shipped default itself loads and renders.
"""
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
from pdetraversal.data import dsprites

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


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    return {"main": make_potentials(root / "main", 3),
            "other": make_potentials(root / "other", 5, channels=3, image_size=16, seed=1)}


@pytest.fixture(scope="module")
def client(fixtures):
    demo = app.build_demo(fixtures["main"])
    demo.queue().launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        yield Client(demo.local_url, verbose=False)
    finally:
        demo.close()


def strip_width(num_frames: int, image_size: int) -> int:
    tile = image_size * plots.upscale_factor(image_size, image_size, 128)
    return num_frames * tile + (num_frames - 1) * 4


def test_named_endpoints(client):
    assert {"/traverse", "/overview", "/load"} <= set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])


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
