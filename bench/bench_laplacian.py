"""Cost of the wave-equation residual (paper eq. 3-4) per training step: exact Laplacian vs Hutchinson.

    python bench/bench_laplacian.py [--batch-size 64] [--dims 32 128 512] [--repeats 5]

Prints milliseconds for ∇_z u alone and for the residual (forward + backward) with each Laplacian, and the
ratios measured in this one run. Times on a shared machine are noisy; the ratios are what to compare.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from pdetraversal import PotentialFlow  # noqa: E402
from pdetraversal.pde import wave_residual  # noqa: E402


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--dims", type=int, nargs="+", default=[32, 128, 512])
    p.add_argument("--num-potentials", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}")
    print(f"{'d':>5} {'grad ms':>9} {'exact ms':>9} {'hutch1 ms':>10} {'hutch8 ms':>10} {'exact/hutch1':>13}")
    for d in args.dims:
        torch.manual_seed(0)
        flow = PotentialFlow(d, args.num_potentials)
        z, t = torch.randn(args.batch_size, d), torch.rand(args.batch_size) * 10
        k = torch.randint(args.num_potentials, (args.batch_size,))

        def u(z, t):
            return flow.potential(z, t, k)

        def residual(method, probes=1):
            return lambda: wave_residual(u, z, t, flow.wave_speed[k], method, probes).pow(2).mean().backward()

        grad = median_ms(lambda: flow.velocity(z, t, k).pow(2).mean().backward(), args.repeats)
        exact = median_ms(residual("exact"), args.repeats)
        h1 = median_ms(residual("hutchinson", 1), args.repeats)
        h8 = median_ms(residual("hutchinson", 8), args.repeats)
        print(f"{d:>5} {grad:>9.1f} {exact:>9.1f} {h1:>10.1f} {h8:>10.1f} {exact / h1:>13.1f}")


if __name__ == "__main__":
    main()
