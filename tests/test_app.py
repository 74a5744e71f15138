"""app.py end to end: the Gradio app served in-process, every named endpoint driven by gradio_client.

Fixture potentials (random weights over a tiny MLP generator) live in tmp folders, so these tests never need the
shipped weights; one test checks that the shipped default itself loads and renders.
"""
import contextlib
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
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
from pdetraversal.space import handlers
from pdetraversal.space.frames import STRIP_MIN_SIZE, frame_indices, frames_note, seconds_per_image
from pdetraversal.space.models import SHIPPED_DIR, ModelCache, shipped_models
from pdetraversal.space.public import ALLOW_LOCAL_ENV, REPO_ROOT, SHIPPED_POTENTIALS, RequestError, public_text

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


@pytest.fixture(autouse=True)
def local_folders(monkeypatch):
    """The fixtures are tmp folders: serve any folder, as for local use (the public rule has its own tests below)."""
    monkeypatch.setenv(ALLOW_LOCAL_ENV, "1")


@contextlib.contextmanager
def served_demo(fixtures, allow_local_paths: bool):
    """The fixture app on 127.0.0.1 and a free port, closed afterwards; yields its URL."""
    demo = app.build_demo(fixtures["main"], baselines_dir=fixtures["baselines"], report_path=fixtures["report"],
                          shipped_dir=fixtures["shipped_dir"], allow_local_paths=allow_local_paths)
    app.launch(demo.queue(), server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        yield demo.local_url
    finally:
        demo.close()


@pytest.fixture(scope="module")
def client(fixtures):
    with served_demo(fixtures, allow_local_paths=True) as url:
        yield Client(url, verbose=False)


@pytest.fixture(scope="module")
def public(fixtures):
    """The page as the Space serves it: local folders only from the allow-list. Yields (client, url)."""
    with served_demo(fixtures, allow_local_paths=False) as url:
        yield Client(url, verbose=False), url


def strip_width(num_frames: int, image_size: int) -> int:
    return num_frames * strip_tile(image_size) + (num_frames - 1) * 4


def strip_tile(image_size: int) -> int:
    """A strip frame's side: the image upscaled by whole factors to at least STRIP_MIN_SIZE = 64 px."""
    return image_size * plots.upscale_factor(image_size, image_size, STRIP_MIN_SIZE)


def test_named_endpoints(client):
    assert {"/traverse", "/overview", "/load", "/compare"} <= set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])


def test_traverse_returns_strip_gif_and_plots(client, fixtures):
    strip, gif, landscape, trajectory = client.predict(7, 1, STEPS, 0.8, fixtures["main"], "", api_name="/traverse")
    with Image.open(strip) as im:
        assert im.size == (strip_width(2 * STEPS + 1, 8), 64) == (7 * 64 + 6 * 4, 64)
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
        assert im.size == (strip_width(2 * STEPS + 1, 16), 64) and im.mode == "RGB"
    overview = client.predict(0, STEPS, 1.0, fixtures["other"], "", api_name="/overview")
    with Image.open(overview) as im:
        assert im.height == 5 * 64 + 4 * 4


