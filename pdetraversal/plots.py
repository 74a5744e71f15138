"""Pictures of potential flows: traversal strips, GIFs, the K-potential overview, and the potential landscape.

A traversal follows paper eq. 2, z_{t+1} = z_t ± ∇_z u^k(z_t, t). The landscape plot draws the scalar potential
u^k(·, t) itself on a 2-D slice of the d-dimensional latent space: the plane through z_0 spanned by the two
principal directions of the traversal (PCA of the path), with the path and the projected gradient field
∇_z u^k drawn over it, one panel per time t. The trajectory plot shows z_t against t.

Figures are plain `matplotlib.figure.Figure` objects drawn on an Agg canvas, never pyplot figures, so nothing
is registered globally: a figure is freed like any other object once dropped (no `plt.close` bookkeeping) and
the user's matplotlib backend is left alone. Images are PIL images; frames are (N, C, H, W) tensors in [0, 1].

For a server (app.py), `render` draws a figure from plain data on a figure kept per kind and layout, emptied of the
last call's artists and drawn again, with the pixels of a fresh one: building axes and ticks cost about as much as
drawing them. It is what app.py's render processes run.
"""
from __future__ import annotations

import math
import multiprocessing
import multiprocessing.connection
import os
import textwrap
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from .potentials import traverse_both_ways

GAP_COLOUR = (200, 200, 200)
HIGHLIGHT_COLOUR = (255, 140, 0)  # marks z_0 in strips and plots


