"""hub_models/consistency.py: a diffusers consistency-model pipeline (tiny random UNet2DModel + CM scheduler)."""
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")
from diffusers import CMStochasticIterativeScheduler, ConsistencyModelPipeline, UNet2DModel  # noqa: E402

from hub_models import load_flow_and_generator, load_generator  # noqa: E402
from hub_models.consistency import ConsistencyGenerator  # noqa: E402
from pdetraversal import PotentialFlow  # noqa: E402
from pdetraversal.hub import CheckpointError  # noqa: E402
from pdetraversal.losses import jacobian_vector_product  # noqa: E402
from test_ddim import BAD_UNET_CHECKPOINTS, _rewrite_weights, fit_one_step_and_load  # noqa: E402

WEIGHTS = "unet/diffusion_pytorch_model.safetensors"
D = 3 * 8 * 8


def tiny_unet(num_class_embeds=None) -> UNet2DModel:
    """The block types and time conditioning of openai's ImageNet-64 network, at 8x8 with a few channels."""
    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("ResnetDownsampleBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "ResnetUpsampleBlock2D"), attention_head_dim=8,
                       norm_num_groups=4, attn_norm_num_groups=4, resnet_time_scale_shift="scale_shift",
                       upsample_type="resnet", downsample_type="resnet", num_class_embeds=num_class_embeds)


def save_pipeline(path: Path, num_class_embeds=None, **scheduler_config) -> Path:
    """The layout ConsistencyModelPipeline.save_pretrained writes (as in openai/diffusers-cd_imagenet64_l2)."""
    tiny_unet(num_class_embeds).save_pretrained(path / "unet", safe_serialization=True)
    CMStochasticIterativeScheduler(num_train_timesteps=40, **scheduler_config).save_pretrained(path / "scheduler")
    index = {"_class_name": "ConsistencyModelPipeline", "unet": ["diffusers", "UNet2DModel"],
             "scheduler": ["diffusers", "CMStochasticIterativeScheduler"]}
    (path / "model_index.json").write_text(json.dumps(index))
    return path


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    torch.set_num_threads(1)
    return save_pipeline(tmp_path_factory.mktemp("cm"))


@pytest.fixture(scope="module")
def conditional_dir(tmp_path_factory):
    return save_pipeline(tmp_path_factory.mktemp("cm_cond"), num_class_embeds=10)


@pytest.fixture(scope="module")
def gen(pipeline_dir):
    return ConsistencyGenerator.from_pretrained(pipeline_dir)


def test_loads_as_a_frozen_one_step_generator_with_images_in_unit_range(gen):
    assert gen.latent_dim == D and gen.image_shape == (3, 8, 8) and gen.class_label is None
    assert isinstance(gen.scheduler, CMStochasticIterativeScheduler) and gen.latent_weight() is None
    assert not any(p.requires_grad for p in gen.parameters())
    # sigma_max = 80, sigma_min = 0.002, sigma_data = 0.5 (the released models' values, the scheduler's defaults).
    assert gen.sigma_max == 80.0 and gen.timestep == pytest.approx(250 * math.log(80.0), rel=1e-12)
    assert gen.c_skip == pytest.approx(0.25 / (79.998 ** 2 + 0.25), rel=1e-12)
    assert gen.c_out == pytest.approx(79.998 * 0.5 / math.sqrt(6400.25), rel=1e-12)
    z = gen.sample_latent(3, seed=0)
    x = gen.decode(z)
    assert x.shape == (3, 3, 8, 8) and float(x.min()) >= 0 and float(x.max()) <= 1
    assert float(((x > 0) & (x < 1)).float().mean()) > 0.5  # not all clamped: the derivative tests mean something
    assert torch.equal(gen.decode(z), x)  # one step, no noise: deterministic
    assert not torch.allclose(gen.decode(gen.sample_latent(3, seed=1)), x, atol=1e-3)
    with pytest.raises(ValueError, match=r"expects latents of shape \(n, 192\)"):
        gen.decode(torch.zeros(2, 191))


