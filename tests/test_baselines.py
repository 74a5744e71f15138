"""The baselines and the shared traversal interface (pdetraversal.baselines): closed forms, round trips, training."""
import json
from pathlib import Path

import pytest
import torch

from hub_models import MLPGenerator
from hub_models.base import Generator
from pdetraversal import pde
from pdetraversal.baselines import (METHODS, LatentAxes, LinearPotential, PotentialFlow, RandomDirections, SeFa,
                                    WarpedSpace, load_traversal)
from pdetraversal.classifier import PairClassifier
from pdetraversal.hub import CheckpointError
from pdetraversal.potentials import traverse_both_ways
from pdetraversal.training import LossConfig, training_step

ROOT = Path(__file__).resolve().parent.parent
D, K = 4, 3


def mlp_generator(seed=0):
    torch.manual_seed(seed)
    return MLPGenerator(latent_dim=D, hidden_dim=16, image_size=8).eval().requires_grad_(False)


def every_method(seed=0):
    torch.manual_seed(seed)
    return {
        "potential": PotentialFlow(D, K),
        "linear": LinearPotential(D, K),
        "warped": WarpedSpace(D, K),
        "sefa": SeFa.from_generator(mlp_generator(seed), K),
        "axes": LatentAxes(D, K),
        "random": RandomDirections(D, K, seed=seed),
    }


def test_registry_names_every_class_by_its_method_name():
    assert sorted(METHODS) == ["axes", "linear", "potential", "random", "sefa", "warped"]
    assert all(cls.method_name == name for name, cls in METHODS.items())
    assert [name for name, cls in METHODS.items() if cls.pde_terms] == ["potential", "linear"]


# --- SeFa -------------------------------------------------------------------------------------------------------

def test_sefa_directions_are_the_top_eigenvectors_of_ata():
    gen = mlp_generator(1)
    sefa = SeFa.from_generator(gen, K)
    a = gen.net[0].weight.double()
    values, vectors = torch.linalg.eigh(a.T @ a)
    top = vectors[:, -K:].flip(1).T.float()  # (K, d), largest eigenvalue first
    cos = (sefa.directions * top).sum(1)
    torch.testing.assert_close(cos.abs(), torch.ones(K), atol=1e-5, rtol=0)  # equal up to sign
    torch.testing.assert_close(sefa.directions @ sefa.directions.T, torch.eye(K), atol=1e-5, rtol=0)
    torch.testing.assert_close(sefa.eigenvalues, values.flip(0)[:K].float(), rtol=1e-5, atol=1e-6)
    # The eigenvalue is how much the first layer's output moves per unit step: ‖A v_k‖².
    torch.testing.assert_close((gen.net[0].weight @ sefa.directions.T).pow(2).sum(0), sefa.eigenvalues, rtol=1e-4, atol=1e-6)
    assert sefa.label(0) == "SeFa 0"
    named = SeFa.from_generator(gen, K, generator="user/gen", step_size=0.5)  # generator= names its repo
    assert named.config["generator"] == "user/gen" and torch.equal(named.directions, sefa.directions)


def test_sefa_refuses_a_generator_without_a_linear_first_layer():
    class NoWeight(Generator):
        def __init__(self, latent_dim: int = 3):
            super().__init__()
            self.latent_dim = latent_dim
            self.scale = torch.nn.Parameter(torch.ones(1))

    with pytest.raises(ValueError, match="SeFa does not apply to NoWeight: it has no linear first layer on z"):
        SeFa.from_generator(NoWeight(), 2)
    with pytest.raises(RuntimeError, match="no directions yet"):
        SeFa(D, K).traverse(torch.zeros(1, D), 0)


# --- straight-line floors ---------------------------------------------------------------------------------------

def test_axes_move_exactly_coordinate_k_by_the_step():
    axes = LatentAxes(D, K, step_size=0.5)
    z0 = torch.randn(2, D)
    path = axes.traverse(z0, k=2, num_steps=4, direction=-1)
    expected = z0.clone().expand(5, 2, D).clone()
    expected[:, :, 2] -= 0.5 * torch.arange(5.0)[:, None]
    torch.testing.assert_close(path, expected)
    assert axes.label(1) == "axis 1"
    with pytest.raises(ValueError, match="only 4"):
        LatentAxes(D, D + 1)


def test_random_directions_unit_norm_and_reproducible_from_the_seed():
    a, b, c = RandomDirections(6, 5, seed=3), RandomDirections(6, 5, seed=3), RandomDirections(6, 5, seed=4)
    torch.testing.assert_close(a.directions.norm(dim=1), torch.ones(5))
    assert torch.equal(a.directions, b.directions) and not torch.equal(a.directions, c.directions)
    assert a.config["seed"] == 3 and a.label(2) == "random 2"


# --- trained baselines --------------------------------------------------------------------------------------------

def test_linear_potential_velocity_is_a_and_its_wave_residual_is_exactly_zero():
    lin = LinearPotential(D, K)
    z, k = torch.randn(5, D), torch.tensor([0, 1, 2, 1, 0])
    assert torch.equal(lin.velocity(z, 0.0, k), lin.weight[k])
    torch.testing.assert_close(lin.potential(z, 3.0, k), (z * lin.weight[k]).sum(1))
    t = torch.arange(5.0)
    for method in ("exact", "hutchinson"):
        f = pde.wave_residual(lambda zz, tt: lin.potential(zz, tt, k), z, t, lin.wave_speed[k], method)
        assert torch.equal(f, torch.zeros(5))
    # A straight line: every step is step_size · a_k.
    path = lin.traverse(z[:1], 1, num_steps=3, step_size=2.0)
    torch.testing.assert_close(path[-1] - path[0], 6.0 * lin.weight[1:2].detach())


