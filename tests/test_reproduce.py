"""bench/reproduce.py on a tiny in-test generator: every report section is written and its numbers are the ones the
functions returned (the VP of the axes floor is what vp_score gives for those axes; the lines' step is the
potentials' measured mean step)."""
import importlib.util
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from hub_models.base import Generator
from pdetraversal import PotentialFlow
from pdetraversal.baselines import LatentAxes
from pdetraversal.metrics.path_shape import path_diagnostics
from pdetraversal.metrics.vp import vp_score

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("reproduce", ROOT / "bench" / "reproduce.py")
reproduce = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reproduce)

SIZE = dict(num_potentials=3, num_timesteps=3, max_steps=2, batch_size=8, vp_pairs=40, vp_epochs=1,
            factor_samples=8, diag_starts=8, curve_starts=4, ll_images=6, ll_samples=3, eq_sequences=4)


class TinyEncodingGenerator(Generator):
    """64x64 one-channel images from a 4-d code, with an encoder: 'dSprites-like' for the script. Registers itself."""

    def __init__(self, latent_dim: int = 4, hidden_dim: int = 16):
        super().__init__()
        self.latent_dim = latent_dim
        self.fc = nn.Sequential(nn.Linear(latent_dim, hidden_dim), nn.Tanh(), nn.Linear(hidden_dim, 64 * 64))
        self.enc = nn.Linear(64 * 64, 2 * latent_dim)

    def latent_weight(self):
        return self.fc[0].weight

    def decode_logits(self, z):
        self.check_latent(z)
        return self.fc(z).view(-1, 1, 64, 64)

    def decode(self, z):
        return torch.sigmoid(self.decode_logits(z))

    def encode(self, x):
        mu, logvar = self.enc(x.flatten(1)).chunk(2, dim=1)
        return mu, logvar.clamp(-4, 2)

    def data_latent(self, n, seed=None):
        return 0.5 * self.sample_latent(n, seed)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("repro")
    torch.manual_seed(0)
    gen = TinyEncodingGenerator()
    gen.save_pretrained(root / "gen")
    flow = PotentialFlow(4, 3, num_timesteps=3, step_size=0.5, generator=str(root / "gen"))
    flow.save_pretrained(root / "pots")
    fit = reproduce._fit_module()
    seeds = [0, 1]
    g = reproduce.evaluate_generator("tiny", str(root / "gen"), str(root / "pots"), SIZE, seeds, root / "runs", fit=fit)
    abl = reproduce.ablation(str(root / "gen"), "tiny", SIZE, [0], root / "runs", fit=fit)
    vae = reproduce.load_generator(root / "gen")
    seqs = torch.rand(4, 3, 1, 64, 64)
    mnist_res = reproduce.likelihood_equivariance(vae, vae, flow, torch.rand(5, 1, 64, 64), seqs,
                                                  torch.tensor([0, 1, 2]), num_samples=3)
    meta = {"command": "python bench/reproduce.py --test", "size_name": "test", "size": SIZE, "seeds": seeds,
            "timings": {"total": 1.0, "total cpu": 0.5}, "hardware": "test"}
    text = reproduce.write_report(root / "out", [g], abl, mnist_res, ["a note"], meta)
    png = reproduce.plot_vp(root / "out", [g])
    return dict(root=root, gen=gen, g=g, abl=abl, mnist=mnist_res, text=text, png=png, flow=flow)


