"""The download side against olah, an open-source Hub mirror that serves local git repos offline.

LocalHub (tests/hub_server.py) is our own reading of the Hub protocol; olah is someone else's. Loading
the same kind of repo (PyTorchModelHubMixin layout: config.json + model.safetensors) through olah with
the stock huggingface_hub client checks that what we download by branch and by commit sha does not
depend on a quirk of our server.

olah's dependencies clash with this environment's (it upgrades pydantic-settings), so it lives in its
own virtual environment; CI installs it with

    python -m venv /tmp/olah-venv && /tmp/olah-venv/bin/pip install olah==0.5.4

and the test finds `olah-cli` through $OLAH_CLI, then PATH, then /tmp/olah-venv/bin/olah-cli. If none
exists the test FAILS (it is never skipped). git must be installed (olah reads repos with GitPython).

HF_ENDPOINT is fixed at import in this process (it points at LocalHub), so the client runs in a
subprocess whose HF_ENDPOINT points at olah.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest
import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

INSTALL = "python -m venv /tmp/olah-venv && /tmp/olah-venv/bin/pip install olah==0.5.4"
DEFAULT_CLI = "/tmp/olah-venv/bin/olah-cli"
REPO_ID = "user/tiny-potential"


class TinyPotential(nn.Module, PyTorchModelHubMixin):
    def __init__(self, latent_dim: int = 4, hidden: int = 8):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent_dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))


def _olah_cli() -> str:
    if os.environ.get("OLAH_CLI"):
        if not os.access(os.environ["OLAH_CLI"], os.X_OK):
            pytest.fail(f"OLAH_CLI={os.environ['OLAH_CLI']} is not an executable. Install olah with:\n    {INSTALL}")
        return os.environ["OLAH_CLI"]
    for candidate in (shutil.which("olah-cli"), DEFAULT_CLI):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(f"olah-cli not found (set $OLAH_CLI or put it on PATH). Install it with:\n    {INSTALL}\n"
                "then export OLAH_CLI=/tmp/olah-venv/bin/olah-cli")


def _git(repo, *args) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout.strip()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mirror(tmp_path):
    """A git repo at <mirrors>/models/user/tiny-potential with two commits; returns (mirrors, shas, bytes)."""
    if shutil.which("git") is None:
        pytest.fail("git is required by this test and by olah (GitPython)")
    repo = tmp_path / "mirrors" / "models" / REPO_ID
    repo.mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    model = TinyPotential(latent_dim=3, hidden=5)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.linspace(-1, 1, p.numel()).reshape(p.shape))
    model.save_pretrained(repo)
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "add tiny potential")
    first = _git(repo, "rev-parse", "HEAD")
    snapshot_first = {f: (repo / f).read_bytes() for f in ("config.json", "model.safetensors")}
    (repo / "config.json").write_text(json.dumps({"latent_dim": 3, "hidden": 5, "note": "second"}))
    _git(repo, "commit", "-q", "-am", "edit config")
    second = _git(repo, "rev-parse", "HEAD")
    return tmp_path / "mirrors", first, second, snapshot_first, (repo / "config.json").read_bytes()


@pytest.fixture
def olah(tmp_path, mirror):
    cli, port = _olah_cli(), _free_port()
    config = tmp_path / "olah.toml"
    config.write_text(textwrap.dedent(f"""
        [basic]
        host = "127.0.0.1"
        port = {port}
        mirror-netloc = "127.0.0.1:{port}"
        mirror-lfs-netloc = "127.0.0.1:{port}"
        repos-path = "{tmp_path / 'olah-repos'}"
        mirrors-path = ["{mirror[0]}"]

        [accessibility]
        offline = true
    """))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env["OLAH_LOG_PATH"] = str(tmp_path / "olah-logs")
    log = open(tmp_path / "olah.out", "wb")
    proc = subprocess.Popen([cli, "-c", str(config), "--log-path", str(tmp_path / "olah-logs")], cwd=tmp_path,
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"olah-cli exited with {proc.returncode}:\n{(tmp_path / 'olah.out').read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/api/models/{REPO_ID}/revision/main", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"olah did not answer in 30 s:\n{(tmp_path / 'olah.out').read_text()}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


CLIENT = """
import json, sys
import torch
from torch import nn
from huggingface_hub import HfApi, PyTorchModelHubMixin, hf_hub_download, snapshot_download

class TinyPotential(nn.Module, PyTorchModelHubMixin):
    def __init__(self, latent_dim: int = 4, hidden: int = 8):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent_dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))

repo, first = sys.argv[1], sys.argv[2]
out = {"main_sha": HfApi().model_info(repo, revision="main").sha,
       "first_sha": HfApi().model_info(repo, revision=first).sha}
for rev in (first, "main"):
    out[rev] = {f: hf_hub_download(repo, f, revision=rev) for f in ("config.json", "model.safetensors")}
    out["snapshot_" + rev] = snapshot_download(repo, revision=rev)
model = TinyPotential.from_pretrained(repo, revision=first, strict=True)
out["weights_ok"] = all(torch.equal(p, torch.linspace(-1, 1, p.numel()).reshape(p.shape)) for p in model.parameters())
out["shape"] = [model.net[0].in_features, model.net[0].out_features]
print(json.dumps(out))
"""


def test_download_through_olah(tmp_path, mirror, olah):
    _, first, second, first_files, second_config = mirror
    env = {**os.environ, "HF_ENDPOINT": olah, "HF_HOME": str(tmp_path / "hf_home")}
    env.pop("HF_HUB_OFFLINE", None)
    proc = subprocess.run([sys.executable, "-c", CLIENT, REPO_ID, first], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["first_sha"] == first and out["main_sha"] == second  # revisions resolve to the git commits
    for name, data in first_files.items():
        with open(out[first][name], "rb") as f:
            assert f.read() == data
        with open(os.path.join(out["snapshot_" + first], name), "rb") as f:
            assert f.read() == data
    with open(out["main"]["config.json"], "rb") as f:
        assert f.read() == second_config
    with open(out["main"]["model.safetensors"], "rb") as f:
        assert f.read() == first_files["model.safetensors"]
    assert sorted(os.listdir(out["snapshot_main"])) == ["README.md", "config.json", "model.safetensors"]
    assert out["weights_ok"] and out["shape"] == [3, 5]
