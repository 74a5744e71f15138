"""The distribution in pyproject.toml: its dependencies agree with the pinned requirements files, and `pip install .`
(and `pip install -e .`) into a fresh venv gives importable `pdetraversal` and `hub_models` packages, with the
embedded models, that work from any folder.

The venvs see the system's site-packages, so torch and the other dependencies come from there and nothing is
downloaded (`--no-deps --no-build-isolation`). They are made `--without-pip` and run the system's pip: Python 3.11's
ensurepip would put its own setuptools 65 into the venv, which shadows the system's and cannot read pyproject's
SPDX `license`. Each install builds from a copy of the repository, so no build/ or *.egg-info lands in the checkout.
"""
from __future__ import annotations

import base64
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, distribution, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
DIST = "pdetraversal"
# Left out of the copy that is built: history, run outputs and caches (large, and never part of the package).
COPY_IGNORE = shutil.ignore_patterns(".git", "runs", "outputs", ".benchmarks", ".whl", "__pycache__", "*.pyc",
                                     ".pytest_cache", "build", "dist", "*.egg-info")


def read_pins(path: Path) -> dict[str, Requirement]:
    """name -> `name==version` for every requirement line of a requirements file (not following `-r`)."""
    pins = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-r"):
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{path.name}: '{line}' is not pinned with =="
        pins[canonicalize_name(req.name)] = req
    return pins


def pinned_version(req: Requirement) -> Version:
    return Version(next(iter(req.specifier)).version)


def by_name(reqs: list[str]) -> dict[str, Requirement]:
    parsed = [Requirement(r) for r in reqs]
    return {canonicalize_name(r.name): r for r in parsed}


def check_pins_satisfy(declared: dict[str, Requirement], pins: dict[str, Requirement], where: str) -> None:
    for name, req in declared.items():
        assert name in pins, f"pyproject's {where} needs {req} but it has no pin"
        pin = pinned_version(pins[name])
        assert req.specifier.contains(pin, prereleases=True), f"pinned {name}=={pin} does not satisfy {where}'s '{req}'"


# --- the requirements files and pyproject agree ----------------------------------------------------------------

def test_runtime_dependencies_agree_with_requirements_txt():
    runtime = by_name(PROJECT["dependencies"])
    app = by_name(PROJECT["optional-dependencies"]["app"])
    pins = read_pins(REPO / "requirements.txt")
    check_pins_satisfy(runtime, pins, "dependencies")
    check_pins_satisfy(app, pins, "extra 'app'")
    # And the other way: everything the Space pins is a dependency of the library or of the app.
    assert set(pins) == set(runtime) | set(app), f"requirements.txt pins {sorted(set(pins) - set(runtime) - set(app))} " \
                                                f"that pyproject does not declare"
    assert "gradio" in app and "gradio" not in runtime, "gradio belongs to the 'app' extra, not to the library"


def test_dev_extra_agrees_with_requirements_dev_txt():
    dev_reqs = [Requirement(r) for r in PROJECT["optional-dependencies"]["dev"]]
    own = [r for r in dev_reqs if canonicalize_name(r.name) == DIST]
    # requirements-dev.txt starts with `-r requirements.txt`, which holds gradio, so the dev extra pulls in the app's.
    assert [sorted(r.extras) for r in own] == [["app"]] and not own[0].specifier
    assert (REPO / "requirements-dev.txt").read_text().splitlines()[0].strip() == "-r requirements.txt"
    tools = {canonicalize_name(r.name): r for r in dev_reqs if canonicalize_name(r.name) != DIST}
    pins = read_pins(REPO / "requirements-dev.txt")
    check_pins_satisfy(tools, pins, "extra 'dev'")
    assert set(pins) == set(tools), f"requirements-dev.txt and the 'dev' extra name different tools: " \
                                    f"{sorted(set(pins) ^ set(tools))}"


def test_torch_is_bounded_so_the_cpu_wheel_satisfies_it():
    # An unsatisfied torch requirement makes pip fetch a multi-GB CUDA build: the CPU wheel here must be enough.
    torch_req = by_name(PROJECT["dependencies"])["torch"]
    assert torch_req.specifier.contains(Version("2.13.0"))
    assert torch_req.specifier.contains(Version(version("torch")), prereleases=True)  # e.g. 2.13.0+cpu