@pytest.mark.parametrize("args, message", [
    ((0, 3, STEPS, 1.0), "k (potential index) must be an integer from 0 to 2, got 3"),
    ((0, -1, STEPS, 1.0), "from 0 to 2"),
    ((0, "x", STEPS, 1.0), "k (potential index) must be an integer"),
    ((0, 0, 0, 1.0), "number of steps must be an integer from 1 to 50, got 0."),
    ((0, 0, 51, 1.0), "number of steps must be an integer from 1 to 50, got 51."),
    ((0, 0, 2.5, 1.0), "number of steps must be an integer from 1 to 50, got 2.5."),
    ((0, 0, STEPS, 0.0), "step size must lie in (0, 5], got 0.0."),
    ((0, 0, STEPS, 7.0), "step size must lie in (0, 5], got 7.0."),
    ((0, 0, STEPS, "big"), "step size must lie in (0, 5], got 'big'."),
    ((-1, 0, STEPS, 1.0), "seed must be an integer from 0 to 2147483647, got -1."),
    ((2**31, 0, STEPS, 1.0), "seed must be an integer from 0 to 2147483647, got 2147483648."),
    # Values gr.Number's own conversion breaks on (a generic "upstream Gradio app has raised an exception" before):
    (("abc", 0, STEPS, 1.0), "seed must be an integer from 0 to 2147483647, got 'abc'."),
    ((None, 0, STEPS, 1.0), "seed must be an integer from 0 to 2147483647, got None."),
])
def test_bad_inputs_give_clear_errors(client, fixtures, args, message):
    with pytest.raises(Exception) as err:
        client.predict(*args, fixtures["main"], "", api_name="/traverse")
    assert message in str(err.value)
    assert "Traceback" not in str(err.value) and "upstream Gradio app" not in str(err.value)


def test_bad_start_and_nan_in_raw_json(client, fixtures):
    with pytest.raises(Exception, match=r"start must be 'data' or 'prior', got 'side'"):
        client.predict(0, 0, STEPS, 1.0, fixtures["main"], "", "side", api_name="/traverse")
    # gradio_client refuses to send NaN; JSON written by hand may hold a bare NaN token (Python's json reads it).
    body = '{"data": [NaN, %d, 1.0, %s, "", "prior"]}' % (STEPS, json.dumps(fixtures["main"]))
    url = client.src.rstrip("/") + "/gradio_api/call/overview"
    event = httpx.post(url, content=body, headers={"Content-Type": "application/json"}, timeout=30).json()["event_id"]
    answer = httpx.get(f"{url}/{event}", timeout=60).text
    assert "event: error" in answer
    assert "seed must be an integer from 0 to 2147483647, got nan." in answer


def rejections(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "pdetraversal.app"]


def test_a_rejected_request_logs_one_line_and_no_traceback(client, fixtures, caplog, capfd):
    caplog.set_level(logging.WARNING, logger="pdetraversal.app")
    capfd.readouterr()
    bad = [(("abc", 0, STEPS, 1.0, fixtures["main"], ""), "/traverse"),
           ((-1, STEPS, 1.0, fixtures["main"], ""), "/overview"),
           ((0, 9, STEPS, 1.0, fixtures["main"], ""), "/compare"),
           (("   ", ""), "/load"),
           (("tester/no-such-repo-here", ""), "/load")]
    for args, endpoint in bad:
        with pytest.raises(Exception):
            client.predict(*args, api_name=endpoint)
    lines = rejections(caplog)
    assert len(lines) == len(bad)  # one line per rejected request
    assert [line.split(":")[0] for line in lines] == [f"rejected {e}" for _, e in bad]
    assert lines[0] == "rejected /traverse: seed must be an integer from 0 to 2147483647, got 'abc'."
    assert lines[2] == "rejected /compare: k (potential index) must be an integer from 0 to 2, got 9."
    assert all("\n" not in line for line in lines)
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err and "gr.Error" not in out + err
    client.predict(0, 0, STEPS, 1.0, fixtures["main"], "", api_name="/traverse")  # a good request logs nothing
    assert len(rejections(caplog)) == len(bad)


def test_start_defaults_to_prior_and_data_needs_an_encoder(client, fixtures):
    # Calls written before the start argument existed get the prior, as they did then.
    omitted = client.predict(7, 1, STEPS, 0.8, fixtures["main"], "", api_name="/traverse")[0]
    prior = client.predict(7, 1, STEPS, 0.8, fixtures["main"], "", "prior", api_name="/traverse")[0]
    assert np.array_equal(np.asarray(Image.open(omitted)), np.asarray(Image.open(prior)))
    assert ModelCache().get(fixtures["main"]).start == "prior"  # what the page preselects for it
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
    cache = ModelCache(size=2)
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
    loaded = ModelCache().get("tester/app-potentials")
    assert loaded.flow.num_potentials == 3
    monkeypatch.setattr("pdetraversal.space.models.MAX_HUB_DOWNLOAD_MB", 1e-4)  # 100 bytes
    with pytest.raises(RequestError, match="over the download limit of 0.0001 MB"):
        ModelCache().get("tester/app-potentials")
    with pytest.raises(RequestError, match="not found"):
        ModelCache().get("tester/no-such-repo")


