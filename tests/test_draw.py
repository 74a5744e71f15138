"""The draw of k and t (`training.draw_k_and_t`): per sample (our default) or one pair per batch, the paper's Sec. 4.4
(`LossConfig(draw="step")`, `train/fit.py --draw step`)."""
import importlib.util
from pathlib import Path

import pytest
import torch

from hub_models import MLPGenerator
from pdetraversal import PotentialFlow, pde
from pdetraversal.classifier import PairClassifier
from pdetraversal.training import LossConfig, draw_k_and_t, rollout, training_step

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("fit_for_draw", ROOT / "train" / "fit.py")
fit = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fit)


def test_per_sample_draw_is_the_stream_it_always_was():
    """The shipped potentials were fitted with k = randint(K, (B,)) then t = randint(T − 1, (B,)): bit for bit."""
    k, t = draw_k_and_t(5, 7, 200, "sample", torch.Generator().manual_seed(4))
    rng = torch.Generator().manual_seed(4)
    assert torch.equal(k, torch.randint(5, (200,), generator=rng))
    assert torch.equal(t, torch.randint(6, (200,), generator=rng))
    assert len(k.unique()) == 5 and len(t.unique()) == 6


def test_per_step_draw_is_one_pair_for_the_batch_and_uniform_over_steps():
    pairs = [draw_k_and_t(4, 6, 32, "step", torch.Generator().manual_seed(s)) for s in range(400)]
    for k, t in pairs:
        assert k.shape == t.shape == (32,) and len(k.unique()) == 1 and len(t.unique()) == 1
    ks, ts = torch.stack([k[0] for k, _ in pairs]), torch.stack([t[0] for _, t in pairs])
    assert ks.min() == 0 and ks.max() == 3 and ts.min() == 0 and ts.max() == 4  # k in 0..K-1, t in 0..T-2
    assert torch.bincount(ks, minlength=4).min() > 60  # 100 expected per k


def test_unknown_draw_is_refused():
    with pytest.raises(ValueError, match="draw must be one of sample, step, got 'batch'"):
        draw_k_and_t(3, 4, 8, "batch")


def _setup(K=4, d=3, B=6, T=5):
    torch.manual_seed(0)
    flow = PotentialFlow(d, K, num_timesteps=T, output_tanh=False).double()
    gen = MLPGenerator(d, 16, 1, 8).double().eval().requires_grad_(False)
    clf = PairClassifier(K, 1, 8).double()
    return flow, gen, clf, torch.randn(B, d, dtype=torch.float64)


def test_per_step_draw_trains_one_potential_with_the_terms_of_that_k_and_t():
    flow, gen, clf, z0 = _setup()
    total, logs = training_step(flow, clf, gen, z0, LossConfig(draw="step"), torch.Generator().manual_seed(2))
    k, t = draw_k_and_t(flow.num_potentials, flow.num_timesteps, z0.shape[0], "step", torch.Generator().manual_seed(2))
    kk, tt = int(k[0]), int(t[0])
    z_t = rollout(flow, z0, k, t)
    # The same point the hand-rolled flow reaches, with tt steps of potential kk for every sample.
    z = z0
    for i in range(tt):
        z = z + flow.step_size * flow.velocity(z, float(i), kk).detach()
    assert torch.allclose(z_t, z, atol=1e-12)
    f = pde.wave_residual(lambda zz, ts: flow.potential(zz, ts, kk), z_t, torch.full((6,), float(tt), dtype=z.dtype),
                          flow.wave_speed[kk])
    assert logs["L_f"] == pytest.approx(f.pow(2).mean().item(), rel=1e-9)
    assert logs["L_u"] == pytest.approx(flow.velocity(z0, 0.0, kk).pow(2).sum(-1).mean().item(), rel=1e-9)
    total.backward()
    grads = flow.z_in.weight.grad.flatten(1).abs().sum(1)
    assert grads[kk] > 0 and torch.count_nonzero(grads) == 1  # only potential kk's weights move
    assert torch.count_nonzero(flow.wave_speed.grad) == 1


def test_fit_draw_step_reaches_the_loss_and_the_card_and_must_match_on_resume(tmp_path, monkeypatch):
    torch.manual_seed(0)
    gen_dir = tmp_path / "gen"
    MLPGenerator(latent_dim=4, image_size=16).save_pretrained(gen_dir)
    real_step, seen = fit.training_step, []

    def spy(*a, **kw):
        seen.append(a[4].draw)
        return real_step(*a, **kw)

    monkeypatch.setattr(fit, "training_step", spy)
    common = ["--generator", str(gen_dir), "--num-potentials", "3", "--num-timesteps", "4", "--batch-size", "8",
              "--no-progress", "--checkpoint-every", "2"]
    out = tmp_path / "pots"
    assert fit.main([*common, "--output-dir", str(out), "--max-steps", "3", "--draw", "step"]) == 0
    assert seen == ["step"] * 3
    assert "k and t drawn per step" in (out / "README.md").read_text()

    def crash(*a, **kw):
        if len(seen) == 5:
            raise KeyboardInterrupt  # after the checkpoint of step 2
        return spy(*a, **kw)

    monkeypatch.setattr(fit, "training_step", crash)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        fit.main([*common, "--output-dir", str(run), "--max-steps", "4", "--draw", "step"])
    with pytest.raises(SystemExit, match=r"--draw step -> sample"):
        fit.main([*common, "--output-dir", str(run), "--max-steps", "4", "--resume"])
