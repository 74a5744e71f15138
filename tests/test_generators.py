"""Every generator class in hub_models.REGISTRY, through the contract the method relies on (paper Sec. 4.2: L_J
differentiates G by forward mode, the traversal by reverse mode), and the diffusers layer of hub_models/base.py:
save -> load round trips, subfolders of one Hub repo, strict loading and the shipped folders."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import safetensors.torch
import torch
from diffusers import DDPMScheduler, UNet2DModel

import hub_models
from hub_models import REGISTRY, load_flow_and_generator, load_generator, split_reference
from hub_models.base import GENERATOR_WEIGHTS
from pdetraversal import PotentialFlow
from pdetraversal.hub import CheckpointError

ROOT = Path(__file__).resolve().parent.parent


def _tiny_ddim(tmp_path: Path):
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=4, in_channels=1, out_channels=1, block_out_channels=(4, 8), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=2)
    return hub_models.DDIMGenerator(unet, DDPMScheduler(num_train_timesteps=1000), num_inference_steps=2)


def _tiny_consistency(tmp_path: Path):
    from diffusers import CMStochasticIterativeScheduler

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=4, in_channels=1, out_channels=1, block_out_channels=(4, 8), layers_per_block=1,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                       attention_head_dim=4, norm_num_groups=2)
    return hub_models.ConsistencyGenerator(unet, CMStochasticIterativeScheduler())


# A tiny instance of every registered class (None: built by a function of tmp_path). A class added to the registry
# without an entry here fails test_every_registered_class_is_covered.
TINY = {
    "MLPGenerator": dict(latent_dim=3, hidden_dim=8, image_size=4),
    "DSpritesVAE": dict(latent_dim=3, width=4, hidden_dim=8),
    "MNISTVAE": dict(latent_dim=3, width=4, hidden_dim=8),
    "SwirlVAE": dict(latent_dim=4, width=4, hidden_dim=8, planes=[[0, 1], [2, 3]], strength=1.0),
    "FaceDCGAN": dict(latent_dim=3, channels=3, width=2),
    "FashionVAE": dict(latent_dim=3, width=4, hidden_dim=8),
    "SNGANGenerator": dict(latent_dim=3, channels=1, width=4),
    "DDIMGenerator": _tiny_ddim,
    "ConsistencyGenerator": _tiny_consistency,
}


def tiny(name: str, tmp_path: Path):
    spec = TINY[name]
    torch.manual_seed(0)
    gen = spec(tmp_path) if callable(spec) else REGISTRY[name](**spec)
    return gen.eval().requires_grad_(False)


def test_every_registered_class_is_covered():
    # the package's own classes (other tests register classes of their own, e.g. the README's example)
    assert {name for name, cls in REGISTRY.items() if cls.__module__.startswith("hub_models.")} == set(TINY)


@pytest.mark.parametrize("name", sorted(TINY))
def test_decode_is_differentiable_and_its_jvp_matches_central_differences(name, tmp_path):
    gen = tiny(name, tmp_path).double()
    z = gen.sample_latent(2, seed=1).double()
    x = gen.decode(z)
    assert x.ndim == 4 and x.shape[0] == 2 and 0 <= x.min() and x.max() <= 1
    v = torch.randn(z.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    _, jvp = torch.func.jvp(gen.decode, (z,), (v,))
    scale = jvp.abs().max().item()
    assert scale > 1e-5  # a generator that ignores z would pass the comparison trivially
    # Central differences err by O(h^2) (truncation) plus rounding / h; diffusers' schedulers compute parts in float32
    # even for a float64 model, which makes the rounding term large at small h. The best of two h still fails by O(1)
    # for a wrong derivative.
    error = min((gen.decode(z + h * v) - gen.decode(z - h * v)).div(2 * h).sub(jvp).abs().max().item()
                for h in (1e-3, 1e-4))
    assert error <= 1e-4 * scale, (error, scale)
    # reverse mode (the traversal's ∇_z) agrees with forward mode: <∇_z <w, G(z)>, v> = <w, J v>
    w = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    zg = z.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad((gen.decode(zg) * w).sum(), zg)
    torch.testing.assert_close((grad * v).sum(), (jvp * w).sum(), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name", sorted(TINY))
def test_save_load_round_trip_is_bit_identical(name, tmp_path):
    gen = tiny(name, tmp_path)
    gen.save_pretrained(tmp_path / "saved")
    loaded = load_generator(tmp_path / "saved")
    assert type(loaded) is type(gen) and loaded.latent_dim == gen.latent_dim
    z = gen.sample_latent(3, seed=0)
    with torch.no_grad():
        assert torch.equal(gen.decode(z), loaded.decode(z))
    config_text = "".join(p.read_text() for p in (tmp_path / "saved").rglob("*.json"))
    assert str(tmp_path) not in config_text  # diffusers' _name_or_path (a local path) is not written back


def test_diffusers_layout_and_strictness(tmp_path):
    gen = tiny("MLPGenerator", tmp_path)
    gen.save_pretrained(tmp_path / "g")
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["config.json", GENERATOR_WEIGHTS]
    config = json.loads((tmp_path / "g" / "config.json").read_text())
    assert config["_class_name"] == "MLPGenerator" and config["latent_dim"] == 3
    state = safetensors.torch.load_file(tmp_path / "g" / GENERATOR_WEIGHTS)
    # an extra tensor: diffusers would only warn; here it is an error naming it
    safetensors.torch.save_file({**state, "extra": torch.zeros(1)}, tmp_path / "g" / GENERATOR_WEIGHTS)
    with pytest.raises(CheckpointError, match="unexpected key 'extra'"):
        load_generator(tmp_path / "g")
    # half-precision weights load as float32, with their values
    safetensors.torch.save_file({k: v.half() for k, v in state.items()}, tmp_path / "g" / GENERATOR_WEIGHTS)
    loaded = load_generator(tmp_path / "g")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    assert torch.equal(loaded.net[0].weight, state["net.0.weight"].half().float())
    # a class that is not ours is refused by name, without importing anything
    (tmp_path / "g" / "config.json").write_text(json.dumps({**config, "_class_name": "os.system"}))
    with pytest.raises(CheckpointError, match="_class_name='os.system'; known classes"):
        load_generator(tmp_path / "g")


def test_split_reference():
    assert split_reference("owner/repo") == ("owner/repo", None)
    assert split_reference("owner/repo/gen/v1") == ("owner/repo", "gen/v1")
    assert split_reference("/no/such/folder/here") == ("/no/such/folder/here", None)  # a path, not a repo id
    assert split_reference("hub_models/no-such/model") == ("hub_models/no-such/model", None)
    embedded, sub = split_reference("hub_models/dsprites-vae")
    assert Path(embedded).is_dir() and sub is None


def test_generator_and_potentials_in_subfolders_of_one_hub_repo(hub, tmp_path):
    repo = f"user/both-{uuid.uuid4().hex[:8]}"
    gen = tiny("MLPGenerator", tmp_path)
    gen.save_pretrained(tmp_path / "repo" / "generator")
    torch.manual_seed(0)
    flow = PotentialFlow(3, 2, hidden_dim=4, generator=f"{repo}/generator")
    flow.save_pretrained(tmp_path / "repo" / "potentials")
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo)
    api.upload_folder(repo_id=repo, folder_path=tmp_path / "repo")
    loaded_gen = load_generator(repo, subfolder="generator")
    loaded_flow, pair_gen = load_flow_and_generator(f"{repo}/potentials", max_download_bytes=1e6)
    z = gen.sample_latent(2, seed=0)
    with torch.no_grad():
        assert torch.equal(loaded_gen.decode(z), gen.decode(z)) and torch.equal(pair_gen.decode(z), gen.decode(z))
    assert torch.equal(loaded_flow.traverse(z, k=1), flow.traverse(z, k=1))
    with pytest.raises(CheckpointError, match="nope/config.json not found"):
        load_generator(repo, subfolder="nope")


SHIPPED = sorted(p.parent for p in (ROOT / "hub_models").glob("*/config.json")
                 if "_class_name" in json.loads(p.read_text()))


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda p: p.name)
def test_shipped_generator_loads_and_its_card_names_its_class(folder):
    gen = load_generator(f"hub_models/{folder.name}")
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert type(gen).__name__ in card
    assert sum(p.numel() for p in gen.parameters()) > 0 and (folder / GENERATOR_WEIGHTS).stat().st_size < 10e6


def test_convert_generator_moves_the_first_layout_bit_for_bit(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("convert_generator", ROOT / "train" / "convert_generator.py")
    convert = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(convert)
    gen = tiny("DSpritesVAE", tmp_path)
    old = tmp_path / "old"
    old.mkdir()
    # the first layout: PyTorchModelHubMixin's file name, the class under "generator_class"
    safetensors.torch.save_file(gen.state_dict(), old / "model.safetensors")
    (old / "config.json").write_text(json.dumps({"generator_class": "DSpritesVAE", **TINY["DSpritesVAE"]}))
    with pytest.raises(CheckpointError, match="convert it with: python train/convert_generator.py"):
        load_generator(old)
    convert.main([str(old)])
    assert "DSpritesVAE, 24 tensors" in capsys.readouterr().out
    assert sorted(p.name for p in old.iterdir()) == ["config.json", GENERATOR_WEIGHTS]
    converted = load_generator(old)
    for key, value in gen.state_dict().items():
        assert torch.equal(converted.state_dict()[key], value), key
    with pytest.raises(SystemExit, match="has no config.json and model.safetensors to convert"):
        convert.main([str(old)])


def test_fit_trains_on_a_generator_subfolder_and_publishes_beside_it(hub, tmp_path):
    import importlib.util

    from huggingface_hub import HfApi

    spec = importlib.util.spec_from_file_location("fit", ROOT / "train" / "fit.py")
    fit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fit)
    repo = f"user/pair-{uuid.uuid4().hex[:8]}"
    gen = tiny("MLPGenerator", tmp_path)
    gen.save_pretrained(tmp_path / "g")
    api = HfApi()
    api.create_repo(repo)
    api.upload_folder(repo_id=repo, folder_path=tmp_path / "g", path_in_repo="generator")
    assert fit.main(["--generator", f"{repo}/generator", "--num-potentials", "2", "--num-timesteps", "3",
                     "--batch-size", "4", "--max-steps", "2", "--output-dir", str(tmp_path / "pots"), "--no-progress",
                     "--push-to-hub", "--hub-model-id", f"{repo}/potentials"]) == 0
    assert set(api.list_repo_files(repo)) >= {"generator/config.json", f"generator/{GENERATOR_WEIGHTS}",
                                              "potentials/config.json", "potentials/model.safetensors"}
    flow, loaded = load_flow_and_generator(f"{repo}/potentials")
    assert flow.config["generator"] == f"{repo}/generator" and len(flow.config["generator_revision"]) == 40
    z = gen.sample_latent(2, seed=0)
    with torch.no_grad():
        assert torch.equal(loaded.decode(z), gen.decode(z))
