"""IWAE log-likelihood (pdetraversal.metrics.likelihood) against a linear-Gaussian VAE whose log p(x) is known.

p(z) = N(0, I), p(x | z) = N(Wz + b, σ²I), so p(x) = N(b, WWᵀ + σ²I). W = Q·diag(s) with orthonormal columns Q makes
WᵀW diagonal, so the exact posterior N((I + WᵀW/σ²)⁻¹Wᵀ(x − b)/σ², (I + WᵀW/σ²)⁻¹) is diagonal: an encoder of the
(mu, logvar) form can be exact. Everything in float64.
"""
import math

import pytest
import torch

from pdetraversal.metrics.likelihood import bernoulli_log_likelihood, evaluate_log_likelihood, iwae_log_likelihood

D, d, SIGMA = 12, 3, 0.5


class LinearGaussianVAE:
    def __init__(self, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(D, d, generator=g, dtype=torch.float64))
        self.s = torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)
        self.W = q * self.s
        self.b = torch.randn(D, generator=g, dtype=torch.float64)

    def sample(self, n: int, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, d, generator=g, dtype=torch.float64)
        return z @ self.W.T + self.b + SIGMA * torch.randn(n, D, generator=g, dtype=torch.float64)

    def log_px(self, x: torch.Tensor) -> torch.Tensor:
        # log N(x; b, C) with C = WWᵀ + σ²I through its Cholesky factor L: ‖L⁻¹(x − b)‖² and log det C = 2 Σ log L_ii.
        chol = torch.linalg.cholesky(self.W @ self.W.T + SIGMA ** 2 * torch.eye(D, dtype=torch.float64))
        white = torch.linalg.solve_triangular(chol, (x - self.b).T, upper=False)
        return -0.5 * (white.pow(2).sum(0) + 2 * chol.diagonal().log().sum() + D * math.log(2 * math.pi))

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        r = x - z @ self.W.T - self.b
        return -0.5 * (r.pow(2).sum(1) / SIGMA ** 2 + D * math.log(2 * math.pi * SIGMA ** 2))

    def exact_posterior(self, x: torch.Tensor):
        var = 1.0 / (1.0 + self.s ** 2 / SIGMA ** 2)
        mu = var * ((x - self.b) @ self.W) / SIGMA ** 2
        return mu, var.log().expand_as(mu)

    def wrong_posterior(self, x: torch.Tensor):
        # Shifted and too narrow: an under-dispersed proposal, so the bound tightens slowly and stays visibly below.
        mu, logvar = self.exact_posterior(x)
        return mu + 0.5, logvar - math.log(2.0)

    def elbo(self, x: torch.Tensor, encode) -> torch.Tensor:
        """E_q[log p(x|z)] − KL(q || p) in closed form for a diagonal Gaussian q."""
        mu, logvar = encode(x)
        var = logvar.exp()
        r = x - mu @ self.W.T - self.b
        trace = (var * self.s ** 2).sum(1)  # tr(W diag(var) Wᵀ) = Σ_j var_j s_j²
        expected_ll = -0.5 * ((r.pow(2).sum(1) + trace) / SIGMA ** 2 + D * math.log(2 * math.pi * SIGMA ** 2))
        kl = 0.5 * (var + mu.pow(2) - 1.0 - logvar).sum(1)
        return expected_ll - kl


@pytest.fixture(scope="module")
def vae():
    return LinearGaussianVAE()


def test_exact_posterior_gives_the_closed_form_for_any_number_of_samples(vae):
    x = vae.sample(50, seed=1)
    truth = vae.log_px(x)
    for num_samples in (1, 7, 100):
        est = iwae_log_likelihood(vae.exact_posterior, vae.log_likelihood, x, num_samples=num_samples, seed=3)
        torch.testing.assert_close(est, truth, rtol=0, atol=1e-9)
    # Small batches split both the images and the samples; the answer is the same.
    est = iwae_log_likelihood(vae.exact_posterior, vae.log_likelihood, x, num_samples=13, batch_size=7)
    torch.testing.assert_close(est, truth, rtol=0, atol=1e-9)


def test_wrong_posterior_is_a_lower_bound_that_tightens_with_more_samples(vae):
    x = vae.sample(200, seed=2)
    truth = vae.log_px(x)
    gap = {s: float((truth - iwae_log_likelihood(vae.wrong_posterior, vae.log_likelihood, x, num_samples=s,
                                                 seed=4)).mean()) for s in (1, 10, 100, 1000)}
    # Measured: 3.17, 1.65, 0.92, 0.59 nats per image.
    assert gap[1] > 2.0, gap
    assert gap[1] > gap[10] > gap[100] > gap[1000] > 0.2, gap
    assert gap[1000] < 0.3 * gap[1], gap


