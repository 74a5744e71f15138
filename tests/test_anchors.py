"""Label anchors of the dSprites VAE's latent coordinates (pdetraversal.data.anchors): closed-form targets and loss."""
import math

import pytest
import torch

from pdetraversal.data import dsprites
from pdetraversal.data.anchors import ANCHOR_NAMES, ORIENTATION_STEP, anchor_loss, anchor_targets


def rows(**factors):
    base = dict(shape=0, scale=0, orientation=0, x=0, y=0)
    return torch.tensor([[{**base, **factors}[f] for f in dsprites.FACTOR_NAMES]])


def test_scalar_targets_are_standard_normal_quantiles():
    # Φ⁻¹(1/6) = -0.96742, Φ⁻¹(1/64) = -2.15387, Φ⁻¹(1/12) = -1.38299 (tables of the standard normal).
    shapes = anchor_targets(torch.tensor([[s, 0, 0, 0, 0] for s in range(3)]))[:, 0]
    assert torch.allclose(shapes, torch.tensor([-0.96742, 0.0, 0.96742]), atol=1e-5)
    t = anchor_targets(rows(scale=0, x=0, y=31))[0]
    assert math.isclose(t[1].item(), -1.38299, abs_tol=1e-5)
    assert math.isclose(t[3].item(), -2.15387, abs_tol=1e-5) and math.isclose(t[4].item(), 2.15387, abs_tol=1e-5)
    x = anchor_targets(torch.tensor([[0, 0, 0, i, 0] for i in range(32)]))[:, 3]
    assert (x.diff() > 0).all() and abs(x.mean().item()) < 1e-6  # monotone, centred like the prior
    assert 0.9 < x.var(unbiased=False).item() < 1.0  # close to the prior's unit variance


def test_orientation_target_is_one_slope_over_the_period_of_each_shape():
    t = anchor_targets(torch.tensor([[s, 0, o, 0, 0] for s in range(3) for o in range(40)]))[:, 2].view(3, 40)
    square, ellipse, heart = t
    # A target must be a function of the image: a turn by the shape's symmetry gives the same target ...
    assert torch.equal(square[10:20], square[:10]) and torch.equal(ellipse[20:], ellipse[:20])
    # ... centred within each period: squares -0.45..0.45, ellipses -0.95..0.95, hearts -1.95..1.95 (step 0.1).
    for codes, half in ((square[:10], 0.45), (ellipse[:20], 0.95), (heart, 1.95)):
        assert math.isclose(codes[0].item(), -half, abs_tol=1e-6) and math.isclose(codes[-1].item(), half, abs_tol=1e-6)
        # One potential u = c·z_2 turns every shape alike: a 9-degree turn is the same step for all three.
        assert torch.allclose(codes.diff(), torch.full((len(codes) - 1,), ORIENTATION_STEP), atol=1e-6)
    assert ORIENTATION_STEP == 0.1


def test_anchor_loss_is_the_squared_distance_on_the_first_five_coordinates():
    idx = dsprites.random_factors(5, seed=0)
    target = anchor_targets(idx)
    free = torch.randn(5, 3)
    mu = torch.cat([target, free], dim=1)
    assert torch.allclose(anchor_loss(mu, idx), torch.zeros(5), atol=1e-6)  # the free coordinates are not pulled
    mu[:, 4] += 0.5
    mu[:, 0] -= 2.0
    assert torch.allclose(anchor_loss(mu, idx), torch.full((5,), 4.25), atol=1e-5)
    assert ANCHOR_NAMES == dsprites.FACTOR_NAMES and target.shape[1] == 5


def test_bad_inputs_get_clear_errors():
    with pytest.raises(ValueError, match="at least 5 coordinates"):
        anchor_loss(torch.zeros(2, 4), dsprites.random_factors(2, seed=0))
    with pytest.raises(ValueError, match=r"shape \(B, 5\)"):
        anchor_targets(torch.zeros(2, 4, dtype=torch.long))
