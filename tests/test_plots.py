"""pdetraversal.plots: traversal strips, GIFs, the K overview, and the potential landscape on the PCA plane."""
import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from hub_models import MLPGenerator
from pdetraversal import PotentialFlow, plots
from pdetraversal.potentials import traverse_both_ways

D, K, S = 4, 3, 4


@pytest.fixture(scope="module")
def flow():
    torch.manual_seed(0)
    return PotentialFlow(latent_dim=D, num_potentials=K, labels=["shape", "scale", "spin"]).eval()


@pytest.fixture(scope="module")
def gen():
    torch.manual_seed(1)
    return MLPGenerator(latent_dim=D, image_size=8).eval().requires_grad_(False)


def test_traverse_both_ways_runs_from_the_negative_end_through_z0(flow):
    z0 = torch.randn(2, D)
    path = traverse_both_ways(flow, z0, 1, num_steps=S, step_size=0.5)
    assert path.shape == (2 * S + 1, 2, D)
    torch.testing.assert_close(path[S], z0)
    torch.testing.assert_close(path[S:], flow.traverse(z0, 1, S, 0.5, direction=1).detach())
    torch.testing.assert_close(path[:S + 1].flip(0), flow.traverse(z0, 1, S, 0.5, direction=-1).detach())


def test_image_strip_geometry_greyscale_rgb_and_highlight():
    frames = torch.rand(5, 1, 8, 8)
    strip = plots.image_strip(frames, min_size=64, gap=3, highlight=2)  # 8 px -> 8x zoom
    assert strip.size == (5 * 64 + 4 * 3, 64) and strip.mode == "RGB"
    arr = np.asarray(strip)
    # Frame 0, nearest-neighbour zoomed, is in the top-left corner; every channel carries the grey value.
    expected = np.round(frames[0, 0].numpy() * 255).astype(np.uint8).repeat(8, 0).repeat(8, 1)
    assert (arr[:, :64, 0] == expected).all() and (arr[:, :64, 2] == expected).all()
    left_of_2 = 2 * (64 + 3) - 1
    assert tuple(arr[0, left_of_2]) == plots.HIGHLIGHT_COLOUR and tuple(arr[0, 64]) == plots.GAP_COLOUR
    rgb = plots.image_strip(torch.rand(3, 3, 100, 100), min_size=64)  # big images are not zoomed
    assert rgb.size == (3 * 100 + 2 * 4, 100)
    with pytest.raises(ValueError, match="1 or 3"):
        plots.image_strip(torch.rand(2, 2, 8, 8))


def test_grid_height_counts_rows_and_labels_add_a_margin():
    rows = [Image.new("RGB", (50, 10), "red") for _ in range(4)]
    plain, labelled = plots.grid(rows, gap=2), plots.grid(rows, labels=list("abcd"), gap=2)
    assert plain.size == (50, 4 * 10 + 3 * 2)
    assert labelled.height == plain.height and labelled.width > 50
    with pytest.raises(ValueError, match="labels"):
        plots.grid(rows, labels=["a"])


@pytest.mark.parametrize("pingpong, channels", [(True, 1), (False, 3)])
def test_animated_gif_decodes_with_the_right_frames(tmp_path, pingpong, channels):
    n = 2 * S + 1
    frames = torch.linspace(0, 1, n)[:, None, None, None].expand(n, channels, 8, 8).contiguous()
    path = plots.animated_gif(frames, tmp_path / "t.gif", fps=10, pingpong=pingpong, min_size=16)
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.size == (16, 16)
        assert gif.n_frames == (2 * n - 2 if pingpong else n)
        levels = []
        for i in range(gif.n_frames):
            gif.seek(i)
            assert gif.info["duration"] == 100
            levels.append(np.asarray(gif.convert("L"))[0, 0])
    expected = np.round(np.linspace(0, 1, n) * 255)
    order = list(range(n)) + (list(range(n - 2, 0, -1)) if pingpong else [])
    assert np.abs(np.array(levels, float) - expected[order]).max() <= 2  # palette rounding only


