"""Every class of bad input tried against the Python API, train/fit.py and the Space, and the one-line answer it
gets. README.md's table "What bad input gets" is made from CASES: `python tests/test_bad_inputs.py` prints it, and
a test checks that the README holds exactly that table, so the table stays true. Each case runs here: it must fail
with an exception (or, for fit.py, an exit code) whose message contains the answer, and no traceback."""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import safetensors.torch
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "train"))

START, END = "<!-- bad-input-table: made by tests/test_bad_inputs.py -->", "<!-- /bad-input-table -->"


@dataclass
class Case:
    surface: str  # "Python", "fit.py" or "Space"
    what: str  # the class of input, as the README lists it
    answer: str  # what the message says (a literal fragment of it)
    run: Callable[[dict], object]  # given the fixture folders; must raise, or return fit.py's (exit code, stderr)


# ----------------------------------------------------------------------------------------------- the callables
def _flow(ctx):
    from pdetraversal.baselines import load_traversal

    return load_traversal(ctx["pots"])


def _load(folder):
    from hub_models import load_flow_and_generator

    return lambda ctx: load_flow_and_generator(ctx[folder])


def _fit(*argv, output: str | None = "out"):
    """fit.main in this process, stderr captured: (exit code, stderr)."""
    def run(ctx):
        import fit

        args = [a.format(**ctx) for a in argv] + (["--output-dir", str(Path(ctx["tmp"]) / output)] if output else [])
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try:
                code = fit.main(args)
            except SystemExit as e:
                code = e.code
        if isinstance(code, str):  # SystemExit("error: ...") prints its message and exits 1
            err.write(code)
            code = 1
        return code, err.getvalue()
    return run


def _space(endpoint: str, *args, public: bool = False):
    """An app handler called as the Space calls it (the values unconverted, as the page sends them); a fixture
    folder is served as the shipped ones are, unless `public` (then only the shipped folders are)."""
    def run(ctx):
        from pdetraversal.space import handlers
        from pdetraversal.space.models import ModelCache

        cache = ModelCache(allow_local=not public)
        values = [a.format(**ctx) if isinstance(a, str) else a for a in args]
        return getattr(handlers, endpoint)(cache, *values)
    return run


def _unreachable(ctx):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = "from pdetraversal import PotentialFlow; PotentialFlow.from_pretrained('nobody/nothing')"
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HOME": str(Path(ctx["tmp"]) / "home")}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    raise RuntimeError(proc.stderr.strip().splitlines()[-1])