def test_report_has_every_section_and_plot(setup):
    text = setup["text"]
    for heading in ("## Findings", "## VP score (paper Tables 1 and 3)", "## Factor alignment and path shape",
                    "## Log-likelihood and equivariance (paper Tables 4 and 5)", "## Ablation (paper Table 6)",
                    "## Time per piece", "## How this was made"):
        assert heading in text
    assert (setup["root"] / "out" / "REPORT.md").read_text(encoding="utf-8") == text
    assert setup["png"].is_file() and setup["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for row in ("potential (shipped)", "potential (trained)", "warped (trained)", "linear (trained)", "sefa", "axes", "random"):
        assert row in setup["g"]["methods"] and f"| {row} |" in text
    for label in reproduce.ABLATIONS:
        assert f"| {label} |" in text


def test_axes_vp_is_what_vp_score_gives_and_is_in_the_table(setup):
    g = setup["g"]
    step = g["line_step"]
    # The lines' step is the shipped potentials' mean step on the VP starts (seed 0), measured independently here.
    z0 = setup["gen"].data_latent(SIZE["diag_starts"], seed=0)
    path = torch.stack([setup["flow"].traverse(z0, k).detach() for k in range(3)])
    assert step == pytest.approx(float((path[:, 1:] - path[:, :-1]).norm(dim=-1).mean()), rel=1e-5)
    axes = LatentAxes(4, 3, 3, step)
    for i, seed in enumerate([0, 1]):
        direct = vp_score(axes, setup["gen"], num_pairs=SIZE["vp_pairs"], seeds=(seed,), epochs=SIZE["vp_epochs"],
                          starts="data")
        assert g["methods"]["axes"]["per_seed"][i]["vp"] == pytest.approx(direct["mean"])
    values = [r["vp"] for r in g["methods"]["axes"]["per_seed"]]
    mean = sum(values) / 2
    std = (sum((v - mean) ** 2 for v in values)) ** 0.5  # n - 1 = 1
    assert re.search(rf"\| axes \| {mean:.1f} ± {std:.1f} \|", setup["text"])


def test_other_numbers_come_from_the_returned_dicts(setup):
    text, g = setup["text"], setup["g"]
    shipped = g["methods"]["potential (shipped)"]["per_seed"]
    # Path shape of seed 0: path_diagnostics of the shipped potentials from the seed-0 starts, averaged over k.
    rows = path_diagnostics(setup["flow"], setup["gen"].data_latent(SIZE["diag_starts"], seed=0))
    assert shipped[0]["shape"]["straightness"] == pytest.approx(sum(r["straightness"] for r in rows) / len(rows))
    assert reproduce.fmt([r["shape"]["straightness"] for r in shipped], 3) in text
    assert reproduce.fmt([r["factors"]["num_disentangled"] for r in shipped]) in text
    ll = setup["mnist"]["log_px"]["plain VAE"]
    assert f"{ll['mean']:.2f} ± {ll['sem']:.2f} (sem)" in text
    eq = setup["mnist"]["equivariance"]["joint"]
    assert f"| joint VAE, its potentials | {eq['per_pixel']:.4f} | {eq['reference_per_pixel']:.4f} |" in text
    # The plain VAE's ∇u = 0 reference is the same number as the joint one here (same VAE, same sequences).
    assert setup["mnist"]["equivariance"]["plain"]["reference_per_pixel"] == pytest.approx(eq["reference_per_pixel"])
    paper = setup["abl"]["rows"]["paper loss (L_u + L_f + L_J + L_k)"]["per_seed"][0]["vp"]
    # The paper-faithful ablation row reuses the trained potential fit of seed 0: the same VP.
    assert paper == pytest.approx(g["methods"]["potential (trained)"]["per_seed"][0]["vp"])
    assert "Smoke size" not in text and "a note" in text


def test_fits_are_cached(setup):
    runs = setup["root"] / "runs" / "tiny"
    assert (runs / "potential-s0" / "model.safetensors").is_file() and (runs / "linear-s1" / "fit.log").is_file()
    before = (runs / "potential-s0" / "model.safetensors").stat().st_mtime_ns
    reproduce.train_cached(None, "unused", "potential", 0, SIZE, runs / "potential-s0")  # fit=None: must not train
    assert (runs / "potential-s0" / "model.safetensors").stat().st_mtime_ns == before


def test_report_json_holds_the_tables_cells(setup):
    import json

    data = json.loads((setup["root"] / "out" / "report.json").read_text(encoding="utf-8"))
    entry = data["generators"]["tiny"]
    g = setup["g"]
    assert entry["source"] == g["source"] and data["meta"]["command"] == "python bench/reproduce.py --test"
    assert entry["columns"][:6] == ["VP %", "≥ 60% share", "factors covered", "repeated", "gap", "mean share"]
    for label, v in g["methods"].items():
        row = entry["rows"][label]
        assert row["K"] == v["K"] and row["cells"][0] == reproduce.fmt([r["vp"] for r in v["per_seed"]])
        gap = reproduce.fmt([r["factors"]["gap"] for r in v["per_seed"]], 2)
        assert row["cells"][entry["columns"].index("gap")] == gap
        # the same cells as the markdown row
        assert f"| {label} | {v['K']} | {v['step']:.4f} | " + " | ".join(row["cells"][1:]) + " |" in setup["text"]


@pytest.mark.slow  # over 10 s: run by .ci/run's second step
def test_parallel_jobs_give_the_serial_numbers(tmp_path):
    # Two worker processes (spawn) against this process, on a shipped generator at the smoke size: same cells.
    import json
    import subprocess
    import sys

    args = ["--quick", "--seeds", "0", "--only", "mnist-joint-vae", "--no-ablation", "--runs", str(tmp_path / "runs")]
    serial = reproduce.main(args + ["--out", str(tmp_path / "serial")])
    assert serial["meta"]["hardware"].endswith("1 process(es) × 1 torch thread(s)")
    subprocess.run([sys.executable, str(ROOT / "bench" / "reproduce.py"), *args, "--jobs", "2",
                    "--out", str(tmp_path / "parallel")], check=True, cwd=ROOT, capture_output=True)
    a, b = (json.loads((tmp_path / d / "report.json").read_text(encoding="utf-8")) for d in ("serial", "parallel"))
    assert a["generators"] == b["generators"]
    assert "2 process(es)" in b["meta"]["hardware"]