# ------------------------------------------------------------------------------------------- the public page
def error_of(call) -> str:
    with pytest.raises(Exception) as err:
        call()
    return str(err.value)


def test_public_page_serves_only_the_allowed_folders(hub, public, fixtures):
    client, _ = public
    refused = "Local folders other than the shipped models are not served here"
    # An existing system folder, a missing one and an existing checkpoint folder all get the same answer, which
    # names none of them: the page cannot be used to probe the server's file system.
    for source in ("/etc", "/no/such/folder", "/tmp", fixtures["other"], "../..", "hub_models/../tests"):
        message = error_of(lambda: client.predict(source, "", api_name="/load"))
        assert refused in message, source
        assert source not in message and "not found" not in message
    message = error_of(lambda: client.predict(0, 0, STEPS, 1.0, "/etc", "", api_name="/traverse"))
    assert refused in message and "/etc" not in message
    # Allowed: the default potentials' folder and the shipped folders (here the fixtures' shipped_dir).
    assert "K = 3" in client.predict(fixtures["main"], "", api_name="/load")
    assert "K = 3" in client.predict(fixtures["shipped"], "", api_name="/load")
    assert "fixture-potentials" in ModelCache(shipped_dir=fixtures["shipped_dir"], allow_local=False).get(
        fixtures["shipped"]).info
    # Hub repo ids are still looked up on the Hub.
    assert "Hub repo 'tester/none-such' not found" in error_of(
        lambda: client.predict("tester/none-such", "", api_name="/load"))


def test_allow_local_paths_setting(fixtures, monkeypatch):
    monkeypatch.delenv(ALLOW_LOCAL_ENV)
    with pytest.raises(RequestError, match="not served here"):
        ModelCache().get(fixtures["other"])  # the default: the public rule
    monkeypatch.setenv(ALLOW_LOCAL_ENV, "0")
    with pytest.raises(RequestError, match="not served here"):
        ModelCache().get(fixtures["other"])
    monkeypatch.setenv(ALLOW_LOCAL_ENV, "1")
    assert ModelCache().get(fixtures["other"]).flow.num_potentials == 5
    assert ModelCache(allow_local=False).allowed_folders() >= {
        (SHIPPED_DIR / "dsprites-vae-potentials").resolve(), (SHIPPED_DIR / "dsprites-vae").resolve()}
    assert ModelCache(allow_local=True).allowed_folders() is None


def test_public_page_refuses_a_hub_config_naming_a_local_generator(hub, public, fixtures, tmp_path):
    from huggingface_hub import HfApi

    client, _ = public
    generator = str(Path(fixtures["main"]).parent / "generator")  # exists on the server, outside the allow-list
    for name, gen in (("tester/app-local-gen", generator), ("tester/app-etc-gen", "/etc")):
        PotentialFlow(latent_dim=4, num_potentials=2, generator=gen).save_pretrained(tmp_path / name)
        HfApi().create_repo(name, exist_ok=True)
        HfApi().upload_folder(repo_id=name, folder_path=tmp_path / name)
        message = error_of(lambda: client.predict(name, "", api_name="/load"))
        assert f"Could not load potentials from '{name}': the generator its config names: local folders other " \
               "than the shipped models are not served here" in message
        assert gen not in message
    # A generator from the Hub is fine.
    HfApi().create_repo("tester/app-gen", exist_ok=True)
    HfApi().upload_folder(repo_id="tester/app-gen", folder_path=generator)
    PotentialFlow(latent_dim=4, num_potentials=2, generator="tester/app-gen").save_pretrained(tmp_path / "hubgen")
    HfApi().create_repo("tester/app-hub-gen", exist_ok=True)
    HfApi().upload_folder(repo_id="tester/app-hub-gen", folder_path=tmp_path / "hubgen")
    assert "K = 2" in client.predict("tester/app-hub-gen", "", api_name="/load")


