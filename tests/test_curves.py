"""Curve-following metrics (pdetraversal.metrics.curves) against closed forms: lines, circles and the swirl."""
import math

import pytest
import torch

from hub_models.swirl import SwirlVAE
from pdetraversal.metrics.curves import assign_factors, curve_shape, follow_curves, nearest_on_polyline

S, STEP = 10, 0.1


class LineGenerator:
    """True factor paths are straight lines along the axes: z0 + s·step·e_f."""

    def true_factor_path(self, z0, factor, num_steps, step, direction=1):
        s = direction * step * torch.arange(num_steps + 1, dtype=z0.dtype)
        e = torch.zeros(z0.shape[1], dtype=z0.dtype)
        e[factor] = 1
        return z0[None] + s[:, None, None] * e


class CircleGenerator:
    """The path of factor 0 through z0 is the circle of radius R about z0 − R·e_0, at arc-length speed."""

    def __init__(self, radius):
        self.radius = radius

    def true_factor_path(self, z0, factor, num_steps, step, direction=1):
        theta = direction * step * torch.arange(num_steps + 1, dtype=z0.dtype) / self.radius
        centre = z0 - self.radius * torch.eye(z0.shape[1], dtype=z0.dtype)[0]
        ring = torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)
        return centre[None] + self.radius * ring[:, None, :]


class Method:
    """traverse(z0, k, num_steps, step_size, direction) from a function path(z0, k, s) of the signed step index s."""

    def __init__(self, fn):
        self.fn = fn

    def traverse(self, z0, k, num_steps=S, step_size=None, direction=1):
        return torch.stack([self.fn(z0, k, direction * i) for i in range(num_steps + 1)])


