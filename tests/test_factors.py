"""The factor regressor and the factor report of traversals (pdetraversal.metrics.factors)."""
import math
import sys
from pathlib import Path

import pytest
import torch

from pdetraversal.data import dsprites
from pdetraversal.metrics.factors import (FactorRegressor, evaluate_regressor, factor_report, format_report,
                                  play_total_variation, trajectory_change)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "hub_models" / "dsprites-factor-regressor"
sys.path.insert(0, str(ROOT / "train"))
import train_factor_regressor  # noqa: E402


@pytest.fixture(scope="module")
def regressor():
    return FactorRegressor.from_pretrained(SHIPPED)


def test_predict_contract():
    torch.manual_seed(0)
    reg = FactorRegressor(width=4, hidden_dim=8).eval()
    x, _ = dsprites.sample(5, seed=0)
    p = reg.predict(x)
    assert p["shape_logits"].shape == p["shape_probs"].shape == (5, 3)
    for k in ("scale", "x", "y", "angle4"):
        assert p[k].shape == (5,)
    torch.testing.assert_close(p["orientation4"].norm(dim=1), torch.ones(5))
    with pytest.raises(ValueError, match="64, 64"):
        reg(torch.zeros(1, 1, 32, 32))


def test_shipped_regressor_reads_factors_of_fresh_samples(regressor):
    m = evaluate_regressor(regressor, num=500, seed=31337)
    assert m["shape_accuracy"] > 0.95, m
    assert m["scale_accuracy"] > 0.85, m
    assert m["x_mae_px"] < 0.6 and m["y_mae_px"] < 0.6, m
    assert m["orientation_median_error_deg"] < 5.0, m
    soft = evaluate_regressor(regressor, num=500, seed=31337, soft=True)  # blurred, like decoded VAE frames
    assert soft["shape_accuracy"] > 0.9 and soft["x_mae_px"] < 1.0, soft
    torch.manual_seed(0)
    untrained = evaluate_regressor(FactorRegressor(), num=500, seed=31337)
    assert untrained["shape_accuracy"] < 0.6 and untrained["x_mae_px"] > 2.0
    assert untrained["orientation_median_error_deg"] > 10.0


def test_evaluate_regressor_through_a_transform(regressor):
    # Shifting every image 4 pixels right (what a generator that misplaces sprites would do) must show up as a
    # 4-pixel x error and nothing else; the per-shape accuracies average to the overall one (equal thirds, roughly).
    plain = evaluate_regressor(regressor, num=600, seed=7)
    shifted = evaluate_regressor(regressor, num=600, seed=7, transform=lambda x: torch.roll(x, 4, dims=-1))
    assert 3.0 < shifted["x_mae_px"] < 5.0 and plain["x_mae_px"] < 0.6, (plain, shifted)
    assert shifted["y_mae_px"] < 0.6 and shifted["shape_accuracy"] > 0.9, shifted
    per_shape = [plain[f"shape_accuracy_{name}"] for name in dsprites.SHAPE_NAMES]
    assert min(per_shape) > 0.9 and abs(sum(per_shape) / 3 - plain["shape_accuracy"]) < 0.02
    blank = evaluate_regressor(regressor, num=600, seed=7, transform=torch.zeros_like)
    assert sorted(round(blank[f"shape_accuracy_{name}"]) for name in dsprites.SHAPE_NAMES) == [0, 0, 1]


def frames(**kw):
    return {k: torch.tensor(v, dtype=torch.float32).unsqueeze(1) for k, v in kw.items()}  # (N, B=1, ...)


def test_trajectory_change_normalisation():
    """Plain total variation (tolerance 0): each factor counts 1 for one sweep across its full range; 4θ wraps."""
    # 3 frames: shape switches fully square -> heart, then stays; 4θ goes 3.0 -> -3.0 (a small step across ±π)
    p = frames(shape_probs=[[1.0, 0, 0], [0, 0, 1.0], [0, 0, 1.0]], scale=[0.0, 0.5, 1.0], x=[0.2, 0.2, 0.1],
               y=[0.0, 1.0, 0.0], angle4=[3.0, -3.0, -3.0])
    zero = {f: 0.0 for f in dsprites.FACTOR_NAMES}
    tv = trajectory_change(p, zero)[0]
    expected = [1.0, 1.0, (2 * math.pi - 6.0) / (2 * math.pi), 0.1, 2.0]
    torch.testing.assert_close(tv, torch.tensor(expected))
    # a full turn of 4θ in 8 steps counts 1, in either direction
    turn = torch.remainder(torch.arange(9) * (2 * math.pi / 8) + math.pi, 2 * math.pi) - math.pi
    p = frames(shape_probs=[[1.0, 0, 0]] * 9, scale=[0.5] * 9, x=[0.5] * 9, y=[0.5] * 9, angle4=turn.tolist())
    torch.testing.assert_close(trajectory_change(p, zero)[0, 2], torch.tensor(1.0))
    p["angle4"] = p["angle4"].flip(0)
    torch.testing.assert_close(trajectory_change(p, zero)[0, 2], torch.tensor(1.0))
    # orientation changes of blobs (raw 4θ vector near 0) do not count
    p["orientation4_norm"] = torch.full((9, 1), 0.05)
    torch.testing.assert_close(trajectory_change(p, zero)[0, 2], torch.tensor(0.1))


