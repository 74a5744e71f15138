"""Label anchors of the dSprites VAE's latent coordinates (pdetraversal.anchors): closed-form targets and loss."""
import math

import pytest
import torch

from pdetraversal import dsprites
from pdetraversal.anchors import ANCHOR_NAMES, RING_RADIUS, SYMMETRY, anchor_loss, anchor_targets


def rows(**factors):
    base = dict(shape=0, scale=0, orientation=0, x=0, y=0)
    return torch.tensor([[{**base, **factors}[f] for f in dsprites.FACTOR_NAMES]])


def test_scalar_targets_are_standard_normal_quantiles():
    # Φ⁻¹(1/6) = -0.96742, Φ⁻¹(1/64) = -2.15387, Φ⁻¹(1/12) = -1.38299 (tables of the standard normal).
    shapes = anchor_targets(torch.tensor([[s, 0, 0, 0, 0] for s in range(3)]))[:, 0]
    assert torch.allclose(shapes, torch.tensor([-0.96742, 0.0, 0.96742]), atol=1e-5)
    t = anchor_targets(rows(scale=0, x=0, y=31))[0]
    assert math.isclose(t[1].item(), -1.38299, abs_tol=1e-5)
    assert math.isclose(t[4].item(), -2.15387, abs_tol=1e-5) and math.isclose(t[5].item(), 2.15387, abs_tol=1e-5)
    x = anchor_targets(torch.tensor([[0, 0, 0, i, 0] for i in range(32)]))[:, 4]
    assert (x.diff() > 0).all() and abs(x.mean().item()) < 1e-6  # monotone, centred like the prior
    assert 0.9 < x.var(unbiased=False).item() < 1.0  # close to the prior's unit variance


def test_orientation_target_is_a_ring_of_the_shapes_symmetry():
    t = anchor_targets(torch.tensor([[s, 0, o, 0, 0] for s in range(3) for o in range(40)]))[:, 2:4].view(3, 40, 2)
    square, ellipse, heart = t
    for ring, m in zip(t, (4, 2, 1)):  # radius R / sqrt(m)
        assert torch.allclose(ring.norm(dim=-1), torch.full((40,), RING_RADIUS / math.sqrt(m)), atol=1e-5)
    assert torch.allclose(heart[10], torch.tensor([0.0, RING_RADIUS]), atol=1e-5)  # heart at 90 degrees: angle 90
    assert torch.allclose(ellipse[5], torch.tensor([0.0, RING_RADIUS / math.sqrt(2)]), atol=1e-5)  # 45 deg -> 90
    assert torch.allclose(square[5], torch.tensor([-RING_RADIUS / 2, 0.0]), atol=1e-5)  # 45 deg -> 180
    # A target must be a function of the image: a turn by the shape's symmetry gives the same target ...
    assert torch.allclose(square[10], square[0], atol=1e-5) and torch.allclose(ellipse[20], ellipse[0], atol=1e-5)
    # ... and nothing less does (the heart's full turn is 40 steps).
    assert not torch.allclose(heart[10], heart[0], atol=0.1) and not torch.allclose(ellipse[10], ellipse[0], atol=0.1)
    # One potential turns every shape alike: a 9-degree turn moves a code along an arc r·m·Δθ, and u = c·φ (φ the
    # ring angle, |∇φ| = 1/r) steps by c / r; one c fits all three shapes because arc·r = r²·m·Δθ = R²·Δθ.
    step = (t[:, 1] - t[:, 0]).norm(dim=-1)  # chord of one step
    r = torch.tensor([RING_RADIUS / 2, RING_RADIUS / math.sqrt(2), RING_RADIUS])
    arc = 2 * r * torch.arcsin(step / (2 * r))  # back from chord to arc
    assert torch.allclose(arc * r, torch.full((3,), RING_RADIUS ** 2 * 2 * math.pi / 40), atol=1e-5)
    assert SYMMETRY == (4, 2, 1)


def test_anchor_loss_is_the_squared_distance_on_the_first_six_coordinates():
    idx = dsprites.random_factors(5, seed=0)
    target = anchor_targets(idx)
    free = torch.randn(5, 4)
    mu = torch.cat([target, free], dim=1)
    assert torch.allclose(anchor_loss(mu, idx), torch.zeros(5), atol=1e-6)  # the free coordinates are not pulled
    mu[:, 4] += 0.5
    mu[:, 0] -= 2.0
    assert torch.allclose(anchor_loss(mu, idx), torch.full((5,), 4.25), atol=1e-5)
    assert len(ANCHOR_NAMES) == target.shape[1] == 6


def test_bad_inputs_get_clear_errors():
    with pytest.raises(ValueError, match="at least 6 coordinates"):
        anchor_loss(torch.zeros(2, 5), dsprites.random_factors(2, seed=0))
    with pytest.raises(ValueError, match=r"shape \(B, 5\)"):
        anchor_targets(torch.zeros(2, 4, dtype=torch.long))