def test_requires_python_fits_the_lower_bounds():
    """Each dependency at its pinned version (the lower bound) must support the oldest Python pyproject admits."""
    spec = Requirement(f"python{PROJECT['requires-python']}").specifier
    lower = [s for s in spec if s.operator == ">="]
    assert len(lower) == 1, f"requires-python '{spec}' needs one >= bound"
    oldest = Version(lower[0].version)
    assert spec.contains(Version(f"{sys.version_info.major}.{sys.version_info.minor}")), "tests run outside it"
    pins = read_pins(REPO / "requirements.txt")
    checked = 0
    for name, req in pins.items():
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue
        if Version(dist.version).release != pinned_version(req).release:  # this check needs the pinned version
            continue
        needs = dist.metadata.get("Requires-Python")
        if needs:
            assert Requirement(f"python{needs}").specifier.contains(oldest), \
                f"{name}=={dist.version} needs Python {needs}, but requires-python admits {oldest}"
            checked += 1
    assert checked >= 5, f"only {checked} pinned dependencies are installed at their pins"


def test_metadata_and_build_backend():
    assert PROJECT["name"] == DIST and PROJECT["license"] == "Apache-2.0" and PROJECT["readme"] == "README.md"
    init = (REPO / "pdetraversal" / "__init__.py").read_text()
    assert f'__version__ = "{PROJECT["version"]}"' in init, "pyproject's version differs from pdetraversal.__version__"
    build = PYPROJECT["build-system"]
    assert build["build-backend"] == "setuptools.build_meta"
    # --no-build-isolation builds with the setuptools installed here, so it must satisfy the requirement.
    (setuptools_req,) = [Requirement(r) for r in build["requires"]]
    assert setuptools_req.specifier.contains(Version(version("setuptools")))


# --- installs into fresh venvs ---------------------------------------------------------------------------------

def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PIP_REQUIRE_VIRTUALENV")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONDONTWRITEBYTECODE="1")
    return env


def _run(cmd: list[str], cwd: Path, timeout: float = 120) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _install(root: Path, editable: bool) -> tuple[Path, Path]:
    """A copy of the repository under root/src and a venv under root/venv with it installed; returns both."""
    src, venv = root / "src", root / "venv"
    shutil.copytree(REPO, src, ignore=COPY_IGNORE)
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], cwd=root)
    python = venv / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
          *(["-e"] if editable else []), str(src)], cwd=root, timeout=180)
    return src, python


# Runs inside a venv, in a folder that holds nothing of the project; prints one JSON object.
PROBE = r"""
import json, sys
import torch
torch.set_num_threads(1)
from importlib.metadata import requires, version
from packaging.requirements import Requirement
from packaging.version import Version

import importlib, pkgutil
import pdetraversal, hub_models
from pdetraversal import PotentialFlow

# Every module of both packages imports from the installed copy, and none of them needs gradio.
modules = [m.name for pkg in (pdetraversal, hub_models) for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
for name in modules:
    importlib.import_module(name)
out = {"pdetraversal": pdetraversal.__file__, "hub_models": hub_models.__file__, "version": version("pdetraversal"),
       "modules": sorted(modules), "gradio_imported": "gradio" in sys.modules}
# What `pip install .` without --no-deps would have to fetch: every requirement this environment does not satisfy.
out["unsatisfied"] = [r for r in requires("pdetraversal") if "extra ==" not in r
                      and not Requirement(r).specifier.contains(Version(version(Requirement(r).name)), prereleases=True)]

torch.manual_seed(0)
flow = PotentialFlow(latent_dim=3, num_potentials=2, hidden_dim=4, num_timesteps=5, step_size=0.5)
z0 = torch.randn(4, 3)
path = flow.traverse(z0, 1)
step = 0.5 * flow.velocity(z0, 0.0, 1)
out["path_shape"] = list(path.shape)
out["start_error"] = float((path[0] - z0).abs().max())
out["first_step_error"] = float((path[1] - z0 - step).abs().max())
out["first_step_norm"] = float(step.norm())

out["resolved"] = hub_models.resolve_source("hub_models/dsprites-vae")
gen = hub_models.load_generator("hub_models/dsprites-vae")
flow, gen2 = hub_models.load_flow_and_generator("hub_models/dsprites-vae-potentials")
z = gen.sample_latent(3, seed=0)
images = gen.decode(flow.traverse(z, 0)[-1])
out.update(generator=type(gen).__name__, latent_dim=gen.latent_dim, flow_potentials=flow.num_potentials,
           flow_generator=type(gen2).__name__, image_shape=list(images.shape),
           image_range=[float(images.min()), float(images.max())])
print(json.dumps(out))
"""


def _probe(python: Path, cwd: Path) -> dict:
    return json.loads(_run([str(python), "-c", PROBE], cwd=cwd).strip().splitlines()[-1])


def _repo_modules() -> list[str]:
    """Dotted names of the modules below the two top-level packages, as pkgutil.walk_packages lists them."""
    names = []
    for pkg in ("pdetraversal", "hub_models"):
        for path in (REPO / pkg).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            if len(parts) > 1:
                names.append(".".join(parts))
    return sorted(names)


