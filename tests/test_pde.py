"""The PDE terms against closed forms: each assertion fails if the Laplacian or ∂²u/∂t² is computed wrongly."""
import math

import pytest
import torch

from pdetraversal import PotentialFlow
from pdetraversal.pde import hessian_trace, initial_condition, laplacian, wave_residual


@pytest.fixture(autouse=True)
def float64():
    """Closed forms are checked to 1e-5 and tighter: float64 in this module only."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def quadratic(A, b):
    """u = ½ zᵀAz + b t²: Δ_z u = tr A, ∂²u/∂t² = 2b."""
    return lambda z, t: 0.5 * ((z @ A) * z).sum(-1) + b * t**2


@pytest.mark.parametrize("d", [3, 64])
def test_quadratic_laplacian_and_residual_exact(d):
    g = torch.Generator().manual_seed(d)
    A = torch.randn(d, d, generator=g)
    A = A + A.T
    b = torch.randn(5, generator=g)  # a different b per sample: ∂²u/∂t² must not be summed over the batch
    z, t = torch.randn(5, d, generator=g), torch.randn(5, generator=g)
    u = quadratic(A, b)
    assert torch.allclose(laplacian(u, z, t), A.trace().expand(5), atol=1e-5)
    c = 1.7
    assert torch.allclose(wave_residual(u, z, t, c), 2 * b - c**2 * A.trace(), atol=1e-5)


def test_laplacian_is_trace_not_hessian_row_sum():
    # With off-diagonal terms the row-sum vector Σ_i H_ij differs from tr H; only the trace is right.
    A = torch.tensor([[2.0, 3.0], [3.0, -1.0]])
    u = quadratic(A, torch.zeros(1))
    lap = laplacian(u, torch.randn(1, 2), torch.zeros(1))
    assert lap.shape == (1,)
    assert lap.item() == pytest.approx(1.0, abs=1e-10)  # tr A; the row sums would be 5 and 2


@pytest.mark.parametrize("d", [3, 64])
def test_plane_wave_residual(d):
    g = torch.Generator().manual_seed(1)
    a, w, c = torch.randn(d, generator=g), 0.7, 1.3
    z, t = torch.randn(6, d, generator=g), torch.arange(6.0)
    u = lambda z, t: torch.sin(z @ a - w * t)  # noqa: E731
    expected = (c**2 * a.dot(a) - w**2) * torch.sin(z @ a - w * t)
    assert torch.allclose(wave_residual(u, z, t, c), expected, atol=1e-5)
    # ... and it vanishes exactly when c‖a‖ = ω, the dispersion relation of the wave equation.
    c0 = w / a.norm()
    assert wave_residual(u, z, t, c0).abs().max() < 1e-10


def test_per_sample_time_derivative():
    # u = t³ · s_i with per-sample times: ∂²u/∂t² = 6 t_i s_i for each sample alone.
    z = torch.randn(4, 2)
    t = torch.tensor([0.0, 1.0, 2.0, 3.0])
    u = lambda z, t: t**3 * z[:, 0]  # noqa: E731
    assert torch.allclose(wave_residual(u, z, t, 1.0), 6 * t * z[:, 0], atol=1e-10)


def test_hutchinson_unbiased_and_variance_shrinks():
    d = 16
    g = torch.Generator().manual_seed(0)
    A = torch.randn(d, d, generator=g)
    A = A + A.T + d * torch.eye(d)
    u = quadratic(A, torch.zeros(1))
    z, t = torch.randn(1, d, generator=g), torch.zeros(1)
    one = torch.stack([laplacian(u, z, t, "hutchinson", 1, g) for _ in range(2000)]).squeeze(1)
    eight = torch.stack([laplacian(u, z, t, "hutchinson", 8, g) for _ in range(500)]).squeeze(1)
    assert one.mean().item() == pytest.approx(A.trace().item(), rel=0.03)
    assert eight.mean().item() == pytest.approx(A.trace().item(), rel=0.03)
    # Var of vᵀAv for Rademacher v is 2 Σ_{i≠j} A_ij²; the mean of 8 probes has 1/8 of it.
    var1 = 2 * (A.pow(2).sum() - A.diagonal().pow(2).sum())
    assert one.var().item() == pytest.approx(var1.item(), rel=0.15)
    assert eight.var().item() == pytest.approx(var1.item() / 8, rel=0.25)


def test_exact_laplacian_of_potential_flow_matches_hessian_trace():
    flow = PotentialFlow(latent_dim=5, num_potentials=3, hidden_dim=7)
    z, t, k = torch.randn(4, 5), torch.tensor([0.0, 1.0, 2.5, 3.0]), torch.tensor([0, 2, 1, 2])
    lap = laplacian(lambda z, t: flow.potential(z, t, k), z, t)
    for i in range(4):
        H = torch.autograd.functional.hessian(lambda x: flow.potential(x[None], t[i : i + 1], int(k[i]))[0], z[i])
        assert lap[i].item() == pytest.approx(H.trace().item(), abs=1e-10)


def test_time_derivative_of_potential_flow_matches_finite_difference():
    flow = PotentialFlow(latent_dim=4, num_potentials=2)
    z, t, k = torch.randn(3, 4), torch.tensor([0.5, 2.0, 4.0]), torch.tensor([1, 0, 1])
    f = wave_residual(lambda z, t: flow.potential(z, t, k), z, t, 0.0)  # c = 0 leaves ∂²u/∂t²
    h = 1e-4
    u = lambda tt: flow.potential(z, tt, k)  # noqa: E731
    fd = (u(t + h) - 2 * u(t) + u(t - h)) / h**2
    assert torch.allclose(f, fd, atol=1e-5)


def test_residual_differentiable_in_parameters_and_wave_speed():
    flow = PotentialFlow(latent_dim=3, num_potentials=2)
    k = torch.tensor([0, 1])
    f = wave_residual(lambda z, t: flow.potential(z, t, k), torch.randn(2, 3), torch.ones(2), flow.wave_speed[k])
    f.pow(2).mean().backward()
    assert flow.wave_speed.grad.abs().sum() > 0 and flow.z_in.weight.grad.abs().sum() > 0


def test_initial_condition_and_errors():
    v = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    assert torch.equal(initial_condition(v), torch.tensor([25.0, 1.0]))
    z = torch.randn(2, 3)
    with pytest.raises(ValueError, match="laplacian must be"):
        wave_residual(lambda z, t: z.sum(-1), z, torch.zeros(2), 1.0, laplacian="rowsum")
    with pytest.raises(ValueError, match="shape"):
        wave_residual(lambda z, t: z.sum(-1), z, torch.zeros(3), 1.0)
    with pytest.raises(ValueError, match="num_probes"):
        hessian_trace(z, z, "hutchinson", 0)
    assert math.isfinite(laplacian(lambda z, t: z.pow(2).sum(-1), z, torch.zeros(2)).sum().item())
