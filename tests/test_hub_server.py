"""LocalHub (tests/hub_server.py) driven only through huggingface_hub's public API, over real HTTP.

If these pass, the other tests can trust the local Hub to behave like huggingface.co for the calls
the product makes: create, commit, download by branch / tag / commit sha, refs, errors, offline cache.
"""

import json
import os
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
import uuid

import pytest
import torch
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    PyTorchModelHubMixin,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors.torch import load_file, save_file
from torch import nn

from hub_server import LocalHub


def _repo_id(name: str) -> str:
    return f"user/{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def folder(tmp_path):
    """A small model folder: model.safetensors + config.json."""
    out = tmp_path / "folder"
    out.mkdir()
    save_file({"w": torch.arange(12.0).reshape(3, 4), "b": torch.ones(4)}, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps({"latent_dim": 4, "num_potentials": 3}))
    return out


def _read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _commit_config(api: HfApi, repo_id: str, config: dict, revision: str = "main") -> str:
    op = CommitOperationAdd("config.json", json.dumps(config).encode())
    return api.create_commit(repo_id, [op], commit_message=f"config {config}", revision=revision).oid


def test_create_repo_twice(hub):
    api, repo_id = HfApi(), _repo_id("create")
    url = api.create_repo(repo_id)
    assert url.repo_id == repo_id and url.startswith(hub.url)
    assert api.create_repo(repo_id, exist_ok=True).repo_id == repo_id
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo(repo_id)
    assert err.value.response.status_code == 409
    # Like the Hub: a fresh repo has `main` with an initial commit holding .gitattributes.
    info = api.model_info(repo_id)
    assert info.sha == hub.branch_head(repo_id) and [s.rfilename for s in info.siblings] == [".gitattributes"]
    assert api.create_repo(_repo_id("space"), repo_type="space", space_sdk="gradio").repo_type == "space"


def test_upload_folder_then_download(hub, folder, tmp_path):
    api, repo_id = HfApi(), _repo_id("upload")
    api.create_repo(repo_id)
    commit = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message="add potentials")
    assert len(commit.oid) == 40 and hub.branch_head(repo_id) == commit.oid

    path = hf_hub_download(repo_id, "model.safetensors")
    assert _read(path) == _read(folder / "model.safetensors")
    assert torch.equal(load_file(path)["w"], torch.arange(12.0).reshape(3, 4))
    assert commit.oid in path  # cached under snapshots/<commit sha>

    snap = snapshot_download(repo_id, revision="main")
    assert sorted(os.listdir(snap)) == [".gitattributes", "config.json", "model.safetensors"]
    assert _read(os.path.join(snap, "config.json")) == _read(folder / "config.json")
    local = snapshot_download(repo_id, local_dir=tmp_path / "local", allow_patterns=["*.json"])
    assert sorted(p for p in os.listdir(local) if not p.startswith(".")) == ["config.json"]
    # Unchanged files are detected through the preupload oid: no empty commit.
    assert api.upload_folder(repo_id=repo_id, folder_path=folder).oid == commit.oid
    sizes = {s.rfilename: s.size for s in api.model_info(repo_id, files_metadata=True).siblings}
    assert sizes["model.safetensors"] == (folder / "model.safetensors").stat().st_size
    assert all(s.size is None for s in api.model_info(repo_id).siblings)  # sizes only when asked for


def test_download_each_commit_by_sha(hub):
    api, repo_id = HfApi(), _repo_id("history")
    api.create_repo(repo_id)
    first = _commit_config(api, repo_id, {"version": 1})
    second = _commit_config(api, repo_id, {"version": 2})
    assert first != second and hub.branch_head(repo_id) == second
    for sha, version in ((first, 1), (second, 2), ("main", 2)):
        assert json.loads(_read(hf_hub_download(repo_id, "config.json", revision=sha))) == {"version": version}
    assert api.model_info(repo_id, revision=first).sha == first
    assert api.model_info(repo_id).sha == second
    assert api.repo_info(repo_id, revision="main").sha == second
    assert [c.commit_id for c in api.list_repo_commits(repo_id)][:2] == [second, first]
    with open(snapshot_download(repo_id, revision=first) + "/config.json") as f:
        assert json.load(f) == {"version": 1}