# --------------------------------------------------------------------------------------------- traversals
def decode_frames(generator, path: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """(N, B, d) latents -> (N, B, C, H, W) images in [0, 1]; decoded in chunks so big K × S fits in memory (and in
    the CPU caches: 168 dSprites frames decoded 1.3-1.7x faster in chunks of 64 than in one batch)."""
    flat = path.reshape(-1, path.shape[-1])
    with torch.no_grad():
        images = torch.cat([generator.decode(flat[i:i + chunk]) for i in range(0, len(flat), chunk)])
    return images.clamp(0, 1).reshape(*path.shape[:2], *images.shape[1:])


# --------------------------------------------------------------------------------------------- images
def upscale_factor(height: int, width: int, min_size: int) -> int:
    """Smallest integer zoom that makes the longer side at least `min_size` pixels (1 for big images)."""
    return max(1, math.ceil(min_size / max(height, width)))


def _to_uint8(frames: torch.Tensor, scale: int) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> (N, H·scale, W·scale, 3) uint8, nearest-neighbour zoom (keeps sprite edges crisp)."""
    if frames.ndim != 4 or frames.shape[1] not in (1, 3):
        raise ValueError(f"frames must have shape (N, 1 or 3, H, W), got {tuple(frames.shape)}")
    arr = (frames.detach().float().clamp(0, 1).cpu() * 255).round().to(torch.uint8).numpy()
    arr = arr.transpose(0, 2, 3, 1)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return arr.repeat(scale, axis=1).repeat(scale, axis=2)


def image_strip(frames: torch.Tensor, min_size: int = 128, gap: int = 4, highlight: int | None = None) -> Image.Image:
    """One row of N frames, `gap` grey pixels apart; the gaps either side of frame `highlight` are orange.

    Width N·W·s + (N−1)·gap and height H·s, with s = `upscale_factor(H, W, min_size)`.
    """
    n, _, h, w = frames.shape
    tiles = _to_uint8(frames, upscale_factor(h, w, min_size))
    th, tw = tiles.shape[1:3]
    canvas = np.empty((th, n * tw + (n - 1) * gap, 3), dtype=np.uint8)
    canvas[:] = GAP_COLOUR
    for i, tile in enumerate(tiles):
        x = i * (tw + gap)
        canvas[:, x:x + tw] = tile
    if highlight is not None and gap > 0:
        x = highlight * (tw + gap)
        canvas[:, max(x - gap, 0):x] = HIGHLIGHT_COLOUR
        canvas[:, x + tw:x + tw + gap] = HIGHLIGHT_COLOUR
    return Image.fromarray(canvas)


def _font(size: int = 14) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow built without FreeType: the fixed bitmap font, which takes no size
        return ImageFont.load_default()


def grid(rows: list[Image.Image], labels: list[str] | None = None, gap: int = 4) -> Image.Image:
    """Stack images vertically (`gap` pixels apart); labels, if given, go in a white margin on the left.

    The height is exactly sum(row heights) + (len(rows) − 1)·gap, so callers can count rows from it.
    """
    if not rows:
        raise ValueError("grid needs at least one row")
    if labels is not None and len(labels) != len(rows):
        raise ValueError(f"got {len(labels)} labels for {len(rows)} rows")
    font = _font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    margin = 0 if labels is None else 12 + max(probe.textlength(text, font=font) for text in labels)
    margin = int(math.ceil(margin))
    width = margin + max(r.width for r in rows)
    height = sum(r.height for r in rows) + (len(rows) - 1) * gap
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    y = 0
    for i, row in enumerate(rows):
        canvas.paste(row.convert("RGB"), (margin, y))
        if labels is not None:
            draw.text((6, y + row.height / 2), labels[i], fill="black", font=font, anchor="lm")
        y += row.height + gap
    return canvas


def animated_gif(frames: torch.Tensor, path: str | Path, fps: float = 8.0, pingpong: bool = True,
                 min_size: int = 128) -> Path:
    """Write (N, C, H, W) frames as a looping GIF; ping-pong plays 0..N−1 then back down to 1 (2N − 2 frames).

    GIF encoders (Pillow's included) merge consecutive identical frames, adding up their durations, so a flow
    that stands still gives fewer frames but the same playing time.
    """
    n, _, h, w = frames.shape
    tiles = _to_uint8(frames, upscale_factor(h, w, min_size))
    order = list(range(n)) + (list(range(n - 2, 0, -1)) if pingpong else [])
    # Greyscale as 'L' (one channel of the tiles): exact grey levels instead of a quantised palette.
    images = [Image.fromarray(tiles[i, :, :, 0] if frames.shape[1] == 1 else tiles[i]) for i in order]
    path = Path(path)
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:],
                   duration=round(1000 / fps), loop=0, optimize=False)
    return path


def figure_to_image(fig: Figure) -> Image.Image:
    """Render a Figure on its Agg canvas straight to an RGB PIL image (no PNG round trip), then clear it."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    image = Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy())
    fig.clear()  # drop the artists now rather than whenever the figure is garbage-collected
    return image


# --------------------------------------------------------------------------------------------- the landscape
def plane_basis(path: torch.Tensor, seed: int = 0, rel_tol: float = 1e-4) -> tuple[torch.Tensor, int]:
    """(2, d) orthonormal rows spanning the path's two principal directions, and how many came from the path.

    PCA of the centred path points; a direction whose singular value is below rel_tol · the largest (a straight
    path has one, a path that never moves has none) is replaced by a seeded random direction orthogonal to the
    others. The first direction points from the path's start towards its end.
    """
    path = path.detach().double()
    d = path.shape[1]
    if d < 2:
        raise ValueError(f"a 2-D landscape slice needs latent_dim >= 2, got {d}")
    _, s, vh = torch.linalg.svd(path - path.mean(0), full_matrices=False)
    tol = rel_tol * float(s[0]) if len(s) and float(s[0]) > 1e-12 else math.inf
    dirs = [vh[i] for i in range(min(2, len(s))) if float(s[i]) > tol]
    from_path = len(dirs)
    g = torch.Generator().manual_seed(seed)
    while len(dirs) < 2:
        v = torch.randn(d, generator=g, dtype=torch.float64)
        for u in dirs:
            v = v - (v @ u) * u
        if float(v.norm()) > 1e-6:
            dirs.append(v / v.norm())
    basis = torch.stack(dirs)
    if float((path[-1] - path[0]) @ basis[0]) < 0:
        basis[0] = -basis[0]
    return basis, from_path


@dataclass
class Landscape:
    """u^k and its gradient on a G × G grid over the plane z = origin + a·basis[0] + b·basis[1].

    u[i, r, c] = u^k(origin + a[c]·basis[0] + b[r]·basis[1], times[i]) (rows index b, as matplotlib's
    contour(a, b, u) expects); grad[i, r, c] is ∇_z u^k there, projected on the two basis vectors.
    G is odd and the grid symmetric, so the centre cell (G // 2, G // 2) is exactly the origin z_0.
    """

    origin: torch.Tensor      # (d,)
    basis: torch.Tensor       # (2, d)
    directions_from_path: int
    a: torch.Tensor           # (G,)
    b: torch.Tensor           # (G,)
    times: tuple[float, ...]
    u: torch.Tensor           # (len(times), G, G)
    grad: torch.Tensor        # (len(times), G, G, 2)
    path2d: torch.Tensor      # (N, 2)
    off_plane: float          # ‖path − its projection‖ / ‖path − origin‖: 0 when the path lies in the plane

    def numpy(self) -> Landscape:
        """The same landscape with numpy arrays: pickled as plain bytes to a render process (torch tensors would go
        through torch's shared-memory reductions)."""
        return replace(self, **{name: np.asarray(getattr(self, name)) for name in
                                ("origin", "basis", "a", "b", "u", "grad", "path2d")})


def landscape_grid(flow, path: torch.Tensor, k: int, times=(0,), origin: torch.Tensor | None = None,
                   resolution: int = 41, margin: float = 1.3) -> Landscape:
    """Evaluate u^k on the PCA plane of `path` (N, d) through `origin` (default: the path's middle point, which is
    z_0 for a `traverse_both_ways` path). All grid points at all times go through `flow.potential` as one batch.
    """
    path = path.detach()
    dtype = path.dtype
    origin = (path[len(path) // 2] if origin is None else origin).detach().reshape(-1)
    basis64, from_path = plane_basis(path)
    basis = basis64.to(dtype)
    rel = path - origin
    path2d = rel @ basis.T
    residual = rel - path2d @ basis
    off_plane = float(residual.norm() / rel.norm().clamp_min(1e-12))
    half = float(path2d.abs().max()) * margin
    half = half if half > 1e-6 else 1.0  # a path that never moves: show a unit neighbourhood
    resolution += 1 - resolution % 2  # odd, so the centre cell is the origin
    axis = torch.linspace(-half, half, resolution, dtype=dtype)
    axis[resolution // 2] = 0.0  # exactly, not up to linspace rounding
    bb, aa = torch.meshgrid(axis, axis, indexing="ij")  # (G, G), rows follow b
    points = origin + aa.reshape(-1, 1) * basis[0] + bb.reshape(-1, 1) * basis[1]  # (G², d)
    times = tuple(float(t) for t in times)
    z = points.repeat(len(times), 1).requires_grad_(True)
    t = torch.tensor(times, dtype=dtype).repeat_interleave(len(points))
    with torch.enable_grad():
        u = flow.potential(z, t, k)
        (g,) = torch.autograd.grad(u.sum(), z)  # samples are independent: row i is ∇u at point i
    shape = (len(times), resolution, resolution)
    return Landscape(origin=origin, basis=basis, directions_from_path=from_path, a=axis, b=axis, times=times,
                     u=u.detach().reshape(shape), grad=(g @ basis.T).reshape(*shape, 2), path2d=path2d,
                     off_plane=off_plane)


def landscape_times(num_steps: int) -> tuple[int, ...]:
    """Three instants worth showing for an S-step traversal: the start, the middle and the last step."""
    return tuple(sorted({0, (num_steps - 1) // 2, max(num_steps - 1, 0)}))


def landscape_figure(flow, path: torch.Tensor, k: int, times=(0,), title: str | None = None,
                     resolution: int = 41, arrows: int = 13) -> Figure:
    """Contours of u^k(·, t) on the PCA plane of `path`, one panel per t, with the projected gradient field
    (arrows: the direction the positive traversal moves) and the path (z_0 starred, ends marked − and +).
    All panels share one colour scale so the potential can be compared across time."""
    return draw_landscape(landscape_grid(flow, path, k, times, resolution=resolution), k, title, arrows)


def draw_landscape(land: Landscape, k: int, title: str | None = None, arrows: int = 13,
                   fig: Figure | None = None) -> Figure:
    """landscape_figure's picture of an evaluated landscape (torch or numpy arrays: `Landscape.numpy`).

    `fig`: a figure an earlier call returned for as many times, drawn again in place (see `render`)."""
    a, b, u, grad, p = (np.asarray(x) for x in (land.a, land.b, land.u, land.grad, land.path2d))
    levels = np.linspace(u.min(), u.max() + 1e-9, 21)
    step = max(1, len(a) // arrows)
    if fig is None:
        # Fixed margins, not constrained layout: the layout solver alone cost more than drawing (measured, bench/).
        fig = Figure(figsize=(3.4 * len(land.times) + 1.0, 3.9), dpi=80)
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, len(land.times), squeeze=False, sharex=True, sharey=True)[0]  # shared: fewer labels
        fig.subplots_adjust(left=0.07, right=0.86, bottom=0.13, top=0.8, wspace=0.08)
        for ax in axes:
            ax.set_aspect("equal")
            ax.tick_params(labelsize=7)
            ax.locator_params(nbins=5)
        axes[0].set_xlabel("principal direction 1", fontsize=8)
    else:
        # The colour bar gets new axes: a colorbar made again on its old axes wraps the last one's layout and
        # removal hooks, a chain that grew with every drawing until it overflowed the stack.
        fig.delaxes(fig.axes[-1])
        axes = _wiped(fig).axes
    cax = fig.add_axes((0.88, 0.13, 0.015, 0.67))
    cax.tick_params(labelsize=7)
    for ax in axes:
        # The view is the grid (which holds the path): set once, rather than autoscaled again over all the shared
        # panels each time a contour set, arrow field or line is added.
        ax.set_autoscale_on(False)
    axes[0].set_xlim(a[0], a[-1])
    axes[0].set_ylim(b[0], b[-1])
    for ax, ti, ui, gi in zip(axes, land.times, u, grad):
        filled = ax.contourf(a, b, ui, levels=levels, cmap="viridis")
        ax.contour(a, b, ui, levels=levels[::4], colors="k", linewidths=0.4, alpha=0.5)
        ax.quiver(a[::step], b[::step], gi[::step, ::step, 0], gi[::step, ::step, 1],
                  color="white", alpha=0.8, width=0.006)
        ax.plot(p[:, 0], p[:, 1], "-o", color="red", markersize=2.5, linewidth=1.2)
        ax.plot(*p[0], marker="$-$", color="red", markersize=9)
        ax.plot(*p[-1], marker="$+$", color="red", markersize=9)
        ax.plot(0, 0, marker="*", color="orange", markersize=12, markeredgecolor="k")
        # y given: matplotlib otherwise measures every tick label at each draw to place the title above them,
        # and there are none above the panels.
        ax.set_title(f"$u^{{{k}}}(\\cdot,\\ t={ti:g})$", fontsize=10, y=1.0)
    axes[0].set_ylabel("principal direction 2" if land.directions_from_path == 2 else "random direction",
                       fontsize=8)
    fig.colorbar(filled, cax=cax).set_label("u", fontsize=8)
    note = f"plane: PCA of the path through z0 ({land.off_plane:.0%} of the path lies off the plane)"
    if land.directions_from_path < 2:
        note = f"plane through z0: {land.directions_from_path} direction(s) from the path, the rest random"
    fig.suptitle(f"{title or f'potential {k}'}\n{note}", fontsize=9)
    return fig


# --------------------------------------------------------------------------------------------- trajectories
def trajectory_figure(paths, labels: list[str] | None = None, highlight: int = 0, origin_index: int | None = None,
                      max_coords: int = 8, fig: Figure | None = None) -> Figure:
    """z_t against t. `paths`: (N, d) or (N, M, d) for M traversals (e.g. all K from one z_0), torch or numpy.

    Left: each path's coordinate along its own principal direction (its shape: straight, saturating, turning
    back), so paths of different k share one axis. Right: the latent coordinates of path `highlight` that move
    most. t is counted from `origin_index` (default N // 2, the z_0 of a `traverse_both_ways` path).
    `fig`: a figure an earlier call returned, drawn again in place (see `render`).
    """
    paths = torch.as_tensor(paths).detach().double()
    if paths.ndim == 2:
        paths = paths[:, None]
    n, m, d = paths.shape
    origin_index = n // 2 if origin_index is None else origin_index
    steps = np.arange(n) - origin_index
    labels = labels or [f"path {i}" for i in range(m)]
    if fig is None:
        fig = Figure(figsize=(10, 3.6), dpi=80)
        FigureCanvasAgg(fig)
        left, right = fig.subplots(1, 2)
        fig.subplots_adjust(left=0.07, right=0.98, bottom=0.14, top=0.9, wspace=0.22)
        left.set_xlabel("step t (negative: the − direction)")
        left.set_ylabel("along the path's main direction")
        right.set_xlabel("step t")
        right.set_ylabel("latent coordinate")
    else:
        left, right = _wiped(fig).axes
    for i in range(m):
        p = paths[:, i]
        basis, _ = plane_basis(p) if d >= 2 else (torch.ones(1, 1, dtype=p.dtype), 1)
        y = ((p - p[origin_index]) @ basis[0]).numpy()
        style = dict(linewidth=2.5, color="red", zorder=3) if i == highlight else dict(linewidth=1, alpha=0.6)
        left.plot(steps, y, label=labels[i], **style)
    left.axvline(0, color="grey", linewidth=0.8)
    if m <= 12:
        left.legend(fontsize=7, ncol=2)
    p = paths[:, highlight]
    moved = (p - p[origin_index]).abs().amax(0)
    for c in moved.argsort(descending=True)[:max_coords].tolist():
        right.plot(steps, p[:, c].numpy(), label=f"z[{c}]")
    right.axvline(0, color="grey", linewidth=0.8)
    right.set_title(f"{labels[highlight]}: the {min(max_coords, d)} coordinates that move most", fontsize=9, y=1.0)
    right.legend(fontsize=7, ncol=2)
    return fig


# --------------------------------------------------------------------------------------------- the overview
def overview(flow, generator, z0: torch.Tensor, num_steps: int | None = None, step_size: float | None = None,
             min_size: int = 64, gap: int = 4) -> Image.Image:
    """All K traversals of one z_0 (1, d) in one vectorised pass, one labelled row per k (z_0 marked orange).

    The height is K·H·s + (K − 1)·gap, s = `upscale_factor(H, W, min_size)`.
    """
    num_potentials = flow.num_potentials
    zs = z0.reshape(1, -1).expand(num_potentials, -1)
    path = traverse_both_ways(flow, zs, torch.arange(num_potentials), num_steps, step_size)  # (2S+1, K, d)
    frames = decode_frames(generator, path)
    centre = path.shape[0] // 2
    rows = [image_strip(frames[:, i], min_size=min_size, gap=gap, highlight=centre) for i in range(num_potentials)]
    return grid(rows, [f"{i}: {flow.label(i)}" for i in range(num_potentials)], gap=gap)


# --------------------------------------------------------------------------------------------- path shapes side by side
def path_shape_figure(paths: list[torch.Tensor | None], titles: list[str], origin_index: int | None = None,
                      notes: list[str | None] | None = None, fig: Figure | None = None) -> Figure:
    """One column per traversal (N, d), e.g. the same z_0 and k under several methods (paper eq. 2 for each).

    Top: the path on its own two principal directions (`plane_basis`), drawn with equal axes so a bend shows as a
    bend and a straight line as a straight line; z_0 starred, the ends marked − and +. Bottom: the step length
    ‖z_{t+1} − z_t‖ against t (t counted from `origin_index`, default N // 2), which shows whether the path speeds
    up, slows down or keeps its pace. A None path gets an empty column carrying its note (e.g. k out of range).
    Paths are torch or numpy. `fig`: a figure an earlier call returned for the same columns (the same paths None),
    drawn again in place (see `render`).
    """
    if not paths:
        raise ValueError("path_shape_figure needs at least one path")
    if len(titles) != len(paths) or (notes is not None and len(notes) != len(paths)):
        raise ValueError(f"got {len(paths)} paths, {len(titles)} titles and {len(notes or paths)} notes")
    if fig is None:
        fig = Figure(figsize=(2.4 * len(paths) + 0.5, 4.8), dpi=80)
        FigureCanvasAgg(fig)
        axes = fig.subplots(2, len(paths), squeeze=False, gridspec_kw={"height_ratios": [3, 2]})
        fig.subplots_adjust(left=0.5 / fig.get_figwidth() + 0.02, right=0.99, bottom=0.1, top=0.86,
                            wspace=0.35, hspace=0.35)
        for i, path in enumerate(paths):
            for ax in axes[:, i]:
                ax.tick_params(labelsize=7)
                if path is None:
                    ax.set_xticks([])
                    ax.set_yticks([])
                else:
                    ax.locator_params(nbins=4)
            if path is not None:
                axes[0, i].set_aspect("equal", adjustable="datalim")
                axes[1, i].set_xlabel("step t", fontsize=8)
        axes[0, 0].set_ylabel("principal direction 2", fontsize=8)
        axes[0, 0].set_xlabel("principal direction 1", fontsize=8)
        axes[1, 0].set_ylabel("‖z_{t+1} − z_t‖", fontsize=8)
        fig.suptitle("Path shape: the path on its own principal plane (equal axes) and its step lengths", fontsize=9)
    else:
        axes = np.array(_wiped(fig).axes).reshape(2, len(paths))
    for i, (path, title) in enumerate(zip(paths, titles)):
        top, bottom = axes[0, i], axes[1, i]
        top.set_title(title, fontsize=9, y=1.0)  # y given: see draw_landscape
        if path is None:
            note = textwrap.fill((notes[i] if notes else None) or "no path", 24)  # the panel is ~2 inches wide
            top.text(0.5, 0.5, note, ha="center", va="center", fontsize=8, transform=top.transAxes)
            continue
        p = torch.as_tensor(path).detach().double().reshape(len(path), -1)
        origin = len(p) // 2 if origin_index is None else origin_index
        rel = p - p[origin]
        xy = (rel @ plane_basis(p)[0].T).numpy() if p.shape[1] >= 2 else np.stack([rel[:, 0], 0 * rel[:, 0]], 1)
        top.plot(xy[:, 0], xy[:, 1], "-o", color="tab:blue", markersize=2.5, linewidth=1.2)
        top.plot(*xy[0], marker="$-$", color="k", markersize=9)
        top.plot(*xy[-1], marker="$+$", color="k", markersize=9)
        top.plot(0, 0, marker="*", color="orange", markersize=11, markeredgecolor="k")
        lengths = (p[1:] - p[:-1]).norm(dim=-1).numpy()
        bottom.plot(np.arange(len(lengths)) - origin, lengths, "-o", color="tab:blue", markersize=2.5, linewidth=1)
        bottom.axvline(-0.5, color="grey", linewidth=0.8)  # between the last − step and the first + step
        bottom.set_ylim(0, max(float(lengths.max()), 1e-12) * 1.15)
    return fig


# --------------------------------------------------------------------------------------------- reused figures
def _wiped(fig: Figure) -> Figure:
    """`fig` without what the last call drew on it (data artists, texts, legends, data limits, colour cycle): its
    axes, their ticks, labels and layout stay, so drawing on it again gives the picture a fresh figure would."""
    for ax in fig.axes:
        for artist in [*ax.collections, *ax.lines, *ax.patches, *ax.texts, *ax.images]:
            artist.remove()
        if ax.legend_ is not None:
            ax.legend_.remove()
        ax.relim()  # no artists left: empty data limits, as a new axes has
        ax.set_autoscale_on(True)
        ax.set_prop_cycle(None)  # lines without a colour start again at C0
    return fig


FIGURES = {"landscape": draw_landscape, "trajectory": trajectory_figure, "path_shape": path_shape_figure}
_REUSED: OrderedDict[tuple, Figure] = OrderedDict()  # this process's figures, by kind and layout
REUSED_FIGURES = 8  # a few layouts per kind (panels, columns) are all a page makes


def _layout(kind: str, args: tuple, kwargs: dict) -> tuple:
    """What must match for a figure to be drawn again for these arguments: its kind and its axes."""
    if kind == "landscape":
        return kind, len((args[0] if args else kwargs["land"]).times)
    if kind == "path_shape":  # a None path's column has its ticks removed
        return kind, tuple(p is None for p in (args[0] if args else kwargs["paths"]))
    return (kind,)


def render(kind: str, *args, **kwargs) -> np.ndarray:
    """The pixels (H, W, 3) uint8 of FIGURES[kind](*args, **kwargs), drawn on this process's figure for that kind
    and layout: making axes and their ticks cost about as much as drawing them (bench/results/load.md), so a figure
    is made once and drawn again in place. Plain data in (numpy, `Landscape.numpy`), pixels out, at module level:
    a spawned render process can run it (app.py's pool). One figure at a time per process: not thread-safe."""
    if kind not in FIGURES:
        raise ValueError(f"unknown figure kind {kind!r}; choose from {', '.join(FIGURES)}")
    key = _layout(kind, args, kwargs)
    fig = FIGURES[kind](*args, **kwargs, fig=_REUSED.pop(key, None))
    _REUSED[key] = fig
    while len(_REUSED) > REUSED_FIGURES:
        _REUSED.popitem(last=False)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def render_process_start() -> None:
    """The first work of a render process (app.py's pool, spawned): end with the process that started it, and draw a
    landscape of three times and a trajectory figure once on made-up data.

    A spawned pool process holds both ends of its work queue, so it would never see its parent go (a server killed
    by a signal): a daemon thread waits on the parent's sentinel instead. The drawing loads matplotlib, its fonts
    and mathtext and makes the reused figures a page asks for most, so the first request is no slower than later
    ones."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        def leave_with_parent() -> None:
            multiprocessing.connection.wait([parent.sentinel])
            os._exit(0)
        threading.Thread(target=leave_with_parent, daemon=True, name="leave-with-parent").start()
    axis = np.linspace(-1.0, 1.0, 41)
    bb, aa = np.meshgrid(axis, axis, indexing="ij")
    u = np.stack([aa + t * bb**2 for t in (0.0, 0.5, 1.0)])
    grad = np.stack([np.stack([np.ones_like(aa), 2 * t * bb], -1) for t in (0.0, 0.5, 1.0)])
    path = np.stack([np.linspace(-0.5, 0.5, 21), np.linspace(-0.5, 0.5, 21) ** 2], 1)
    land = Landscape(origin=np.zeros(2), basis=np.eye(2), directions_from_path=2, a=axis, b=axis,
                     times=(0.0, 4.0, 9.0), u=u, grad=grad, path2d=path, off_plane=0.0)
    render("landscape", land, 0, "warm-up")
    render("trajectory", np.stack([path, path[::-1]], 1), ["a", "b"], highlight=0, origin_index=10)