CASES = [
    Case("Python", "z of the wrong shape", "z must have shape (B, 4), got (2, 5)",
         lambda ctx: _flow(ctx).traverse(torch.zeros(2, 5), 0)),
    Case("Python", "k out of range", "potential index k=3 out of range 0..2",
         lambda ctx: _flow(ctx).traverse(torch.zeros(2, 4), 3)),
    Case("Python", "a NaN start code", "z0 holds NaN or inf", lambda ctx: _flow(ctx).traverse(torch.full((1, 4), torch.nan), 0)),
    Case("Python", "a NaN or infinite step size", "step_size must be a finite number, got nan",
         lambda ctx: _flow(ctx).traverse(torch.zeros(1, 4), 0, 3, float("nan"))),
    Case("Python", "a folder without config.json", "config.json not found in folder", _load("empty")),
    Case("Python", "config.json that is not JSON", "config.json of", _load("bad_json")),
    Case("Python", "weights that are not safetensors", "is not a readable safetensors file", _load("corrupt")),
    Case("Python", "only pickled weights (pytorch_model.bin)", "model.safetensors not found", _load("pickled")),
    Case("Python", "a tensor missing or of the wrong shape", "does not match PotentialFlow: key 'z_in.weight' has shape",
         _load("wrong_shape")),
    Case("Python", "sizes in config.json far beyond the weights (hidden_dim 10^6)",
         "does not match PotentialFlow", _load("oversized")),
    Case("Python", "NaN or inf in the weights", "holds non-finite values (NaN or inf)", _load("nan_weights")),
    Case("Python", "potentials for another latent size than their generator's",
         "over 6 latent dimensions but its generator", _load("mismatch")),
    Case("Python", "an unknown method in config.json", "config.json names method='magic'", _load("unknown_method")),
    Case("Python", "an unknown generator class", "config.json names _class_name='Nope'", _load("unknown_generator")),
    Case("Python", "a generator in pdetraversal's first layout (generator_class, model.safetensors)",
         "convert it with: python train/convert_generator.py", _load("legacy_generator")),
    Case("Python", "a generator tensor missing", "does not match MLPGenerator: missing key 'net.2.bias'",
         _load("generator_missing_tensor")),
    Case("Python", "an unknown Hub repo", "Hub repo 'user/no-such-repo' not found",
         lambda ctx: _load_repo("user/no-such-repo")),
    Case("Python", "an unknown revision", "revision 'nope' not found in Hub repo",
         lambda ctx: _load_repo(ctx["repo"], "nope")),
    Case("Python", "the Hub unreachable, repo not cached",
         "the Hub cannot be reached and nobody/nothing is not in the local cache", _unreachable),
    Case("Space", "a seed that is not an integer (text)", "seed must be an integer from 0 to 2147483647, got 'abc'",
         _space("traverse", "abc", 0, 5, 1.0, "{pots}", "", "prior")),
    Case("Space", "a NaN seed", "seed must be an integer from 0 to 2147483647, got nan",
         _space("traverse", float("nan"), 0, 5, 1.0, "{pots}", "", "prior")),
    Case("Space", "k out of range", "k (potential index) must be an integer from 0 to 2, got 3",
         _space("traverse", 0, 3, 5, 1.0, "{pots}", "", "prior")),
    Case("Space", "steps outside 1–50", "number of steps must be an integer from 1 to 50, got 0",
         _space("overview", 0, 0, 1.0, "{pots}", "", "prior")),
    Case("Space", "a step size outside (0, 5]", "step size must lie in (0, 5], got 7",
         _space("compare", 0, 0, 5, 7, "{pots}", "", "prior")),
    Case("Space", "a start from data for a generator that cannot encode", "cannot encode training images",
         _space("traverse", 0, 0, 5, 1.0, "{pots}", "", "data")),
    Case("Space", "a local folder that is not a shipped model (/etc)", "Local folders other than the shipped models "
         "are not served here", _space("traverse", 0, 0, 5, 1.0, "/etc", "", "prior", public=True)),
    Case("Space", "an unknown Hub repo", "Hub repo 'user/no-such-repo' not found",
         _space("traverse", 0, 0, 5, 1.0, "user/no-such-repo", "", "prior", public=True)),
    Case("fit.py", "a NaN, infinite or negative float flag", "argument --step-size: must be a finite number > 0, got nan",
         _fit("--generator", "{gen}", "--step-size", "nan")),
    Case("fit.py", "a count of zero", "argument --num-potentials: must be a finite number > 0, got 0",
         _fit("--generator", "{gen}", "--num-potentials", "0")),
    Case("fit.py", "a generator folder without config.json", "cannot load --generator",
         _fit("--generator", "{empty}")),
    Case("fit.py", "--resume with no checkpoint", "--resume: no checkpoint at",
         _fit("--generator", "{gen}", "--resume")),
    Case("fit.py", "an old checkpoint without --resume", "exists: pass --resume to continue it",
         _fit("--generator", "{gen}", output="with_checkpoint")),
    Case("fit.py", "a truncated checkpoint", "is corrupt or truncated",
         _fit("--generator", "{gen}", "--resume", output="with_checkpoint")),
]


def _load_repo(repo, revision=None):
    from hub_models import load_flow_and_generator

    return load_flow_and_generator(repo, revision=revision)


def table(cases=CASES) -> str:
    lines = [START, "", "| where | bad input | the answer says |", "|---|---|---|"]
    lines += [f"| {c.surface} | {c.what} | {c.answer.replace('|', chr(92) + '|')} |" for c in cases]
    return "\n".join(lines + ["", END])