def test_branches_tags_and_refs(hub):
    api, repo_id = HfApi(), _repo_id("refs")
    api.create_repo(repo_id)
    v1 = _commit_config(api, repo_id, {"version": 1})
    api.create_branch(repo_id, branch="dev", revision=v1)
    api.create_tag(repo_id, tag="v1.0", revision=v1)
    api.create_branch(repo_id, branch="dev", exist_ok=True)
    v2 = _commit_config(api, repo_id, {"version": 2})
    on_dev = _commit_config(api, repo_id, {"version": "dev"}, revision="dev")

    refs = api.list_repo_refs(repo_id)
    assert {b.name: b.target_commit for b in refs.branches} == {"main": v2, "dev": on_dev}
    assert [(t.name, t.ref, t.target_commit) for t in refs.tags] == [("v1.0", "refs/tags/v1.0", v1)]
    for revision, version in (("v1.0", 1), ("dev", "dev"), ("main", 2), (v1, 1)):
        path = hf_hub_download(repo_id, "config.json", revision=revision)
        assert json.loads(_read(path)) == {"version": version}
    assert api.model_info(repo_id, revision="v1.0").sha == v1
    assert api.model_info(repo_id, revision="dev").sha == on_dev
    with pytest.raises(HfHubHTTPError) as err:
        api.create_tag(repo_id, tag="v1.0", revision=v2)
    assert err.value.response.status_code == 409
    api.delete_branch(repo_id, branch="dev")
    assert [b.name for b in api.list_repo_refs(repo_id).branches] == ["main"]


def test_errors_map_to_huggingface_hub_exceptions(hub, folder):
    api, repo_id = HfApi(), _repo_id("errors")
    api.create_repo(repo_id)
    api.upload_folder(repo_id=repo_id, folder_path=folder)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(_repo_id("missing"), "config.json")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(_repo_id("missing"))
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo_id, "config.json", revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo_id, "config.json", revision="0" * 40)
    with pytest.raises(RevisionNotFoundError):
        api.model_info(repo_id, revision="no-such-branch")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_id, "missing.safetensors")
    with pytest.raises(EntryNotFoundError):  # deleting a file that is not there
        api.create_commit(repo_id, [CommitOperationDelete("nope.txt")], commit_message="delete")


def test_injected_commit_failure_then_retry(hub, folder):
    api, repo_id = HfApi(), _repo_id("fault")
    api.create_repo(repo_id)
    before = hub.branch_head(repo_id)
    hub.fail_next("POST", r"/commit/main$", status=500)
    with pytest.raises(HfHubHTTPError) as err:
        api.upload_folder(repo_id=repo_id, folder_path=folder)
    assert err.value.response.status_code == 500
    assert hub.branch_head(repo_id) == before  # nothing half-committed
    commit = api.upload_folder(repo_id=repo_id, folder_path=folder)
    assert hub.branch_head(repo_id) == commit.oid != before
    assert hub.count("POST", rf"/api/models/{repo_id}/commit/") == 2


def test_commit_with_parent_and_deletions(hub, folder):
    api, repo_id = HfApi(), _repo_id("parent")
    api.create_repo(repo_id)
    first = api.upload_folder(repo_id=repo_id, folder_path=folder).oid
    second = _commit_config(api, repo_id, {"version": 2})
    with pytest.raises(HfHubHTTPError) as err:  # stale parent: someone committed in between
        api.create_commit(repo_id, [CommitOperationDelete("config.json")], commit_message="x", parent_commit=first)
    assert err.value.response.status_code == 412
    third = api.create_commit(
        repo_id, [CommitOperationDelete("config.json"), CommitOperationAdd("sub/notes.txt", b"hello")],
        commit_message="reshape", parent_commit=second).oid
    assert api.list_repo_files(repo_id) == [".gitattributes", "model.safetensors", "sub/notes.txt"]
    api.create_commit(repo_id, [CommitOperationDelete("sub/")], commit_message="drop folder", parent_commit=third)
    assert api.list_repo_files(repo_id) == [".gitattributes", "model.safetensors"]
    assert api.list_repo_files(repo_id, revision=first) == [".gitattributes", "config.json", "model.safetensors"]


