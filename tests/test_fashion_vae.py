"""The Fashion-MNIST VAE (hub_models.fashion_vae), its trainer and the shipped hub_models/fashion-vae."""
import json
import re
import sys
from pathlib import Path

import pytest
import torch

import hub_models.fashion_vae  # noqa: F401  registers FashionVAE for load_generator
from hub_models import load_generator
from hub_models.fashion_vae import FashionVAE
from pdetraversal.data import fashion_mnist

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "train"))
import train_fashion_vae  # noqa: E402

SHIPPED = ROOT / "hub_models" / "fashion-vae"


def tiny(seed: int = 0) -> FashionVAE:
    torch.manual_seed(seed)
    return FashionVAE(latent_dim=3, width=4, hidden_dim=8).eval()


def data_installed() -> bool:
    try:
        fashion_mnist.load("test")
    except FileNotFoundError:
        return False
    return True


needs_data = pytest.mark.skipif(not data_installed(), reason="Fashion-MNIST is not installed")


def test_save_load_round_trip_is_bit_identical(tmp_path):
    gen = tiny()
    gen.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["_class_name"] == "FashionVAE"
    loaded = load_generator(tmp_path)
    assert type(loaded) is FashionVAE and loaded.latent_dim == 3 and loaded.image_shape == (1, 32, 32)
    z = gen.sample_latent(5, seed=1)
    with torch.no_grad():
        assert torch.equal(gen.decode(z), loaded.decode(z))


def test_decode_shape_and_range():
    gen = tiny()
    with torch.no_grad():
        x = gen.decode(10 * gen.sample_latent(7, seed=2))  # far from the prior's bulk: logits saturate
    assert x.shape == (7, 1, 32, 32)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        gen.decode(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="1, 32, 32"):
        gen.encode(torch.zeros(2, 3, 32, 32))


def test_jvp_through_decode_matches_central_differences():
    gen = tiny(seed=3).double()
    g = torch.Generator().manual_seed(4)
    z = torch.randn(4, 3, generator=g, dtype=torch.float64)
    v = torch.randn(4, 3, generator=g, dtype=torch.float64)
    _, jv = torch.func.jvp(gen.decode, (z,), (v,))
    h = 1e-6
    with torch.no_grad():
        fd = (gen.decode(z + h * v) - gen.decode(z - h * v)) / (2 * h)
    scale = fd.abs().max().item()
    assert scale > 1e-4  # the derivative is not trivially zero, so the comparison means something
    # central differences err by O(h²) ≈ 1e-12 here; half a wrong derivative would be off by ~scale / 2
    assert (jv - fd).abs().max().item() < 1e-7 * max(1.0, scale)


@needs_data
def test_data_latent_is_the_posterior_mean_of_test_pictures():
    gen = tiny()
    z = gen.data_latent(6, seed=5)
    assert z.shape == (6, 3)
    x = fashion_mnist.images(6, seed=5, split="test")
    with torch.no_grad():
        assert torch.equal(z, gen.encode(x)[0])
    assert torch.equal(gen.data_latent(6, seed=5), z)
    assert not torch.equal(gen.data_latent(6, seed=6), z)


def test_missing_data_names_the_install_command_and_data_latent_is_none(tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path))
    fashion_mnist.load.cache_clear()
    try:
        with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
            fashion_mnist.load("test")
        assert tiny().data_latent(4, seed=0) is None
    finally:
        monkeypatch.undo()
        fashion_mnist.load.cache_clear()  # the cached failure must not leak into other tests


def test_shipped_generator_loads_and_matches_its_card():
    gen = load_generator(SHIPPED)
    assert isinstance(gen, FashionVAE)
    card = (SHIPPED / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\nlibrary_name: pdetraversal\nlicense: mit\n")
    num_params = int(re.search(r"FashionVAE`, ([\d,]+) parameters", card).group(1).replace(",", ""))
    assert num_params == sum(p.numel() for p in gen.parameters())
    sizes = re.search(r"latent dimension\s+(\d+), width (\d+), hidden dimension (\d+)", card)
    assert (int(sizes[1]), int(sizes[2]), int(sizes[3])) == (gen.config.latent_dim, gen.config.width,
                                                             gen.config.hidden_dim)
    assert gen.latent_dim == gen.config.latent_dim
    assert re.search(r"--max-steps (\d+)", card) and "samples.png" in card
    png = (SHIPPED / "samples.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) < 200_000
    with torch.no_grad():
        x = gen.decode(gen.sample_latent(4, seed=0))
    assert x.shape == (4, 1, 32, 32) and torch.isfinite(x).all()


@needs_data
def test_shipped_card_held_out_elbo_is_reproduced():
    gen = load_generator(SHIPPED)
    card = (SHIPPED / "README.md").read_text(encoding="utf-8")
    shown = {name: float(re.search(rf"\| {pattern} \| ([\d.]+) \|", card).group(1))
             for name, pattern in (("neg_elbo", r"negative ELBO per picture [^|]*"),
                                   ("recon", r"\.\.\. reconstruction −log p\(x\|z\)"),
                                   ("kl", r"\.\.\. KL\(q\(z\|x\) ‖ N\(0, I\)\)"))}
    held = train_fashion_vae.evaluate(gen)
    for name, value in shown.items():
        assert abs(held[name] - value) < 0.01, name
    assert abs(shown["recon"] + shown["kl"] - shown["neg_elbo"]) < 0.02


@needs_data
def test_trainer_writes_a_loadable_folder_with_its_numbers(tmp_path):
    out = tmp_path / "fv"
    model = train_fashion_vae.main(["--max-steps", "3", "--batch-size", "8", "--latent-dim", "2", "--width", "4",
                                    "--hidden-dim", "8", "--num-threads", "1", "--no-progress", "--output-dir", str(out)])
    assert {"config.json", "diffusion_pytorch_model.safetensors", "README.md", "samples.png"} <= {
        p.name for p in out.iterdir()}
    gen = load_generator(out)
    z = gen.sample_latent(3, seed=0)
    with torch.no_grad():
        assert torch.equal(gen.decode(z), model.decode(z))
    card = (out / "README.md").read_text(encoding="utf-8")
    shown = float(re.search(r"\| negative ELBO per picture [^|]* \| ([\d.]+) \|", card).group(1))
    assert abs(train_fashion_vae.evaluate(gen)["neg_elbo"] - shown) < 0.01
    assert "--max-steps 3" in card


def test_trainer_rejects_bad_arguments(capsys):
    for bad in (["--max-steps", "0"], ["--lr", "-1"], ["--kl-warmup", "-2"]):
        with pytest.raises(SystemExit):
            train_fashion_vae.parse_args(bad)
        assert bad[0] in capsys.readouterr().err


def test_shipped_potentials_load_with_their_generator():
    from hub_models import load_flow_and_generator

    flow, gen = load_flow_and_generator(ROOT / "hub_models" / "fashion-vae-potentials")
    assert isinstance(gen, FashionVAE) and flow.latent_dim == gen.latent_dim == 16
    assert flow.config["generator"] == "hub_models/fashion-vae" and flow.config["num_potentials"] == 16
    path = flow.traverse(gen.sample_latent(3, seed=0), k=0)
    assert path.shape == (11, 3, 16) and torch.isfinite(path).all()
    assert (path[-1] - path[0]).norm(dim=1).min() > 0.1  # a trained potential moves its start