def test_plane_basis_contains_a_planar_path():
    g = torch.Generator().manual_seed(0)
    z0, v1, v2 = torch.randn(3, 6, generator=g, dtype=torch.float64)
    s = torch.linspace(-1, 1, 9, dtype=torch.float64)[:, None]
    path = z0 + s * v1 + s**2 * v2  # a parabola: spans exactly the plane z0 + span(v1, v2)
    basis, from_path = plots.plane_basis(path)
    assert from_path == 2
    torch.testing.assert_close(basis @ basis.T, torch.eye(2, dtype=torch.float64))
    rel = path - z0
    torch.testing.assert_close((rel @ basis.T) @ basis, rel)  # projecting onto the plane changes nothing


def test_plane_basis_falls_back_to_random_directions_for_degenerate_paths():
    line = torch.linspace(0, 1, 7, dtype=torch.float64)[:, None] * torch.tensor([1.0, 2.0, 0, 0, 0], dtype=torch.float64)
    basis, from_path = plots.plane_basis(line)
    assert from_path == 1
    torch.testing.assert_close(basis @ basis.T, torch.eye(2, dtype=torch.float64))
    torch.testing.assert_close(basis[0], torch.tensor([1.0, 2.0, 0, 0, 0], dtype=torch.float64) / 5**0.5)
    still, none = plots.plane_basis(torch.ones(5, 5, dtype=torch.float64))
    assert none == 0 and torch.allclose(still @ still.T, torch.eye(2, dtype=torch.float64))


def test_landscape_grid_values_are_the_potential(flow):
    z0 = torch.randn(1, D)
    path = traverse_both_ways(flow, z0, 2, num_steps=S, step_size=1.0)[:, 0]
    times = (0, 2, 3)
    land = plots.landscape_grid(flow, path, 2, times, resolution=15)
    assert land.u.shape == (3, 15, 15) and land.grad.shape == (3, 15, 15, 2)
    assert land.off_plane < 1
    c = 15 // 2  # the centre cell is z0 itself
    for i, t in enumerate(times):
        torch.testing.assert_close(land.u[i, c, c], flow.potential(z0, float(t), 2)[0])
    # Any cell: row r follows basis[1], column c' follows basis[0].
    r, col = 3, 11
    z = (land.origin + land.a[col] * land.basis[0] + land.b[r] * land.basis[1])[None]
    torch.testing.assert_close(land.u[1, r, col], flow.potential(z, 2.0, 2)[0])
    torch.testing.assert_close(land.grad[1, r, col], (flow.velocity(z, 2.0, 2) @ land.basis.T)[0])
    # The path's projection is its coordinates in the plane.
    torch.testing.assert_close(land.path2d, (path - z0) @ land.basis.T)


def test_landscape_and_trajectory_figures_draw_without_pyplot(flow):
    pyplot = pytest.importorskip("matplotlib.pyplot")
    before = pyplot.get_fignums()
    z0 = torch.randn(1, D)
    paths = traverse_both_ways(flow, z0.expand(K, -1), torch.arange(K), S, 1.0)
    fig = plots.landscape_figure(flow, paths[:, 1], 1, plots.landscape_times(S))
    assert isinstance(fig, matplotlib.figure.Figure)
    panels = [ax for ax in fig.axes if ax.get_title().startswith("$u^")]
    assert len(panels) == len(plots.landscape_times(S)) == 3
    assert plots.figure_to_image(fig).size[0] > 100
    traj = plots.trajectory_figure(paths, ["a", "b", "c"], highlight=1, origin_index=S)
    left, right = traj.axes[:2]
    assert len(left.get_lines()) == K + 1  # K paths + the t = 0 marker
    np.testing.assert_array_equal(left.get_lines()[0].get_xdata(), np.arange(2 * S + 1) - S)
    assert plots.figure_to_image(traj).mode == "RGB"
    assert pyplot.get_fignums() == before  # nothing registered globally: no leak across requests