@pytest.mark.parametrize("sigma_max", [80.0, 1.0])
def test_decode_is_the_consistency_function_written_out_in_float64(tmp_path, sigma_max):
    """f(x, s) = c_skip x + c_out F(c_in x, 250 log s) at s = sigma_max, x = sigma_max z (Song et al. 2023, app. C).

    Measured with this UNet: at sigma_max = 80 a wrong t (log s), c_in (1) or latent scale (z itself) is 0.04-0.3
    off; at sigma_max = 1, where c_skip is 0.2 rather than 4e-5, c_skip or c_out without sigma_min is 4e-4-9e-4 off."""
    gen = ConsistencyGenerator.from_pretrained(save_pipeline(tmp_path / "p", sigma_max=sigma_max))
    s, s_min, s_data = sigma_max, 0.002, 0.5
    c_skip = s_data ** 2 / ((s - s_min) ** 2 + s_data ** 2)
    c_out = (s - s_min) * s_data / math.sqrt(s ** 2 + s_data ** 2)
    c_in = 1 / math.sqrt(s ** 2 + s_data ** 2)
    unet64 = tiny_unet().double()
    z = gen.sample_latent(2, seed=3).double()
    x = s * z.view(-1, 3, 8, 8)
    with torch.no_grad():
        out = unet64(c_in * x, torch.tensor(250 * math.log(s), dtype=torch.float64)).sample
        expected = ((c_skip * x + c_out * out).clamp(-1, 1) + 1) / 2
        diff = (gen.decode(z.float()).double() - expected).abs()
    # float32 against float64: measured 1.4e-7 (sigma_max 80) and 1.8e-7 (sigma_max 1).
    assert float(diff.max()) < 1e-6
    assert float(((expected > 0) & (expected < 1)).double().mean()) > 0.5


def test_decode_equals_diffusers_one_step_sampling(gen, conditional_dir):
    """The scheduler's own one-step loop (scale_model_input, UNet, step) and ConsistencyModelPipeline, from the same
    x_T = sigma_max z. step() adds no noise at the last (here the only) step: its noise is scaled by
    sqrt(sigma_min^2 - sigma_min^2) = 0, so the seeded torch.Generator it is given changes nothing."""
    cond = ConsistencyGenerator.from_pretrained(conditional_dir, class_label=7)
    for g, labels in ((gen, None), (cond, torch.full((3,), 7))):
        z = g.sample_latent(3, seed=5)
        scheduler = CMStochasticIterativeScheduler.from_config(g.scheduler.config)
        scheduler.set_timesteps(1)
        (t,) = scheduler.timesteps
        x = z.view(-1, 3, 8, 8) * scheduler.init_noise_sigma
        with torch.no_grad():
            out = g.unet(scheduler.scale_model_input(x, t), t, class_labels=labels).sample
            step = scheduler.step(out, t, x, generator=torch.Generator().manual_seed(0)).prev_sample
            ours = g.decode(z)
            pipe = ConsistencyModelPipeline(unet=g.unet, scheduler=CMStochasticIterativeScheduler.from_config(
                g.scheduler.config))
            pipe.set_progress_bar_config(disable=True)
            piped = pipe(batch_size=3, class_labels=labels, num_inference_steps=1, latents=z.view(-1, 3, 8, 8),
                         generator=torch.Generator().manual_seed(1), output_type="pt").images
        assert torch.allclose(ours, (step.clamp(-1, 1) + 1) / 2, atol=1e-6, rtol=0)
        assert torch.allclose(ours, piped, atol=1e-6, rtol=0)


