"""The SNGAN generator and discriminator (hub_models/sngan.py), its trainer (train/train_sngan.py) and the shipped
hub_models/fashion-sngan."""
import json
import math
import os
import re
import runpy
from pathlib import Path

import pytest
import torch

import hub_models.sngan  # noqa: F401  (registers SNGANGenerator for load_generator)
from hub_models import load_generator
from hub_models.sngan import SNGANDiscriminator, SNGANGenerator
from pdetraversal.data import fashion_mnist

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "hub_models" / "fashion-sngan"
needs_data = pytest.mark.skipif(not os.path.isfile(os.path.join(fashion_mnist.data_dir(), "t10k-labels-idx1-ubyte.gz")),
                                reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")


def tiny_generator(seed: int = 0) -> SNGANGenerator:
    """A small generator whose BatchNorm running statistics are far from their initial (0, 1), so that a round trip
    that lost them, or a decode that used batch statistics, would show."""
    torch.manual_seed(seed)
    gen = SNGANGenerator(latent_dim=6, channels=1, width=4)
    for m in gen.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return gen


def test_round_trip_is_bit_identical(tmp_path):
    gen = tiny_generator()
    gen.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["_class_name"] == "SNGANGenerator"
    assert (config["latent_dim"], config["channels"], config["width"]) == (6, 1, 4)
    loaded = load_generator(str(tmp_path))
    assert isinstance(loaded, SNGANGenerator) and not loaded.training
    z = gen.sample_latent(5, seed=3)
    assert torch.equal(gen.decode(z), loaded.decode(z))


def test_decode_shape_range_and_frozen_batch_norm():
    gen = tiny_generator().train()  # even in train mode, decode reads the running statistics
    z = gen.sample_latent(7, seed=1)
    x = gen.decode(z)
    assert x.shape == (7, 1, 32, 32)
    x = x.detach()
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0 and float(x.std()) > 1e-3
    # an image depends on its own latent only, not on the rest of the batch
    assert torch.allclose(gen.decode(z[2:3]), x[2:3], atol=1e-6)
    # the training pass (batch statistics) is a different function of z
    assert not torch.allclose((gen(z) + 1) / 2, x, atol=1e-3)
    assert gen.latent_weight().shape == (16 * 4, 6) and gen.latent_weight() is gen.fc.weight
    with pytest.raises(ValueError, match=r"\(n, 6\)"):
        gen.decode(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="width"):
        SNGANGenerator(width=0)


def test_jvp_through_decode_matches_central_differences():
    gen = tiny_generator().double().eval()
    z = gen.sample_latent(2, seed=4).double()
    v = torch.randn(z.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    _, jv = torch.func.jvp(gen.decode, (z,), (v,))
    eps = 1e-6
    fd = (gen.decode(z + eps * v) - gen.decode(z - eps * v)) / (2 * eps)
    assert float(jv.detach().abs().max()) > 1e-3
    assert torch.allclose(jv, fd, rtol=1e-6, atol=1e-8)


def test_spectral_norm_keeps_top_singular_values_near_one():
    torch.manual_seed(0)
    dis = SNGANDiscriminator(channels=1, width=8)
    layers = [m for m in dis.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(layers) == 4 * 2 + 2 + 1  # two convs per block, two 1x1 shortcuts, the final Linear

    def sigmas(weight):
        return [float(torch.linalg.matrix_norm(weight(m).detach().reshape(len(weight(m)), -1), ord=2)) for m in layers]

    with torch.no_grad():  # new raw weights, 3x larger, in new directions: the stored power-iteration vectors are stale
        for m in layers:
            m.parametrizations.weight.original.copy_(3 * torch.randn_like(m.parametrizations.weight.original))
    raw = sigmas(lambda m: m.parametrizations.weight.original)
    assert min(raw) > 5
    dis.eval()  # no iteration in eval mode: the stale estimate leaves the top singular value away from 1
    assert max(abs(s - 1) for s in sigmas(lambda m: m.weight)) > 0.05
    dis.train()
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        for _ in range(30):  # each training forward is one power iteration per layer
            dis(x)
    dis.eval()
    for s in sigmas(lambda m: m.weight):
        assert abs(s - 1) < 0.02, s
    assert dis(x).shape == (4,)


@needs_data
def test_trainer_step_writes_a_loadable_folder(tmp_path):
    main = runpy.run_path(str(REPO / "train" / "train_sngan.py"))["main"]
    out = tmp_path / "sngan"
    # a budget that is spent at once: one generator step, then the card names the --max-steps that redoes it
    gen = main(["--max-steps", "3", "--max-minutes", "1e-9", "--width", "4", "--d-width", "4", "--batch-size", "8",
                "--classifier-steps", "0", "--eval-samples", "20", "--num-threads", "1", "--no-progress",
                "--output-dir", str(out)])
    assert {p.name for p in out.iterdir()} == {"config.json", "diffusion_pytorch_model.safetensors", "README.md",
                                               "samples.png"}
    loaded = load_generator(str(out))
    z = loaded.sample_latent(3, seed=0)
    assert torch.equal(loaded.decode(z), gen.decode(z))
    card = (out / "README.md").read_text()
    assert "license: mit" in card and "library_name: pdetraversal" in card and "**not shipped**" in card
    assert "after 1 of 3 generator steps" in card and "`--max-steps 1`" in card
    from PIL import Image
    assert Image.open(out / "samples.png").size == (8 * 64 + 7 * 2, 4 * 64 + 3 * 2)


def test_full_is_the_paper_size_and_flags_override_it():
    parse_args = runpy.run_path(str(REPO / "train" / "train_sngan.py"))["parse_args"]
    full = parse_args(["--full", "--device", "cuda"])
    assert (full.width, full.d_width, full.n_dis, full.batch_size, full.max_steps) == (256, 128, 5, 64, 50000)
    assert parse_args(["--full", "--width", "128"]).width == 128
    small = parse_args([])
    assert (small.width, small.d_width, small.n_dis, small.batch_size) == (32, 32, 1, 64)
    with pytest.raises(SystemExit):
        parse_args(["--n-dis", "0"])


class OneHotClassifier(torch.nn.Module):
    """Logits a * onehot(c), with the class c written in an image's first pixel as c / 10."""

    def __init__(self, a: float):
        super().__init__()
        self.a = a

    def forward(self, x):
        return self.a * torch.nn.functional.one_hot((x[:, 0, 0, 0] * 10).round().long(), 10).float()


def test_class_statistics_numbers():
    class_statistics = runpy.run_path(str(REPO / "train" / "train_sngan.py"))["class_statistics"]
    a = 2.0
    top = math.exp(a) / (math.exp(a) + 9)  # softmax of a * onehot: the top class, and each other one
    rest = (1 - top) / 9
    every_class = torch.zeros(20, 1, 32, 32)
    every_class[:, 0, 0, 0] = torch.arange(20) % 10 / 10
    s = class_statistics(OneHotClassifier(a), every_class)
    assert s["confidence"] == pytest.approx(top) and s["hist"] == pytest.approx([0.1] * 10)
    assert s["hist_entropy"] == pytest.approx(math.log(10))
    # p(y) is uniform, so the score is exp(KL(p(y|x) || uniform))
    assert s["inception_score"] == pytest.approx(math.exp(top * math.log(10 * top) + 9 * rest * math.log(10 * rest)))
    one_class = torch.full((6, 1, 32, 32), 0.3)
    s = class_statistics(OneHotClassifier(a), one_class)
    assert s["hist_entropy"] == pytest.approx(0.0) and s["inception_score"] == pytest.approx(1.0)
    assert s["hist"][3] == 1.0


@pytest.mark.skipif(not (SHIPPED / "config.json").is_file(), reason="hub_models/fashion-sngan is not trained yet")
def test_shipped_generator_loads_and_matches_its_card():
    gen = load_generator("hub_models/fashion-sngan")
    card = (SHIPPED / "README.md").read_text()
    config = json.loads((SHIPPED / "config.json").read_text())
    assert isinstance(gen, SNGANGenerator) and gen.latent_dim == 128 and gen.image_shape == (1, 32, 32)
    params = int(re.search(r"\(([\d,]+) parameters, latent dimension (\d+), width\s+(\d+)\)", card)[1].replace(",", ""))
    dims = re.search(r"latent dimension (\d+), width\s+(\d+)", card)
    assert params == sum(p.numel() for p in gen.parameters())
    assert (int(dims[1]), int(dims[2])) == (config["latent_dim"], config["width"])
    assert f"--width {config['width']}" in card and "license: mit" in card
    x = gen.decode(gen.sample_latent(4, seed=0))
    assert x.shape == (4, 1, 32, 32) and float(x.min()) >= 0 and float(x.max()) <= 1
    assert (SHIPPED / "samples.png").stat().st_size < 100_000
