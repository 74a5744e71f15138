"""The Space under concurrent users: p50 / p95 latency and requests/s per endpoint (issue 14).

    python bench/load.py                          # 8 users x 5 requests to /traverse, /overview and /compare
    python bench/load.py --users 8 --requests 5 --timeout 120 --rounds 3
    python bench/load.py --pool 8                 # users share 8 (seed, k) pairs, as visitors of one page do
    python bench/load.py --quick                  # smoke size (the test runs this)

The app (`app.build_demo` on the embedded default potentials, or --potentials) is served by a subprocess on
127.0.0.1 and a free port, so the clients' own Python work does not share the server's GIL. `--users` threads each
hold one gradio_client.Client and send their requests one after the other (a closed loop: a user waits for an answer
before asking again), one endpoint at a time so each row's latencies are that endpoint's alone. Request i of user u
asks for seed S + u·R + i and k = (u + i) mod K (R requests per user, S a per-round offset): no two requests of a run
are alike, so the server's output cache never answers them; `--pool N` draws them instead from N shared (seed, k)
pairs, which the cache does answer after their first render. Steps, step size and start are the page's opening
controls for those potentials. A phase stops sending after --timeout seconds and waits no longer than that.

Latency is from submit to result on the client (queueing included); requests/s counts answered requests over the
phase's wall time. Outputs are not downloaded (download_files=False): the server still encodes and stores every
picture, as it does for a browser. The printed machine line carries the load average before and after, since
the numbers mean little on a machine that other jobs share.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ENDPOINTS = ("/traverse", "/overview", "/compare")
READY = "LOAD-BENCH-READY "  # the server's line carrying its settings as JSON
HEADER = (f"{'endpoint':<10} {'users':>5} {'sent':>5} {'ok':>5} {'errors':>6} {'p50 s':>7} {'p95 s':>7} "
          f"{'max s':>7} {'req/s':>6}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


# ------------------------------------------------------------------------------------------- the server
def serve(potentials: str, port: int, threads: int) -> None:
    """Build and launch the app in this process; print READY and its settings; serve until killed."""
    sys.path.insert(0, str(REPO_ROOT))
    import torch
    torch.set_num_threads(threads)
    import app

    from hub_models import load_flow_and_generator

    demo = app.build_demo(potentials)
    flow, generator = load_flow_and_generator(potentials)  # for the page's opening controls, as build_demo sets them
    start = "data" if generator.data_latent(1, seed=0) is not None else "prior"
    app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    settings = {"url": demo.local_url, "num_potentials": flow.num_potentials,
                "num_steps": min(flow.num_timesteps, app.MAX_STEPS), "step_size": min(flow.step_size, app.MAX_STEP_SIZE),
                "start": start, "torch_threads": torch.get_num_threads(),
                "concurrency": app.RENDER_CONCURRENCY}
    print(READY + json.dumps(settings), flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        demo.close()


def start_server(potentials: str, threads: int, startup_s: float = 120.0) -> tuple[subprocess.Popen, dict]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), GRADIO_ANALYTICS_ENABLED="False")
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve", "--potentials", potentials,
                             "--port", str(free_port()), "--threads", str(threads)],
                            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    found: dict = {}
    lines: list[str] = []

    def read():  # keeps draining the server's output, so a chatty server never blocks on a full pipe
        for line in proc.stdout:
            if line.startswith(READY) and not found:
                found.update(json.loads(line[len(READY):]))
            else:
                lines.append(line.rstrip())
                del lines[:-40]

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + startup_s
    while not found:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("the app did not start:\n" + "\n".join(lines))
        time.sleep(0.1)
    found["log"] = lines  # the server's latest lines, printed when a request failed
    return proc, found


# ------------------------------------------------------------------------------------------- the users
def request_args(endpoint: str, seed: int, k: int, settings: dict) -> tuple:
    steps, step, start = settings["num_steps"], settings["step_size"], settings["start"]
    source = settings["potentials"]
    if endpoint == "/overview":
        return seed, steps, step, source, "", start
    return seed, k, steps, step, source, "", start


def controls(user: int, i: int, requests: int, offset: int, pool: int, num_potentials: int) -> tuple[int, int]:
    """(seed, k) of request i of `user`: distinct for every request, or one of `pool` shared pairs."""
    if pool > 0:
        j = (user * 3 + i) % pool  # users walk the same pairs from different places
        return j, j % num_potentials
    return offset + user * requests + i, (user + i) % num_potentials


def run_phase(endpoint: str, settings: dict, users: int, requests: int, timeout: float, offset: int,
              pool: int) -> dict:
    from gradio_client import Client

    clients = [Client(settings["url"], verbose=False, download_files=False) for _ in range(users)]
    latencies: list[float] = []
    errors: list[str] = []
    sent = [0]
    lock = threading.Lock()
    barrier = threading.Barrier(users + 1)
    deadline = [0.0]

    def user(u: int) -> None:
        barrier.wait()
        for i in range(requests):
            left = deadline[0] - time.monotonic()
            if left <= 0:
                return
            seed, k = controls(u, i, requests, offset, pool, settings["num_potentials"])
            begun = time.perf_counter()
            with lock:
                sent[0] += 1
            try:
                clients[u].submit(*request_args(endpoint, seed, k, settings), api_name=endpoint).result(timeout=left)
            except Exception as e:  # a timeout or an error answer: counted, the user goes on
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")
                continue
            with lock:
                latencies.append(time.perf_counter() - begun)

    threads = [threading.Thread(target=user, args=(u,), daemon=True) for u in range(users)]
    for t in threads:
        t.start()
    deadline[0] = time.monotonic() + timeout
    begun = time.perf_counter()
    barrier.wait()
    for t in threads:
        t.join(max(0.0, deadline[0] - time.monotonic()) + 5)
    wall = time.perf_counter() - begun
    for c in clients:
        c.close()
    return {"endpoint": endpoint, "users": users, "sent": sent[0], "ok": len(latencies), "errors": len(errors),
            "p50": percentile(latencies, 50), "p95": percentile(latencies, 95),
            "max": max(latencies) if latencies else float("nan"), "rps": len(latencies) / wall,
            "first_error": errors[0] if errors else None}


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default)."""
    if not values:
        return float("nan")
    v = sorted(values)
    x = (len(v) - 1) * q / 100
    lo = int(x)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (x - lo)


