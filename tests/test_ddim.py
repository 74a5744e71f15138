"""hub_models/ddim.py: a diffusers pipeline (tiny random UNet2DModel + DDPM scheduler config) as a DDIM generator."""
import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import safetensors.torch
import torch

pytest.importorskip("diffusers")
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel  # noqa: E402

from hub_models import DDIMGenerator, load_flow_and_generator, load_generator  # noqa: E402
from pdetraversal import PotentialFlow  # noqa: E402
from pdetraversal.hub import CheckpointError  # noqa: E402
from pdetraversal.losses import jacobian_vector_product  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = "unet/diffusion_pytorch_model.safetensors"


def tiny_unet() -> UNet2DModel:
    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4)


def save_pipeline(path: Path) -> Path:
    """The layout DDPMPipeline.save_pretrained writes (as in google/ddpm-cifar10-32)."""
    tiny_unet().save_pretrained(path / "unet", safe_serialization=True)
    DDPMScheduler(num_train_timesteps=1000).save_pretrained(path / "scheduler")  # clip_sample=True, as cifar10's
    index = {"_class_name": "DDPMPipeline", "unet": ["diffusers", "UNet2DModel"], "scheduler": ["diffusers", "DDPMScheduler"]}
    (path / "model_index.json").write_text(json.dumps(index))
    return path


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    return save_pipeline(tmp_path_factory.mktemp("ddpm"))


@pytest.fixture(scope="module")
def gen(pipeline_dir):
    torch.set_num_threads(1)
    return load_generator(pipeline_dir)


def test_loads_as_a_frozen_generator_with_images_in_unit_range(gen):
    assert isinstance(gen, DDIMGenerator) and gen.latent_dim == 3 * 8 * 8 and gen.num_inference_steps == 10
    assert isinstance(gen.scheduler, DDIMScheduler) and gen.latent_weight() is None
    assert not any(p.requires_grad for p in gen.parameters())
    assert gen.scheduler.timesteps.tolist() == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    z = gen.sample_latent(3, seed=0)
    assert torch.equal(z, gen.sample_latent(3, seed=0)) and z.shape == (3, 192)
    x = gen.decode(z)
    assert x.shape == (3, 3, 8, 8) and float(x.min()) >= 0 and float(x.max()) <= 1
    assert float(((x > 0) & (x < 1)).float().mean()) > 0.5  # not all clamped: the gradient test below means something
    assert torch.equal(gen.decode(z), x)  # eta = 0: deterministic
    assert not torch.allclose(gen.decode(gen.sample_latent(3, seed=1)), x, atol=1e-2)
    with pytest.raises(ValueError, match=r"expects latents of shape \(n, 192\)"):
        gen.decode(torch.zeros(2, 191))


def test_decode_is_the_ddim_eta0_update_written_out(gen):
    """DDIM eq. 12 with eta = 0, from alphas_cumprod, with the x0 clip of the DDPM config; equals gen.decode."""
    a = gen.scheduler.alphas_cumprod.double()
    assert gen.scheduler.config.clip_sample and gen.scheduler.config.prediction_type == "epsilon"
    z = gen.sample_latent(2, seed=3)
    x = z.view(-1, 3, 8, 8)
    step = 1000 // gen.num_inference_steps
    with torch.no_grad():
        for t in range(900, -1, -step):
            eps = gen.unet(x, t).sample.double()
            a_t, a_prev = a[t], (a[t - step] if t - step >= 0 else torch.tensor(1.0, dtype=torch.float64))
            x0 = ((x.double() - (1 - a_t).sqrt() * eps) / a_t.sqrt()).clamp(-1, 1)
            x = (a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps).float()
        diff = (gen.decode(z) - (x.clamp(-1, 1) + 1) / 2).abs()
        # float32 sampler against a float64 formula: measured 1.5e-5 at most; a wrong alpha would be ~1e-1 off.
        assert float(diff.max()) < 1e-4


