"""The swirled dSprites generator (hub_models.swirl.SwirlVAE) and its shipped folder hub_models/dsprites-swirl."""
import math
from pathlib import Path

import pytest
import torch

import hub_models.swirl  # noqa: F401  -- registers SwirlVAE in REGISTRY until hub_models/__init__.py imports it
from hub_models import DSpritesVAE, load_generator
from hub_models.swirl import SwirlVAE
from pdetraversal.data import dsprites
from pdetraversal.losses import jacobian_vector_product
from pdetraversal.metrics.curves import curve_shape

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "hub_models" / "dsprites-swirl"


def small(strength=1.0, seed=0, **kw):
    torch.manual_seed(seed)
    return SwirlVAE(latent_dim=5, width=8, hidden_dim=32, strength=strength, **kw).eval()


def test_warp_unwarp_round_trip_keeps_each_plane_radius_and_turns_by_alpha_r():
    gen = small(strength=1.3)
    z = 2 * torch.randn(200, 5, generator=torch.Generator().manual_seed(0))
    w = gen.warp(z)
    assert torch.allclose(gen.unwarp(w), z, atol=1e-5) and torch.allclose(gen.warp(gen.unwarp(z)), z, atol=1e-5)
    assert torch.equal(w[:, 0], z[:, 0])  # the shape coordinate is in no plane
    for i, j in ([3, 4], [1, 2]):
        r = torch.hypot(z[:, i], z[:, j])
        assert torch.allclose(torch.hypot(w[:, i], w[:, j]), r, atol=1e-5)
        turned = torch.atan2(w[:, j], w[:, i]) - torch.atan2(z[:, j], z[:, i])
        wrapped = torch.remainder(turned - 1.3 * r + math.pi, 2 * math.pi) - math.pi
        assert wrapped.abs().max() < 1e-4


def test_warp_preserves_volume_so_the_prior_is_kept():
    # (r, θ) -> (r, θ + α r) has Jacobian determinant 1 in every plane, so N(0, I) maps to N(0, I).
    gen = small(strength=1.0).double()
    for z in 1.5 * torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1)):
        jac = torch.autograd.functional.jacobian(lambda v: gen.warp(v[None])[0], z)
        assert abs(torch.linalg.det(jac).item() - 1.0) < 1e-10
        assert not torch.allclose(jac, torch.eye(5, dtype=torch.float64), atol=0.1)  # and it is not the identity


def test_decode_is_the_inner_decoder_at_the_warped_code():
    gen = small()
    z = gen.sample_latent(6, seed=2)
    assert torch.equal(gen.decode(z), gen.inner.decode(gen.warp(z)))
    assert not torch.allclose(gen.decode(z), gen.inner.decode(z), atol=1e-4)


def test_jvp_through_decode_matches_central_differences():
    # The forward-mode pass L_J uses (eq. 5-6). Its first call in a process pays a one-off set-up of a few seconds.
    gen = small(strength=1.0).double()
    z = gen.sample_latent(3, seed=3).double()
    v = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    _, jvp = jacobian_vector_product(gen.decode, z, v)
    h = 1e-5
    fd = (gen.decode(z + h * v) - gen.decode(z - h * v)) / (2 * h)
    assert jvp.abs().max() > 1e-3
    assert (jvp - fd).abs().max() < 1e-6 * max(1.0, jvp.abs().max().item())
    # finite gradient at a plane's origin, where the radius has a kink
    z0 = torch.zeros(1, 5, dtype=torch.float64, requires_grad=True)
    gen.decode(z0).sum().backward()
    assert torch.isfinite(z0.grad).all()


def test_encode_and_data_latent_are_unwarped_inner_means():
    gen = small()
    x, _ = dsprites.sample(4, seed=5)
    mu, logvar = gen.encode(x)
    inner_mu, inner_logvar = gen.inner.encode(x)
    assert torch.allclose(mu, gen.unwarp(inner_mu)) and torch.equal(logvar, inner_logvar)
    assert torch.allclose(gen.data_latent(4, seed=5), mu)
    assert gen.latent_weight() is None


