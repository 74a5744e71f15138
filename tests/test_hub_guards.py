"""pdetraversal.hub's guards for files named by strangers: an unreachable Hub answers fast and plainly, the sizes in
config.json are checked against the safetensors header before anything is built, non-finite weights are refused."""
import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch

from hub_models import MLPGenerator, load_flow_and_generator, load_generator
from pdetraversal import PotentialFlow
from pdetraversal.hub import CheckpointError

ROOT = Path(__file__).resolve().parents[1]

# Each way in: the Python API, the Space's loader (with its download cap) and train/fit.py; then a repo that is in
# the cache (argv[2]), which must load without the Hub.
PROBE = r"""
import contextlib, io, json, sys, time
import torch
sys.path.insert(0, "train")
import fit
from hub_models import load_flow_and_generator, load_generator
from pdetraversal import PotentialFlow
from pdetraversal.hub import CheckpointError
out = {}
for name, call in [
    ("api", lambda: PotentialFlow.from_pretrained("nobody/nothing")),
    ("api@rev", lambda: PotentialFlow.from_pretrained("nobody/nothing", revision="v1")),
    ("space", lambda: load_flow_and_generator("nobody/nothing", max_download_bytes=1e8)),
]:
    t = time.perf_counter()
    try:
        call()
        out[name] = ["loaded", 0.0]
    except CheckpointError as e:
        out[name] = [str(e), time.perf_counter() - t]
t = time.perf_counter()
err = io.StringIO()
with contextlib.redirect_stderr(err):
    try:
        code = fit.main(["--generator", "nobody/nothing", "--output-dir", sys.argv[1], "--max-steps", "1"])
    except SystemExit as e:
        code = e.code
out["fit"] = [err.getvalue() + str(code), time.perf_counter() - t]
t = time.perf_counter()
cached = load_generator(sys.argv[2])
out["cached"] = [time.perf_counter() - t, cached.decode(torch.zeros(1, 4)).flatten().tolist()]
print(json.dumps(out))
"""


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


@pytest.mark.parametrize("endpoint", [f"http://127.0.0.1:{closed_port()}", "http://hub.nothing.invalid"],
                         ids=["closed-port", "unknown-host"])
def test_an_unreachable_hub_is_one_fast_plain_answer_and_a_cached_repo_still_loads(endpoint, hub, tmp_path):
    # One process per endpoint for both checks: each start imports torch and diffusers (4+ s), and huggingface_hub
    # reads HF_ENDPOINT once, on import.
    torch.manual_seed(0)
    repo = f"user/guards-cached-{tmp_path.name}"
    MLPGenerator(latent_dim=4).push_to_hub(repo)
    expected = load_generator(repo).decode(torch.zeros(1, 4))  # now in the cache (HF_HOME of conftest)
    env = {**os.environ, "HF_ENDPOINT": endpoint, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "out"), repo], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, where in (("api", "nobody/nothing"), ("api@rev", "nobody/nothing@v1"), ("space", "nobody/nothing"),
                        ("fit", "nobody/nothing")):
        message, seconds = out[name]
        assert f"the Hub cannot be reached and {where}" in message, (name, message)
        assert "is not in the local cache (set HF_HUB_OFFLINE=1 to skip the retries)" in message, (name, message)
        assert seconds < 10, (name, seconds)  # hf_hub_download's own retries took 23 s
    assert "Traceback" not in out["fit"][0] and out["fit"][0].startswith("error: cannot load --generator nobody/nothing")
    seconds, values = out["cached"]
    assert seconds < 10
    assert torch.allclose(torch.tensor(values), expected.flatten())


@pytest.mark.parametrize("change", [{"hidden_dim": 8000}, {"hidden_dim": 1_000_000}, {"num_potentials": 10**12},
                                    {"latent_dim": 10**9}], ids=lambda c: "-".join(map(str, c.items())))
def test_sizes_in_config_json_are_checked_against_the_header_before_building(change, tmp_path):
    PotentialFlow(4, 3, hidden_dim=8, generator="unused").save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, **change}))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    t = time.perf_counter()
    with pytest.raises(CheckpointError, match=r"does not match PotentialFlow: (missing key|key '[\w.]+' has shape)"):
        PotentialFlow.from_pretrained(tmp_path)
    assert time.perf_counter() - t < 2
    # hidden_dim 8000 alone would have been 10^8 floats per layer pair (0.4 GB): nothing of that size was allocated.
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000


def test_a_generator_config_is_checked_the_same_way(tmp_path):
    MLPGenerator(latent_dim=4).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "hidden_dim": 10**7}))
    with pytest.raises(CheckpointError, match="does not match MLPGenerator: key .* has shape .*; and \\d+ more|"
                                              "does not match MLPGenerator"):
        load_generator(tmp_path)


def test_non_finite_weights_are_refused(tmp_path):
    gen = tmp_path / "gen"
    MLPGenerator(latent_dim=4).save_pretrained(gen)
    flow = PotentialFlow(4, 3, hidden_dim=8, generator=str(gen))
    flow.save_pretrained(tmp_path / "pots")
    weights = tmp_path / "pots" / "model.safetensors"
    state = safetensors.torch.load_file(weights)
    state["z_in.weight"][0, 0, 0] = float("nan")
    state["wave_speed"][1] = float("inf")
    safetensors.torch.save_file(state, weights)
    with pytest.raises(CheckpointError, match=r"non-finite values \(NaN or inf\) in .*'wave_speed'.*refusing"):
        load_flow_and_generator(tmp_path / "pots")


def test_saved_weights_are_as_readable_as_their_config(tmp_path):
    PotentialFlow(4, 3, hidden_dim=8).save_pretrained(tmp_path)
    modes = {f: (tmp_path / f).stat().st_mode & 0o777 for f in ("config.json", "model.safetensors")}
    assert modes["model.safetensors"] == modes["config.json"] == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_only_hub_models_names_resolve_beside_the_package(tmp_path, monkeypatch):
    from hub_models import EMBEDDED_DIR, resolve_source

    monkeypatch.chdir(tmp_path)  # nothing relative resolves from here
    assert resolve_source("hub_models/dsprites-vae") == str(EMBEDDED_DIR / "dsprites-vae")
    # Installed, the package's parent is site-packages: sibling folders are not models, and '..' cannot climb out.
    for name in ("tests", "pdetraversal", "hub_models/../tests", "hub_models/../pdetraversal", "user/repo"):
        assert resolve_source(name) == name
    (tmp_path / "tests").mkdir()
    assert resolve_source("tests") == "tests"  # a folder here is taken as given