def row(r: dict) -> str:
    return (f"{r['endpoint']:<10} {r['users']:>5} {r['sent']:>5} {r['ok']:>5} {r['errors']:>6} {r['p50']:>7.2f} "
            f"{r['p95']:>7.2f} {r['max']:>7.2f} {r['rps']:>6.2f}")


def median_rows(rounds: list[list[dict]]) -> list[dict]:
    out = []
    for rs in zip(*rounds):
        m = {"endpoint": rs[0]["endpoint"], "users": rs[0]["users"]}
        for key in ("sent", "ok", "errors", "p50", "p95", "max", "rps"):
            m[key] = statistics.median(r[key] for r in rs)
        out.append(m)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--potentials", default="hub_models/dsprites-vae-potentials",
                        help="folder or Hub repo id (default: the embedded default, app.SHIPPED_POTENTIALS)")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--requests", type=int, default=5, help="requests per user and endpoint")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per endpoint phase, at most")
    parser.add_argument("--endpoints", default=",".join(ENDPOINTS), help="comma-separated, of " + ", ".join(ENDPOINTS))
    parser.add_argument("--pool", type=int, default=0, help="0: every request distinct; N: N shared (seed, k) pairs")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the phases; >1 also prints the median table")
    parser.add_argument("--threads", type=int, default=1, help="the server's torch threads (app.py's default: 1)")
    parser.add_argument("--quick", action="store_true", help="smoke size: 2 users x 1 request, 60 s per phase")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the server subprocess
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.potentials, args.port, args.threads)
    if args.quick:
        args.users, args.requests, args.timeout = 2, 1, 60.0
    endpoints = [e.strip() for e in args.endpoints.split(",") if e.strip()]
    bad = [e for e in endpoints if e not in ENDPOINTS]
    if bad or not endpoints:
        parser.error(f"--endpoints: unknown {bad or 'none given'}; choose from {', '.join(ENDPOINTS)}")
    for name in ("users", "requests", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if not args.timeout > 0 or args.pool < 0:
        parser.error("--timeout must be positive and --pool at least 0")

    before = load_average()
    proc, settings = start_server(args.potentials, args.threads)
    settings["potentials"] = args.potentials
    try:
        import gradio
        import torch
        print(f"machine: {platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, python "
              f"{platform.python_version()}, torch {torch.__version__}, gradio {gradio.__version__}; "
              f"load average before {before}")
        print(f"server: {args.potentials} (K = {settings['num_potentials']}), torch threads "
              f"{settings['torch_threads']}, queue concurrency {settings['concurrency']}; controls: "
              f"{settings['num_steps']} steps, step size {settings['step_size']:g}, start {settings['start']}; "
              f"{args.users} users x {args.requests} requests per endpoint, "
              + (f"{args.pool} shared (seed, k) pairs" if args.pool else "every request distinct")
              + f", at most {args.timeout:g} s per endpoint")
        rounds = []
        for r in range(args.rounds):
            print(f"round {r + 1} of {args.rounds}" if args.rounds > 1 else "")
            print(HEADER, flush=True)
            results = []
            for e in endpoints:
                if proc.poll() is not None:  # a crash, not a slow answer: say so rather than time out
                    print(f"{e:<10} not run: the server exited with code {proc.returncode}")
                    continue
                res = run_phase(e, settings, args.users, args.requests, args.timeout, 100_000 * (r + 1), args.pool)
                results.append(res)
                print(row(res), flush=True)
            rounds.append(results)
            for res in results:
                if res["first_error"]:
                    print(f"  {res['endpoint']} first error: {res['first_error'][:300]}")
        if proc.poll() is not None or any(res["errors"] for results in rounds for res in results):
            time.sleep(0.5)  # the reader thread's last lines
            print(f"server {'exited with code ' + str(proc.returncode) if proc.poll() is not None else 'is up'}; "
                  "its output (last lines):\n  " + "\n  ".join(settings["log"][-20:]))
        if args.rounds > 1 and len({len(rs) for rs in rounds}) == 1:
            print(f"median of {args.rounds} rounds")
            print(HEADER)
            for res in median_rows(rounds):
                print(row(res))
        print(f"load average after {load_average()}")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()
