"""L_z of eq. 8 (pdetraversal.transitions) against closed forms, and the dSprites factor sequences it is fed."""
import torch

from pdetraversal import PotentialFlow
from pdetraversal.data import dsprites
from pdetraversal.data.dsprites_moves import MOVE_SPAN, factor_sequences
from pdetraversal.transitions import sequence_matching_loss


def test_sequences_advance_exactly_the_named_factor_one_value_per_step_without_wrapping():
    idx, factor, lengths = factor_sequences(3000, 9, seed=(1, 2))
    assert idx.shape == (10, 3000, 5)
    diff = idx[1:] - idx[:-1]                                   # (9, n, 5)
    rows = torch.arange(3000)
    moved = diff[:, rows, factor]                               # (9, n)
    assert torch.equal(moved, (torch.arange(9)[:, None] < lengths[None, :]).long())
    diff[:, rows, factor] = 0
    assert (diff == 0).all()                                    # nothing else changes
    assert (idx >= 0).all() and (idx < torch.tensor(dsprites.FACTOR_SIZES)).all()
    # Shape has 3 values (2 steps), scale 6 (5 steps); x, y and a heart's turn have room for all 9.
    expected = {0: {2}, 1: {5}, 3: {9}, 4: {9}}
    for f, want in expected.items():
        assert set(lengths[factor == f].tolist()) == want
    for shape, period in enumerate(dsprites.ORIENTATION_PERIOD):   # a square turns at most to 81 degrees
        turns = (factor == 2) & (idx[0, :, 0] == shape)
        assert set(lengths[turns].tolist()) == {min(9, period - 1)}
        assert int(idx[-1, turns, 2].max()) == period - 1 and int(idx[0, turns, 2].min()) == 0
    assert set(idx[0, factor == 3, 3].tolist()) == set(range(32 - 9))
    assert (torch.bincount(factor, minlength=5) > 450).all()
    assert all(torch.equal(a, b) for a, b in zip((idx, factor, lengths), factor_sequences(3000, 9, seed=(1, 2))))
    assert set(MOVE_SPAN) == set(dsprites.FACTOR_NAMES)


class ConstantFlow:
    """∇u^k = w_k everywhere (u^k linear), so the flowed codes are ẑ_t = z_0 + t·η·w_k."""
    step_size = 0.5

    def __init__(self, w):
        self.w = w

    def velocity(self, z, t, k):
        return self.w[k].expand_as(z) if isinstance(k, int) else self.w[k]


def test_eq8_closed_form_on_a_straight_sequence():
    # Codes on a line z_t = z_0 + t·m, flow steps η·w: ẑ_t − z_t = t(η·w − m), so eq. 8 at step t is
    # (t² + 1)·‖m − η·w‖², and its mean over t = 0..S−1 is (mean of t² + 1)·‖m − η·w‖². The first term
    # (‖z_t − ẑ_t‖²) is what a matching of single steps would miss: it grows with t.
    torch.manual_seed(0)
    z0, m = torch.randn(4, 3), torch.randn(4, 3)
    S = 6
    codes = z0 + torch.arange(S + 1.0)[:, None, None] * m
    w = torch.randn(2, 3)
    k = torch.tensor([0, 1, 1, 0])
    loss = sequence_matching_loss(ConstantFlow(w), codes, k)
    gap = (m - 0.5 * w[k]).pow(2).sum(-1)
    torch.testing.assert_close(loss, (torch.arange(S) ** 2 + 1.0).mean() * gap)
    # The flow that makes exactly the move has zero loss; lengths keep only each sequence's first steps.
    exact = ConstantFlow(None)
    exact.velocity = lambda z, t, kk: m / 0.5
    torch.testing.assert_close(sequence_matching_loss(exact, codes, k), torch.zeros(4))
    lengths = torch.tensor([1, 2, 6, 3])
    want = torch.stack([(torch.arange(n) ** 2 + 1.0).mean() for n in lengths.tolist()]) * gap
    torch.testing.assert_close(sequence_matching_loss(ConstantFlow(w), codes, k, lengths), want)


