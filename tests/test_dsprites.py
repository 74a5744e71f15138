"""Procedural dSprites (pdetraversal.data.dsprites): the factor grid, determinism, and each shape drawn as defined."""
import math

import numpy as np
import pytest
import torch

from pdetraversal.data import dsprites as ds

SQUARE, ELLIPSE, HEART = 0, 1, 2


def sprite(shape, scale, orientation):
    return ds.centred_sprites()[shape, scale, orientation].astype(bool)


def centroid(mask):
    rows, cols = np.nonzero(mask)
    return rows.mean(), cols.mean()


def test_factor_grid():
    assert ds.FACTOR_NAMES == ("shape", "scale", "orientation", "x", "y")
    assert ds.FACTOR_SIZES == (3, 6, 40, 32, 32)
    np.testing.assert_allclose(ds.SCALES, [0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    assert len(ds.ORIENTATIONS) == 40 and ds.ORIENTATIONS[0] == 0
    np.testing.assert_allclose(np.diff(ds.ORIENTATIONS), 2 * math.pi / 40)
    assert ds.ORIENTATIONS[-1] < 2 * math.pi - 0.1  # endpoint excluded: 40 distinct orientations
    np.testing.assert_allclose(ds.POSITIONS, np.arange(32) / 31)
    assert ds.centred_sprites().shape == (3, 6, 40, 33, 33)


def test_factor_values():
    idx = torch.tensor([[0, 0, 0, 0, 0], [2, 5, 39, 31, 31], [1, 2, 10, 15, 7]])
    v = ds.factor_values(idx)
    assert v.dtype == torch.float32 and v.shape == (3, 5)
    torch.testing.assert_close(v[0], torch.zeros(5))
    torch.testing.assert_close(v[1], torch.tensor([1.0, 1.0, 39 * 2 * math.pi / 40, 1.0, 1.0]))
    torch.testing.assert_close(v[2], torch.tensor([0.5, 0.4, math.pi / 2, 15 / 31, 7 / 31]))


def test_sample_is_deterministic_by_seed_and_binary():
    x1, i1 = ds.sample(200, seed=3)
    x2, i2 = ds.sample(200, seed=3)
    x3, i3 = ds.sample(200, seed=4)
    assert x1.shape == (200, 1, 64, 64) and x1.dtype == torch.float32
    assert i1.shape == (200, 5) and i1.dtype == torch.long
    assert torch.equal(x1, x2) and torch.equal(i1, i2)
    assert not torch.equal(i1, i3)
    assert set(x1.unique().tolist()) <= {0.0, 1.0}
    assert (i1 >= 0).all() and (i1 < torch.tensor(ds.FACTOR_SIZES)).all()
    torch.testing.assert_close(ds.render(i1), x1)  # the images are exactly the rendered factors
    assert ds.render(i1, dtype="uint8").dtype == torch.uint8


def test_every_factor_value_is_drawn():
    _, idx = ds.sample(5000, seed=0)
    for j, size in enumerate(ds.FACTOR_SIZES):
        assert len(idx[:, j].unique()) == size


def test_render_rejects_bad_indices():
    with pytest.raises(ValueError, match="orientation"):
        ds.render([[0, 0, 40, 0, 0]])
    with pytest.raises(ValueError, match=r"\(n, 5\)"):
        ds.render([[0, 0, 0, 0]])


@pytest.mark.parametrize("shape", [SQUARE, ELLIPSE, HEART])
def test_area_matches_definition(shape):
    """Pixel count, averaged over orientations, equals the defined area (UNIT_PX * scale)^2 * SHAPE_AREAS."""
    counts = ds.centred_sprites()[shape].sum(axis=(2, 3)).mean(axis=1)
    expected = ds.SHAPE_AREAS[shape] * (ds.UNIT_PX * ds.SCALES) ** 2
    np.testing.assert_allclose(counts, expected, rtol=0.03)


def test_area_ratios_between_shapes_and_scales():
    counts = ds.centred_sprites().sum(axis=(3, 4)).mean(axis=2).astype(float)  # (3, 6)
    np.testing.assert_allclose(counts[ELLIPSE, 5] / counts[SQUARE, 5], 1.28 * math.pi / 4, rtol=0.03)
    np.testing.assert_allclose(counts[HEART, 5] / counts[SQUARE, 5], 3.662 / 4, rtol=0.03)
    # area grows as scale^2
    np.testing.assert_allclose(counts[:, 5] / counts[:, 0], 4.0, rtol=0.05)
    np.testing.assert_allclose(counts[:, 3] / counts[:, 1], (0.8 / 0.6) ** 2, rtol=0.05)


@pytest.mark.parametrize("scale", range(6))
def test_square_at_orientation_zero_is_axis_aligned(scale):
    m = sprite(SQUARE, scale, 0)
    rows, cols = np.nonzero(m)
    h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    assert m.sum() == h * w  # fills its bounding box exactly
    assert h == w
    assert abs(w - 2 * ds.UNIT_PX * ds.SCALES[scale]) <= 1.0
    # at 45 degrees (index 5) it is a diamond: half of its bounding box
    d = sprite(SQUARE, scale, 5)
    rows, cols = np.nonzero(d)
    assert d.sum() / ((np.ptp(rows) + 1) * (np.ptp(cols) + 1)) < 0.7


def test_ellipse_axes_ratio():
    m = sprite(ELLIPSE, 5, 0)
    rows, cols = np.nonzero(m)
    width, height = np.ptp(cols) + 1, np.ptp(rows) + 1
    assert abs(width - 2 * 1.6 * ds.UNIT_PX) <= 1.5 and abs(height - 2 * 0.8 * ds.UNIT_PX) <= 1.5
    vertical = sprite(ELLIPSE, 5, 10)  # a quarter turn later the long axis is vertical
    rows, cols = np.nonzero(vertical)
    assert np.ptp(rows) + 1 == width and np.ptp(cols) + 1 == height


@pytest.mark.parametrize("scale", [0, 5])
def test_heart_is_mirror_symmetric_and_upright(scale):
    m = sprite(HEART, scale, 0)
    assert np.array_equal(m, m[:, ::-1])  # mirror symmetric about its vertical axis
    assert not np.array_equal(m, m[::-1, :])  # but not upside-down symmetric
    rows = np.nonzero(m.any(axis=1))[0]

    def runs(row):
        r = m[row].astype(int)
        return int((np.diff(np.concatenate([[0], r, [0]])) == 1).sum())

    # lobes up: the top row has two separate runs (the lobes); the bottom point is one narrow run
    assert runs(rows.min()) == 2
    assert runs(rows.max()) == 1 and m[rows.max()].sum() <= 3


def test_rotation_is_counter_clockwise_on_screen():
    """Orientation index 10 (90 degrees) is the index-0 sprite turned a quarter counter-clockwise on screen."""
    for shape in (SQUARE, ELLIPSE, HEART):
        turned = np.rot90(sprite(shape, 5, 0))  # np.rot90: counter-clockwise as displayed (row 0 at top)
        assert (turned != sprite(shape, 5, 10)).sum() <= 4
    # the heart, turned 90 degrees counter-clockwise, points right
    m = sprite(HEART, 5, 10)
    cols = np.nonzero(m.any(axis=0))[0]
    assert m[:, cols.max()].sum() <= 3 and m[:, cols.min()].sum() > 3


def test_symmetries_of_the_orientation_grid():
    s = ds.centred_sprites()
    # a square repeats every quarter turn (10 steps), an ellipse every half turn (20 steps), up to rounding
    assert (s[SQUARE, :, :30] != s[SQUARE, :, 10:]).sum(axis=(2, 3)).max() <= 4
    assert (s[ELLIPSE, :, :20] != s[ELLIPSE, :, 20:]).sum(axis=(2, 3)).max() <= 4
    assert (s[HEART, 5, 0] != s[HEART, 5, 20]).sum() > 50  # a heart does not
    # ORIENTATION_PERIOD names those periods; half a period is a different image
    for shape, period in enumerate(ds.ORIENTATION_PERIOD):
        if period < 40:
            assert (s[shape, :, :40 - period] != s[shape, :, period:]).sum(axis=(2, 3)).max() <= 4
        assert (s[shape, 5, 0] != s[shape, 5, period // 2]).sum() > 50


def test_centroid_is_the_position():
    """Every shape's centroid is at the canvas centre (pixel 16), within rounding."""
    s = ds.centred_sprites()
    for shape in range(3):
        for scale in range(6):
            for o in range(0, 40, 7):
                r, c = centroid(s[shape, scale, o])
                assert abs(r - 16) < 0.35 and abs(c - 16) < 0.35, (shape, scale, o, r, c)


def test_position_shift_moves_the_centroid_by_whole_pixels():
    base = np.array([[HEART, 3, 7, 0, 0]])
    images = ds.render(np.concatenate([base, base + [0, 0, 0, 10, 0], base + [0, 0, 0, 0, 31],
                                       base + [0, 0, 0, 31, 31]]))[:, 0].numpy()
    (r0, c0), (r1, c1), (r2, c2), (r3, c3) = (centroid(m) for m in images)
    assert np.isclose(c1 - c0, 10) and np.isclose(r1, r0)  # x moves columns (right)
    assert np.isclose(r2 - r0, 31) and np.isclose(c2, c0)  # y moves rows (down)
    assert abs(r0 - 16) < 0.35 and abs(c0 - 16) < 0.35
    # the 32 positions 16..47 are symmetric about the image centre (pixel 31.5)
    assert abs((c0 + c3) / 2 - 31.5) < 0.35 and abs((r0 + r3) / 2 - 31.5) < 0.35
    # placing never clips: every image has exactly its sprite's pixel count
    x, idx = ds.sample(300, seed=1)
    counts = ds.centred_sprites()[idx[:, 0], idx[:, 1], idx[:, 2]].sum(axis=(1, 2))
    np.testing.assert_array_equal(x.sum(dim=(1, 2, 3)).numpy(), counts)


def test_one_factor_pairs_differ_in_exactly_the_named_factor():
    first, second, factor = ds.one_factor_pairs(3000, seed=(4, 2))
    differs = first != second
    assert (differs.sum(1) == 1).all()
    assert torch.equal(differs.float().argmax(1), factor)
    assert (second >= 0).all() and (second < torch.tensor(ds.FACTOR_SIZES)).all()
    # Every factor gets changed (about a fifth each), and the new value is spread over the other values.
    counts = torch.bincount(factor, minlength=5).float() / 3000
    assert (counts - 0.2).abs().max() < 0.04, counts
    moved = (second - first)[factor == 3, 3] % 32
    assert moved.min() >= 1 and len(moved.unique()) == 31
    again = ds.one_factor_pairs(3000, seed=(4, 2))
    assert all(torch.equal(a, b) for a, b in zip((first, second, factor), again))
    assert not torch.equal(ds.one_factor_pairs(3000, seed=(4, 3))[0], first)