def test_messages_name_files_without_server_paths(hub, public, fixtures, monkeypatch, tmp_path):
    from huggingface_hub import HfApi, constants

    client, _ = public
    # A corrupt folder in the allow-list; the fixtures' root plays the repository root.
    root = Path(fixtures["shipped_dir"]).parent
    monkeypatch.setattr("pdetraversal.space.public.REPO_ROOT", root)
    broken = Path(fixtures["shipped_dir"]) / "broken-potentials"
    broken.mkdir()
    try:
        shutil.copy(Path(fixtures["main"]) / "config.json", broken)
        (broken / "model.safetensors").write_bytes(b"not a safetensors file")
        message = error_of(lambda: client.predict(str(broken), "", api_name="/load"))
    finally:
        shutil.rmtree(broken)
    assert ("Could not load potentials from 'shipped/broken-potentials': "
            "shipped/broken-potentials/model.safetensors is not a readable safetensors file") in message
    assert str(root) not in message
    # A Hub repo whose weights are corrupt: the file is named as in the repo, not by its place in the Hub cache.
    PotentialFlow(latent_dim=4, num_potentials=2, generator="tester/app-corrupt-gen").save_pretrained(
        tmp_path / "corrupt")  # a Hub generator: the public rule lets the config through to the weights
    HfApi().create_repo("tester/app-corrupt", exist_ok=True)
    HfApi().upload_file(path_or_fileobj=str(tmp_path / "corrupt" / "config.json"), path_in_repo="config.json",
                        repo_id="tester/app-corrupt")
    HfApi().upload_file(path_or_fileobj=b"garbage bytes", path_in_repo="model.safetensors",
                        repo_id="tester/app-corrupt")
    with pytest.raises(RequestError) as err:  # what the loader itself says: the cache path is in it
        ModelCache().get("tester/app-corrupt")
    assert constants.HF_HUB_CACHE in err.value.message
    message = error_of(lambda: client.predict("tester/app-corrupt", "", api_name="/load"))
    assert ("Could not load potentials from 'tester/app-corrupt': model.safetensors is not a readable safetensors "
            "file") in message
    assert constants.HF_HUB_CACHE not in message and "snapshots" not in message and "models--" not in message


def test_public_strips_repo_root_and_hub_cache():
    from huggingface_hub import constants

    cache = os.path.abspath(constants.HF_HUB_CACHE)
    snapshot = os.path.join(cache, "models--a--b", "snapshots", "0123abcd", "model.safetensors")
    assert public_text(f"{snapshot} is bad") == "model.safetensors is bad"
    assert public_text(f"lock at '{os.path.join(cache, '.locks', 'x')}'") == "lock at '(Hub cache)'"
    assert public_text(f"{REPO_ROOT / 'hub_models' / 'x' / 'config.json'} of {REPO_ROOT}") == \
        "hub_models/x/config.json of ."
    assert public_text("user/name: 'hub_models/x' and /etc") == "user/name: 'hub_models/x' and /etc"
    assert public_text(f"{REPO_ROOT}-copy/x") == f"{REPO_ROOT}-copy/x"  # another folder: left alone


# ------------------------------------------------------------------------------------------- small things
def test_gif_folder_is_removed_at_exit(tmp_path):
    script = ("from pdetraversal.space.handlers import GIF_DIR; "
              "assert GIF_DIR.is_dir() and GIF_DIR.name.startswith('pdetraversal-gifs-'); "
              "(GIF_DIR / 'a.gif').write_bytes(b'GIF89a'); print(GIF_DIR)")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    folder = Path(done.stdout.strip().splitlines()[-1])
    assert folder.parent == tmp_path and not folder.exists()
    assert not list(tmp_path.glob("pdetraversal-gifs-*"))


