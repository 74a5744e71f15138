"""Issue 14's faster training step against the formulas it replaced, kept here as the reference.

Grouping rows by k (`potentials.RowGroups`, both layouts), the one forward pass shared by the residual, the step
and L_u (`pde.wave_residual_and_gradient`, `training.training_step`), the rollout of the moving rows only and the
forward-mode exact Laplacian must give what the old code gave, to float rounding: values and gradients.
"""
import copy

import pytest
import torch
import torch.nn.functional as F

from hub_models import MLPGenerator
from pdetraversal import PotentialFlow, losses, pde, potentials
from pdetraversal.classifier import PairClassifier
from pdetraversal.potentials import StackedLinear, sinusoidal_embedding
from pdetraversal.training import LossConfig, rollout, training_step

K = 8
# Repeats, and k = 2, 4, 6 missing: the layouts must handle groups of different sizes and absent potentials.
K_WITH_GAPS = torch.tensor([0, 3, 3, 5, 1, 1, 1, 7, 0, 3, 5, 5])


def close(new, old, rel=1e-5):
    """Equal to float rounding: within rel of the reference's largest entry. None (an unused parameter's gradient)
    stands for zeros."""
    if new is None or old is None:
        new, old = (torch.zeros(()) if x is None else x for x in (new, old))
    torch.testing.assert_close(new, old, rtol=rel, atol=rel * max(old.abs().max().item(), 1e-30))


# --- the formulas before issue 14 ---------------------------------------------------------------------------------

def einsum_linear(layer: StackedLinear, x, k):
    """Every row through all K layers, then each row keeps its own."""
    if isinstance(k, int):
        return x @ layer.weight[k] + layer.bias[k]
    out = torch.einsum("bi,kio->bko", x, layer.weight) + layer.bias
    return out.gather(1, k[:, None, None].expand(-1, 1, out.shape[-1])).squeeze(1)


def old_potential(flow, z, t, k):
    t = flow._time(t, z)
    lin = lambda layer, x: einsum_linear(layer, x, k)  # noqa: E731
    h_z = torch.tanh(lin(flow.z_in, z))
    h_t = lin(flow.t_hidden, F.gelu(lin(flow.t_in, sinusoidal_embedding(t, flow.hidden_dim))))
    u = lin(flow.out, torch.tanh(lin(flow.fuse, h_z + h_t))).squeeze(1)
    u = torch.tanh(u) if flow.output_tanh else u
    return torch.tanh(t) * u if flow.exact_initial else u


def old_velocity(flow, z, t, k):
    create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        z_ = z.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(old_potential(flow, z_, t, k).sum(), z_, create_graph=create_graph)
    return g


def old_grad(out, inp, grad_outputs=None):
    (g,) = torch.autograd.grad(out, inp, grad_outputs=grad_outputs, create_graph=True, allow_unused=True)
    return torch.zeros_like(inp) if g is None else g


def old_wave_residual(u_fn, z, t, c, laplacian, rng=None):
    """Three backward passes for ∇_z u, ∂u/∂t and ∂²u/∂t², then d (exact) or one (Hutchinson) for Δu."""
    z, t = z.detach().requires_grad_(True), t.detach().requires_grad_(True)
    u = u_fn(z, t)
    grad_z, grad_t = old_grad(u.sum(), z), old_grad(u.sum(), t)
    u_tt = old_grad(grad_t.sum(), t)
    if laplacian == "exact":
        lap = sum(old_grad(grad_z[:, i].sum(), z)[:, i] for i in range(z.shape[1]))
    else:
        v = (torch.randint(0, 2, z.shape, generator=rng) * 2 - 1).to(z)
        lap = (v * old_grad(grad_z, z, v)).sum(-1)
    return u_tt - c**2 * lap


def old_training_step(flow, classifier, generator, z0, cfg, rng):
    B = z0.shape[0]
    k = torch.randint(flow.num_potentials, (B,), generator=rng)
    t = torch.randint(flow.num_timesteps - 1, (B,), generator=rng)
    z = z0.detach()
    with torch.no_grad():
        for i in range(int(t.max())):
            z = z + (t > i).to(z.dtype)[:, None] * flow.step_size * old_velocity(flow, z, float(i), k)
    t_real = t.to(z0.dtype)
    f = old_wave_residual(lambda zz, tt: old_potential(flow, zz, tt, k), z, t_real, flow.wave_speed[k],
                          cfg.laplacian, rng)
    loss_u = old_velocity(flow, z0, 0.0, k).pow(2).sum(-1).mean()
    step = flow.step_size * old_velocity(flow, z, t_real, k)
    x_t, jv = losses.jacobian_vector_product(generator.decode, z, step)
    loss_j = losses.jacobian_term(jv, cfg.jacobian_saturation).mean()
    loss_k = losses.classifier_loss(classifier(x_t, generator.decode(z + step)), k)
    return loss_u + f.pow(2).mean() + loss_j + loss_k


