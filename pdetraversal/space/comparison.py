"""The Space's comparison view (/compare): one z0 and one k under every method there is for the loaded potentials'
generator (no paper equation of its own; the methods are those of bench/reproduce.py's report).

The methods are the loaded potentials, the trained baselines shipped under hub_models/baselines/ for that generator,
and the closed-form floors (SeFa, latent axes, random directions) at the benchmark's matched step: the potentials'
mean step from DIAGNOSTIC_STARTS starts. They are built once per load (`add_comparison`); each answer is one strip
row and one path-shape column per method, and a table that adds each method's row of bench/results/report.json.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image, ImageDraw

from hub_models import resolve_source
from pdetraversal import plots
from pdetraversal.baselines import floors, load_traversal
from pdetraversal.hub import CheckpointError, read_config
from pdetraversal.metrics.path_shape import path_shape
from pdetraversal.potentials import traverse_both_ways

from . import frames
from .public import public_text, shown_path

if TYPE_CHECKING:
    from .models import Loaded
    from .render import Renderer

DIAGNOSTIC_STARTS = 64  # traversals per potential behind the path diagnostics shown on load, and the floors' step


@dataclass
class Method:
    """One traversal method of the comparison view."""
    name: str                  # as the view shows it
    model: torch.nn.Module     # anything with the traversal interface (pdetraversal.traversal.Traversal)
    report_label: str | None   # its row in report.json; None: not in the report
    page_step: bool = False    # True: the page's step-size slider; False: its own saved step (model.step_size)


def read_report(report_path: Path, generator_source: str) -> tuple[dict | None, str | None]:
    """This generator's entry of report.json as {"name", "path", "meta", "columns", "rows"}, or None and why not."""
    shown = shown_path(report_path)
    if not report_path.is_file():
        return None, f"`{shown}` is not there (bench/reproduce.py writes it): no report columns."
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
        generators = report["generators"]
        for name, entry in generators.items():
            if entry["source"] == generator_source:
                columns = [str(c) for c in entry["columns"]]
                rows = {str(label): {"K": row.get("K"), "step": row.get("step"), "cells": list(row["cells"])}
                        for label, row in entry["rows"].items()}
                return {"name": name, "path": shown, "meta": dict(report.get("meta") or {}), "columns": columns,
                        "rows": rows}, None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        return None, f"`{shown}` could not be read ({type(e).__name__}: {e}): no report columns."
    return None, f"`{shown}` has no entry for the generator `{generator_source}`: no report columns."


def add_comparison(loaded: Loaded, source: str, baselines_dir: Path, report_path: Path, shipped_dir: Path) -> None:
    """Fill `loaded.methods`, `.report` and `.notes`: once per load, since floors and baselines do not change."""
    flow, gen = loaded.flow, loaded.generator
    generator_source = flow.config["generator"]
    loaded.report, note = read_report(report_path, generator_source)
    if note:
        loaded.notes.append(note)
    # The shipped potentials of generator <name> are <shipped_dir>/<name>-potentials (bench/reproduce.py's mapping).
    name = loaded.report["name"] if loaded.report else Path(str(generator_source)).name
    shipped = shipped_dir / f"{name}-potentials"
    folder = resolve_source(source)
    is_shipped = os.path.isdir(folder) and shipped.is_dir() and Path(folder).resolve() == shipped.resolve()
    loaded.methods.append(Method("potentials (loaded)", flow, "potential (shipped)" if is_shipped else None,
                                 page_step=True))

    if baselines_dir.is_dir():
        for folder in sorted(p for p in baselines_dir.iterdir() if (p / "config.json").is_file()):
            try:
                if read_config(str(folder)).get("generator") != generator_source:
                    continue  # a baseline for another generator
                model = load_traversal(str(folder))
            except (CheckpointError, ValueError, OSError, TypeError) as e:
                loaded.notes.append(f"baseline `{folder.name}` skipped: it does not load ({e}).")
                continue
            if model.latent_dim != gen.latent_dim:
                loaded.notes.append(f"baseline `{folder.name}` skipped: its latent_dim is {model.latent_dim}, the "
                                    f"generator's {gen.latent_dim}.")
                continue
            method = type(model).method_name  # the key load_traversal read from config.json
            loaded.methods.append(Method(f"{method} ({folder.name})", model, f"{method} (trained)"))

    # The floors exactly as bench/reproduce.py builds them: the potentials' K and T, their mean step from z_ref.
    for label, model in floors(gen, flow.num_potentials, int(flow.num_timesteps), loaded.line_step).items():
        loaded.methods.append(Method(label, model.eval(), label))