def test_step_size_slider_starts_above_zero(client):
    sliders = [c["props"] for c in client.config["components"] if c["props"].get("label") == "Step size"]
    assert len(sliders) == 1 and sliders[0]["minimum"] == 0.01 > 0 and sliders[0]["maximum"] == 5.0


def test_a_failed_load_is_remembered_for_the_info_line(fixtures):
    cache = ModelCache()
    with pytest.raises(RequestError):
        cache.get("tester/not-a-repo-at-all")
    assert "Hub repo 'tester/not-a-repo-at-all' not found" in cache.failure(" tester/not-a-repo-at-all ", "")
    with pytest.raises(RequestError):
        cache.get("  ")
    assert cache.failure("", None).startswith("Enter a Hub repo id")
    assert cache.failure(fixtures["main"]) is None


def test_shipped_default_starts_from_encoded_sprites():
    # "data" starts at the VAE's code of the seed's dSprites image: the strip's z0 frame is its reconstruction.
    models = ModelCache()
    loaded = models.get(SHIPPED_POTENTIALS)
    gen = loaded.generator
    assert loaded.start == "data"
    z0 = handlers._start_latent(gen, 5, "data")
    image = dsprites.sample(1, seed=5)[0]
    with torch.no_grad():
        assert torch.equal(z0, gen.encode(image)[0])
        recon = gen.decode(z0)
    assert ((recon > 0.5) == (image > 0.5)).float().mean() > 0.98
    strip = handlers.traverse(models, 5, 2, 4, 1.0, SHIPPED_POTENTIALS, "", "data")[0]
    tile = strip_tile(64)
    assert tile == 64  # dSprites frames at their own size
    z0_tile = np.asarray(strip)[:, 4 * (tile + 4):4 * (tile + 4) + tile]  # frame 4 of 9: z0
    expected = np.asarray(plots.image_strip(recon, min_size=STRIP_MIN_SIZE))
    assert np.abs(z0_tile.astype(int) - expected.astype(int)).max() <= 1
    assert not np.array_equal(np.asarray(strip), np.asarray(handlers.traverse(
        models, 5, 2, 4, 1.0, SHIPPED_POTENTIALS, "", "prior")[0]))


def test_shipped_default_loads_and_renders():
    folder = REPO_ROOT / SHIPPED_POTENTIALS
    assert folder.is_dir(), f"the embedded default potentials {folder} are missing: the Space would not start"
    models = ModelCache()
    loaded = models.get(SHIPPED_POTENTIALS)
    assert loaded.flow.config["generator"] and loaded.generator.latent_dim == loaded.flow.latent_dim
    strip, gif, landscape, trajectory = handlers.traverse(models, 0, loaded.flow.num_potentials - 1, 5, 1.0,
                                                     SHIPPED_POTENTIALS, "")
    c, h, w = loaded.generator.decode(loaded.generator.sample_latent(1, seed=0)).shape[1:]
    assert strip.height == h * plots.upscale_factor(h, w, STRIP_MIN_SIZE)
    assert Path(gif).is_file() and landscape.width > 300 and trajectory.width > 300
    grid = handlers.overview(models, 0, 5, 1.0, SHIPPED_POTENTIALS, "")
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
    return num_methods * strip_tile(image_size) + (num_methods - 1) * 4


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
    assert np.array_equal(strip[:strip_tile(8), -alone.shape[1]:], alone[..., :3])
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
    loaded = ModelCache().get(fixtures["main"])
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
    models = ModelCache(baselines_dir=fixtures["baselines"], report_path=fixtures["report"],
                            shipped_dir=fixtures["shipped_dir"])
    table = handlers.compare(models, 0, 0, STEPS, 1.0, fixtures["shipped"], "")[2]
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
    models = ModelCache(baselines_dir=fixtures["baselines"], report_path=tmp_path / "bad.json")
    table = handlers.compare(models, 0, 0, STEPS, 1.0, fixtures["main"], "")[2]
    assert "bad.json` could not be read (JSONDecodeError" in table and list(table_rows(table)) == MAIN_METHODS
    (tmp_path / "odd.json").write_text(json.dumps({"generators": {"x": {"columns": []}}}))  # no "source"
    models = ModelCache(baselines_dir=fixtures["baselines"], report_path=tmp_path / "odd.json")
    table = handlers.compare(models, 0, 0, STEPS, 1.0, fixtures["main"], "")[2]
    assert "odd.json` could not be read (KeyError" in table


