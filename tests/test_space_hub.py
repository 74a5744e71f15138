"""The Space pulling potentials and their generator by Hub repo id, over HTTP from the local Hub, via gradio_client."""
import importlib.util
import socket
import uuid
from pathlib import Path

import pytest
import torch
from gradio_client import Client
from huggingface_hub import HfApi
from PIL import Image

import app
from hub_models import MLPGenerator
from pdetraversal import PotentialFlow

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("fit", ROOT / "train" / "fit.py")
fit = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fit)


def unique(name):
    return f"user/{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def published(hub_server, tmp_path_factory):
    """A generator and two versions of potentials for it, all published to the local Hub by repo id."""
    tmp = tmp_path_factory.mktemp("space-hub")
    gen_repo, pots_repo = unique("space-gen"), unique("space-pots")
    torch.manual_seed(0)
    MLPGenerator(latent_dim=4, image_size=16).push_to_hub(gen_repo)
    common = ["--generator", gen_repo, "--num-timesteps", "4", "--batch-size", "8", "--max-steps", "2",
              "--no-progress", "--push-to-hub", "--hub-model-id", pots_repo]
    assert fit.main([*common, "--num-potentials", "3", "--output-dir", str(tmp / "v1")]) == 0
    HfApi().create_tag(pots_repo, tag="v1")
    v1 = hub_server.branch_head(pots_repo)
    assert fit.main([*common, "--num-potentials", "5", "--output-dir", str(tmp / "v2")]) == 0
    return {"generator": gen_repo, "potentials": pots_repo, "v1": v1, "tmp": tmp}


@pytest.fixture(scope="module")
def client(published):
    demo = app.build_demo(str(Path(published["tmp"]) / "v1"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield Client(demo.local_url, verbose=False)
    finally:
        demo.close()


def test_space_loads_potentials_and_generator_by_repo_id(client, published):
    repo = published["potentials"]
    assert "K = 5 potentials" in client.predict(repo, "", api_name="/load")
    for revision in ("v1", published["v1"]):
        info = client.predict(repo, revision, api_name="/load")
        assert "K = 3 potentials" in info and published["generator"] in info
    strip, gif, landscape, trajectory = client.predict(0, 4, 3, 1.0, repo, "main", api_name="/traverse")
    with Image.open(gif) as im:
        assert im.n_frames >= 2 * 3 + 1
    assert Image.open(strip).width > 0 and Image.open(landscape).width > 0
    with Image.open(client.predict(0, 3, 1.0, repo, "v1", api_name="/overview")) as grid:
        rows_v1 = grid.height
    with Image.open(client.predict(0, 3, 1.0, repo, "main", api_name="/overview")) as grid:
        assert grid.height > rows_v1  # 5 rows on main, 3 at the v1 tag


def publish_files(name, files):
    repo = unique(name)
    api = HfApi()
    api.create_repo(repo)
    for filename, data in files.items():
        api.upload_file(path_or_fileobj=data, path_in_repo=filename, repo_id=repo)
    return repo


def test_space_says_what_is_wrong(client, published, tmp_path):
    good = tmp_path / "good"
    PotentialFlow(4, 2, generator=published["generator"]).save_pretrained(good)
    wrong = tmp_path / "wrong"
    PotentialFlow(6, 2, generator=published["generator"]).save_pretrained(wrong)
    config = (good / "config.json").read_bytes()
    cases = [
        (("user/no-such-repo", ""), "Hub repo 'user/no-such-repo' not found"),
        ((published["potentials"], "no-such-branch"), "revision 'no-such-branch' not found"),
        ((publish_files("missing", {"config.json": config}), ""), "model.safetensors not found"),
        ((publish_files("corrupt", {"config.json": config, "model.safetensors": b"junk" * 10}), ""),
         "not a readable safetensors file"),
        ((publish_files("misfit", {f: (wrong / f).read_bytes() for f in ("config.json", "model.safetensors")}), ""),
         "potentials over 6 latent dimensions but its generator"),
    ]
    for (source, revision), message in cases:
        with pytest.raises(Exception) as err:
            client.predict(source, revision, api_name="/load")
        assert message in str(err.value), (source, str(err.value))
        assert "Traceback" not in str(err.value)
    # the app is still serving after all that
    assert "K = 5 potentials" in client.predict(published["potentials"], "", api_name="/load")
