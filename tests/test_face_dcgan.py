"""The face DCGAN generator (hub_models/face_dcgan.py) and its converter (train/convert_face_dcgan.py): the converted
weights decode as the original network does, bad checkpoints are one-line errors naming the problem, decode is
differentiable through torch.func.jvp, and latent_weight() is the first layer as a matrix (for SeFa)."""
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch import nn
from torch.func import jvp

from hub_models import load_generator
from hub_models.face_dcgan import FaceDCGAN

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "train"))
import convert_face_dcgan  # noqa: E402

SHIPPED = ROOT / "hub_models" / "face-dcgan"


class Opaque:
    """Not a tensor: torch.load(weights_only=True) must refuse to unpickle it."""


def tutorial_generator(state: dict[str, torch.Tensor]) -> nn.Sequential:
    """The PyTorch DCGAN tutorial's generator (nz 100, ngf 64, nc 3), written out independently of the converter."""
    net = nn.Sequential(
        nn.ConvTranspose2d(100, 512, 4, 1, 0, bias=False), nn.BatchNorm2d(512), nn.ReLU(),
        nn.ConvTranspose2d(512, 256, 4, 2, 1, bias=False), nn.BatchNorm2d(256), nn.ReLU(),
        nn.ConvTranspose2d(256, 128, 4, 2, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(),
        nn.ConvTranspose2d(128, 64, 4, 2, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
        nn.ConvTranspose2d(64, 3, 4, 2, 1, bias=False), nn.Tanh())
    net.load_state_dict({k.removeprefix("main."): v for k, v in state.items()})
    return net.eval()


def random_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under the package checkpoint's keys and shapes (positive variances, so BN stays finite)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in FaceDCGAN().state_dict().items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = torch.rand(value.shape, generator=g) + 0.5
        elif value.ndim == 4:
            state[key] = 0.05 * torch.randn(value.shape, generator=g)
        else:
            state[key] = torch.randn(value.shape, generator=g) * 0.3 + (1.0 if key.endswith("weight") else 0.0)
    return state


@pytest.fixture
def cheap_measures(monkeypatch):
    """The card's timing and image-speed numbers are not what these tests check; skip their cost."""
    monkeypatch.setattr(convert_face_dcgan, "decode_ms_per_image", lambda gen: 1.0)
    monkeypatch.setattr(convert_face_dcgan, "image_speed", lambda gen: (0.05, 0.01))


def save_checkpoint(path: Path, state) -> Path:
    torch.save({"netG_state_dict": state}, path)
    return path


def test_converter_on_a_synthetic_checkpoint_decodes_as_the_reference(tmp_path, cheap_measures):
    state = random_state()
    weights = save_checkpoint(tmp_path / "weights.tar", state)
    out = tmp_path / "face"
    facts = convert_face_dcgan.main(["--weights", str(weights), "--dtype", "float32", "--output-dir", str(out)])
    assert {p.name for p in out.iterdir()} == {"config.json", "diffusion_pytorch_model.safetensors", "README.md",
                                               "samples.png"}
    gen = load_generator(out)
    z = torch.randn(6, 100, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = (tutorial_generator(state)(z.view(6, 100, 1, 1)) + 1) / 2
        assert torch.equal(gen.decode(z), expected)
    assert facts["max_diff"] == 0.0 and facts["num_params"] == 3_576_704
    with safe_open(str(out / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert f.get_slice("main.0.weight").get_dtype() == "F32"


def test_float16_conversion_is_the_rounded_original_and_loads_as_float32(tmp_path, cheap_measures):
    state = random_state(1)
    weights = save_checkpoint(tmp_path / "weights.tar", state)
    out = tmp_path / "face16"
    facts = convert_face_dcgan.main(["--weights", str(weights), "--output-dir", str(out)])
    gen = load_generator(out)
    assert all(p.dtype == torch.float32 for p in gen.parameters())
    rounded = {k: v.half().float() if v.is_floating_point() else v for k, v in state.items()}
    z = torch.randn(4, 100, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert torch.equal(gen.decode(z), (tutorial_generator(rounded)(z.view(4, 100, 1, 1)) + 1) / 2)
    # fp16 keeps 11 significant bits: the weights move, so the images do, but by far less than a grey level (1/255)
    assert 0 < facts["max_diff"] < 1 / 255 and facts["max_diff_rounded"] == 0.0


@pytest.mark.parametrize("change, named", [
    (lambda s: s.__setitem__("main.6.weight", torch.zeros(256, 128, 3, 3)), r"'main\.6\.weight' has shape \(256, 128, 3, 3\), expected \(256, 128, 4, 4\)"),
    (lambda s: s.pop("main.4.running_var"), r"lacks the tensor 'main\.4\.running_var'"),
    (lambda s: s.__setitem__("main.13.weight", torch.zeros(3)), r"unexpected tensor 'main\.13\.weight'"),
])
def test_a_bad_checkpoint_is_a_one_line_error_naming_the_tensor(tmp_path, change, named):
    state = random_state()
    change(state)
    weights = save_checkpoint(tmp_path / "weights.tar", state)
    with pytest.raises(SystemExit) as info:
        convert_face_dcgan.main(["--weights", str(weights), "--output-dir", str(tmp_path / "out")])
    message = str(info.value)
    assert "\n" not in message and re.search(named, message), message
    assert not (tmp_path / "out").exists()


def test_a_pickle_that_is_not_plain_tensors_is_refused(tmp_path):
    weights = save_checkpoint(tmp_path / "weights.tar", {"main.0.weight": Opaque()})
    with pytest.raises(SystemExit) as info:
        convert_face_dcgan.main(["--weights", str(weights), "--output-dir", str(tmp_path / "out")])
    message = str(info.value)
    assert "\n" not in message and "weights_only=True" in message and "Opaque" in message, message
    assert not (tmp_path / "out").exists()


def tiny_gan(seed: int = 0) -> FaceDCGAN:
    torch.manual_seed(seed)
    gen = FaceDCGAN(latent_dim=5, channels=2, width=2).double()
    with torch.no_grad():
        for m in gen.modules():
            if isinstance(m, nn.BatchNorm2d):  # non-trivial running statistics, as a trained net has
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.3)
    return gen


def test_decode_jvp_matches_central_differences():
    gen = tiny_gan()
    g = torch.Generator().manual_seed(1)
    z = torch.randn(3, 5, generator=g, dtype=torch.float64)
    v = torch.randn(3, 5, generator=g, dtype=torch.float64)
    x, jv = jvp(gen.decode, (z,), (v,))
    h = 1e-6
    with torch.no_grad():
        fd = (gen.decode(z + h * v) - gen.decode(z - h * v)) / (2 * h)
    assert x.shape == (3, 2, 64, 64) and float(jv.detach().abs().max()) > 1e-3
    torch.testing.assert_close(jv, fd, rtol=1e-6, atol=1e-8)


def test_batch_norm_uses_running_statistics_in_every_mode():
    gen = tiny_gan().train()
    z = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        one = gen.decode(z[:1])
        batch = gen.decode(z)
    torch.testing.assert_close(one, batch[:1], rtol=0, atol=1e-12)


def test_latent_weight_is_the_first_layer_as_a_matrix():
    gen = tiny_gan()
    z = torch.randn(7, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    W = gen.latent_weight()
    assert W.shape == (2 * 8 * 16, 5)
    with torch.no_grad():
        torch.testing.assert_close(z @ W.T, gen.main[0](z.view(7, 5, 1, 1)).flatten(1), rtol=0, atol=1e-12)


def test_the_shipped_folder_loads_and_matches_its_card():
    gen = load_generator(SHIPPED)
    card = (SHIPPED / "README.md").read_text(encoding="utf-8")
    config = json.loads((SHIPPED / "config.json").read_text(encoding="utf-8"))
    assert config["_class_name"] == "FaceDCGAN"
    assert (gen.latent_dim, gen.image_shape) == (100, (3, 64, 64))
    num_params = sum(p.numel() for p in gen.parameters())
    match = re.search(r"([\d,]+) parameters, latent dimension\s+(\d+), width (\d+)", card)
    assert match, "card names no parameter count, latent dimension and width"
    assert (int(match[1].replace(",", "")), int(match[2]), int(match[3])) == \
        (num_params, config["latent_dim"], config["width"])
    assert "license: other" in card and "non-commercial research" in card
    with safe_open(str(SHIPPED / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert f.get_slice("main.3.weight").get_dtype() == "F16"
    assert all(p.dtype == torch.float32 for p in gen.parameters())
    assert (SHIPPED / "samples.png").stat().st_size < 100_000
    with torch.no_grad():
        x = gen.decode(gen.sample_latent(2, seed=0))
    assert x.shape == (2, 3, 64, 64) and 0 <= float(x.min()) and float(x.max()) <= 1


@pytest.mark.skipif(importlib.util.find_spec("gan_face_generate") is None,
                    reason="gan-face-generate is not installed (pip install --no-deps gan-face-generate==1.1.1)")
def test_the_shipped_weights_decode_as_the_package_original_within_the_card_difference():
    state = convert_face_dcgan.read_state(convert_face_dcgan.package_weights())
    card = (SHIPPED / "README.md").read_text(encoding="utf-8")
    stated = float(re.search(r"to the original\s+float32 network ([0-9.]+e[-+]\d+)", card)[1])
    z = torch.randn(convert_face_dcgan.CHECK_NUM, 100,
                    generator=torch.Generator().manual_seed(convert_face_dcgan.CHECK_SEED))
    with torch.no_grad():
        diff = (load_generator(SHIPPED).decode(z) - (tutorial_generator(state)(z.view(*z.shape, 1, 1)) + 1) / 2)
    assert f"{float(diff.abs().max()):.2e}" == f"{stated:.2e}"