# --- the tests ----------------------------------------------------------------------------------------------------

@pytest.fixture(params=["padded", "sorted"])
def layout(request, monkeypatch):
    """Both layouts of RowGroups, whatever the width."""
    monkeypatch.setattr(potentials, "SORTED_FROM_WIDTH", 10**9 if request.param == "padded" else 0)
    return request.param


def make_flow(d=5, hidden=7, **kw):
    torch.manual_seed(0)
    return PotentialFlow(d, K, hidden_dim=hidden, **kw)


def parameter_grads(flow, loss):
    return torch.autograd.grad(loss, list(flow.parameters()), allow_unused=True)


@pytest.mark.parametrize("exact_initial", [False, True])
@pytest.mark.parametrize("k", [K_WITH_GAPS, torch.arange(12) % K, torch.full((12,), 6), torch.tensor(4), 2],
                         ids=["gaps", "all-k", "one-k", "0-dim", "int"])
def test_potential_velocity_and_their_gradients_equal_the_einsum_formula(layout, k, exact_initial):
    flow = make_flow(exact_initial=exact_initial)
    z, t = torch.randn(12, 5), torch.linspace(0, 4, 12)
    ks = [k, int(k) if isinstance(k, torch.Tensor) and k.ndim == 0 else k]
    u_new, u_old = flow.potential(z, t, ks[0]), old_potential(flow, z, t, ks[1])
    close(u_new, u_old)
    v_new, v_old = flow.velocity(z, t, ks[0]), old_velocity(flow, z, t, ks[1])
    close(v_new, v_old)
    # Through the velocity too: the loss's gradient runs a double backward through the layouts.
    weights = torch.randn(12)
    g_new = parameter_grads(flow, (weights * u_new).sum() + v_new.pow(2).sum())
    g_old = parameter_grads(flow, (weights * u_old).sum() + v_old.pow(2).sum())
    for new, old in zip(g_new, g_old):
        close(new, old)


def test_stacked_linear_with_per_row_k_equals_the_einsum_formula():
    torch.manual_seed(1)
    layer = StackedLinear(K, 6, 4)
    x = torch.randn(12, 6, requires_grad=True)
    new, old = layer(x, K_WITH_GAPS), einsum_linear(layer, x, K_WITH_GAPS)
    close(new, old)
    w = torch.randn(12, 4)
    g_new = torch.autograd.grad((w * new).sum(), [x, layer.weight, layer.bias])
    g_old = torch.autograd.grad((w * old).sum(), [x, layer.weight, layer.bias])
    for a, b in zip(g_new, g_old):
        close(a, b)
    assert layer(x[:0], K_WITH_GAPS[:0]).shape == (0, 4)


def test_empty_batch_gives_empty_results(layout):
    flow = make_flow()
    z, k = torch.randn(0, 5), torch.zeros(0, dtype=torch.long)
    assert flow.potential(z, 1.0, k).shape == (0,)
    assert flow.velocity(z, 1.0, k).shape == (0, 5)


@pytest.mark.parametrize("d", [6, pde.FORWARD_MODE_MAX_DIM + 3])  # forward mode, then the d backward passes
def test_exact_laplacian_equals_the_backward_passes_with_gradients(layout, d):
    flow = make_flow(d=d, hidden=9)
    z, t = torch.randn(12, d), torch.linspace(0, 4, 12)
    new = pde.laplacian(lambda zz, tt: flow.potential(zz, tt, K_WITH_GAPS), z, t, "exact")
    old_fn = lambda zz, tt: old_potential(flow, zz, tt, K_WITH_GAPS)  # noqa: E731
    zz = z.detach().requires_grad_(True)
    g = old_grad(old_fn(zz, t).sum(), zz)
    old = sum(old_grad(g[:, i].sum(), zz)[:, i] for i in range(d))
    close(new, old)
    for a, b in zip(parameter_grads(flow, new.pow(2).sum()), parameter_grads(flow, old.pow(2).sum())):
        close(a, b)