def test_warped_velocity_is_the_unit_gradient_of_u():
    torch.manual_seed(0)
    warped = WarpedSpace(D, K, num_support=6).double()
    z, k = torch.randn(4, D, dtype=torch.float64), torch.tensor([2, 0, 1, 2])
    h = 1e-5
    fd = torch.stack([(warped.potential(z + h * e, 0.0, k) - warped.potential(z - h * e, 0.0, k)) / (2 * h)
                      for e in torch.eye(D, dtype=torch.float64)], dim=1)
    with torch.no_grad():
        v = warped.velocity(z, 0.0, k)
        torch.testing.assert_close(warped.gradient(z, k), fd, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(v, fd / fd.norm(dim=1, keepdim=True), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(v.norm(dim=1), torch.ones(4, dtype=torch.float64))
    # u is time-free, and every step of a traversal has length step_size.
    assert torch.equal(warped.potential(z, 0.0, k), warped.potential(z, 7.0, k))
    steps = warped.traverse(z, k, num_steps=3, step_size=0.3).diff(dim=0).norm(dim=-1)
    torch.testing.assert_close(steps, torch.full((3, 4), 0.3, dtype=torch.float64))


@pytest.mark.parametrize("cls", [LinearPotential, WarpedSpace])
def test_training_step_trains_the_learnable_baselines(cls):
    gen = mlp_generator(2)
    torch.manual_seed(0)
    method = cls(D, K, num_timesteps=4)
    classifier = PairClassifier(K, channels=1, image_size=8)
    before = {n: p.detach().clone() for n, p in method.named_parameters() if n != "wave_speed"}
    optimizer = torch.optim.Adam([*method.parameters(), *classifier.parameters()], lr=1e-2)
    weights = dict(initial=0.0, pde=0.0) if not cls.pde_terms else {}
    losses = LossConfig(**weights)
    for step in range(3):
        rng = torch.Generator().manual_seed(step)
        loss, logs = training_step(method, classifier, gen, gen.sample_latent(8, seed=step), losses, rng)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    assert torch.isfinite(loss) and set(logs) >= {"L_u", "L_f", "L_J", "L_k"}
    if cls is LinearPotential:
        assert logs["L_f"] == 0.0  # the wave equation holds exactly for a linear u
    for name, p in method.named_parameters():
        if name != "wave_speed":
            assert not torch.equal(p.detach(), before[name]), f"{name} did not change"


# --- the shared interface ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_has_the_interface_and_potentialflows_errors(name):
    method, flow = every_method()[name], PotentialFlow(D, K)
    z0 = torch.randn(3, D)
    assert (method.num_potentials, method.latent_dim, method.num_timesteps, method.step_size) == (K, D, 10, 1.0)
    assert isinstance(method.config, dict) and isinstance(method.label(0), str)
    assert method.traverse(z0, 1, num_steps=4).shape == (5, 3, D)
    both = traverse_both_ways(method, z0, torch.tensor([0, 1, 2]), num_steps=2)
    assert both.shape == (5, 3, D) and torch.equal(both[2], z0)
    for bad_k, bad_z, error in ((K, z0, IndexError), (-1, z0, IndexError), (torch.tensor([0, K, 1]), z0, IndexError),
                                (torch.tensor([0, 1]), z0, ValueError), (torch.tensor([0.0, 1.0, 2.0]), z0, ValueError),
                                (0, torch.randn(3, D + 1), ValueError), (0, torch.randn(D), ValueError)):
        with pytest.raises(error) as ours:
            method.traverse(bad_z, bad_k, num_steps=1)
        with pytest.raises(error) as theirs:
            flow.traverse(bad_z, bad_k, num_steps=1)
        assert str(ours.value) == str(theirs.value)
    for kwargs in ({"direction": 0}, {"num_steps": -1}):
        with pytest.raises(ValueError):
            method.traverse(z0, 0, **kwargs)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_save_and_load_traversal_round_trip(name, tmp_path):
    method = every_method(seed=5)[name]
    method.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["method"] == name
    loaded = load_traversal(tmp_path)
    assert type(loaded) is type(method) and not loaded.training
    assert loaded.state_dict().keys() == method.state_dict().keys()
    assert all(torch.equal(v, loaded.state_dict()[n]) for n, v in method.state_dict().items())
    z0 = torch.randn(2, D)
    assert torch.equal(loaded.traverse(z0, 2, num_steps=3), method.traverse(z0, 2, num_steps=3))


def test_a_config_without_method_loads_as_potentialflow(tmp_path):
    # Configs written before the field existed (the shipped ones until it did) name no method.
    import shutil

    shutil.copytree(ROOT / "hub_models" / "dsprites-vae-potentials", tmp_path / "old")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    del config["method"], config["exact_initial"]
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    flow = load_traversal(tmp_path / "old")
    assert type(flow) is PotentialFlow and flow.num_potentials == 8 and flow.latent_dim == 5


def test_an_unknown_method_is_a_checkpoint_error(tmp_path):
    LatentAxes(D, K).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "method": "stylegan-magic"}))
    with pytest.raises(CheckpointError, match=r"method='stylegan-magic'; known methods: \['axes', 'linear'"):
        load_traversal(tmp_path)


def test_loading_is_strict(tmp_path):
    WarpedSpace(D, K, num_support=4).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "num_support": 6}))
    with pytest.raises(CheckpointError, match="centres"):
        load_traversal(tmp_path)
