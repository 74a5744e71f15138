"""Weak supervision by known moves (pdetraversal.transitions): the dSprites moves and L_z against closed forms."""
import torch

from pdetraversal import PotentialFlow
from pdetraversal.data import dsprites
from pdetraversal.transitions import MOVE_SPAN, STEPS_PER_MOVE, dsprites_moves, matching_loss


def test_moves_advance_exactly_the_named_factor_by_one_step_without_wrapping():
    first, second, factor = dsprites_moves(4000, seed=(1, 2))
    diff = second - first
    assert ((diff != 0).sum(1) == 1).all() and torch.equal((diff != 0).float().argmax(1), factor)
    assert (diff[torch.arange(4000), factor] == 1).all()  # the next value, never wrapping around
    assert (second < torch.tensor(dsprites.FACTOR_SIZES)).all() and (first >= 0).all()
    assert set(second[factor == 0, 0].tolist()) == {1, 2} and set(first[factor == 0, 0].tolist()) == {0, 1}
    # Rotations stay within one period of the shape's symmetry: a square at 90 degrees is the square at 0 again,
    # an ellipse at 180 the ellipse at 0; a heart turns up to 351 degrees, never back to 0.
    for shape, period in enumerate((10, 20, 40)):
        turns = (factor == 2) & (first[:, 0] == shape)
        assert set(first[turns, 2].tolist()) == set(range(period - 1))
        assert set(second[turns, 2].tolist()) == set(range(1, period))
    assert set(first[factor == 3, 3].tolist()) == set(range(31))
    assert (torch.bincount(factor, minlength=5) > 600).all()
    assert all(torch.equal(a, b) for a, b in zip((first, second, factor), dsprites_moves(4000, seed=(1, 2))))


class ConstantFlow:
    """∇u^k = w_k everywhere (u^k linear): L_z then has a closed form independent of the point on the segment."""
    step_size = 0.5

    def __init__(self, w):
        self.w = w

    def velocity(self, z, t, k):
        return self.w[k]


def first_pixels(x):
    return x.flatten(1)[:, :3] * torch.tensor([1.0, 2.0, -1.0])


def test_matching_loss_closed_form_for_a_linear_potential():
    torch.manual_seed(0)
    x_a, x_b = torch.rand(6, 1, 4, 4), torch.rand(6, 1, 4, 4)
    w = torch.randn(2, 3)
    k = torch.tensor([0, 1, 1, 0, 1, 0])
    steps = torch.tensor([1, 2, 5, 1, 2, 5])
    loss = matching_loss(ConstantFlow(w), first_pixels, x_a, x_b, k, steps, torch.ones(6))
    move = (first_pixels(x_b) - first_pixels(x_a)) / steps[:, None]
    torch.testing.assert_close(loss, (move - 0.5 * w[k]).pow(2).sum(1))
    # The potential that makes exactly the move per step has zero loss.
    exact = ConstantFlow(None)
    exact.velocity = lambda z, t, kk: move / 0.5
    torch.testing.assert_close(matching_loss(exact, first_pixels, x_a, x_b, k, steps, torch.ones(6)), torch.zeros(6))


def centroid_code(x):
    """(column, row) of the sprite's centroid / 8, and zeros: a move of x or y by one position moves it by exactly 1/8."""
    mass = x.sum((1, 2, 3))
    grid = torch.arange(64, dtype=x.dtype)
    col = (x.sum((1, 2)) * grid).sum(1) / mass
    row = (x.sum((1, 3)) * grid).sum(1) / mass
    return torch.stack([col / 8, row / 8, torch.zeros_like(col)], 1)


def test_potentials_learn_the_known_latent_moves():
    # With the centroid as the code, the x move is (1/8, 0, 0) and the y move (0, 1/8, 0) wherever they start: after
    # training, potential 0 must step by the first and potential 1 by the second.
    torch.manual_seed(0)
    flow = PotentialFlow(3, 2, hidden_dim=16, num_timesteps=4, step_size=0.5, output_tanh=False)
    opt = torch.optim.Adam(flow.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for step in range(300):
        first, second, factor = dsprites_moves(64, seed=(0, step))
        keep = factor >= 3  # x and y moves -> potentials 0 and 1
        loss = matching_loss(flow, centroid_code, dsprites.render(first[keep]), dsprites.render(second[keep]),
                             factor[keep] - 3, torch.ones(int(keep.sum())), torch.randint(1, 4, (int(keep.sum()),)), g)
        opt.zero_grad()
        loss.mean().backward()
        opt.step()
    z = centroid_code(dsprites.sample(32, seed=5)[0])
    for k, expected in ((0, [0.125, 0.0, 0.0]), (1, [0.0, 0.125, 0.0])):
        step = flow.step_size * flow.velocity(z, 2.0, k).detach()
        assert (step - torch.tensor(expected)).abs().max() < 0.02, (k, step[:3])


def test_steps_per_move_cover_every_factor():
    assert set(STEPS_PER_MOVE) == set(dsprites.FACTOR_NAMES) and all(v >= 1 for v in STEPS_PER_MOVE.values())
    spans = [torch.tensor(MOVE_SPAN[f]) for f in dsprites.FACTOR_NAMES]
    assert all(((2 <= s) & (s <= size)).all() for s, size in zip(spans, dsprites.FACTOR_SIZES))


def test_a_potential_flow_cannot_circulate_which_is_why_moves_do_not_wrap():
    # ∮ ∇u · dl = 0 around any loop, while a rotation field (what a cyclic move would need) circulates 2π here.
    torch.manual_seed(0)
    flow = PotentialFlow(3, 1, hidden_dim=8, output_tanh=False).double()
    theta = torch.linspace(0, 2 * torch.pi, 4001, dtype=torch.float64)
    loop = torch.stack([theta.cos(), theta.sin(), torch.full_like(theta, 0.3)], 1)
    dl = loop[1:] - loop[:-1]

    def circulation(v):
        return (0.5 * (v[1:] + v[:-1]) * dl).sum().item()

    v = flow.velocity(loop, 1.0, 0).detach()
    assert v.abs().max() > 1e-3
    assert abs(circulation(v)) < 1e-6
    rotation = torch.stack([-loop[:, 1], loop[:, 0], torch.zeros_like(theta)], 1)
    assert abs(circulation(rotation) - 2 * torch.pi) < 1e-5