def test_overview_has_one_row_per_potential_with_z0_in_the_middle(flow, gen):
    z0 = gen.sample_latent(1, seed=3)
    img = plots.overview(flow, gen, z0, num_steps=S, step_size=1.0, min_size=64, gap=4)
    tile = 8 * plots.upscale_factor(8, 8, 64)
    assert img.height == K * tile + (K - 1) * 4
    arr = np.asarray(img).astype(int)
    margin = img.width - ((2 * S + 1) * tile + 2 * S * 4)
    centre = np.round(gen.decode(z0)[0, 0].numpy() * 255).repeat(tile // 8, 0).repeat(tile // 8, 1)
    for k in range(K):
        y = k * (tile + 4)
        x = margin + S * (tile + 4)
        assert np.abs(arr[y:y + tile, x:x + tile, 0] - centre).max() <= 1
        # The last tile of row k is the end of potential k's own (unbatched) positive traversal.
        end = gen.decode(flow.traverse(z0, k, S, 1.0)[-1].detach())[0, 0]
        x = margin + 2 * S * (tile + 4)
        expected = np.round(end.numpy() * 255).repeat(tile // 8, 0).repeat(tile // 8, 1)
        assert np.abs(arr[y:y + tile, x:x + tile, 0] - expected).max() <= 1


def test_render_draws_on_a_reused_figure_exactly_what_a_fresh_figure_shows(flow):
    """plots.render keeps one figure per kind and layout and draws it again: the pixels must be a fresh figure's,
    whatever was drawn on it before (other data, another k, other panel counts in between)."""
    labels = ["shape", "scale", "spin"]
    for seed, k, steps in [(0, 1, S), (1, 2, 1), (2, 0, S), (3, 1, 2), (4, 2, S)]:  # 3, 1, 3, 2, 3 panels
        z0 = torch.randn(1, D, generator=torch.Generator().manual_seed(seed))
        paths = traverse_both_ways(flow, z0.expand(K, -1), torch.arange(K), steps, 1.0)
        times = plots.landscape_times(steps)
        fresh = plots.figure_to_image(plots.landscape_figure(flow, paths[:, k], k, times, title=labels[k]))
        land = plots.landscape_grid(flow, paths[:, k], k, times).numpy()
        assert isinstance(land.u, np.ndarray) and isinstance(land.path2d, np.ndarray)
        np.testing.assert_array_equal(plots.render("landscape", land, k, labels[k]), np.asarray(fresh))
        fresh = plots.figure_to_image(plots.trajectory_figure(paths, labels, highlight=k, origin_index=steps))
        np.testing.assert_array_equal(
            plots.render("trajectory", paths.numpy(), labels, highlight=k, origin_index=steps), np.asarray(fresh))
        shapes = [paths[:, k], None if seed % 2 else paths[:, (k + 1) % K], paths[:, (k + 2) % K]]
        notes = [None, "k out of range" if seed % 2 else None, None]
        titles = [f"m{i}\nstraightness {seed / 10:.3f}" for i in range(3)]
        fresh = plots.figure_to_image(plots.path_shape_figure(shapes, titles, origin_index=steps, notes=notes))
        drawn = plots.render("path_shape", [None if p is None else p.numpy() for p in shapes], titles,
                             origin_index=steps, notes=notes)
        np.testing.assert_array_equal(drawn, np.asarray(fresh))
    reused = plots._REUSED[("trajectory",)]
    plots.render("trajectory", paths.numpy(), labels, highlight=0, origin_index=S)
    assert plots._REUSED[("trajectory",)] is reused  # drawn again, not made again
    with pytest.raises(ValueError, match="unknown figure kind 'pie'"):
        plots.render("pie")


def test_a_reused_landscape_keeps_no_old_colour_bars(flow):
    """Each drawing makes a colour bar; made again on the old bar's axes, each one held on to the last (through
    matplotlib's layout and removal hooks) until the chain overflowed the stack after ~500 drawings."""
    import gc

    from matplotlib.colorbar import Colorbar
    z0 = torch.randn(1, D, generator=torch.Generator().manual_seed(9))
    paths = traverse_both_ways(flow, z0.expand(K, -1), torch.arange(K), S, 1.0)
    land = plots.landscape_grid(flow, paths[:, 0], 0, plots.landscape_times(S)).numpy()
    for _ in range(12):
        plots.render("landscape", land, 0, "again")
    gc.collect()
    bars = [o for o in gc.get_objects() if type(o) is Colorbar]
    landscapes = [fig for key, fig in plots._REUSED.items() if key[0] == "landscape"]
    assert len(bars) <= len(landscapes) and len(plots._REUSED[("landscape", 3)].axes) == 4
