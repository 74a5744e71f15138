"""PotentialFlow: traversal on known potentials, the vectorised K call, and the Hub round trip."""
import json

import pytest
import safetensors.torch
import torch

from pdetraversal import PotentialFlow
from pdetraversal.hub import CheckpointError


class LinearPotential(PotentialFlow):
    """u^k = a_k · z, whose flow is a straight line with spacing step_size·‖a_k‖."""

    def __init__(self, a: torch.Tensor):
        super().__init__(latent_dim=a.shape[1], num_potentials=a.shape[0])
        self.a = a

    def potential(self, z, t, k):
        return (z * self.a[self._check(z, k)]).sum(-1)


def test_linear_potential_traverses_a_straight_line():
    a = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, -2.0]])
    flow = LinearPotential(a)
    z0 = torch.randn(5, 3)
    path = flow.traverse(z0, k=0, num_steps=6, step_size=0.5)
    assert path.shape == (7, 5, 3)
    steps = path[1:] - path[:-1]
    assert torch.allclose(steps, (0.5 * a[0]).expand_as(steps))
    assert torch.allclose(steps.norm(dim=-1), torch.full((6, 5), 0.5 * 5.0))
    back = flow.traverse(z0, k=0, num_steps=6, step_size=0.5, direction=-1)
    assert torch.allclose(back - z0, -(path - z0), atol=1e-6)  # the mirror image through z0


def make_flow(**kw):
    torch.manual_seed(0)
    flow = PotentialFlow(latent_dim=6, num_potentials=4, hidden_dim=9, num_timesteps=5, **kw)
    with torch.no_grad():  # non-trivial wave speeds so the round trip covers them
        flow.wave_speed.copy_(torch.tensor([0.5, 1.0, 1.5, 2.0]))
    return flow


def test_vectorised_call_equals_per_k_calls():
    flow = make_flow()
    z, t = torch.randn(8, 6), torch.linspace(0, 3, 8)
    k = torch.tensor([0, 3, 1, 2, 2, 0, 1, 3])
    u_all, v_all = flow.potential(z, t, k), flow.velocity(z, t, k)
    for i in range(8):
        assert torch.allclose(u_all[i], flow.potential(z[i : i + 1], t[i : i + 1], int(k[i]))[0], atol=1e-6)
        assert torch.allclose(v_all[i], flow.velocity(z[i : i + 1], t[i : i + 1], int(k[i]))[0], atol=1e-6)
    path_all = flow.traverse(z[:4], k=torch.arange(4), num_steps=3)
    for kk in range(4):
        assert torch.allclose(path_all[:, kk], flow.traverse(z[kk : kk + 1], k=kk, num_steps=3)[:, 0], atol=1e-6)


def test_velocity_is_gradient_and_differentiable():
    flow = make_flow()
    z = torch.randn(3, 6, dtype=torch.float64)
    flow = flow.double()
    v = flow.velocity(z, 1.0, 2)
    h, e = 1e-6, torch.eye(6, dtype=torch.float64)
    fd = torch.stack([(flow.potential(z + h * e[i], 1.0, 2) - flow.potential(z - h * e[i], 1.0, 2)) / (2 * h)
                      for i in range(6)], dim=1)
    assert torch.allclose(v, fd, atol=1e-7)
    v.pow(2).sum().backward()  # training needs gradients through the velocity into the weights
    assert flow.fuse.weight.grad[2].abs().sum() > 0 and flow.fuse.weight.grad[0].abs().sum() == 0
    with torch.no_grad():  # inference still gets a velocity, without a graph
        assert not flow.velocity(z, 1.0, 2).requires_grad


def test_bad_inputs_raise_clear_errors():
    flow = make_flow()
    z = torch.randn(2, 6)
    with pytest.raises(IndexError, match="k=4 out of range 0..3"):
        flow.potential(z, 0.0, 4)
    with pytest.raises(IndexError, match="0..3"):
        flow.velocity(z, 0.0, torch.tensor([0, -1]))
    with pytest.raises(ValueError, match=r"shape \(B, 6\)"):
        flow.traverse(torch.randn(2, 5), k=0)
    with pytest.raises(ValueError, match="direction"):
        flow.traverse(z, k=0, direction=2)
    with pytest.raises(ValueError, match="labels"):
        PotentialFlow(6, 4, labels=["a"])


def test_save_and_load_round_trip(tmp_path):
    flow = make_flow(generator="hub_models/dsprites-vae", labels=["a", "b", "c", "d"])
    flow.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} >= {"config.json", "model.safetensors", "README.md"}
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["latent_dim"] == 6 and config["num_potentials"] == 4 and config["hidden_dim"] == 9
    assert config["num_timesteps"] == 5 and config["generator"] == "hub_models/dsprites-vae"
    loaded = PotentialFlow.from_pretrained(tmp_path)
    assert loaded.config == flow.config and loaded.label(1) == "b"
    z = torch.randn(4, 6)
    assert torch.equal(loaded.traverse(z, k=2), flow.traverse(z, k=2))
    assert torch.equal(loaded.wave_speed, flow.wave_speed)


def test_mismatched_checkpoints_name_the_bad_keys(tmp_path):
    flow = make_flow()
    flow.save_pretrained(tmp_path)
    state = safetensors.torch.load_file(tmp_path / "model.safetensors")
    wrong = dict(state, **{"fuse.weight": torch.zeros(4, 9, 8)})
    safetensors.torch.save_file(wrong, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"'fuse.weight' has shape \(4, 9, 8\), the model expects \(4, 9, 9\)"):
        PotentialFlow.from_pretrained(tmp_path)
    missing = {key: v for key, v in state.items() if key != "wave_speed"}
    safetensors.torch.save_file(missing, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="missing key 'wave_speed'"):
        PotentialFlow.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        PotentialFlow.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors not found"):
        PotentialFlow.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="strictly"):
        PotentialFlow.from_pretrained(tmp_path, strict=False)


def test_traverse_is_detached_unless_asked():
    flow = make_flow()
    z0 = torch.randn(2, 6)
    assert not flow.traverse(z0, k=1).requires_grad
    path = flow.traverse(z0, k=1, num_steps=3, differentiable=True)
    path[-1].sum().backward()  # gradients reach the weights through all three steps
    assert flow.z_in.weight.grad[1].abs().sum() > 0


def test_pickled_weights_are_never_loaded(tmp_path):
    flow = make_flow()
    flow.save_pretrained(tmp_path)
    torch.save(flow.state_dict(), tmp_path / "pytorch_model.bin")  # what the stock mixin would fall back to
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors not found"):
        PotentialFlow.from_pretrained(tmp_path)