def test_single_sample_estimate_is_the_elbo_on_average(vae):
    x = vae.sample(100, seed=5)
    elbo = vae.elbo(x, vae.wrong_posterior)
    assert float((vae.log_px(x) - elbo).mean()) > 1.0  # the ELBO is well below log p(x), so the test can tell
    reps = 400
    est = iwae_log_likelihood(vae.wrong_posterior, vae.log_likelihood, x.repeat(reps, 1), num_samples=1, seed=6)
    diff = est - elbo.repeat(reps)
    assert abs(float(diff.mean())) < 4 * float(diff.std()) / math.sqrt(diff.numel()), float(diff.mean())
    assert abs(float(diff.mean())) < 0.05


def test_log_weights_far_below_float_range_do_not_underflow(vae):
    # A constant −1e4 nats in log p(x|z) (e^-10000 is 0 in float64) must shift the estimate by exactly −1e4.
    x = vae.sample(20, seed=7)
    shifted = iwae_log_likelihood(vae.wrong_posterior, lambda x_, z: vae.log_likelihood(x_, z) - 1e4, x,
                                  num_samples=50, seed=8)
    plain = iwae_log_likelihood(vae.wrong_posterior, vae.log_likelihood, x, num_samples=50, seed=8)
    assert torch.isfinite(shifted).all()
    torch.testing.assert_close(shifted, plain - 1e4, rtol=0, atol=1e-8)


def test_same_seed_same_estimate_other_seed_other_estimate(vae):
    x = vae.sample(10, seed=9)
    a = iwae_log_likelihood(vae.wrong_posterior, vae.log_likelihood, x, num_samples=5, seed=1)
    b = iwae_log_likelihood(vae.wrong_posterior, vae.log_likelihood, x, num_samples=5, seed=1)
    c = iwae_log_likelihood(vae.wrong_posterior, vae.log_likelihood, x, num_samples=5, seed=2)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)


def test_bernoulli_log_likelihood_is_the_summed_pixel_log_probability():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 3, 3, generator=g, dtype=torch.float64).round()
    logits = torch.randn(4, 1, 3, 3, generator=g, dtype=torch.float64)
    p = torch.sigmoid(logits)
    by_hand = (x * p.log() + (1 - x) * (1 - p).log()).flatten(1).sum(1)
    ll = bernoulli_log_likelihood(lambda z: logits)(x, torch.zeros(4, 2))
    torch.testing.assert_close(ll, by_hand)
    with pytest.raises(ValueError, match="do not match"):
        bernoulli_log_likelihood(lambda z: logits[:, :, :2])(x, torch.zeros(4, 2))


class CoinFlipVAE(torch.nn.Module):
    """q(z|x) = p(z) and p(x|z) = Bernoulli(1/2) per pixel: every importance weight is 2^-P, so log p(x) = −P log 2."""

    def encode(self, x):
        return torch.zeros(x.shape[0], 2), torch.zeros(x.shape[0], 2)

    def decode_logits(self, z):
        return torch.zeros(z.shape[0], 1, 4, 4)


def test_evaluate_log_likelihood_summary():
    vae = CoinFlipVAE().train()
    images = torch.randint(0, 2, (30, 1, 4, 4)).float()
    r = evaluate_log_likelihood(vae, images, num_samples=100)
    assert r["num_images"] == 30 and r["num_samples"] == 100
    assert r["mean"] == pytest.approx(-16 * math.log(2), abs=1e-4)
    assert r["std"] == pytest.approx(0.0, abs=1e-4) and r["sem"] == pytest.approx(0.0, abs=1e-4)
    assert vae.training  # restored after the evaluation


def test_bad_input_gives_one_line_errors(vae):
    x = vae.sample(4, seed=0)
    with pytest.raises(ValueError, match="num_samples"):
        iwae_log_likelihood(vae.exact_posterior, vae.log_likelihood, x, num_samples=0)
    with pytest.raises(ValueError, match="encode must return"):
        iwae_log_likelihood(lambda x_: (torch.zeros(3, d), torch.zeros(3, d)), vae.log_likelihood, x)
    with pytest.raises(ValueError, match="one value per row"):
        iwae_log_likelihood(vae.exact_posterior, lambda x_, z: z, x)
    with pytest.raises(ValueError, match="batch"):
        iwae_log_likelihood(vae.exact_posterior, vae.log_likelihood, torch.zeros(5))