def compare_pictures(loaded: Loaded, k: int, num_steps: int, step_size: float, z0: torch.Tensor, renderer: Renderer,
                     progress=None) -> tuple[Image.Image, Image.Image, str]:
    """-> (strips image, path-shape image, Markdown table): z0's k-th traversal under every method of `loaded`, one
    strip row and one path-shape column per method; `progress` is told of each chunk of decoded frames."""
    paths, steps = [], []
    for method in loaded.methods:
        step = step_size if method.page_step else float(method.model.step_size)
        inside = k < method.model.num_potentials
        steps.append(step)
        paths.append(traverse_both_ways(method.model, z0, torch.tensor([k]), num_steps, step)[:, 0] if inside else None)
    drawn = [p for p in paths if p is not None]  # the potentials' own path is always there: k was checked above
    shown = frames.shown_frames(loaded, num_steps, len(drawn))
    decoded = frames.decode_frames(loaded, torch.stack(drawn, 1)[shown], progress)  # one pass for all methods
    strips, notes, shapes, j = [], [], [], 0
    for method, path in zip(loaded.methods, paths):
        if path is None:
            notes.append(f"k = {k} out of range for this method (K = {method.model.num_potentials})")
            strips.append(None)
            shapes.append(None)
            continue
        strips.append(plots.image_strip(decoded[:, j], min_size=frames.STRIP_MIN_SIZE, highlight=len(shown) // 2))
        j += 1
        notes.append(None)
        shapes.append({name: float(v[0]) for name, v in path_shape(path[num_steps:, None]).items()})
    size = next(s for s in strips if s is not None).size
    rows = [s if s is not None else _placeholder_strip(size, n) for s, n in zip(strips, notes)]
    names = [m.name for m in loaded.methods]
    strip_image = plots.grid(rows, names)
    titles = [n if s is None else f"{n}\nstraightness (+ half) {s['straightness']:.3f}" for n, s in zip(names, shapes)]
    shape_image = renderer.submit("path_shape", [None if p is None else p.numpy() for p in paths], titles,
                                  origin_index=num_steps, notes=notes)()
    table = _compare_table(loaded, k, num_steps, steps, shapes, notes, len(shown))
    return strip_image, shape_image, public_text(table)


def _cell(text) -> str:
    """A Markdown table cell: pipes escaped (the report's columns include |u_tt|)."""
    return str(text).replace("|", "\\|")


def _placeholder_strip(size: tuple[int, int], text: str) -> Image.Image:
    """A grey strip of the given (width, height) with `text`: stands in for a method that has no k-th path, so the
    picture keeps one row per method."""
    image = Image.new("RGB", size, plots.GAP_COLOUR)
    ImageDraw.Draw(image).text((8, size[1] / 2), text, fill="black", font=plots._font(16), anchor="lm")
    return image


def _compare_table(loaded: Loaded, k: int, num_steps: int, steps, shapes, notes, shown: int) -> str:
    report = loaded.report
    columns = report["columns"] if report else []
    header = ["method", "K", "step size", "this path: straightness", "turning (deg/step)", "first / later",
              "report row", *columns]
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    for method, step, shape, note in zip(loaded.methods, steps, shapes, notes):
        if shape is None:
            mine = [note, "-", "-"]
        else:
            ratio = shape["first_step"] / max(shape["later_step"], 1e-30)
            mine = [f"{shape['straightness']:.4f}", f"{shape['turning_deg']:.2f}", f"{ratio:.2f}"]
        row = report["rows"].get(method.report_label) if report and method.report_label else None
        if method.report_label is None:
            where = "not in the report: trained elsewhere"
        elif report is None:
            where = method.report_label + " (no report)"
        elif row is None:
            where = method.report_label + " (not in the report)"
        else:
            where = method.report_label
        cells = [(row["cells"][i] if row and i < len(row["cells"]) else "-") for i in range(len(columns))]
        lines.append("| " + " | ".join(_cell(c) for c in [method.name, method.model.num_potentials, f"{step:.4g}",
                                                          *mine, where, *cells]) + " |")
    text = [f"**k = {k}, {num_steps} steps each way from the same z<sub>0</sub>.** The potentials use the page's step "
            "size; every other method uses its own saved step size: the trained baselines the one they were trained "
            f"with, the straight-line floors (SeFa, axes, random) the potentials' mean step length "
            f"{loaded.line_step:.4g} (from {DIAGNOSTIC_STARTS} starts of seed 0, as bench/reproduce.py matches them). "
            "Straightness (chord / arc; 1 is a straight line), turning and first / later are for this traversal's "
            "+ half; the report's columns are its benchmark over many starts.", "", *lines, ""]
    if shown < 2 * num_steps + 1:
        text.insert(1, f"*Frames capped:* one image takes {frames.duration_text(loaded.decode_s)} to decode with "
                       f"this generator: each strip shows {shown} of its {2 * num_steps + 1} frames, evenly spaced "
                       "(the paths and their shapes are the full ones).")
        text.insert(1, "")
    if report:
        meta = report["meta"]
        seeds = ", ".join(map(str, meta.get("seeds", []))) or "?"
        text.append(f"Report columns: generator `{report['name']}` of `{report['path']}`, from "
                    f"`{meta.get('command', '?')}` (size {meta.get('size_name', '?')}, seeds {seeds}).")
        if any(m.report_label and m.report_label.endswith("(trained)") for m in loaded.methods):
            text[-1] += (" For the trained baselines the report's row is mean ± std over seeds; the shipped folder "
                         "is one of those fits.")
    if loaded.notes:
        text += ["", *(f"- {note}" for note in loaded.notes)]
    return "\n".join(text)