def test_forward_mode_runs_the_layouts_under_jvp_and_vmap(layout):
    # forward_mode_laplacian vmaps a jvp of torch.func.grad over the basis: the grouped layers see batched duals.
    flow = make_flow(d=4, hidden=6)
    z, t = torch.randn(12, 4, dtype=torch.float64), torch.linspace(0, 4, 12, dtype=torch.float64)
    flow = flow.double()
    lap = pde.forward_mode_laplacian(lambda zz, tt: flow.potential(zz, tt, K_WITH_GAPS), z, t)
    for i in (0, 3, 7):
        H = torch.autograd.functional.hessian(
            lambda x: old_potential(flow, x[None], t[i : i + 1], int(K_WITH_GAPS[i]))[0], z[i])
        assert lap[i].item() == pytest.approx(H.trace().item(), abs=1e-10)


@pytest.mark.parametrize("method", ["exact", "hutchinson"])
@pytest.mark.parametrize("d", [5, pde.FORWARD_MODE_MAX_DIM + 3])
def test_residual_with_extra_rows_equals_separate_passes(layout, method, d):
    """wave_residual_and_gradient(rows=B) on [z_t; z_0]: f at z_t and ∇_z u at both, as three separate passes."""
    flow = make_flow(d=d)
    B = 12
    z_t, z_0, t = torch.randn(B, d), torch.randn(B, d), torch.linspace(0, 4, B)
    k2 = K_WITH_GAPS.repeat(2)
    f, grad_z = pde.wave_residual_and_gradient(lambda zz, tt: flow.potential(zz, tt, k2), torch.cat([z_t, z_0]),
                                               torch.cat([t, torch.zeros(B)]), flow.wave_speed[K_WITH_GAPS], method,
                                               rng=torch.Generator().manual_seed(5), rows=B)
    f_old = old_wave_residual(lambda zz, tt: old_potential(flow, zz, tt, K_WITH_GAPS), z_t, t,
                              flow.wave_speed[K_WITH_GAPS], method, torch.Generator().manual_seed(5))
    close(f, f_old)
    close(grad_z[:B], old_velocity(flow, z_t, t, K_WITH_GAPS))
    close(grad_z[B:], old_velocity(flow, z_0, 0.0, K_WITH_GAPS))
    new_loss = f.pow(2).sum() + grad_z.pow(2).sum()
    old_loss = f_old.pow(2).sum() + old_velocity(flow, z_t, t, K_WITH_GAPS).pow(2).sum() \
        + old_velocity(flow, z_0, 0.0, K_WITH_GAPS).pow(2).sum()
    for a, b in zip(parameter_grads(flow, new_loss), parameter_grads(flow, old_loss)):
        close(a, b)
    with pytest.raises(ValueError, match="rows must lie in 0..24"):
        pde.wave_residual_and_gradient(lambda zz, tt: zz.sum(-1), torch.cat([z_t, z_0]), torch.zeros(2 * B), 1.0,
                                       rows=25)


def test_rollout_of_the_moving_rows_equals_the_masked_rollout():
    flow = make_flow()
    z0, t = torch.randn(12, 5), torch.tensor([0, 3, 1, 0, 2, 3, 3, 1, 0, 2, 1, 3])
    z = z0.clone()
    for i in range(3):
        z = z + (t > i).to(z.dtype)[:, None] * flow.velocity(z, float(i), K_WITH_GAPS)
    close(rollout(flow, z0, K_WITH_GAPS, t), z)
    assert torch.equal(rollout(flow, z0, K_WITH_GAPS, t)[t == 0], z0[t == 0])


@pytest.mark.parametrize("method", ["exact", "hutchinson"])
def test_training_step_equals_the_old_step_in_loss_and_gradients(method):
    torch.manual_seed(0)
    gen = MLPGenerator(latent_dim=6, image_size=16).eval().requires_grad_(False)
    flow = PotentialFlow(6, K, hidden_dim=10, num_timesteps=5)
    clf = PairClassifier(K, channels=1, image_size=16)
    z0 = gen.sample_latent(24, seed=3)
    cfg = LossConfig(laplacian=method)
    flow_old, clf_old = copy.deepcopy(flow), copy.deepcopy(clf)  # the classifier's BatchNorm statistics move
    new, _ = training_step(flow, clf, gen, z0, cfg, torch.Generator().manual_seed(7))
    old = old_training_step(flow_old, clf_old, gen, z0, cfg, torch.Generator().manual_seed(7))
    close(new, old)
    new.backward()
    old.backward()
    for a, b in zip([*flow.parameters(), *clf.parameters()], [*flow_old.parameters(), *clf_old.parameters()]):
        close(a.grad, b.grad)
