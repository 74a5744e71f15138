"""CPU timings of what one click in the Space costs, against the targets (traversal + landscape < 1 s,
overview of all K < 2 s). Prints numbers; asserts nothing.

    python bench/bench_app.py                                   # the embedded default potentials
    python bench/bench_app.py --potentials /path/or/user/repo --repeats 7 --threads 2

"traversal + landscape" is the Space's /traverse request minus HTTP: both directions (10 steps each) of the
chosen k, decoding, the strip, the GIF, the landscape plot and the trajectory plot (all K paths). "overview" is
/overview: all K traversals from one z0 in one vectorised pass, decoded and laid out. Each stage is also timed
alone so a regression points at its cause.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from hub_models import load_flow_and_generator  # noqa: E402
from pdetraversal import plots  # noqa: E402
from pdetraversal.potentials import traverse_both_ways  # noqa: E402
from pdetraversal.space.frames import STRIP_MIN_SIZE  # noqa: E402  (the Space's own; gradio is not imported)

TARGETS = {"traversal + landscape (the /traverse request)": 1.0, "overview of all K (the /overview request)": 2.0}


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up: first calls pay for lazy imports, font loading and allocator growth
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--potentials", default=os.environ.get("PDETRAVERSAL_POTENTIALS",
                                                                "hub_models/dsprites-vae-potentials"))
    parser.add_argument("--revision", default=None)
    parser.add_argument("--steps", type=int, default=10, help="steps each way")
    parser.add_argument("--step-size", type=float, default=None, help="default: the potentials' own")
    parser.add_argument("--k", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("PDETRAVERSAL_TORCH_THREADS", "1")),
                        help="torch intra-op threads; default 1, as app.py sets when launched")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    flow, gen = load_flow_and_generator(args.potentials, revision=args.revision)
    num_potentials, steps, k = flow.num_potentials, args.steps, args.k
    step_size = flow.step_size if args.step_size is None else args.step_size
    z0 = gen.sample_latent(1, seed=0)
    all_k = torch.arange(num_potentials)
    gif_path = Path(tempfile.mkdtemp(prefix="bench-app-")) / "t.gif"

    paths = traverse_both_ways(flow, z0.expand(num_potentials, -1), all_k, steps, step_size)
    frames = plots.decode_frames(gen, paths[:, k:k + 1])[:, 0]
    times = plots.landscape_times(steps)

    def landscape():
        return plots.figure_to_image(plots.landscape_figure(flow, paths[:, k], k, times, title=flow.label(k)))

    def trajectory():
        return plots.figure_to_image(plots.trajectory_figure(paths, highlight=k, origin_index=steps))

    def traverse_request():  # what pdetraversal.space.handlers.traverse does after its checks
        p = traverse_both_ways(flow, z0.expand(num_potentials, -1), all_k, steps, step_size)
        f = plots.decode_frames(gen, p[:, k:k + 1])[:, 0]
        plots.image_strip(f, min_size=STRIP_MIN_SIZE, highlight=steps)
        plots.animated_gif(f, gif_path)
        plots.figure_to_image(plots.landscape_figure(flow, p[:, k], k, times, title=flow.label(k)))
        plots.figure_to_image(plots.trajectory_figure(p, highlight=k, origin_index=steps))

    stages = {
        f"traversal both ways, all K={num_potentials} ({2 * steps + 1} points)":
            lambda: traverse_both_ways(flow, z0.expand(num_potentials, -1), all_k, steps, step_size),
        f"decode {2 * steps + 1} frames": lambda: plots.decode_frames(gen, paths[:, k:k + 1]),
        "strip": lambda: plots.image_strip(frames, min_size=STRIP_MIN_SIZE, highlight=steps),
        "GIF": lambda: plots.animated_gif(frames, gif_path),
        f"landscape grid only ({len(times)} times, 41x41, one batch)":
            lambda: plots.landscape_grid(flow, paths[:, k], k, times),
        "landscape plot (grid + figure + pixels)": landscape,
        "trajectory plot": trajectory,
    }
    print(f"potentials {args.potentials}: K={num_potentials}, d={flow.latent_dim}, generator "
          f"{type(gen).__name__}; {steps} steps each way, step size {step_size:g}; torch threads "
          f"{torch.get_num_threads()}; median of {args.repeats}")
    for name, fn in stages.items():
        print(f"  {name:<58} {median_time(fn, args.repeats) * 1000:8.1f} ms")
    totals = {
        "traversal + landscape (the /traverse request)": median_time(traverse_request, args.repeats),
        "overview of all K (the /overview request)":
            median_time(lambda: plots.overview(flow, gen, z0, steps, step_size), args.repeats),
    }
    for name, seconds in totals.items():
        target = TARGETS[name]
        print(f"  {name:<58} {seconds * 1000:8.1f} ms   {seconds / target:.2f} x the {target:g} s target")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average (1 min) while measuring: {load:.2f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