def test_gradient_in_z_matches_a_finite_difference(pipeline_dir):
    from diffusers.models.attention_processor import Attention

    gen = load_generator(pipeline_dir).double()  # float64 so that a central difference is accurate
    for module in gen.modules():
        if isinstance(module, Attention):  # its softmax would run in float32 (meant for float16 models)
            module.upcast_softmax = module.upcast_attention = False
    z = gen.sample_latent(1, seed=0).double().requires_grad_(True)
    w = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (gen.decode(z) * w).sum().backward()
    grad = z.grad[0]
    assert float(grad.abs().max()) > 1e-3 and int((grad != 0).sum()) > 96
    for i in (int(grad.abs().argmax()), 5):
        h = 1e-6  # the clamps make G piecewise smooth: at 1e-3 a kink is already crossed
        zp, zm = z.detach().clone(), z.detach().clone()
        zp[0, i] += h
        zm[0, i] -= h
        with torch.no_grad():
            fd = float(((gen.decode(zp) - gen.decode(zm)) * w).sum()) / (2 * h)
        assert abs(fd - float(grad[i])) <= 1e-5 * max(1.0, abs(fd)), (i, fd, float(grad[i]))

    # Forward mode too, as L_J uses it (fit.py): J_G(z)·v against a central difference along v.
    # A batch of 2: with 1 a stride bug in forward mode (fixed in hub_models/ddim.py) does not show.
    z2 = gen.sample_latent(2, seed=4).double()
    v = torch.randn(2, 192, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    _, jv = jacobian_vector_product(gen.decode, z2, v)
    with torch.no_grad():
        fd = (gen.decode(z2 + 1e-6 * v) - gen.decode(z2 - 1e-6 * v)) / 2e-6
    assert float(jv.abs().max()) > 1e-3 and torch.allclose(jv, fd, atol=1e-6, rtol=1e-5)


def test_save_pretrained_round_trip_keeps_the_step_count(gen, tmp_path):
    few = DDIMGenerator(gen.unet, gen.scheduler, num_inference_steps=4)
    few.save_pretrained(tmp_path / "g")
    assert json.loads((tmp_path / "g" / "pdetraversal.json").read_text()) == {"num_inference_steps": 4}
    loaded = load_generator(tmp_path / "g")
    assert loaded.num_inference_steps == 4 and len(loaded.scheduler.timesteps) == 4
    z = gen.sample_latent(2, seed=0)
    assert torch.equal(loaded.decode(z), few.decode(z))
    (tmp_path / "g" / "pdetraversal.json").write_text('{"num_inference_steps": 0}')
    with pytest.raises(CheckpointError, match="num_inference_steps must be a positive integer, got 0"):
        load_generator(tmp_path / "g")


def _rewrite_weights(folder: Path, change) -> None:
    state = safetensors.torch.load_file(str(folder / WEIGHTS))
    change(state)
    safetensors.torch.save_file(state, str(folder / WEIGHTS))


# A UNet checkpoint changed in place, and the error that names what is wrong (tests/test_consistency.py too: both
# pipelines load their UNet through hub_models/unet_pipeline.py).
BAD_UNET_CHECKPOINTS = [
    (lambda s: s.pop("conv_in.weight"), "missing key 'conv_in.weight'"),
    (lambda s: s.update({"conv_in.weight": torch.zeros(8, 3, 5, 5)}),
     r"key 'conv_in.weight' has shape \(8, 3, 5, 5\), the model expects \(8, 3, 3, 3\)"),
    (lambda s: s.update({"extra.bias": torch.zeros(3)}), "unexpected key 'extra.bias'"),
    (lambda s: s["conv_out.bias"].fill_(float("nan")), "non-finite values .* 'conv_out.bias'"),
]


@pytest.mark.parametrize("change, message", BAD_UNET_CHECKPOINTS)
def test_a_bad_unet_checkpoint_is_an_error_naming_the_tensor(pipeline_dir, tmp_path, change, message):
    bad = tmp_path / "bad"
    shutil.copytree(pipeline_dir, bad)
    _rewrite_weights(bad, change)
    with pytest.raises(CheckpointError, match=message):
        load_generator(bad)


def test_pickles_and_foreign_classes_are_refused(pipeline_dir, tmp_path):
    bad = tmp_path / "bin"
    shutil.copytree(pipeline_dir, bad)
    (bad / WEIGHTS).rename(bad / "unet" / "diffusion_pytorch_model.bin")  # a pickle's name: never read
    with pytest.raises(CheckpointError, match="unet/diffusion_pytorch_model.safetensors not found"):
        load_generator(bad)
    odd = tmp_path / "odd"
    shutil.copytree(pipeline_dir, odd)
    (odd / "model_index.json").write_text(json.dumps({"unet": ["my_repo_code", "MyUNet"],
                                                      "scheduler": ["diffusers", "DDPMScheduler"]}))
    with pytest.raises(CheckpointError, match=r"names unet=\['my_repo_code', 'MyUNet'\]"):
        load_generator(odd)
    with pytest.raises(CheckpointError, match="config.json not found"):  # neither layout: our own error, unchanged
        load_generator(tmp_path)


def test_loads_from_the_hub_by_repo_id(hub, pipeline_dir):
    import uuid

    from huggingface_hub import HfApi

    repo_id = f"user/ddpm-{uuid.uuid4().hex[:8]}"
    api = HfApi()
    api.create_repo(repo_id)
    sha = api.upload_folder(repo_id=repo_id, folder_path=pipeline_dir).oid
    gen = load_generator(repo_id, revision=sha)
    z = gen.sample_latent(2, seed=0)
    assert isinstance(gen, DDIMGenerator) and torch.equal(gen.decode(z), load_generator(pipeline_dir).decode(z))


def test_the_download_cap_counts_the_unet_weights(hub, pipeline_dir, tmp_path):
    import uuid

    from huggingface_hub import HfApi

    from hub_models import load_flow_and_generator
    from pdetraversal import PotentialFlow
    from pdetraversal.hub import CheckpointError

    api = HfApi()
    gen_repo, pots_repo = (f"user/{name}-{uuid.uuid4().hex[:8]}" for name in ("ddpm-cap", "ddpm-cap-pots"))
    api.create_repo(gen_repo)
    api.upload_folder(repo_id=gen_repo, folder_path=pipeline_dir)
    PotentialFlow(3 * 8 * 8, 2, hidden_dim=8, generator=gen_repo).save_pretrained(tmp_path / "pots")
    api.create_repo(pots_repo)
    api.upload_folder(repo_id=pots_repo, folder_path=tmp_path / "pots")
    unet_bytes = (pipeline_dir / "unet" / "diffusion_pytorch_model.safetensors").stat().st_size
    pots_bytes = sum((tmp_path / "pots" / f).stat().st_size for f in ("config.json", "model.safetensors"))
    # Room for the potentials but not for the UNet: the generator's pipeline files are measured, not skipped.
    with pytest.raises(CheckpointError, match="over the download limit"):
        load_flow_and_generator(pots_repo, max_download_bytes=pots_bytes + unet_bytes / 2)
    flow, gen = load_flow_and_generator(pots_repo, max_download_bytes=10 * (pots_bytes + unet_bytes))
    assert isinstance(gen, DDIMGenerator) and flow.latent_dim == gen.latent_dim


def fit_one_step_and_load(pipeline_dir: Path, out: Path):
    """One step of train/fit.py on the pipeline (Hutchinson's Laplacian), then (flow, generator) loaded from `out`."""
    spec = importlib.util.spec_from_file_location("fit", ROOT / "train" / "fit.py")
    fit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fit)
    assert fit.main(["--generator", str(pipeline_dir), "--laplacian", "hutchinson", "--max-steps", "1",
                     "--batch-size", "2", "--num-potentials", "2", "--num-timesteps", "3",
                     "--output-dir", str(out), "--no-progress"]) == 0
    return load_flow_and_generator(out)


def test_potentials_on_it_load_traverse_and_fit(pipeline_dir, tmp_path):
    torch.manual_seed(0)
    PotentialFlow(latent_dim=192, num_potentials=2, num_timesteps=3, generator=str(pipeline_dir)).save_pretrained(
        tmp_path / "pots")
    flow, gen = load_flow_and_generator(tmp_path / "pots")
    assert isinstance(gen, DDIMGenerator)
    path = flow.traverse(gen.sample_latent(2, seed=0), k=1)
    assert path.shape == (4, 2, 192)
    with torch.no_grad():
        frames = gen.decode(path.reshape(-1, 192))
    assert frames.shape == (8, 3, 8, 8) and torch.isfinite(frames).all()

    fitted, gen2 = fit_one_step_and_load(pipeline_dir, tmp_path / "fitted")
    assert fitted.latent_dim == 192 and fitted.config["generator"] == str(pipeline_dir)
    assert isinstance(gen2, DDIMGenerator)
