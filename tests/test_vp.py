"""VP score (pdetraversal.metrics.vp) on a constructed generator with traversals of known predictability.

The generator draws a Gaussian blob on 12×12 pixels: latent (x, y, log-width, brightness). Traversals move the code at
a constant velocity, 3 steps of 0.5. Four traversals along the four latent axes (right, down, wider, brighter) are
told apart from one pair almost always; four copies of one traversal cannot be told apart at all (chance, 25%).
"""
import pytest
import torch

from pdetraversal.metrics.vp import VPClassifier, make_pairs, vp_score

SIZE = 12


class BlobGenerator:
    latent_dim = 4

    def __init__(self, can_encode: bool = True):
        self.can_encode = can_encode

    def sample_latent(self, n, seed=None):
        g = torch.Generator().manual_seed(seed)
        return 0.5 * torch.randn(n, 4, generator=g)

    def data_latent(self, n, seed=None):
        # "Real images": blobs on a coarse grid of positions, so the test can tell which start codes were used.
        if not self.can_encode:
            return None
        g = torch.Generator().manual_seed(seed)
        z = torch.zeros(n, 4)
        z[:, :2] = torch.randint(-1, 2, (n, 2), generator=g).float()
        return z

    def decode(self, z):
        grid = torch.arange(SIZE, dtype=z.dtype)
        cx, cy = 5.5 + 2 * z[:, 0, None, None], 5.5 + 2 * z[:, 1, None, None]
        width = 1.5 * torch.exp(0.3 * z[:, 2, None, None])
        amp = torch.sigmoid(1 + z[:, 3, None, None])
        d2 = (grid[None, None, :] - cx) ** 2 + (grid[None, :, None] - cy) ** 2
        return (amp * torch.exp(-d2 / (2 * width ** 2))).unsqueeze(1)


class ConstantVelocity:
    """Traversal k: z_t = z_0 + t · step · velocity[k]."""

    def __init__(self, velocity):
        self.velocity = velocity
        self.num_potentials, self.latent_dim = len(velocity), velocity.shape[1]
        self.num_timesteps, self.step_size = 3, 0.5
        self.traversed_ks = []

    def label(self, k):
        return f"velocity {k}"

    def traverse(self, z0, k, num_steps=None, step_size=None, direction=1):
        self.traversed_ks.append(k)
        num_steps = self.num_timesteps if num_steps is None else num_steps
        step = (self.step_size if step_size is None else step_size) * direction
        t = torch.arange(num_steps + 1, dtype=z0.dtype)[:, None, None]
        return z0 + t * step * self.velocity[k]


def test_distinct_traversals_score_near_100_percent():
    r = vp_score(ConstantVelocity(torch.eye(4)), BlobGenerator(), num_pairs=2000, seeds=(0,), epochs=8)
    assert r["mean"] > 95.0, r  # measured 99.2%
    assert r["chance"] == 25.0 and r["num_train"] == 200 and r["num_test"] == 1800
    assert len(r["per_seed"]) == 1 and r["std"] == 0.0
    assert r["num_steps"] == 3 and r["step_size"] == 0.5 and r["epochs"] == 8 and r["lr"] == 0.005


def test_identical_traversals_score_chance():
    same = torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(4, 1)
    r = vp_score(ConstantVelocity(same), BlobGenerator(), num_pairs=2000, seeds=(0, 1), epochs=8)
    for acc in r["per_seed"]:
        assert abs(acc - 25.0) < 6.0, r
    assert r["train_accuracy"][0] > r["per_seed"][0]  # it can only memorise the training pairs


def test_pairs_are_the_decoded_start_and_end_of_traversal_k():
    gen, method = BlobGenerator(), ConstantVelocity(torch.eye(4))
    x0, xT, k = make_pairs(method, gen, 300, seed=3, num_steps=2, step_size=1.0)
    assert x0.dtype == torch.uint8 and x0.shape == xT.shape == (300, 1, SIZE, SIZE) and k.shape == (300,)
    assert sorted(set(method.traversed_ks)) == [0, 1, 2, 3]  # one int k per traversal call
    assert k.bincount(minlength=4).min() > 50  # k is uniform
    z0 = gen.sample_latent(300, seed=3)
    z_end = z0 + 2.0 * torch.eye(4)[k]
    to_u8 = lambda x: (x.clamp(0, 1) * 255).round().to(torch.uint8)  # noqa: E731
    assert (x0.int() - to_u8(gen.decode(z0)).int()).abs().max() <= 1
    assert (xT.int() - to_u8(gen.decode(z_end)).int()).abs().max() <= 1
    again = make_pairs(method, gen, 300, seed=3, num_steps=2, step_size=1.0)
    assert torch.equal(again[0], x0) and torch.equal(again[2], k)
    assert not torch.equal(make_pairs(method, gen, 300, seed=4)[2], k)


def test_data_starts_use_the_generators_data_codes():
    gen = BlobGenerator()
    x0, _, _ = make_pairs(ConstantVelocity(torch.eye(4)), gen, 50, seed=0, starts="data")
    expected = (gen.decode(gen.data_latent(50, seed=0)).clamp(0, 1) * 255).round().to(torch.uint8)
    assert (x0.int() - expected.int()).abs().max() <= 1
    with pytest.raises(ValueError, match="data_latent"):
        make_pairs(ConstantVelocity(torch.eye(4)), BlobGenerator(can_encode=False), 50, seed=0, starts="data")


def test_classifier_is_four_conv_layers_with_batch_norm_on_the_pair():
    net = VPClassifier(num_classes=5, channels=3)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 4 and convs[0].in_channels == 6
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == 4
    assert net(torch.zeros(2, 6, 64, 64)).shape == (2, 5)
    assert net(torch.zeros(2, 6, 12, 12)).shape == (2, 5)


def test_bad_input_gives_one_line_errors():
    method, gen = ConstantVelocity(torch.eye(4)), BlobGenerator()
    with pytest.raises(ValueError, match="latent_dim"):
        vp_score(ConstantVelocity(torch.eye(3)), gen, num_pairs=20, seeds=(0,), epochs=1)
    with pytest.raises(ValueError, match="starts"):
        vp_score(method, gen, num_pairs=20, seeds=(0,), epochs=1, starts="noise")
    with pytest.raises(ValueError, match="train_fraction"):
        vp_score(method, gen, num_pairs=20, seeds=(0,), epochs=1, train_fraction=1.0)
    with pytest.raises(ValueError, match="need at least 2"):
        vp_score(method, gen, num_pairs=5, seeds=(0,), epochs=1)
    with pytest.raises(ValueError, match="seeds"):
        vp_score(method, gen, num_pairs=20, seeds=(), epochs=1)
    with pytest.raises(ValueError, match="batch_size"):
        vp_score(method, gen, num_pairs=20, seeds=(0,), epochs=1, batch_size=1)
