"""Publishing and pulling over real HTTP against the local Hub (tests/hub_server.py), through huggingface_hub."""
import importlib.util
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, hf_hub_download

from hub_models import MLPGenerator, load_flow_and_generator, load_generator
from hub_server import LocalHub
from pdetraversal import PotentialFlow
from pdetraversal.hub import CheckpointError

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("fit", ROOT / "train" / "fit.py")
fit = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fit)

# Prints the first traversal of the potentials named on the command line, as loaded by a fresh process.
LOAD_AND_TRAVERSE = """
import json, sys, torch
from hub_models import load_flow_and_generator
flow, gen = load_flow_and_generator(sys.argv[1], revision=sys.argv[2] if len(sys.argv) > 2 else None)
z0 = gen.sample_latent(2, seed=0)
print(json.dumps({"path": flow.traverse(z0, k=1).tolist(), "frames": gen.decode(z0).sum().item()}))
"""


def fresh_process(*args, env=None):
    proc = subprocess.run([sys.executable, "-c", LOAD_AND_TRAVERSE, *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **(env or {})}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def local_traversal(folder):
    flow, gen = load_flow_and_generator(folder)
    return flow.traverse(gen.sample_latent(2, seed=0), k=1).tolist()


def unique(name):
    return f"user/{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def pushed_generator(hub):
    repo = unique("gen")
    torch.manual_seed(0)
    MLPGenerator(latent_dim=4, image_size=16).push_to_hub(repo)
    return repo


def run_fit(generator, out, *extra):
    return fit.main(["--generator", generator, "--num-potentials", "3", "--num-timesteps", "4", "--batch-size", "8",
                     "--max-steps", "3", "--output-dir", str(out), "--no-progress", *extra])


def test_fit_push_then_load_by_repo_id_in_a_fresh_process(hub, pushed_generator, tmp_path):
    repo = unique("pots")
    assert run_fit(pushed_generator, tmp_path / "out", "--push-to-hub", "--hub-model-id", repo) == 0
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["generator"] == pushed_generator
    assert config["generator_revision"] == hub.branch_head(pushed_generator)  # pinned to the commit sha
    files = {f.rfilename for f in HfApi().model_info(repo).siblings} - {".gitattributes"}
    assert files == {"config.json", "model.safetensors", "README.md"}  # no checkpoint
    assert hub.count("POST", rf"/api/models/{repo}/commit/") == 1  # weights, config and card in one commit
    assert fresh_process(repo)["path"] == local_traversal(tmp_path / "out")
    readme = Path(hf_hub_download(repo, "README.md")).read_text()
    assert f"base_model: {pushed_generator}" in readme and "base_model_relation: adapter" in readme


def test_each_revision_loads_its_own_version(hub, pushed_generator, tmp_path):
    repo = unique("versions")
    api = HfApi()
    run_fit(pushed_generator, tmp_path / "v1", "--push-to-hub", "--hub-model-id", repo, "--seed", "1")
    sha1 = hub.branch_head(repo)
    api.create_tag(repo, tag="v1")
    api.create_branch(repo, branch="stable", revision=sha1)
    run_fit(pushed_generator, tmp_path / "v2", "--push-to-hub", "--hub-model-id", repo, "--seed", "2")
    sha2 = hub.branch_head(repo)
    assert sha1 != sha2
    v1, v2 = local_traversal(tmp_path / "v1"), local_traversal(tmp_path / "v2")
    assert v1 != v2
    for revision, expected in (("v1", v1), ("stable", v1), (sha1, v1), (sha2, v2), ("main", v2)):
        flow, gen = load_flow_and_generator(repo, revision=revision)
        assert flow.traverse(gen.sample_latent(2, seed=0), k=1).tolist() == expected, revision


@pytest.mark.slow  # over 10 s: run by .ci/run's second step
def test_reload_from_cache_offline_after_the_server_is_gone(tmp_path):
    server = LocalHub(tmp_path / "storage").start()
    env = {"HF_ENDPOINT": server.url, "HF_HOME": str(tmp_path / "home")}
    script = ("import torch; from hub_models import MLPGenerator; torch.manual_seed(0);"
              "MLPGenerator(latent_dim=4).push_to_hub('user/offline-gen')")
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, **env}, check=True, timeout=120)
    pots = tmp_path / "pots"
    PotentialFlow(4, 3, generator="user/offline-gen", generator_revision="main").save_pretrained(pots)
    push = f"from huggingface_hub import upload_folder; upload_folder(repo_id='user/offline-pots', folder_path='{pots}')"
    subprocess.run([sys.executable, "-c", f"from huggingface_hub import create_repo; create_repo('user/offline-pots'); {push}"],
                   cwd=ROOT, env={**os.environ, **env}, check=True, timeout=120)
    online = fresh_process("user/offline-pots", env=env)
    server.stop()
    offline = fresh_process("user/offline-pots", env={**env, "HF_HUB_OFFLINE": "1"})
    assert offline == online


def test_clear_errors(hub, pushed_generator, tmp_path):
    api = HfApi()
    with pytest.raises(CheckpointError, match="Hub repo 'user/no-such-repo' not found"):
        load_flow_and_generator("user/no-such-repo")
    with pytest.raises(CheckpointError, match="revision 'nope' not found in Hub repo"):
        load_generator(pushed_generator, revision="nope")

    def publish(name, files):
        repo = unique(name)
        folder = tmp_path / name
        folder.mkdir()
        for filename, data in files.items():
            (folder / filename).write_bytes(data)
        api.create_repo(repo)
        api.upload_folder(repo_id=repo, folder_path=folder)
        return repo

    good = tmp_path / "good"
    PotentialFlow(4, 3, generator=pushed_generator).save_pretrained(good)
    config = (good / "config.json").read_bytes()
    missing = publish("missing", {"config.json": config})
    with pytest.raises(CheckpointError, match=f"model.safetensors not found in Hub repo {missing}"):
        load_flow_and_generator(missing)
    corrupt = publish("corrupt", {"config.json": config, "model.safetensors": b"\x00" * 64})
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_flow_and_generator(corrupt)

    wrong_dim = tmp_path / "wrong"
    PotentialFlow(6, 3, generator=pushed_generator).save_pretrained(wrong_dim)
    mismatched = publish("mismatch", {f: (wrong_dim / f).read_bytes() for f in ("config.json", "model.safetensors")})
    with pytest.raises(CheckpointError, match=f"over 6 latent dimensions but its generator '{pushed_generator}' takes 4"):
        load_flow_and_generator(mismatched)


def test_failed_push_keeps_the_output_and_a_retry_succeeds(hub, pushed_generator, tmp_path, capsys):
    repo = unique("flaky")
    hub.fail_next("POST", rf"/api/models/{repo}/commit/main$", status=500)
    out = tmp_path / "out"
    assert run_fit(pushed_generator, out, "--push-to-hub", "--hub-model-id", repo) == 1
    err = capsys.readouterr().err
    assert "push to" in err and "failed" in err and f"saved in {out}" in err
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    retry = next(line.strip() for line in err.splitlines() if line.strip().startswith("hf upload"))
    subprocess.run(retry, shell=True, check=True, cwd=ROOT, timeout=120, capture_output=True)
    # Loaded in this process: the repo was never downloaded here, so nothing cached stands in for what the retry
    # pushed (a fresh process loading by repo id is test_fit_push_then_load_by_repo_id_in_a_fresh_process's).
    assert local_traversal(repo) == local_traversal(out)