def test_play_total_variation_ignores_jitter_below_tolerance():
    jitter = torch.tensor([0.5, 0.52, 0.49, 0.51, 0.5, 0.53])
    assert play_total_variation(jitter, 0.05) == 0
    torch.testing.assert_close(play_total_variation(jitter, 0.0), torch.tensor(0.02 + 0.03 + 0.02 + 0.01 + 0.03))
    ramp = torch.linspace(0.0, 0.6, 13) + 0.01 * torch.tensor([1.0, -1.0] * 6 + [1.0])  # monotone + jitter
    torch.testing.assert_close(play_total_variation(ramp, 0.05), torch.tensor(0.6 - 0.05), atol=0.011, rtol=0)
    back_and_forth = torch.tensor([0.0, 0.4, 0.0, 0.4])
    torch.testing.assert_close(play_total_variation(back_and_forth, 0.05), torch.tensor(0.35 + 0.3 + 0.3))


class FactorGenerator:
    """A fake generator whose latent is the 5 factor indices (as floats); decode renders dSprites."""

    latent_dim = 5

    def sample_latent(self, n, seed=None):
        idx = dsprites.random_factors(n, seed).float()
        idx[:, 1] = idx[:, 1].clamp(max=2)  # room to grow: scale index <= 2
        idx[:, 3] = idx[:, 3].clamp(5, 20)  # x index in 5..20
        return idx

    def decode(self, z):
        hi = torch.tensor(dsprites.FACTOR_SIZES) - 1
        return dsprites.render(torch.minimum(z.round().long().clamp(min=0), hi))


class OneFactorFlow:
    """A fake potential flow: potential 0 moves x by one index per step, potential 1 moves scale up (down),
    potential 2 stays where it is."""

    num_potentials = 3
    config = {"num_timesteps": 3}

    def traverse(self, z0, k, num_steps, step_size=None, direction=1):
        assert torch.is_grad_enabled()  # factor_report must not call traverse under no_grad
        factor = {0: 3, 1: 1, 2: 0}[k]
        t = torch.arange(num_steps + 1, dtype=torch.float32)[:, None] * (k != 2)
        path = z0.unsqueeze(0).repeat(num_steps + 1, 1, 1)
        path[:, :, factor] = path[:, :, factor] + direction * t
        return path


def test_factor_report_finds_the_moved_factor(regressor):
    report = factor_report(OneFactorFlow(), FactorGenerator(), regressor, num_samples=48, seed=0)
    k0, k1, k2 = report["potentials"]
    assert k0["dominant"] == "x" and k0["share"] > 0.8, k0
    # x moves 3 steps each way = 6 of 31 index steps, less the one-pixel dead band
    assert abs(k0["change"]["x"] - 5 / 31) < 0.03, k0
    assert k1["dominant"] == "scale" and k1["share"] > 0.7, k1
    assert k0["active"] and k1["active"]
    assert not k2["active"] and k2["total"] == 0 and k2["dominant"] is None  # a still potential is inactive
    s = report["summary"]
    assert s["num_potentials"] == 3 and s["num_active"] == 2 and s["num_disentangled"] == 2
    assert s["covered_factors"] == ["scale", "x"] and s["num_covered"] == 2
    assert {k: report["settings"][k] for k in ("num_samples", "seed", "num_steps")} == {
        "num_samples": 48, "seed": 0, "num_steps": 3}
    md = format_report(report)
    assert "| k | shape | scale | orientation | x | y | dominant | share |" in md
    assert "| 0 |" in md and "| 1 |" in md and "| 2 |" in md and "(inactive)" in md
    assert "2 of 3 potentials are active" in md and "2 of 3 have one dominant factor" in md


class EncodingFactorGenerator(FactorGenerator):
    """FactorGenerator with an encoder: it records the images it is given and returns their (clamped) factors."""

    device = torch.device("cpu")

    def __init__(self, labels):
        self.labels, self.seen = labels, None

    def encode(self, x):
        self.seen = x
        z = self.labels.float()
        z[:, 1], z[:, 3] = z[:, 1].clamp(max=2), z[:, 3].clamp(5, 20)
        return z, torch.zeros_like(z)


def test_factor_report_from_encoded_sprites(regressor):
    images, labels = dsprites.sample(40, seed=3)
    gen = EncodingFactorGenerator(labels)
    report = factor_report(OneFactorFlow(), gen, regressor, num_samples=40, seed=3, starts="encoded")
    assert torch.equal(gen.seen, images)  # the starts are the codes of fresh sprites drawn with the report's seed
    assert report["settings"]["starts"] == "encoded"
    assert report["potentials"][0]["dominant"] == "x" and report["potentials"][1]["dominant"] == "scale"
    assert "starts z0 = the generator's encoding (posterior mean) of a fresh dSprites image, seed 3" in format_report(report)
    assert "starts z0 ~ N(0, I)" in format_report(factor_report(OneFactorFlow(), gen, regressor, num_samples=8))
    with pytest.raises(ValueError, match="needs a generator with encode"):
        factor_report(OneFactorFlow(), FactorGenerator(), regressor, num_samples=8, starts="encoded")
    with pytest.raises(ValueError, match="starts must be 'prior' or 'encoded'"):
        factor_report(OneFactorFlow(), gen, regressor, num_samples=8, starts="data")