def test_nearest_on_polyline_closed_form():
    curve = torch.tensor([[0.0, 0.0], [2.0, 0.0], [2.0, 2.0]])[:, None]  # an L
    points = torch.tensor([[1.0, 0.5], [3.0, 1.0], [-1.0, 0.0], [2.5, 3.0]])[:, None]
    dist, tangent, at_end = nearest_on_polyline(points, curve)
    assert torch.allclose(dist[:, 0], torch.tensor([0.5, 1.0, 1.0, math.hypot(0.5, 1.0)]))
    assert torch.allclose(tangent[:2, 0], torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert at_end[:, 0].tolist() == [False, False, True, True]


def test_the_true_curve_itself_scores_zero_and_cosine_one():
    gen = SwirlVAE(latent_dim=5, width=4, hidden_dim=8, strength=1.0)
    z0 = 0.8 * torch.randn(32, 5, generator=torch.Generator().manual_seed(0))
    true = Method(lambda z, k, s: gen.true_factor_path(z, k, abs(s), STEP, 1 if s >= 0 else -1)[-1])
    out = follow_curves(true, gen, z0, {k: k for k in range(5)}, S, {k: STEP for k in range(5)})
    for r in out.values():
        assert r["distance"] < 1e-5 and r["cosine"] > 1 - 1e-4 and r["num_still"] == 0


def test_a_faster_follower_is_not_penalised_for_leaving_the_first_sampled_extent():
    gen = LineGenerator()
    z0 = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    fast = Method(lambda z, k, s: z + 6 * s * STEP * torch.eye(3)[k])  # reaches 3x the curve's first extent
    out = follow_curves(fast, gen, z0, {1: 1}, S, {1: STEP})
    assert out[1]["distance"] < 1e-6 and out[1]["length"] == pytest.approx(2 * S * 6 * STEP, rel=1e-5)


def test_parallel_offset_line_scores_offset_over_length():
    gen, delta = LineGenerator(), 0.05
    z0 = torch.randn(5, 3, generator=torch.Generator().manual_seed(2))
    offset = Method(lambda z, k, s: z + delta * torch.eye(3)[1] + s * STEP * torch.eye(3)[0])
    r = follow_curves(offset, gen, z0, {0: 0}, S, {0: STEP})[0]
    assert r["distance"] == pytest.approx(delta / (2 * S * STEP), rel=1e-4)
    assert r["cosine"] == pytest.approx(1.0, abs=1e-6)


def test_tilted_line_through_z0_closed_form():
    # Point s of the line at angle β lies |s|·step·sin β from the axis: mean over s = -S..S is
    # step·sin β·S(S+1)/(2S+1); the length is 2S·step; every step has cosine cos β with the axis.
    gen, beta = LineGenerator(), 0.4
    z0 = torch.randn(3, 2, generator=torch.Generator().manual_seed(3))
    heading = torch.tensor([math.cos(beta), math.sin(beta)])
    tilted = Method(lambda z, k, s: z + s * STEP * heading)
    r = follow_curves(tilted, gen, z0, {0: 0}, S, {0: STEP})[0]
    assert r["distance"] == pytest.approx(math.sin(beta) * (S + 1) / (2 * (2 * S + 1)), rel=1e-4)
    assert r["cosine"] == pytest.approx(math.cos(beta), rel=1e-5)


def test_concentric_circle_scores_its_offset():
    radius, delta = 0.7, 0.03
    gen = CircleGenerator(radius)
    z0 = torch.randn(4, 2, generator=torch.Generator().manual_seed(4))

    def outer(z, k, s):
        theta = torch.tensor(s * STEP / radius)
        return z - radius * torch.tensor([1.0, 0.0]) + (radius + delta) * torch.stack([torch.cos(theta), torch.sin(theta)])

    r = follow_curves(Method(outer), gen, z0, {0: 0}, S, {0: STEP})[0]
    length = 2 * S * 2 * (radius + delta) * math.sin(STEP / (2 * radius))
    assert r["distance"] == pytest.approx(delta / length, rel=1e-4)
    assert r["cosine"] > 0.9999


def test_straight_axis_lines_miss_the_swirled_curves_but_not_the_unswirled_ones():
    z0 = 0.8 * torch.randn(32, 5, generator=torch.Generator().manual_seed(5))
    axes = Method(lambda z, k, s: z + s * STEP * torch.eye(5)[k])
    factors, steps = {k: k for k in range(5)}, {k: STEP for k in range(5)}
    swirled = follow_curves(axes, SwirlVAE(width=4, hidden_dim=8, strength=1.0), z0, factors, S, steps)
    plain = follow_curves(axes, SwirlVAE(width=4, hidden_dim=8, strength=0.0), z0, factors, S, steps)
    for k in range(5):
        assert plain[k]["distance"] < 1e-5
    assert swirled[0]["distance"] < 1e-5  # shape is in no plane: its path stays straight
    for k in range(1, 5):
        assert swirled[k]["distance"] > 0.02 and swirled[k]["cosine"] < 0.95


def test_assign_factors_recovers_a_permutation_and_still_traversals_are_nan():
    gen = SwirlVAE(width=4, hidden_dim=8, strength=1.0)
    perm = [3, 1, 4, 2]
    z0 = 0.8 * torch.randn(12, 5, generator=torch.Generator().manual_seed(6))

    def fn(z, k, s):
        if k == 4:
            return z  # still
        return gen.true_factor_path(z, perm[k], abs(s), STEP, 1 if s >= 0 else -1)[-1]

    assignment, table = assign_factors(Method(fn), gen, z0, range(5), range(1, 5), S, {f: STEP for f in range(5)})
    assert assignment == {0: 3, 1: 1, 2: 4, 3: 2}
    assert all(math.isnan(d) for d in table[4].values())
    r = follow_curves(Method(fn), gen, z0, {4: 1}, S, {1: STEP})[4]
    assert r["num_still"] == 12 and math.isnan(r["distance"])


def test_curve_shape_of_a_line_and_a_right_angle():
    line = torch.linspace(0, 1, 5)[:, None, None] * torch.tensor([1.0, 2.0])
    corner = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])[:, None]
    assert curve_shape(line)["chord_arc"].item() == pytest.approx(1.0)
    assert curve_shape(line)["max_turn_deg"].item() == pytest.approx(0.0, abs=1e-3)
    assert curve_shape(corner)["chord_arc"].item() == pytest.approx(math.sqrt(2) / 2)
    assert curve_shape(corner)["max_turn_deg"].item() == pytest.approx(90.0, abs=1e-3)


def test_a_generator_without_true_paths_is_refused():
    with pytest.raises(ValueError, match="true_factor_path"):
        follow_curves(Method(lambda z, k, s: z), object(), torch.zeros(1, 2), {0: 0}, S, {0: STEP})
