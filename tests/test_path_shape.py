"""Path diagnostics (pdetraversal.metrics.path_shape) on paths and potentials whose answers are known."""
import math

import pytest
import torch

from pdetraversal import PotentialFlow
from pdetraversal.metrics.path_shape import format_diagnostics, path_diagnostics, path_shape


def test_a_straight_line_is_straight_and_does_not_turn():
    path = torch.arange(6.0)[:, None, None] * torch.tensor([[1.0, 2.0, -1.0]])
    s = path_shape(path)
    assert s["straightness"].item() == pytest.approx(1.0)
    assert s["turning_deg"].item() == pytest.approx(0.0, abs=1e-3)
    assert s["first_step"].item() == pytest.approx(math.sqrt(6)) and s["later_step"].item() == pytest.approx(math.sqrt(6))


def test_a_quarter_circle_in_n_equal_steps():
    # Chord R·√2, arc n·2R·sin(π/4n), and each step turns by exactly (π/2)/n.
    n, R = 9, 2.0
    a = torch.linspace(0, math.pi / 2, n + 1, dtype=torch.float64)
    path = torch.stack([R * a.cos(), R * a.sin()], -1)[:, None, :]
    s = path_shape(path)
    assert s["straightness"].item() == pytest.approx(math.sqrt(2) / (2 * n * math.sin(math.pi / (4 * n))))
    assert s["turning_deg"].item() == pytest.approx(90 / n)


class Quadratic:
    """u(z, t) = α t²/2 + β ‖z‖²/2: u_tt = α, Δu = β·d, f = α − c²βd; ∇u = β z."""
    num_potentials = 1

    def __init__(self, alpha, beta, c):
        self.alpha, self.beta, self.wave_speed = alpha, beta, torch.tensor([c])

    def potential(self, z, t, k):
        return 0.5 * self.alpha * t ** 2 + 0.5 * self.beta * z.pow(2).sum(-1)

    def traverse(self, z0, k, num_steps=None, step_size=None, direction=1):
        path = [z0]
        for _ in range(num_steps or 4):
            path.append(path[-1] + self.beta * path[-1])
        return torch.stack(path)


def test_physics_terms_match_the_closed_form():
    z0 = torch.randn(16, 3, dtype=torch.float64)
    (row,) = path_diagnostics(Quadratic(0.7, 0.1, 2.0), z0, num_steps=4)
    p = row["physics"]
    assert p["u_tt"] == pytest.approx(0.7) and p["c2_laplacian"] == pytest.approx(4 * 0.1 * 3)
    assert p["residual"] == pytest.approx(abs(0.7 - 1.2)) and p["wave_speed"] == pytest.approx(2.0)
    assert row["straightness"] == pytest.approx(1.0) and row["first_over_later"] == pytest.approx(3 / (1.1 + 1.1 ** 2 + 1.1 ** 3))
    # The same with Hutchinson probes: Rademacher probes give vᵀ(βI)v = βd exactly.
    (row,) = path_diagnostics(Quadratic(0.7, 0.1, 2.0), z0, num_steps=4, laplacian="hutchinson")
    assert row["physics"]["c2_laplacian"] == pytest.approx(1.2)


def test_a_potential_flow_gets_every_column_and_a_line_gets_no_physics():
    torch.manual_seed(0)
    flow = PotentialFlow(4, 3, hidden_dim=8, num_timesteps=5)
    rows = path_diagnostics(flow, torch.randn(8, 4))
    assert [r["k"] for r in rows] == [0, 1, 2]
    assert all(r["physics"] and all(math.isfinite(v) for v in r["physics"].values()) for r in rows)
    assert all(0 < r["straightness"] <= 1 + 1e-6 for r in rows)
    line = Quadratic(0.0, 0.1, 1.0)
    line.potential = None  # no potential: like a straight-line baseline
    assert path_diagnostics(line, torch.randn(4, 2))[0]["physics"] is None
    table = format_diagnostics(rows)
    assert table.count("\n") == 4 and "\\|u_tt\\|" in table
    # Every line has the header's number of Markdown cells: the escaped pipes do not split a cell.
    cells = [len(line.replace("\\|", "").split("|")) for line in table.splitlines()]
    assert len(set(cells)) == 1