def test_offline_download_from_cache_in_subprocess(hub, folder):
    api, repo_id = HfApi(), _repo_id("offline")
    api.create_repo(repo_id)
    sha = api.upload_folder(repo_id=repo_id, folder_path=folder).oid
    online = hf_hub_download(repo_id, "model.safetensors", revision="main")
    script = textwrap.dedent(f"""
        from huggingface_hub import hf_hub_download, constants
        assert constants.HF_HUB_OFFLINE
        print(hf_hub_download({repo_id!r}, "model.safetensors", revision="main"))
        print(hf_hub_download({repo_id!r}, "model.safetensors", revision={sha!r}))
    """)
    n_requests = len(hub.requests)
    out = subprocess.run([sys.executable, "-c", script], env={**os.environ, "HF_HUB_OFFLINE": "1"},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [online, online]
    assert len(hub.requests) == n_requests  # nothing reached the server


class TinyPotential(nn.Module, PyTorchModelHubMixin, library_name="pdetraversal", tags=["test"]):
    def __init__(self, latent_dim: int = 4, hidden: int = 8):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent_dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, z):
        return self.net(z).squeeze(-1)


def test_pytorch_model_hub_mixin_round_trip(hub):
    repo_id = _repo_id("mixin")
    torch.manual_seed(0)
    model = TinyPotential(latent_dim=5, hidden=7)
    commit = model.push_to_hub(repo_id, commit_message="tiny potential")
    assert hub.branch_head(repo_id) == commit.oid
    assert set(HfApi().list_repo_files(repo_id)) >= {"config.json", "model.safetensors", "README.md"}
    loaded = TinyPotential.from_pretrained(repo_id, strict=True)
    assert loaded.net[0].in_features == 5 and loaded.net[0].out_features == 7
    z = torch.randn(3, 5)
    assert torch.equal(loaded(z), model(z))
    assert hub.count("POST", r"/api/validate-yaml") >= 1  # the generated model card was validated


def test_xet_enabled_client_uploads_through_the_pipeline(hub, folder):
    """The production client (hf_xet installed, not disabled) takes another upload path: check it too."""
    repo_id = _repo_id("xet")
    script = textwrap.dedent(f"""
        import hf_xet
        from huggingface_hub import HfApi, constants, hf_hub_download
        assert not constants.HF_HUB_DISABLE_XET
        api = HfApi()
        api.create_repo({repo_id!r})
        print(api.upload_folder(repo_id={repo_id!r}, folder_path={str(folder)!r}).oid)
        print(hf_hub_download({repo_id!r}, "model.safetensors"))
    """)
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_XET"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    sha, path = out.stdout.split()
    assert sha == hub.branch_head(repo_id)
    assert _read(path) == _read(folder / "model.safetensors")


def _raw(url, method="GET", body=None, token=True):
    headers = {"Authorization": "Bearer t"} if token else {}
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_server_answers_bad_requests_instead_of_hanging(hub):
    repo_id = _repo_id("raw")
    HfApi().create_repo(repo_id)
    status, _, body = _raw(f"{hub.url}/api/models/{repo_id}/commit/main", "POST", b"{not json\n")
    assert status == 500 and b"error" in body
    status, _, _ = _raw(f"{hub.url}/api/repos/create", "POST", b'{"name": "x"}', token=False)
    assert status == 401
    status, headers, _ = _raw(f"{hub.url}/{repo_id}/resolve/main/nope.bin", "HEAD")
    assert status == 404 and headers["X-Error-Code"] == "EntryNotFound" and len(headers["X-Repo-Commit"]) == 40
    hub.fail_next("GET", r"/api/models/.*/refs", status=None)  # drop the connection
    with pytest.raises(Exception):
        _raw(f"{hub.url}/api/models/{repo_id}/refs")
    status, _, body = _raw(f"{hub.url}/api/models/{repo_id}/refs")
    assert status == 200 and json.loads(body)["branches"][0]["name"] == "main"


def test_storage_survives_a_restart(hub, folder):
    api, repo_id = HfApi(), _repo_id("persist")
    api.create_repo(repo_id)
    sha = api.upload_folder(repo_id=repo_id, folder_path=folder).oid
    with LocalHub(hub.root) as second:
        other = HfApi(endpoint=second.url)
        assert other.model_info(repo_id).sha == sha
        path = hf_hub_download(repo_id, "config.json", endpoint=second.url, cache_dir=str(folder.parent / "c2"))
        assert _read(path) == _read(folder / "config.json")
