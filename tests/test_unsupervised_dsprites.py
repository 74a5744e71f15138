"""The unsupervised dSprites models (plain beta-VAE + 32 unsupervised potentials) and bench/unsupervised_dsprites.py."""
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from hub_models import load_flow_and_generator
from pdetraversal.potentials import traverse_both_ways

ROOT = Path(__file__).resolve().parents[1]
VAE = ROOT / "hub_models" / "dsprites-betavae"
POTENTIALS = ROOT / "hub_models" / "dsprites-betavae-potentials"
sys.path.insert(0, str(ROOT / "bench"))
import unsupervised_dsprites as bench  # noqa: E402


@pytest.fixture(scope="module")
def models():
    return load_flow_and_generator(POTENTIALS)


def test_vae_is_a_plain_unsupervised_beta_vae():
    config = json.loads((VAE / "config.json").read_text())
    # The architecture only: no anchor, Ada-GVAE or label setting is part of the model.
    assert config == {"_class_name": "DSpritesVAE", "_diffusers_version": "0.42.1", "hidden_dim": 256, "latent_dim": 10, "width": 32}
    card = (VAE / "README.md").read_text()
    assert "--anchor-weight 0 " in card and "--beta 4 " in card and "--ada-gvae" not in card
    assert "Unsupervised" in card
    assert (VAE / "diffusion_pytorch_model.safetensors").stat().st_size < 5e6


def test_shipped_folders_load_together(models):
    flow, gen = models
    assert gen.latent_dim == flow.latent_dim == 10
    assert flow.num_potentials == 32 and flow.num_timesteps == 10
    assert flow.config["generator"] == "hub_models/dsprites-betavae"
    card = (POTENTIALS / "README.md").read_text()
    assert "--supervision" not in card.split("## Training")[1].split("\n- Steps")[0]  # the command used none
    assert "Supervision: none" in card and "## Against straight lines" in card
    z0 = gen.data_latent(3, seed=0)
    path = flow.traverse(z0, k=5)
    assert path.shape == (11, 3, 10)
    frames = gen.decode(path.flatten(0, 1))
    assert frames.shape == (33, 1, 64, 64) and 0 <= float(frames.min()) and float(frames.max()) <= 1
    # Encoding a decoded sprite and decoding again should land near the same image (the VAE is usable).
    x = gen.decode(z0)
    again = gen.decode(gen.encode(x)[0])
    assert float((again - x).abs().mean()) < 0.05


def test_straight_line_along_a_known_direction():
    lines = bench.StraightLines(torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, -2.0]]), step_size=0.25, num_timesteps=4)
    assert lines.num_potentials == 2 and lines.config["num_timesteps"] == 4
    z0 = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    path = lines.traverse(z0, 0)
    assert path.shape == (5, 2, 3)
    torch.testing.assert_close(path[4, 0], torch.tensor([1.6, 1.8, 1.0]))  # 4 steps of 0.25 along (0.6, 0.8, 0)
    back = lines.traverse(z0, 1, num_steps=2, direction=-1)
    torch.testing.assert_close(back[2, 1], torch.tensor([0.0, 0.0, 0.5]))  # minus of (0, 0, -1), twice 0.25
    torch.testing.assert_close(bench.step_lengths(lines, z0), torch.tensor([0.25, 0.25]))
    torch.testing.assert_close(bench.straightness(lines, z0, 1), torch.ones(2))
    both = traverse_both_ways(lines, z0, 0)
    assert both.shape == (9, 2, 3)
    torch.testing.assert_close(both[4], z0)
    torch.testing.assert_close(both[0, 0], torch.tensor([0.4, 0.2, 1.0]))
    with pytest.raises(ValueError, match="non-zero"):
        bench.StraightLines(torch.zeros(1, 3), 1.0, 4)


def test_axes_and_random_directions():
    axes = bench.latent_axes(4, 0.5, 3)
    torch.testing.assert_close(axes.traverse(torch.zeros(1, 4), 2)[-1, 0], torch.tensor([0.0, 0.0, 1.5, 0.0]))
    r = bench.random_directions(32, 10, 0.3, 10, seed=1)
    torch.testing.assert_close(r.directions.norm(dim=1), torch.ones(32))
    torch.testing.assert_close(r.directions, bench.random_directions(32, 10, 0.3, 10, seed=1).directions)
    assert not torch.allclose(r.directions, bench.random_directions(32, 10, 0.3, 10, seed=2).directions)
    # 32 random directions in 10-d: far from the axes (a largest |cosine| of 1 would be an axis).
    assert float(r.directions.abs().max(dim=1).values.mean()) < 0.9


class _LPath:
    """A fake flow whose positive traversal goes 3 along x, then 4 along y: chord 5, arc 7; its steps are 1."""

    num_potentials, num_timesteps = 1, 7

    def traverse(self, z0, k, num_steps=None, step_size=None, direction=1):
        steps = [torch.tensor([1.0, 0.0])] * 3 + [torch.tensor([0.0, 1.0])] * 4
        offsets = torch.cumsum(torch.stack([torch.zeros(2)] + steps), 0) * direction
        return z0[None] + offsets[:, None, :]


def test_straightness_and_step_of_a_bent_path():
    z0 = torch.randn(5, 2)
    torch.testing.assert_close(bench.straightness(_LPath(), z0, 0), torch.full((5,), 5 / 7))
    torch.testing.assert_close(bench.step_lengths(_LPath(), z0), torch.tensor([1.0]))


def test_summarize_counts_redundancy():
    def row(k, dominant, share, active=True):
        return {"k": k, "dominant": dominant, "share": share, "active": active}

    report = {"potentials": [row(0, "x", 0.7), row(1, "x", 0.5), row(2, "y", 0.9), row(3, "x", 0.65),
                             row(4, "shape", 0.3, active=False)],
              "summary": {"num_potentials": 5, "num_active": 4, "num_disentangled": 3, "num_covered": 2,
                          "covered_factors": ["x", "y"], "disentangled_factors": ["x", "y"]}}
    s = bench.summarize(report)
    assert s["num_sharing"] == 3 and s["largest_group"] == 3  # the three x traversals; the inactive one is ignored
    assert s["dominant_counts"] == {"shape": 0, "scale": 0, "orientation": 0, "x": 3, "y": 1}
    assert s["num_disentangled"] == 3 and s["num_covered"] == 2


def test_mean_std_formatting():
    assert bench._mean_std([1, 2, 3]) == "2.0 ± 1.0"
    assert math.isclose(float(bench._mean_std([4]).split(" ± ")[0]), 4.0)