def test_eq8_reaches_the_potential_through_the_rollout():
    # The same value computed with a detached rollout has a different gradient: ‖z_t − ẑ_t‖² reaches the
    # potential only through the earlier steps of ẑ, which a detached rollout (or a single-step match) cuts.
    torch.manual_seed(0)
    flow = PotentialFlow(2, 1, hidden_dim=8, output_tanh=False)
    codes = torch.randn(1, 5, 2).expand(4, 5, 2).clone()      # a still sequence: z_t = z_0
    loss = sequence_matching_loss(flow, codes, 0).sum()
    z_hat, detached = codes[0], 0
    for t in range(3):
        step = flow.step_size * flow.velocity(z_hat, float(t), 0)
        detached = detached + (codes[t] - z_hat).pow(2).sum(-1) + step.pow(2).sum(-1)
        z_hat = (z_hat + step).detach()
    detached = (detached / 3).sum()
    torch.testing.assert_close(loss, detached)
    (g_full,) = torch.autograd.grad(loss, flow.z_in.weight)
    (g_cut,) = torch.autograd.grad(detached, flow.z_in.weight)
    assert (g_full - g_cut).abs().max() > 1e-3 * g_full.abs().max()


def test_bad_shapes_are_rejected():
    import pytest

    with pytest.raises(ValueError, match="codes must have shape"):
        sequence_matching_loss(ConstantFlow(torch.zeros(1, 2)), torch.zeros(1, 3, 2), 0)
    with pytest.raises(ValueError, match="lengths must be"):
        sequence_matching_loss(ConstantFlow(torch.zeros(1, 2)), torch.zeros(3, 3, 2), 0, torch.tensor([0, 1, 2]))


def centroid_code(x):
    """(column, row) of the sprite's centroid / 8, and zeros: a move of x or y by one position moves it by exactly 1/8."""
    mass = x.sum((1, 2, 3))
    grid = torch.arange(64, dtype=x.dtype)
    col = (x.sum((1, 2)) * grid).sum(1) / mass
    row = (x.sum((1, 3)) * grid).sum(1) / mass
    return torch.stack([col / 8, row / 8, torch.zeros_like(col)], 1)


def test_potentials_learn_the_known_moves_from_real_sequences():
    # With the centroid as the code, an x sequence moves it by (1/8, 0, 0) per step and a y sequence by
    # (0, 1/8, 0), wherever it starts: after training on eq. 8, potential 0 must step by the first, 1 by the second.
    torch.manual_seed(0)
    flow = PotentialFlow(3, 2, hidden_dim=16, num_timesteps=4, step_size=0.5, output_tanh=False)
    opt = torch.optim.Adam(flow.parameters(), lr=3e-3)
    for step in range(250):
        idx, factor, lengths = factor_sequences(48, 3, seed=(0, step))
        keep = factor >= 3  # x and y sequences -> potentials 0 and 1
        frames = dsprites.render(idx[:, keep].flatten(0, 1))
        codes = centroid_code(frames).view(4, int(keep.sum()), 3)
        loss = sequence_matching_loss(flow, codes, factor[keep] - 3, lengths[keep])
        opt.zero_grad()
        loss.mean().backward()
        opt.step()
    z = centroid_code(dsprites.sample(32, seed=5)[0])
    for k, expected in ((0, [0.125, 0.0, 0.0]), (1, [0.0, 0.125, 0.0])):
        for t in (0.0, 2.0):
            step = flow.step_size * flow.velocity(z, t, k).detach()
            assert (step - torch.tensor(expected)).abs().max() < 0.02, (k, t, step[:3])


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


def test_dsprites_loss_encodes_only_valid_frames_and_gets_the_same_number():
    from hub_models import DSpritesVAE
    from pdetraversal.data.dsprites_moves import dsprites_matching_loss

    torch.manual_seed(0)
    vae = DSpritesVAE(latent_dim=5, width=4, hidden_dim=16).eval().requires_grad_(False)
    flow = PotentialFlow(5, 6, hidden_dim=8, num_timesteps=6, output_tanh=False)
    idx, factor, lengths = factor_sequences(12, 5, seed=(0, 3))
    with torch.no_grad():
        codes = vae.encode(dsprites.render(idx.flatten(0, 1)))[0].view(6, 12, 5)
    want = sequence_matching_loss(flow, codes, factor, lengths).mean()
    torch.testing.assert_close(dsprites_matching_loss(flow, vae, 12, (0, 3)), want)
