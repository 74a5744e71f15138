"""One training step: all four terms, the frozen generator, and that a short run learns."""
import pytest
import torch

from hub_models import MLPGenerator
from pdetraversal import PotentialFlow
from pdetraversal.classifier import PairClassifier
from pdetraversal.training import LossConfig, rollout, training_step


def setup(seed=0, K=3):
    torch.manual_seed(seed)
    gen = MLPGenerator(latent_dim=4, image_size=16).eval().requires_grad_(False)
    flow = PotentialFlow(latent_dim=4, num_potentials=K, hidden_dim=16, num_timesteps=4)
    clf = PairClassifier(K, channels=1, image_size=16)
    return gen, flow, clf


def test_rollout_moves_each_sample_its_own_number_of_steps():
    gen, flow, _ = setup()
    z0, k, t = torch.randn(3, 4), torch.tensor([0, 1, 2]), torch.tensor([0, 1, 3])
    z = rollout(flow, z0, k, t)
    assert torch.equal(z[0], z0[0])
    for i in (1, 2):
        assert torch.allclose(z[i], flow.traverse(z0[i : i + 1], int(k[i]), int(t[i]))[-1, 0], atol=1e-6)


def test_step_has_all_terms_and_leaves_generator_frozen():
    gen, flow, clf = setup()
    loss, logs = training_step(flow, clf, gen, gen.sample_latent(16, seed=0), LossConfig(laplacian="hutchinson"))
    loss.backward()
    assert set(logs) == {"loss", "L_u", "L_f", "L_J", "L_k", "acc"}
    assert logs["L_J"] <= 0 and logs["L_f"] >= 0 and logs["L_u"] >= 0
    assert logs["loss"] == pytest.approx(logs["L_u"] + logs["L_f"] + logs["L_J"] + logs["L_k"], rel=1e-5)
    assert all(p.grad is None for p in gen.parameters())
    assert flow.wave_speed.grad is not None and all(p.grad is not None for p in clf.parameters())


def test_weights_scale_terms():
    gen, flow, clf = setup()
    z0 = gen.sample_latent(8, seed=1)
    _, logs = training_step(flow, clf, gen, z0, LossConfig(initial=0, pde=0, jacobian=0, classifier=2.0),
                            rng=torch.Generator().manual_seed(0))
    assert logs["loss"] == pytest.approx(2 * logs["L_k"], rel=1e-6)


def test_unfrozen_generator_is_refused():
    gen, flow, clf = setup()
    with pytest.raises(ValueError, match="frozen"):
        training_step(flow, clf, gen.train(), gen.sample_latent(4))


class BlobGenerator(torch.nn.Module):
    """A Gaussian blob at (z_0, z_1) with width exp(0.3 z_2) on 16×16: directions with visible, distinct effects."""

    latent_dim = 3

    def sample_latent(self, n, seed=None):
        return 0.5 * torch.randn(n, 3)

    def decode(self, z):
        g = torch.linspace(-2, 2, 16)
        cx, cy, s = z[:, 0, None, None], z[:, 1, None, None], torch.exp(0.3 * z[:, 2])[:, None, None]
        return torch.exp(-((g[None, None, :] - cx) ** 2 + (g[None, :, None] - cy) ** 2) / (0.6 * s**2))[:, None]


def test_short_training_run_learns_distinguishable_traversals():
    torch.manual_seed(0)
    gen = BlobGenerator().eval()
    flow = PotentialFlow(latent_dim=3, num_potentials=3, hidden_dim=16, num_timesteps=4)
    clf = PairClassifier(3, channels=1, image_size=16)
    opt = torch.optim.Adam([*flow.parameters(), *clf.parameters()], lr=1e-2)
    rng = torch.Generator().manual_seed(0)
    speed0 = flow.velocity(gen.sample_latent(64), 1.0, 0).norm(dim=1).mean()
    accs = []
    for _ in range(60):
        loss, logs = training_step(flow, clf, gen, gen.sample_latent(32), rng=rng)
        opt.zero_grad(), loss.backward(), opt.step()
        accs.append(logs["acc"])
    assert accs[0] < 0.6 and sum(accs[-10:]) / 10 > 0.9  # chance is 1/3
    z = gen.sample_latent(64)
    assert flow.velocity(z, 1.0, 0).norm(dim=1).mean() > 1.2 * speed0  # without L_J, L_u and L_f shrink the steps towards 0
    # distinct potentials move in distinct directions
    dirs = torch.stack([torch.nn.functional.normalize(flow.velocity(z, 1.0, k), dim=1) for k in range(3)])
    for a in range(3):
        for b in range(a + 1, 3):
            assert (dirs[a] * dirs[b]).sum(-1).mean() < 0.9


def test_diversity_weight_adds_its_term():
    torch.manual_seed(0)
    gen = BlobGenerator().eval()
    flow = PotentialFlow(latent_dim=3, num_potentials=3, hidden_dim=8, num_timesteps=4)
    clf = PairClassifier(3, channels=1, image_size=16)
    z0 = gen.sample_latent(16)
    plain, logs = training_step(flow, clf, gen, z0, rng=torch.Generator().manual_seed(1))
    total, logs_div = training_step(flow, clf, gen, z0, LossConfig(diversity=2.0), rng=torch.Generator().manual_seed(1))
    assert "L_div" not in logs and 0 <= logs_div["L_div"] <= 1
    assert total.item() == pytest.approx(plain.item() + 2.0 * logs_div["L_div"], rel=1e-5)
