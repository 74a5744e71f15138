"""Equivariance error of eq. 11 (pdetraversal.metrics.equivariance) on constructed cases with known answers.

Images are 1×3×4 (12 pixels), the encoder flattens them (codes = pixels) and the decoder reshapes back, so a
traversal that moves the code by v moves the image by v. Transformation k adds t·step·δ_k to x_0 at step t.
"""
import pytest
import torch

from pdetraversal import PotentialFlow
from pdetraversal.metrics.equivariance import equivariance_error

SHAPE, P, K, T, STEP = (1, 3, 4), 12, 3, 4, 0.5


def encode(x):
    return x.flatten(1), torch.zeros(x.shape[0], P)  # (mu, logvar): the metric must use mu


def decode(z):
    return z.view(-1, *SHAPE)


class ConstantVelocity:
    """Traversal k moves every code by step · velocity[k] per step."""

    def __init__(self, velocity: torch.Tensor):
        self.velocity = velocity  # (K, P)
        self.num_potentials, self.latent_dim, self.num_timesteps, self.step_size = len(velocity), P, T, STEP

    def label(self, k):
        return f"constant {k}"

    def traverse(self, z0, k, num_steps=None, step_size=None, direction=1):
        assert isinstance(k, int)
        num_steps = self.num_timesteps if num_steps is None else num_steps
        step = (self.step_size if step_size is None else step_size) * direction
        t = torch.arange(num_steps + 1, dtype=z0.dtype)[:, None, None]
        return z0 + t * step * self.velocity[k]


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    deltas = torch.randn(K, P, generator=g)
    x0 = torch.rand(7, P, generator=g)
    k = torch.tensor([0, 2, 1, 0, 2, 2, 1])
    t = torch.arange(T + 1, dtype=torch.float32)[:, None, None]
    sequences = (x0 + t * STEP * deltas[k]).view(T + 1, 7, *SHAPE)
    return deltas, k, sequences


def test_a_method_that_reproduces_the_transformation_scores_zero(data):
    deltas, k, seq = data
    r = equivariance_error(ConstantVelocity(deltas), encode, decode, seq, k)
    assert r["per_pixel"] == pytest.approx(0.0, abs=1e-6) and r["summed"] == pytest.approx(0.0, abs=1e-5)
    assert r["reconstruction_per_pixel"] == pytest.approx(0.0, abs=1e-7)
    assert r["num_sequences"] == 7 and r["num_steps"] == T and r["num_pixels"] == P and r["step_size"] == STEP
    assert r["reference_per_pixel"] > 0.5  # the same sequences are far from the unmoved code


def test_a_method_that_does_not_move_equals_the_reference_by_hand(data):
    deltas, k, seq = data
    r = equivariance_error(ConstantVelocity(torch.zeros(K, P)), encode, decode, seq, k)
    # x_t − Dec(z_0) = t·step·δ_k: per step t the mean |·| is t·step·mean|δ_k|, averaged over the sequences.
    mean_abs_delta = deltas[k].abs().mean(1).mean()
    per_step = [t * STEP * float(mean_abs_delta) for t in range(1, T + 1)]
    assert r["per_step"] == pytest.approx(per_step, rel=1e-5)
    assert r["reference_per_step"] == pytest.approx(per_step, rel=1e-5)
    assert r["per_pixel"] == pytest.approx(sum(per_step) / T, rel=1e-5)
    assert r["reference_per_pixel"] == pytest.approx(r["per_pixel"], rel=1e-6)
    assert r["summed"] == pytest.approx(sum(per_step) * P, rel=1e-5)
    assert r["reference_summed"] == pytest.approx(r["summed"], rel=1e-6)


def test_a_constant_offset_in_the_velocity_gives_the_expected_number(data):
    deltas, k, seq = data
    c = 0.1
    r = equivariance_error(ConstantVelocity(deltas + c), encode, decode, seq, k)
    # Error at step t is t·step·c on every pixel: per pixel step·c·(T+1)/2 = 0.125, summed step·c·P·T(T+1)/2 = 6.
    assert r["per_step"] == pytest.approx([t * STEP * c for t in range(1, T + 1)], rel=1e-5)
    assert r["per_pixel"] == pytest.approx(0.125, rel=1e-5)
    assert r["summed"] == pytest.approx(6.0, rel=1e-5)
    # At half the step size the flow covers t·(step/2)·(δ + c) of the true t·step·δ:
    half = equivariance_error(ConstantVelocity(deltas + c), encode, decode, seq, k, step_size=STEP / 2)
    t = torch.arange(1, T + 1, dtype=torch.float32)[:, None, None]
    by_hand = (t * STEP * deltas[k] - t * (STEP / 2) * (deltas[k] + c)).abs().mean()
    assert half["per_pixel"] == pytest.approx(float(by_hand), rel=1e-5)
    assert half["step_size"] == STEP / 2


def test_a_decoder_offset_shows_in_every_step_and_in_the_reconstruction(data):
    deltas, k, seq = data
    r = equivariance_error(ConstantVelocity(deltas), encode, lambda z: decode(z) + 0.2, seq, k)
    assert r["per_pixel"] == pytest.approx(0.2, rel=1e-5)
    assert r["summed"] == pytest.approx(0.2 * P * T, rel=1e-5)
    assert r["reconstruction_per_pixel"] == pytest.approx(0.2, rel=1e-5)


def test_batches_and_int_k_give_the_same_numbers(data):
    deltas, k, seq = data
    method = ConstantVelocity(torch.zeros(K, P))
    whole = equivariance_error(method, encode, decode, seq, k)
    chunked = equivariance_error(method, encode, decode, seq, k, batch_size=2)
    assert chunked["per_step"] == pytest.approx(whole["per_step"], rel=1e-6)
    rows = k == 2
    as_int = equivariance_error(method, encode, decode, seq[:, rows], 2)
    as_tensor = equivariance_error(method, encode, decode, seq[:, rows], torch.full((int(rows.sum()),), 2))
    assert as_int["per_pixel"] == pytest.approx(as_tensor["per_pixel"], rel=1e-7)


def test_any_traversal_method_works_a_potential_flow_by_hand(data):
    _, k, seq = data
    torch.manual_seed(0)
    flow = PotentialFlow(latent_dim=P, num_potentials=K, num_timesteps=T, step_size=STEP)
    r = equivariance_error(flow, encode, decode, seq, k)
    z0 = seq[0].flatten(1)
    expected = torch.stack([(seq[1:, i] - decode(flow.traverse(z0[i:i + 1], int(k[i]), T)[1:, 0])).abs().mean()
                            for i in range(len(k))]).mean()
    assert r["per_pixel"] == pytest.approx(float(expected), rel=1e-5)


def test_bad_input_gives_one_line_errors(data):
    deltas, k, seq = data
    method = ConstantVelocity(deltas)
    with pytest.raises(ValueError, match="T\\+1, B, C, H, W"):
        equivariance_error(method, encode, decode, seq[0], k)
    with pytest.raises(ValueError, match="T >= 1"):
        equivariance_error(method, encode, decode, seq[:1], k)
    with pytest.raises(ValueError, match="shape \\(7,\\)"):
        equivariance_error(method, encode, decode, seq, k[:3])
    with pytest.raises(IndexError, match="0..2"):
        equivariance_error(method, encode, decode, seq, 3)
    with pytest.raises(ValueError, match="codes of shape"):
        equivariance_error(method, lambda x: x.flatten(1)[:, :5], decode, seq, k)
    with pytest.raises(ValueError, match="decode returned"):
        equivariance_error(method, encode, lambda z: z.view(-1, 1, 4, 3)[:, :, :2], seq, k)