def test_true_path_is_the_unwarped_straight_line():
    gen = small(strength=0.8)
    z0 = gen.sample_latent(7, seed=6)
    path = gen.true_factor_path(z0, 3, num_steps=5, step=0.2, direction=-1)
    assert path.shape == (6, 7, 5) and torch.allclose(path[0], z0, atol=1e-6)
    w = gen.warp(path.flatten(0, 1)).reshape(6, 7, 5)
    expected = gen.warp(z0)[None] + torch.tensor([0.0, 0, 0, -0.2, 0])[None, None] * torch.arange(6.0)[:, None, None]
    assert torch.allclose(w, expected, atol=1e-5)


def test_true_x_path_from_the_plane_origin_is_an_archimedean_spiral():
    # From w = 0, moving x by s gives z(s) = (s cos αs, −s sin αs) in the (z_3, z_4) plane: chord L, arc
    # ∫_0^L sqrt(1 + α² s²) ds = (L sqrt(1 + α²L²) + asinh(αL) / α) / 2.
    alpha, step, n = 1.0, 0.139, 10
    gen = small(strength=alpha).double()
    path = gen.true_factor_path(torch.zeros(1, 5, dtype=torch.float64), 3, n * 100, step / 100)[:, 0]
    s = torch.arange(n * 100 + 1, dtype=torch.float64) * step / 100
    assert torch.allclose(path[:, 3], s * torch.cos(alpha * s), atol=1e-9)
    assert torch.allclose(path[:, 4], -s * torch.sin(alpha * s), atol=1e-9)
    length = n * step
    arc = 0.5 * (length * math.sqrt(1 + (alpha * length) ** 2) + math.asinh(alpha * length) / alpha)
    shape = curve_shape(path[:, None])
    assert abs(shape["chord_arc"].item() - length / arc) < 1e-5
    assert shape["chord_arc"].item() < 0.80  # = 0.793: a tenth-step chord is 20% shorter than the path
    assert shape["max_turn_deg"].item() > 45 + math.degrees(alpha * length)  # the tangent turns by αL + atan(αL)


def test_true_paths_of_the_shipped_swirl_are_curved_and_shape_stays_straight():
    gen = load_generator(SHIPPED)
    z0 = gen.data_latent(64, seed=0)
    for f in range(5):
        path = torch.cat([gen.true_factor_path(z0, f, 10, 0.139, -1).flip(0), gen.true_factor_path(z0, f, 10, 0.139)[1:]])
        shape = curve_shape(path)
        if f == 0:
            assert shape["chord_arc"].min() > 1 - 1e-5
        else:
            assert shape["chord_arc"].mean() < 0.8 and shape["max_turn_deg"].median() > 90


def test_save_load_round_trip_through_load_generator(tmp_path):
    gen = small(strength=0.7, planes=[[0, 2]], seed=8)
    gen.save_pretrained(tmp_path)
    back = load_generator(tmp_path)
    assert isinstance(back, SwirlVAE) and back.planes == [[0, 2]] and back.strength == 0.7
    assert all(k.startswith("inner.") for k in back.state_dict())
    z = gen.sample_latent(3, seed=9)
    assert torch.equal(back.decode(z), gen.decode(z))


def test_shipped_folder_is_the_shipped_vae_behind_the_swirl():
    gen = load_generator(SHIPPED)
    vae = load_generator(ROOT / "hub_models" / "dsprites-vae")
    assert isinstance(gen, SwirlVAE) and isinstance(vae, DSpritesVAE)
    assert gen.planes == [[3, 4], [1, 2]] and gen.strength == 1.0
    for k, v in vae.state_dict().items():
        assert torch.equal(gen.state_dict()[f"inner.{k}"], v)
    assert (SHIPPED / "README.md").read_text().count("python train/make_swirl.py") >= 1


def test_bad_arguments_fail_with_one_line():
    with pytest.raises(ValueError, match="disjoint"):
        SwirlVAE(planes=[[3, 4], [4, 1]])
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        SwirlVAE(planes=[[3, 5]])
    with pytest.raises(ValueError, match="strength"):
        SwirlVAE(strength=float("nan"))
    gen = small()
    with pytest.raises(ValueError, match="factor"):
        gen.true_factor_path(torch.zeros(1, 5), 5, 3, 0.1)
    with pytest.raises(ValueError, match=r"\(n, 5\)"):
        gen.warp(torch.zeros(2, 4))
