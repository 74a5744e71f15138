"""PotentialFlow with one time for the whole batch (a number or a 0-dim tensor: the rollout, traversals): the time
stream runs once per k and is spread over the rows. It must be the same function as per-row times."""
import pytest
import torch

from pdetraversal import PotentialFlow, potentials


@pytest.fixture(params=["padded", "sorted"])
def layout(request, monkeypatch):
    monkeypatch.setattr(potentials, "SORTED_FROM_WIDTH", 10**9 if request.param == "padded" else 0)
    return request.param


@pytest.mark.parametrize("exact_initial", [False, True])
@pytest.mark.parametrize("k", [2, "rows", "rows with gaps"])
def test_a_shared_time_is_the_same_function_as_per_row_times(layout, k, exact_initial):
    torch.manual_seed(0)
    flow = PotentialFlow(4, 5, hidden_dim=6, exact_initial=exact_initial).double()
    z = torch.randn(9, 4, dtype=torch.float64)
    if k == "rows":
        k = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3])
    elif k == "rows with gaps":
        k = torch.tensor([4, 1, 1, 4, 4, 1, 4, 1, 1])  # only two k present, unevenly
    for t in (0.0, 1.7, torch.tensor(3.0, dtype=torch.float64)):
        rows = torch.full((9,), float(t), dtype=torch.float64)
        assert torch.allclose(flow.potential(z, t, k), flow.potential(z, rows, k), rtol=0, atol=1e-13)
        assert torch.allclose(flow.velocity(z, t, k), flow.velocity(z, rows, k), rtol=0, atol=1e-13)


def test_the_derivative_in_a_shared_time_is_the_sum_over_rows(layout):
    """A 0-dim t that requires grad: ∂(Σ_b u_b)/∂t is Σ_b ∂u_b/∂t_b, as broadcasting says (the weights' gradients too)."""
    torch.manual_seed(0)
    flow = PotentialFlow(3, 4, hidden_dim=5).double()
    z = torch.randn(7, 3, dtype=torch.float64)
    k = torch.tensor([0, 3, 3, 1, 0, 3, 1])
    shared = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    rows = torch.full((7,), 0.8, dtype=torch.float64, requires_grad=True)
    (g_shared,) = torch.autograd.grad(flow.potential(z, shared, k).sum(), shared)
    (g_rows,) = torch.autograd.grad(flow.potential(z, rows, k).sum(), rows)
    assert g_shared.item() == pytest.approx(g_rows.sum().item(), rel=1e-12)
    weights_shared = torch.autograd.grad(flow.potential(z, shared, k).pow(2).sum(), flow.t_in.weight)[0]
    weights_rows = torch.autograd.grad(flow.potential(z, rows, k).pow(2).sum(), flow.t_in.weight)[0]
    assert torch.allclose(weights_shared, weights_rows, rtol=0, atol=1e-13)
    assert weights_shared[2].abs().sum() == 0 and weights_shared[3].abs().sum() > 0  # k = 2 absent


def test_empty_batch_with_a_shared_time():
    flow = PotentialFlow(3, 2)
    assert flow.potential(torch.zeros(0, 3), 1.0, torch.zeros(0, dtype=torch.long)).shape == (0,)
    assert flow.velocity(torch.zeros(0, 3), 1.0, 1).shape == (0, 3)