def test_train_script_tiny_run(tmp_path):
    out = tmp_path / "reg"
    train_factor_regressor.main(["--max-steps", "2", "--batch-size", "4", "--width", "4", "--hidden-dim", "8",
                                 "--output-dir", str(out), "--no-progress"])
    reg = FactorRegressor.from_pretrained(out)
    assert reg.predict(torch.zeros(1, 1, 64, 64))["shape_probs"].shape == (1, 3)
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: pdetraversal\nlicense: apache-2.0\n")
    assert "python train/train_factor_regressor.py --max-steps 2" in card
    with pytest.raises(SystemExit):
        train_factor_regressor.parse_args(["--lr", "0"])
    assert train_factor_regressor.parse_args(["--no-augment"]).augment is False


def test_report_labels():
    from pdetraversal.metrics.factors import report_labels

    def entry(k, change, active=True):
        total = sum(change.values())
        return {"k": k, "change": change, "active": active, "share": max(change.values()) / total}

    zero = dict.fromkeys(("shape", "scale", "orientation", "x", "y"), 0.0)
    report = {"summary": {"share_threshold": 0.6}, "potentials": [
        entry(0, {**zero, "x": 0.9, "y": 0.1}),
        entry(1, {**zero, "scale": 0.5, "y": 0.4, "x": 0.1}),
        entry(2, {**zero, "x": 0.01, "y": 0.01}, active=False),
    ]}
    assert report_labels(report) == ["x (90%)", "scale + y", "still"]
    report["potentials"] += [entry(3, {**zero, "scale": 0.5, "y": 0.3, "x": 0.2}), entry(4, {**zero, "x": 0.01}, False),
                             entry(5, {**zero, "scale": 0.4, "y": 0.35})]
    assert report_labels(report) == ["x (90%)", "scale + y", "still", "scale + y #2", "still #2", "scale + y #3"]


def test_factor_gap_scores_one_clean_traversal_per_factor_and_punishes_repeats():
    from pdetraversal.metrics.factors import FACTOR_NAMES, factor_gap

    def row(active=True, **change):
        return {"change": {f: change.get(f, 0.0) for f in FACTOR_NAMES}, "active": active}

    clean = [row(**{f: 0.8}) for f in FACTOR_NAMES]
    assert factor_gap(clean) == pytest.approx(1.0)
    # Two traversals moving x alone: x's gap is 1 - 1 = 0; y uncovered: 0; the other three stay 1.
    repeats = [row(x=1.0), row(x=0.5), row(shape=1.0), row(scale=1.0), row(orientation=1.0)]
    assert factor_gap(repeats) == pytest.approx(3 / 5)
    # Entangled: one traversal 75% x / 25% y, one 50/50: x gap 0.75 - 0.5, y gap 0.5 - 0.25; three uncovered.
    mixed = [row(x=0.3, y=0.1), row(x=0.2, y=0.2)]
    assert factor_gap(mixed) == pytest.approx((0.25 + 0.25) / 5)
    # Inactive traversals do not count (a still potential is no second candidate for its factor).
    assert factor_gap(clean + [row(active=False, x=0.05)]) == pytest.approx(1.0)
    assert factor_gap([]) == 0.0


def test_shipped_labels_name_what_a_small_sample_of_traversals_moves(regressor):
    # The fast check of the card: on 32 encoded starts each potential's main change is its label's first factor.
    from hub_models import load_flow_and_generator

    flow, generator = load_flow_and_generator(str(ROOT / "hub_models" / "dsprites-vae-potentials"))
    report = factor_report(flow, generator, regressor, starts="encoded", num_samples=32)
    assert [r["dominant"] for r in report["potentials"]] == [label.split(" ")[0] for label in flow.config["labels"]]


@pytest.mark.slow
def test_shipped_potentials_match_their_card(regressor):
    # The labels and the verdict in the shipped card come from this report: recompute it with the card's settings.
    from hub_models import load_flow_and_generator
    from pdetraversal.metrics.factors import report_labels

    folder = ROOT / "hub_models" / "dsprites-vae-potentials"
    flow, generator = load_flow_and_generator(str(folder))
    report = factor_report(flow, generator, regressor, starts="encoded")
    assert report_labels(report) == flow.config["labels"]
    m = report["summary"]
    card = (folder / "README.md").read_text()
    assert f"{m['num_disentangled']} of {m['num_potentials']} have one dominant factor" in card
    assert f"({m['num_covered']} of 5)" in card
    p = factor_report(flow, generator, regressor)["summary"]
    assert (f"256 starts z0 ~ N(0, I) instead: {p['num_disentangled']} of {p['num_potentials']} with one factor at "
            f">= 60%, {p['num_covered']} of 5 factors covered") in card