# ------------------------------------------------------------------------------------------- the model picker
def picker_props(client) -> dict:
    return next(c["props"] for c in client.config["components"] if c["props"].get("elem_id") == "picker")


def expected_label(folder: Path) -> str:
    config = json.loads((folder / "config.json").read_text())
    return f"{Path(config['generator']).name} (K={config['num_potentials']})"


def test_picker_lists_every_shipped_potentials_folder():
    # Compared with a glob: other shipped folders may come and go; each is picked up with no code change.
    folders = sorted(p for p in (REPO_ROOT / "hub_models").glob("*-potentials") if (p / "config.json").is_file())
    models = shipped_models()
    assert [(REPO_ROOT / source).resolve() for _, source in models] == [p.resolve() for p in folders]
    assert [label for label, _ in models] == [expected_label(p) for p in folders]
    assert all(not Path(source).is_absolute() for _, source in models)  # the source box's repo-relative names
    shipped = dict((source, label) for label, source in models)
    assert shipped[SHIPPED_POTENTIALS] == expected_label(REPO_ROOT / SHIPPED_POTENTIALS)


def test_picker_discovers_new_folders_and_skips_unreadable_ones(fixtures, tmp_path, caplog):
    shutil.copytree(fixtures["main"], tmp_path / "b-potentials")
    shutil.copytree(fixtures["other"], tmp_path / "a-potentials")
    shutil.copytree(fixtures["main"], tmp_path / "c-potentials")  # same generator and K as b: told apart
    (tmp_path / "empty-potentials").mkdir()  # no config.json: not a model
    shutil.copytree(fixtures["main"], tmp_path / "main-copy")  # not named *-potentials
    (tmp_path / "broken-potentials").mkdir()
    (tmp_path / "broken-potentials" / "config.json").write_text("{not json")
    caplog.set_level(logging.WARNING, logger="pdetraversal.app")
    assert shipped_models(tmp_path) == [("generator (K=5)", str(tmp_path / "a-potentials")),
                                            ("generator (K=3)", str(tmp_path / "b-potentials")),
                                            ("generator (K=3) [c-potentials]", str(tmp_path / "c-potentials"))]
    assert any("broken-potentials left out" in line for line in rejections(caplog))


def test_models_endpoint_offers_the_pickers_choices(client, fixtures):
    models = client.predict(api_name="/models")
    # The default first (not a shipped folder here: listed under its own name), then the fixture's shipped folder.
    assert models == [{"label": f"{fixtures['main']} (K=3)", "source": fixtures["main"]},
                      {"label": "generator (K=3)", "source": fixtures["shipped"]}]
    props = picker_props(client)
    assert [list(c) for c in props["choices"]] == [[m["label"], m["source"]] for m in models]
    assert props["value"] == fixtures["main"]
    assert "K = 3" in client.predict(models[1]["source"], "", api_name="/load")  # a choice is a source


def test_shipped_default_is_the_picked_model(monkeypatch):
    monkeypatch.delenv(ALLOW_LOCAL_ENV)
    demo = app.build_demo(SHIPPED_POTENTIALS)
    props = next(b.get_config() for b in demo.blocks.values() if getattr(b, "elem_id", None) == "picker")
    assert props["value"] == SHIPPED_POTENTIALS  # listed once, under its generator's name, selected
    assert [tuple(c) for c in props["choices"]] == [
        (label, source) for label, source in shipped_models() if source == SHIPPED_POTENTIALS] + [
        (label, source) for label, source in shipped_models() if source != SHIPPED_POTENTIALS]