# ------------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def ctx(tmp_path_factory, hub_server):
    from huggingface_hub import HfApi

    from hub_models import MLPGenerator
    from pdetraversal import PotentialFlow

    root = tmp_path_factory.mktemp("bad")
    torch.manual_seed(0)
    MLPGenerator(latent_dim=4).save_pretrained(root / "gen")
    PotentialFlow(4, 3, hidden_dim=8, generator=str(root / "gen")).save_pretrained(root / "pots")
    good_config = json.loads((root / "pots" / "config.json").read_text())
    weights = (root / "pots" / "model.safetensors").read_bytes()

    def folder(name, config=None, data=weights, weights_name="model.safetensors"):
        (root / name).mkdir()
        if config is not None:
            (root / name / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
        if data is not None:
            (root / name / weights_name).write_bytes(data)

    folder("empty", data=None)
    folder("bad_json", "{not json")
    folder("corrupt", good_config, b"\0" * 64)
    folder("pickled", good_config, b"\x80\x04pickle", "pytorch_model.bin")
    folder("oversized", {**good_config, "hidden_dim": 10**6})
    folder("unknown_method", {**good_config, "method": "magic"})
    PotentialFlow(4, 3, hidden_dim=4, generator=str(root / "gen")).save_pretrained(root / "small")
    folder("wrong_shape", good_config, (root / "small" / "model.safetensors").read_bytes())
    state = safetensors.torch.load_file(root / "pots" / "model.safetensors")
    state["z_in.weight"][0, 0, 0] = float("nan")
    safetensors.torch.save_file(state, root / "nan.safetensors")
    folder("nan_weights", good_config, (root / "nan.safetensors").read_bytes())
    PotentialFlow(6, 3, hidden_dim=8, generator=str(root / "gen")).save_pretrained(root / "mismatch")
    (root / "badgen").mkdir()
    (root / "badgen" / "config.json").write_text(json.dumps({"_class_name": "Nope"}))
    folder("unknown_generator", {**good_config, "generator": str(root / "badgen")})
    (root / "oldgen").mkdir()
    (root / "oldgen" / "config.json").write_text(json.dumps({"generator_class": "MLPGenerator", "latent_dim": 4}))
    folder("legacy_generator", {**good_config, "generator": str(root / "oldgen")})
    shutil.copytree(root / "gen", root / "gen_missing")
    gen_state = safetensors.torch.load_file(root / "gen" / "diffusion_pytorch_model.safetensors")
    del gen_state["net.2.bias"]
    safetensors.torch.save_file(gen_state, root / "gen_missing" / "diffusion_pytorch_model.safetensors")
    folder("generator_missing_tensor", {**good_config, "generator": str(root / "gen_missing")})
    # a fit output folder holding a checkpoint cut to half its bytes
    import fit

    assert fit.main(["--generator", str(root / "gen"), "--num-potentials", "2", "--max-steps", "2", "--batch-size",
                     "2", "--checkpoint-every", "1", "--output-dir", str(root / "with_checkpoint"), "--no-progress"]) == 0
    checkpoint = root / "with_checkpoint" / "checkpoint.safetensors"
    if not checkpoint.is_file():  # a finished run removes it: write one the way an interrupted run leaves it
        flow = PotentialFlow(4, 2, hidden_dim=8)
        safetensors.torch.save_file(flow.state_dict(), checkpoint)
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    repo = "user/bad-inputs-gen"
    HfApi().create_repo(repo, exist_ok=True)
    HfApi().upload_folder(repo_id=repo, folder_path=root / "gen")
    return {"tmp": str(root), "repo": repo, **{p.name: str(p) for p in root.iterdir()}}


# --------------------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("case", CASES, ids=[f"{c.surface}: {c.what}" for c in CASES])
def test_bad_input_gets_its_answer(case, ctx):
    try:
        result = case.run(ctx)
    except Exception as e:  # noqa: BLE001 -- the message is what is tested
        message = str(getattr(e, "message", None) or e)  # RequestError keeps its text in .message
    else:
        assert isinstance(result, tuple), f"{case.what}: accepted without an error"
        code, message = result
        assert code not in (0, None), f"{case.what}: fit.py exited 0"
    assert case.answer in message, f"{case.what}: {message!r}"
    assert "Traceback" not in message and len(message.strip().splitlines()) == 1, message


def test_readme_holds_the_generated_table():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(re.escape(START) + ".*?" + re.escape(END), readme, flags=re.S)
    assert found, f"README.md has no table between {START} and {END}: paste `python tests/test_bad_inputs.py`"
    assert found.group(0) == table(), "README.md's bad-input table is stale: paste `python tests/test_bad_inputs.py`"


if __name__ == "__main__":
    print(table())