def _check_probe(out: dict) -> None:
    assert out["version"] == PROJECT["version"]
    in_repo = _repo_modules()
    assert len(in_repo) > 30 and out["modules"] == in_repo, \
        f"installed modules differ from the repository's: {set(out['modules']) ^ set(in_repo)}"
    assert not out["gradio_imported"], "importing the library pulled in gradio"
    assert out["unsatisfied"] == [], f"a non --no-deps install would fetch {out['unsatisfied']}"
    assert out["path_shape"] == [6, 4, 3]
    assert out["start_error"] == 0.0
    assert out["first_step_error"] < 1e-6 and out["first_step_norm"] > 1e-4  # a real step, z_1 = z_0 + η ∇u(z_0, 0)
    assert (out["generator"], out["latent_dim"], out["flow_potentials"], out["flow_generator"]) == \
        ("DSpritesVAE", 5, 8, "DSpritesVAE")
    assert out["image_shape"] == [3, 1, 64, 64]
    assert 0.0 <= out["image_range"][0] <= out["image_range"][1] <= 1.0


def _snapshot(root: Path) -> set[str]:
    return {p.name for p in root.iterdir()}


def _record(site: Path) -> dict[str, str]:
    """path -> sha256 (urlsafe base64, as in the wheel's RECORD) of every file the installed distribution lists."""
    (dist_info,) = site.glob(f"{DIST}-*.dist-info")
    with open(dist_info / "RECORD", newline="") as f:
        return {row[0]: row[1] for row in csv.reader(f) if row}


def _sha256(path: Path) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(path.read_bytes()).digest()).rstrip(b"=").decode()


@pytest.mark.slow  # over 10 s: run by .ci/run's second step
def test_pip_install_into_a_fresh_venv(tmp_path):
    before = _snapshot(REPO)
    src, python = _install(tmp_path / "wheel", editable=False)
    (site,) = (tmp_path / "wheel" / "venv" / "lib").glob("python3*/site-packages")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    out = _probe(python, elsewhere)
    _check_probe(out)
    site = site.resolve()
    assert Path(out["pdetraversal"]).resolve().is_relative_to(site), out["pdetraversal"]
    assert Path(out["hub_models"]).resolve().is_relative_to(site), out["hub_models"]
    assert Path(out["resolved"]).resolve() == site / "hub_models" / "dsprites-vae", "embedded models not found"

    # The wheel holds exactly the two packages (every subpackage, no tests/, train/, bench/ or app.py) and every
    # embedded model file, byte for byte.
    record = _record(site)
    top = {p.split("/", 1)[0] for p in record}
    assert top == {"pdetraversal", "hub_models", f"{DIST}-{PROJECT['version']}.dist-info"}, top
    packages = {str(p.parent.relative_to(REPO)) for p in (REPO / "pdetraversal").rglob("__init__.py")}
    assert packages == {"pdetraversal", "pdetraversal/baselines", "pdetraversal/data", "pdetraversal/metrics",
                        "pdetraversal/space"}
    for pkg in packages | {"hub_models"}:
        for module in (REPO / pkg).glob("*.py"):
            assert f"{pkg}/{module.name}" in record, f"{pkg}/{module.name} is not installed"
    model_files = sorted(p for p in (REPO / "hub_models").rglob("*") if p.is_file() and p.suffix != ".py"
                         and "__pycache__" not in p.parts)  # the model folders, hub_models/baselines/* too
    assert len(model_files) >= 60 and {p.name for p in model_files} <= {"config.json", "model.safetensors", "diffusion_pytorch_model.safetensors",
                                                               "README.md", "samples.png"}
    for path in model_files:
        rel = path.relative_to(REPO).as_posix()
        assert record.get(rel) == _sha256(path), f"{rel} is missing from the wheel or differs"

    assert _snapshot(REPO) == before, "the install left files in the repository"


@pytest.mark.slow  # over 10 s: run by .ci/run's second step
def test_editable_install_uses_the_source_tree(tmp_path):
    src, python = _install(tmp_path / "editable", editable=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = _probe(python, elsewhere)
    _check_probe(out)
    src = src.resolve()
    assert Path(out["pdetraversal"]).resolve() == src / "pdetraversal" / "__init__.py"
    assert Path(out["hub_models"]).resolve() == src / "hub_models" / "__init__.py"
    assert Path(out["resolved"]).resolve() == src / "hub_models" / "dsprites-vae"
    # An editable install reads the tree it was installed from: a module added after installing is importable.
    (src / "pdetraversal" / "_added_after_install.py").write_text("VALUE = 41 + 1\n")
    added = _run([str(python), "-c", "from pdetraversal._added_after_install import VALUE; print(VALUE)"], cwd=elsewhere)
    assert added.strip() == "42"
    assert not list(src.glob("*.egg-info")) and not (src / "build").exists(), "the editable install wrote into the tree"
