"""Loss terms: the JVP against finite differences, the saturation bound, and the ELBO in closed form."""
import math

import pytest
import torch

from hub_models import MLPGenerator
from pdetraversal.classifier import PairClassifier
from pdetraversal.losses import (
    classifier_loss,
    jacobian_term,
    jacobian_vector_product,
    negative_elbo,
)


def test_jvp_matches_finite_difference():
    torch.manual_seed(0)
    gen = MLPGenerator(latent_dim=5, image_size=6).double().eval().requires_grad_(False)
    z, v = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    x, jv = jacobian_vector_product(gen.decode, z, v)
    h = 1e-6
    fd = (gen.decode(z + h * v) - gen.decode(z - h * v)) / (2 * h)
    assert torch.allclose(x, gen.decode(z)) and torch.allclose(jv, fd, atol=1e-8)


def test_jvp_is_differentiable_in_the_step():
    gen = MLPGenerator(latent_dim=4).eval().requires_grad_(False)
    v = torch.randn(2, 4, requires_grad=True)
    _, jv = jacobian_vector_product(gen.decode, torch.randn(2, 4), v)
    jacobian_term(jv).sum().backward()
    assert v.grad.abs().sum() > 0
    assert all(p.grad is None for p in gen.parameters())


def test_jacobian_term_is_bounded_and_saturates():
    tau = 0.1
    small = torch.full((1, 1, 4, 4), 1e-3)  # RMS change 1e-3 ≪ τ: behaves like −s
    assert jacobian_term(small, tau).item() == pytest.approx(-1e-3, rel=1e-3)
    signs = torch.tensor([1.0, -1.0]).repeat(8).view(1, 1, 4, 4)
    assert jacobian_term(0.02 * signs, tau).item() == pytest.approx(-tau * math.tanh(0.2))
    huge = torch.full((1, 1, 4, 4), 1e3, requires_grad=True)
    value = jacobian_term(huge, tau)
    assert value.item() == pytest.approx(-tau)  # never below −τ however large the step
    value.backward()
    assert huge.grad.abs().max() < 1e-12  # no more reward for growing the step
    # the pixel mean, not the sum: the same per-pixel change gives the same value at any image size
    assert jacobian_term(torch.full((1, 3, 8, 8), 0.05)).item() == pytest.approx(
        jacobian_term(torch.full((1, 1, 64, 64), 0.05)).item())
    with pytest.raises(ValueError):
        jacobian_term(small, 0.0)


def test_negative_elbo_closed_form():
    x = torch.tensor([[1.0, 0.0]])
    logits = torch.tensor([[0.0, 0.0]])  # p = 0.5 per pixel: −log p(x|z) = 2 log 2
    mu, logvar = torch.tensor([[1.0]]), torch.tensor([[math.log(2.0)]])
    kl = 0.5 * (1.0 + 2.0 - 1.0 - math.log(2.0))
    assert negative_elbo(x, logits, mu, logvar).item() == pytest.approx(2 * math.log(2) + kl)
    assert negative_elbo(x, logits, mu, logvar, beta=3.0).item() == pytest.approx(2 * math.log(2) + 3 * kl)


def test_classifier_learns_to_tell_pairs_apart():
    torch.manual_seed(0)
    clf = PairClassifier(num_potentials=2, channels=1, image_size=16)
    opt = torch.optim.Adam(clf.parameters(), 1e-2)
    x = torch.rand(64, 1, 16, 16)
    k = torch.arange(64) % 2
    x_next = torch.where(k[:, None, None, None] == 0, x.roll(2, dims=3), x.roll(2, dims=2))  # k: move right or down
    for _ in range(40):
        loss = classifier_loss(clf(x, x_next), k)
        opt.zero_grad(), loss.backward(), opt.step()
    assert loss.item() < 0.2
    with pytest.raises(ValueError, match="two image batches"):
        clf(x, x[:, :, :8])


def test_resnet_classifier_for_large_images():
    clf = PairClassifier(num_potentials=5, channels=3, image_size=128)
    assert clf(torch.rand(2, 3, 128, 128), torch.rand(2, 3, 128, 128)).shape == (2, 5)


def test_diversity_term_is_the_squared_cosine_of_the_image_steps():
    from pdetraversal.losses import diversity_term

    a = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0]]).view(3, 1, 2, 2)
    b = torch.tensor([[-3.0, 0.0, 0.0, 0.0], [0.0, 0.0, 5.0, 0.0], [0.0, 1.0, 1.0, 0.0]]).view(3, 1, 2, 2)
    torch.testing.assert_close(diversity_term(a, b), torch.tensor([1.0, 0.0, 0.5]))