# ------------------------------------------------------------------------------------------- slow generators
def test_frame_indices_keep_z0_and_both_ends_evenly_spaced():
    assert frame_indices(10, 21).tolist() == list(range(21))  # they fit: all of them
    assert frame_indices(10, 500).tolist() == list(range(21))
    assert frame_indices(10, 5).tolist() == [0, 5, 10, 15, 20]
    assert frame_indices(10, 6).tolist() == [0, 5, 10, 15, 20]  # an odd count: z0 in the middle
    assert frame_indices(10, 7).tolist() == [0, 3, 7, 10, 13, 17, 20]
    assert frame_indices(3, 6).tolist() == [0, 1, 3, 5, 6]  # symmetric about z0 (index 3)
    assert frame_indices(10, 0).tolist() == frame_indices(10, 2).tolist() == [0, 10, 20]  # MIN_FRAMES
    assert frame_indices(1, 1).tolist() == [0, 1, 2]


def make_slow_potentials(root: Path) -> str:
    """Potentials (K = 2) over a tiny random DDIM pipeline (tests/test_ddim.py's): ~10 UNet passes per image."""
    from test_ddim import save_pipeline

    save_pipeline(root / "ddim")
    torch.manual_seed(3)
    PotentialFlow(latent_dim=192, num_potentials=2, hidden_dim=16, generator=str(root / "ddim"),
                  labels=["a", "b"]).save_pretrained(root / "potentials")
    return str(root / "potentials")


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    return make_slow_potentials(tmp_path_factory.mktemp("slow"))


def overview_size(frames: int, image_size: int, labels: list[str]) -> tuple[int, int]:
    """The overview's (width, height): one labelled row of `frames` frames per label."""
    row = Image.new("RGB", (strip_width(frames, image_size), strip_tile(image_size)))
    return plots.grid([row] * len(labels), labels).size


class Recorder:
    """Stands in for gr.Progress: keeps every (done, total) it is told, with its unit."""

    def __init__(self):
        self.calls = []

    def __call__(self, progress, desc=None, unit="steps"):
        self.calls.append((progress, unit))


class Sleepy:
    """A generator whose decodes take the given seconds, one after the other."""
    latent_dim = 1

    def __init__(self, *seconds):
        self.seconds = list(seconds)

    def sample_latent(self, n, seed=None):
        return torch.zeros(n, 1)

    def decode(self, z):
        time.sleep(self.seconds.pop(0))
        return torch.zeros(len(z), 1, 1, 1)


def test_decode_time_is_the_least_of_a_few_tries():
    # A shared machine only adds time: the least of up to 3 tries, fewer once 0.5 s were spent.
    assert 0.05 <= seconds_per_image(Sleepy(0.3, 0.05, 0.15, 9)) < 0.15
    assert 0.2 <= seconds_per_image(Sleepy(0.4, 0.2, 0.01)) < 0.3  # 0.6 s spent after two: no third
    assert 0.6 <= seconds_per_image(Sleepy(0.6, 0.01)) < 0.9  # a slow generator: one try