def test_class_conditional_needs_a_valid_label(conditional_dir, tmp_path):
    default = ConsistencyGenerator.from_pretrained(conditional_dir)
    assert default.class_label == 0
    seven = ConsistencyGenerator.from_pretrained(conditional_dir, class_label=7)
    z = default.sample_latent(2, seed=0)
    with torch.no_grad():
        assert not torch.allclose(default.decode(z), seven.decode(z), atol=1e-4)  # the label reaches the UNet
        x = z.view(-1, 3, 8, 8) * seven.sigma_max
        out = seven.unet(x * seven.c_in, torch.tensor(seven.timestep), class_labels=torch.full((2,), 7)).sample
        assert torch.allclose(seven.decode(z), ((seven.c_skip * x + seven.c_out * out).clamp(-1, 1) + 1) / 2,
                              atol=1e-6)
    for bad in (10, -1, True, 2.0, "3"):
        with pytest.raises(CheckpointError, match=r"class_label must be an integer in \[0, 10\), got"):
            ConsistencyGenerator.from_pretrained(conditional_dir, class_label=bad)
    with pytest.raises(CheckpointError, match=r"class-conditional; class_label must be .* got None"):
        ConsistencyGenerator(default.unet, default.scheduler)  # constructed by hand: no silent default
    with pytest.raises(CheckpointError, match="class_label=3 given, but the UNet is unconditional"):
        ConsistencyGenerator.from_pretrained(save_pipeline(tmp_path / "u"), class_label=3)
    # The label in pdetraversal.json, and a bad one there refused before the weights are read.
    own = tmp_path / "own"
    shutil.copytree(conditional_dir, own)
    (own / "pdetraversal.json").write_text('{"class_label": 4}')
    assert ConsistencyGenerator.from_pretrained(own).class_label == 4
    assert ConsistencyGenerator.from_pretrained(own, class_label=2).class_label == 2
    (own / "pdetraversal.json").write_text('{"class_label": 12}')
    (own / WEIGHTS).unlink()
    with pytest.raises(CheckpointError, match=r"class_label must be an integer in \[0, 10\), got 12"):
        ConsistencyGenerator.from_pretrained(own)


