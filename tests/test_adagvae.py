"""Ada-GVAE posterior sharing (pdetraversal.adagvae): the KL threshold and the average, against hand-computed cases."""
import torch
from torch.distributions import Normal, kl_divergence

from pdetraversal.adagvae import share_posteriors


def test_only_the_coordinates_that_changed_keep_their_own_posterior():
    mu1 = torch.tensor([[0.0, 0.5, -1.0, 2.0]])
    mu2 = torch.tensor([[0.1, 0.5, 2.0, 2.05]])  # coordinate 2 moved a lot: the only one above the midpoint
    logvar1 = torch.log(torch.tensor([[0.2, 0.3, 0.1, 0.5]]))
    logvar2 = torch.log(torch.tensor([[0.4, 0.3, 0.1, 0.5]]))
    m1, l1, m2, l2 = share_posteriors(mu1, logvar1, mu2, logvar2)
    for j in (0, 1, 3):  # shared: both become the average Gaussian
        assert torch.allclose(m1[0, j], 0.5 * (mu1[0, j] + mu2[0, j])) and torch.allclose(m1[0, j], m2[0, j])
        avg_var = 0.5 * (logvar1[0, j].exp() + logvar2[0, j].exp())
        assert torch.allclose(l1[0, j].exp(), avg_var) and torch.allclose(l2[0, j].exp(), avg_var)
    assert m1[0, 2] == mu1[0, 2] and m2[0, 2] == mu2[0, 2]
    assert l1[0, 2] == logvar1[0, 2] and l2[0, 2] == logvar2[0, 2]


def test_threshold_is_the_midpoint_of_the_per_coordinate_kl():
    torch.manual_seed(0)
    mu1, mu2 = torch.randn(64, 6), torch.randn(64, 6)
    logvar1, logvar2 = torch.randn(64, 6) * 0.5, torch.randn(64, 6) * 0.5
    delta = kl_divergence(Normal(mu1, (0.5 * logvar1).exp()), Normal(mu2, (0.5 * logvar2).exp()))
    tau = 0.5 * (delta.max(1, keepdim=True).values + delta.min(1, keepdim=True).values)
    m1, _, m2, _ = share_posteriors(mu1, logvar1, mu2, logvar2)
    assert torch.equal(m1 == m2, delta < tau)
    # The largest divergence is always kept, the smallest always shared, so each pair shares something.
    rows = torch.arange(64)
    assert (m1[rows, delta.argmax(1)] == mu1[rows, delta.argmax(1)]).all()
    assert (m1[rows, delta.argmin(1)] == m2[rows, delta.argmin(1)]).all()


def test_gradients_flow_to_both_encoders():
    mu1, mu2 = torch.zeros(2, 3, requires_grad=True), torch.tensor([[0.0, 0.0, 3.0], [1.0, 0.0, 0.0]], requires_grad=True)
    lv = torch.zeros(2, 3)
    m1, _, m2, _ = share_posteriors(mu1, lv, mu2, lv)
    (m1.sum() + m2.sum()).backward()
    assert mu1.grad.abs().sum() > 0 and mu2.grad.abs().sum() > 0