def test_slow_generator_decodes_within_the_budget(slow, monkeypatch):
    # The allow-list env var (set by local_folders) lets ModelCache() open the tmp folder.
    monkeypatch.setattr("pdetraversal.space.frames.DECODE_BUDGET_S", 1.0)
    loaded = ModelCache().get(slow)
    assert 1e-4 < loaded.decode_s < 10 and loaded.frame_budget == int(1.0 / loaded.decode_s)
    # No budget at all: every strip keeps z0 and both ends, and nothing else.
    monkeypatch.setattr("pdetraversal.space.frames.DECODE_BUDGET_S", 0.0)
    # One frame per chunk: each decoded frame is reported.
    monkeypatch.setattr("pdetraversal.space.frames.PROGRESS_EVERY_S", 0.0)
    models = ModelCache()
    loaded = models.get(slow)
    assert loaded.frame_budget == 0 and "Slow generator" in loaded.info and "at most 0 frames" in loaded.info
    steps, k = 6, 1
    progress = Recorder()
    strip, gif, landscape, trajectory = handlers.traverse(models, 4, k, steps, 1.0, slow, "", "prior", progress)
    assert progress.calls == [((i, 3), "frames") for i in range(4)]
    assert strip.size == (strip_width(3, 8), 64)
    with Image.open(gif) as im:
        assert im.n_frames == 2 * 3 - 2
    # The three frames are -end, z0 and +end of the full traversal.
    gen = loaded.generator
    path = traverse_both_ways(loaded.flow, gen.sample_latent(1, seed=4), torch.tensor([k]), steps, 1.0)[:, 0]
    with torch.no_grad():
        ends = gen.decode(path[[0, steps, 2 * steps]])
    expected = plots.image_strip(ends, min_size=STRIP_MIN_SIZE, highlight=1)
    assert np.abs(np.asarray(strip).astype(int) - np.asarray(expected).astype(int)).max() <= 1
    assert landscape.width > 300 and trajectory.width > 300  # drawn from the full paths
    assert frames_note(loaded, steps).startswith("**Frames capped:**")
    assert "Of the traversal's 13 frames the strip shows 3 and each overview row 3" in frames_note(loaded, steps)
    progress = Recorder()
    grid = handlers.overview(models, 4, steps, 1.0, slow, "", "prior", progress)
    assert grid.size == overview_size(3, 8, ["0: a", "1: b"]) and progress.calls[-1] == ((6, 6), "frames")
    progress = Recorder()
    strips, _, table = handlers.compare(models, 4, k, steps, 1.0, slow, "", "prior", progress)
    names = [m.name for m in loaded.methods]
    assert names == ["potentials (loaded)", "axes", "random"]  # no SeFa: no linear layer acts on z
    assert strips.height == strips_height(3, 8) and progress.calls[-1] == ((9, 9), "frames")
    assert "each strip shows 3 of its 13 frames" in table and list(table_rows(table)) == names
    assert table_rows(table)["axes"][3] == "1.0000"  # path shapes come from the full, unthinned paths


def test_slow_generator_through_the_client(client, slow, monkeypatch):
    # A budget of about 8 decodes, timed here (load-time timing on a shared machine may differ: the page says N).
    gen = ModelCache().get(slow).generator
    monkeypatch.setattr("pdetraversal.space.frames.DECODE_BUDGET_S", 8 * seconds_per_image(gen))
    monkeypatch.setattr("pdetraversal.space.frames.PROGRESS_EVERY_S", 0.0)
    copy = str(Path(slow).parent / "copy")  # a source the served cache has not loaded before the patch
    shutil.copytree(slow, copy, dirs_exist_ok=True)
    info = client.predict(copy, "", api_name="/load")
    budget = int(re.search(r"decodes at most (\d+) frames", info).group(1))
    steps = 12
    shown = len(frame_indices(steps, budget))
    assert 3 <= shown < 2 * steps + 1  # capped
    job = client.submit(0, 1, steps, 1.0, copy, "", api_name="/traverse")
    strip, gif, _, _ = job.result(timeout=120)
    with Image.open(strip) as im:
        assert im.size == (strip_width(shown, 8), 64)
    updates = []
    while not job.communicator.updates.empty():
        update = job.communicator.updates.get_nowait()
        updates += [u for u in getattr(update, "progress_data", None) or [] if u.unit == "frames"]
    assert updates and all(u.length == shown and 0 <= u.index <= shown for u in updates)
    overview = client.predict(0, steps, 1.0, copy, "", api_name="/overview")
    row = len(frame_indices(steps, budget // 2))
    with Image.open(overview) as im:
        assert im.size == overview_size(row, 8, ["0: a", "1: b"])
    table = client.predict(0, 1, steps, 1.0, copy, "", api_name="/compare")[2]
    assert f"each strip shows {len(frame_indices(steps, budget // 3))} of its 25 frames" in table