def test_jvp_and_gradient_match_central_differences(pipeline_dir):
    from diffusers.models.attention_processor import Attention

    gen = ConsistencyGenerator.from_pretrained(pipeline_dir).double()  # float64: accurate central differences
    for module in gen.modules():
        if isinstance(module, Attention):  # its softmax would run in float32 (meant for float16 models)
            module.upcast_softmax = module.upcast_attention = False
    # Forward mode, as L_J uses it (fit.py), through the attention blocks; a batch of 2 shows stride bugs.
    z = gen.sample_latent(2, seed=4).double()
    v = torch.randn(2, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    _, jv = jacobian_vector_product(gen.decode, z, v)
    with torch.no_grad():
        fd = (gen.decode(z + 1e-6 * v) - gen.decode(z - 1e-6 * v)) / 2e-6
    assert float(jv.abs().max()) > 1e-3 and torch.allclose(jv, fd, atol=1e-6, rtol=1e-5)
    # Reverse mode, one coordinate against a central difference.
    z1 = z[:1].clone().requires_grad_(True)
    w = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (gen.decode(z1) * w).sum().backward()
    i = int(z1.grad.abs().argmax())
    e = torch.zeros_like(z1).index_fill_(1, torch.tensor([i]), 1e-6)
    with torch.no_grad():
        fd_i = float(((gen.decode(z1 + e) - gen.decode(z1 - e)) * w).sum()) / 2e-6
    assert abs(float(z1.grad[0, i])) > 1e-3 and abs(fd_i - float(z1.grad[0, i])) <= 1e-5 * max(1.0, abs(fd_i))


def test_save_pretrained_round_trip_is_bit_identical(conditional_dir, tmp_path):
    gen = ConsistencyGenerator.from_pretrained(conditional_dir, class_label=3)
    gen.save_pretrained(tmp_path / "repo" / "g")  # in a subfolder, as one repo may hold it beside its potentials
    saved = tmp_path / "repo" / "g"
    assert json.loads((saved / "pdetraversal.json").read_text()) == {"class_label": 3}
    index = json.loads((saved / "model_index.json").read_text())
    assert index["scheduler"] == ["diffusers", "CMStochasticIterativeScheduler"]
    loaded = ConsistencyGenerator.from_pretrained(tmp_path / "repo", subfolder="g")
    assert loaded.class_label == 3 and loaded.scheduler.config.sigma_max == 80.0
    for (k, a), (k2, b) in zip(gen.unet.state_dict().items(), loaded.unet.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    z = gen.sample_latent(4, seed=0)
    assert torch.equal(loaded.decode(z), gen.decode(z))


def test_loads_from_the_hub_by_repo_id_and_revision(hub, conditional_dir):
    import uuid

    from huggingface_hub import HfApi

    repo_id = f"user/cm-{uuid.uuid4().hex[:8]}"
    api = HfApi()
    api.create_repo(repo_id)
    sha = api.upload_folder(repo_id=repo_id, folder_path=conditional_dir).oid
    gen = ConsistencyGenerator.from_pretrained(repo_id, revision=sha, class_label=5)
    local = ConsistencyGenerator.from_pretrained(conditional_dir, class_label=5)
    z = gen.sample_latent(2, seed=0)
    assert gen.class_label == 5 and torch.equal(gen.decode(z), local.decode(z))


@pytest.mark.parametrize("change, message", BAD_UNET_CHECKPOINTS)
def test_a_bad_unet_checkpoint_is_an_error_naming_the_tensor(pipeline_dir, tmp_path, change, message):
    bad = tmp_path / "bad"
    shutil.copytree(pipeline_dir, bad)
    _rewrite_weights(bad, change)
    with pytest.raises(CheckpointError, match=message):
        ConsistencyGenerator.from_pretrained(bad)


def test_foreign_classes_pickles_and_bad_schedules_are_refused(pipeline_dir, tmp_path):
    def copy_with_index(name: str, **entries) -> Path:
        folder = tmp_path / name
        shutil.copytree(pipeline_dir, folder)
        index = {"unet": ["diffusers", "UNet2DModel"], "scheduler": ["diffusers", "CMStochasticIterativeScheduler"]}
        (folder / "model_index.json").write_text(json.dumps({**index, **entries}))
        return folder

    with pytest.raises(CheckpointError, match=r"names scheduler=\['diffusers', 'DDPMScheduler'\]; ConsistencyGenerator "
                                              r"reads the configs of \['CMStochasticIterativeScheduler'\]"):
        ConsistencyGenerator.from_pretrained(copy_with_index("ddpm", scheduler=["diffusers", "DDPMScheduler"]))
    with pytest.raises(CheckpointError, match=r"names unet=\['my_repo_code', 'MyUNet'\]"):
        ConsistencyGenerator.from_pretrained(copy_with_index("odd", unet=["my_repo_code", "MyUNet"]))
    pickle = copy_with_index("bin")
    (pickle / WEIGHTS).rename(pickle / "unet" / "diffusion_pytorch_model.bin")  # a pickle's name: never read
    with pytest.raises(CheckpointError, match="unet/diffusion_pytorch_model.safetensors not found"):
        ConsistencyGenerator.from_pretrained(pickle)
    sigmas = copy_with_index("sigmas")
    config = json.loads((sigmas / "scheduler" / "scheduler_config.json").read_text())
    (sigmas / "scheduler" / "scheduler_config.json").write_text(json.dumps({**config, "sigma_max": 0.001}))
    with pytest.raises(CheckpointError, match="needs finite 0 < sigma_min < sigma_max"):
        ConsistencyGenerator.from_pretrained(sigmas)


def test_load_generator_picks_it_by_its_scheduler(pipeline_dir, conditional_dir, tmp_path):
    """Through hub_models.load_generator (PIPELINE_GENERATORS), and potentials on it load, traverse and fit."""
    gen = load_generator(pipeline_dir)
    assert isinstance(gen, ConsistencyGenerator) and not any(p.requires_grad for p in gen.parameters())
    z = gen.sample_latent(2, seed=0)
    assert torch.equal(gen.decode(z), ConsistencyGenerator.from_pretrained(pipeline_dir).decode(z))
    assert load_generator(conditional_dir).class_label == 0

    torch.manual_seed(0)
    PotentialFlow(latent_dim=D, num_potentials=2, num_timesteps=3, generator=str(pipeline_dir)).save_pretrained(
        tmp_path / "pots")
    flow, gen2 = load_flow_and_generator(tmp_path / "pots")
    assert isinstance(gen2, ConsistencyGenerator)
    path = flow.traverse(gen2.sample_latent(2, seed=0), k=1)
    with torch.no_grad():
        frames = gen2.decode(path.reshape(-1, D))
    assert path.shape == (4, 2, D) and frames.shape == (8, 3, 8, 8) and torch.isfinite(frames).all()
    fitted, gen3 = fit_one_step_and_load(pipeline_dir, tmp_path / "fitted")
    assert fitted.latent_dim == D and isinstance(gen3, ConsistencyGenerator)

