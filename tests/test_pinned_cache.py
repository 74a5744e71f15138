"""`hub.resolve_file` at a commit sha: a file already in the cache is served with no request to the Hub (a commit's
files never change); a branch still asks, a file first seen missing stays missing, force_download downloads."""
import uuid

import pytest
from huggingface_hub import HfApi

from pdetraversal import PotentialFlow
from pdetraversal.hub import CheckpointError, resolve_file


def test_a_cached_file_at_a_commit_needs_no_request(hub, tmp_path):
    PotentialFlow(3, 2).save_pretrained(tmp_path / "pots")
    api, repo_id = HfApi(), f"user/pinned-{uuid.uuid4().hex[:8]}"
    api.create_repo(repo_id)
    sha = api.upload_folder(repo_id=repo_id, folder_path=tmp_path / "pots").oid
    first = resolve_file(repo_id, "config.json", sha)
    with pytest.raises(CheckpointError, match="absent.json not found in Hub repo"):
        resolve_file(repo_id, "absent.json", sha)

    hub.clear_requests()
    assert resolve_file(repo_id, "config.json", sha) == first
    assert hub.requests == []
    assert resolve_file(repo_id, "config.json", "main") == first
    assert hub.count("GET", r"/api/models/") == 1  # a branch can move: it is asked where it points
    hub.clear_requests()
    with pytest.raises(CheckpointError, match="absent.json not found in Hub repo"):
        resolve_file(repo_id, "absent.json", sha)
    assert resolve_file(repo_id, "config.json", sha, force_download=True) == first
    assert hub.count("GET", r"/config.json") + hub.count("HEAD", r"/config.json") >= 1
