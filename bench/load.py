"""The Space under concurrent users: p50 / p95 latency and requests/s per endpoint (issue 14).

    python bench/load.py                          # 8 users x 5 requests to /traverse, /overview and /compare
    python bench/load.py --users 8 --requests 5 --timeout 120 --rounds 3
    python bench/load.py --pool 8                 # users share 8 (seed, k) pairs, as visitors of one page do
    python bench/load.py --quick                  # smoke size (the test runs this)
    python bench/load.py --profile                # where one /traverse and one /overview spend their time
    python bench/load.py --render-processes 0 --concurrency 2    # the figures drawn in the server process

The app (`app.build_demo` on the embedded default potentials, or --potentials) is served by a subprocess on
127.0.0.1 and a free port, so the clients' own Python work does not share the server's GIL. `--users` threads each
hold one gradio_client.Client and send their requests one after the other (a closed loop: a user waits for an answer
before asking again), one endpoint at a time so each row's latencies are that endpoint's alone. Request i of user u
asks for seed S + u·R + i and k = (u + i) mod K (R requests per user, S a per-round offset): no two requests of a run
are alike, so the server's output cache never answers them; `--pool N` draws them instead from N shared (seed, k)
pairs, which the cache does answer after their first render. Steps, step size and start are the page's opening
controls for those potentials. A phase stops sending after --timeout seconds and waits no longer than that.

Latency is from submit to result on the client (queueing included); requests/s counts answered requests over the
phase's wall time. `cpu s/req` is the CPU time the server and its render processes used per answered request (psutil),
`client` the same for this process's gradio_client users, which share the machine's cores with the server (a Space's
visitors do not). Outputs are not downloaded (download_files=False): the server still encodes and stores every
picture, as it does for a browser. The printed machine line carries the load average before and after, since
the numbers mean little on a machine that other jobs share. The server's render processes have all started (and
drawn their warm-up figures) before the first request.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
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
          f"{'max s':>7} {'req/s':>6} {'cpu s/req':>9} {'client':>6}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


# ------------------------------------------------------------------------------------------- the server
def serve(potentials: str, port: int, threads: int, render_processes: int | None = None,
          concurrency: int | None = None) -> None:
    """Build and launch the app in this process; print READY and its settings; serve until killed.
    `render_processes` / `concurrency`: instead of app.py's RENDER_PROCESSES / RENDER_CONCURRENCY (None: those)."""
    sys.path.insert(0, str(REPO_ROOT))
    import torch
    torch.set_num_threads(threads)
    import app
    from pdetraversal.space.public import MAX_STEP_SIZE, MAX_STEPS
    from pdetraversal.space.render import Renderer

    if render_processes is not None:
        app.RENDERER = Renderer(render_processes)  # build_demo reads it
    if concurrency is not None:
        app.RENDER_CONCURRENCY = concurrency  # build_demo reads it

    from hub_models import load_flow_and_generator

    demo = app.build_demo(potentials)
    # The render processes' start-up is not part of any request. (An app.py from before they existed has none.)
    renderer = getattr(app, "RENDERER", None)
    processes = renderer.processes if renderer is not None and renderer.wait_started() else 0
    flow, generator = load_flow_and_generator(potentials)  # for the page's opening controls, as build_demo sets them
    start = "data" if generator.data_latent(1, seed=0) is not None else "prior"
    app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    settings = {"url": demo.local_url, "num_potentials": flow.num_potentials,
                "num_steps": min(flow.num_timesteps, MAX_STEPS), "step_size": min(flow.step_size, MAX_STEP_SIZE),
                "start": start, "torch_threads": torch.get_num_threads(),
                "concurrency": app.RENDER_CONCURRENCY,
                "render_processes": processes}
    print(READY + json.dumps(settings), flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # terminate(): exit handlers stop the render processes
    try:
        while True:
            time.sleep(3600)
    finally:
        demo.close()


def start_server(potentials: str, threads: int, startup_s: float = 120.0, render_processes: int | None = None,
                 concurrency: int | None = None) -> tuple[subprocess.Popen, dict]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), GRADIO_ANALYTICS_ENABLED="False")
    extra = [] if render_processes is None else ["--render-processes", str(render_processes)]
    extra += [] if concurrency is None else ["--concurrency", str(concurrency)]
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve", "--potentials", potentials,
                             "--port", str(free_port()), "--threads", str(threads), *extra],
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
    found["pid"] = proc.pid
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
    cpu, client = server_cpu(settings["pid"]), time.process_time()
    begun = time.perf_counter()
    barrier.wait()
    for t in threads:
        t.join(max(0.0, deadline[0] - time.monotonic()) + 5)
    wall = time.perf_counter() - begun
    cpu, client = server_cpu(settings["pid"]) - cpu, time.process_time() - client
    for c in clients:
        c.close()
    return {"endpoint": endpoint, "users": users, "sent": sent[0], "ok": len(latencies), "errors": len(errors),
            "p50": percentile(latencies, 50), "p95": percentile(latencies, 95),
            "max": max(latencies) if latencies else float("nan"), "rps": len(latencies) / wall,
            "cpu": cpu / max(len(latencies), 1), "client": client / max(len(latencies), 1),
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
            f"{r['p95']:>7.2f} {r['max']:>7.2f} {r['rps']:>6.2f} {r['cpu']:>9.3f} {r['client']:>6.3f}")


def server_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by the server process and its children (the render processes);
    NaN without psutil."""
    try:
        import psutil
    except ImportError:
        return float("nan")
    total = 0.0
    try:
        server = psutil.Process(pid)
        for p in [server, *server.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                times = p.cpu_times()
                total += times.user + times.system
    except psutil.NoSuchProcess:
        return float("nan")
    return total


def median_rows(rounds: list[list[dict]]) -> list[dict]:
    out = []
    for rs in zip(*rounds):
        m = {"endpoint": rs[0]["endpoint"], "users": rs[0]["users"]}
        for key in ("sent", "ok", "errors", "p50", "p95", "max", "rps", "cpu", "client"):
            m[key] = statistics.median(r[key] for r in rs)
        out.append(m)
    return out


# ------------------------------------------------------------------------------------------- the profile
def profile(potentials: str, requests: int, threads: int) -> None:
    """Where one request's time goes. Each stage of /traverse and /overview is timed in this process with
    time.perf_counter (median over `requests` distinct requests, after one warm-up each), the figures drawn here one
    after the other; then gradio's encoding of the answer; then the whole handler with the figures drawn by the
    render processes; then one user's requests to the served app, rendered and repeated (the cache answers)."""
    sys.path.insert(0, str(REPO_ROOT))
    import tempfile

    import torch
    torch.set_num_threads(threads)
    import app
    from gradio import processing_utils

    from pdetraversal import plots
    from pdetraversal.space import frames, handlers
    from pdetraversal.space.models import ModelCache
    from pdetraversal.space.public import MAX_STEP_SIZE, MAX_STEPS
    from pdetraversal.space.render import Renderer

    stages: dict[str, float] = {}

    def timed(name: str, fn):
        def run(*args, **kwargs):
            begun = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                stages[name] = stages.get(name, 0.0) + time.perf_counter() - begun
        return run

    handlers.traverse_both_ways = timed("traversal (all K, both ways)", handlers.traverse_both_ways)
    frames.decode_frames = timed("decoding the frames", frames.decode_frames)
    plots.landscape_grid = timed("landscape grid (u and its gradient)", plots.landscape_grid)
    plots.image_strip = timed("strips", plots.image_strip)
    plots.grid = timed("grid of the strips", plots.grid)
    plots.animated_gif = timed("GIF", plots.animated_gif)
    render = plots.render
    for kind, build in list(plots.FIGURES.items()):
        plots.FIGURES[kind] = timed(f"{kind} figure: artists", build)
    plots.render = lambda kind, *a, **kw: timed(f"{kind} figure: artists + drawing", render)(kind, *a, **kw)

    models = ModelCache(allow_local=True)
    loaded = models.get(potentials)
    steps, step = min(loaded.flow.num_timesteps, MAX_STEPS), min(loaded.flow.step_size, MAX_STEP_SIZE)
    seeds = iter(range(200_000, 300_000))  # distinct requests: the output cache never answers

    def one(endpoint: str) -> tuple[dict, float, tuple]:
        stages.clear()
        seed = next(seeds)
        begun = time.perf_counter()
        if endpoint == "/traverse":
            answer = handlers.traverse(models, seed, seed % loaded.flow.num_potentials, steps, step, potentials, "",
                                  loaded.start)
        else:
            answer = (handlers.overview(models, seed, steps, step, potentials, "", loaded.start),)
        return dict(stages), time.perf_counter() - begun, answer

    def medians(endpoint: str) -> tuple[dict, float, tuple]:
        one(endpoint)  # warm-up: lazy imports, fonts, the reused figures
        runs = [one(endpoint) for _ in range(requests)]
        names = list(dict.fromkeys(name for run in runs for name in run[0]))
        return ({n: statistics.median(run[0].get(n, 0.0) for run in runs) for n in names},
                statistics.median(run[1] for run in runs), runs[-1][2])

    print(f"profile: {potentials}, {steps} steps, step size {step:g}, start {loaded.start}; torch threads "
          f"{torch.get_num_threads()}; median of {requests} distinct requests, ms; load average before "
          f"{load_average()}")
    cache = tempfile.mkdtemp(prefix="load-profile-")
    for endpoint in ("/traverse", "/overview"):
        models.renderer = Renderer(0)  # figures drawn here, one after the other: each is timed alone
        times, total, answer = medians(endpoint)
        print(f"{endpoint}, figures drawn in this process")
        for name, t in times.items():
            print(f"  {name:<44} {t * 1e3:8.1f}")
        print(f"  {'the whole handler':<44} {total * 1e3:8.1f}")
        for i, value in enumerate(answer):  # what gradio does with each output before it answers
            begun = time.perf_counter()
            if isinstance(value, str):
                processing_utils.save_file_to_cache(value, cache)
                what = "GIF: copied into gradio's cache"
            else:
                processing_utils.save_pil_to_cache(value, cache, format="png")
                what = f"output {i}: PNG for gradio ({value.width}x{value.height})"
            print(f"  {what:<44} {(time.perf_counter() - begun) * 1e3:8.1f}")
        if endpoint == "/traverse":
            plots.render, timed_render = render, plots.render  # the pool sends plots.render itself
            models.renderer = Renderer(app.RENDER_PROCESSES)
            if models.renderer.wait_started():
                _, total, _ = medians(endpoint)
                print(f"  {f'the whole handler, {app.RENDER_PROCESSES} render processes':<44} {total * 1e3:8.1f}")
            models.renderer.shutdown()
            plots.render = timed_render
    shutil.rmtree(cache, ignore_errors=True)

    proc, settings = start_server(potentials, threads)
    settings["potentials"] = potentials
    try:
        from gradio_client import Client
        client = Client(settings["url"], verbose=False, download_files=False)
        print(f"served, one user, ms (median of {requests}): rendered / repeated (the output cache answers)")
        for endpoint in ENDPOINTS:
            rendered, repeated = [], []
            for _ in range(requests):
                seed = next(seeds)
                for into in (rendered, repeated):
                    begun = time.perf_counter()
                    client.predict(*request_args(endpoint, seed, seed % settings["num_potentials"], settings),
                                   api_name=endpoint)
                    into.append(time.perf_counter() - begun)
            print(f"  {endpoint:<10} {statistics.median(rendered) * 1e3:8.1f} {statistics.median(repeated) * 1e3:8.1f}")
        client.close()
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"load average after {load_average()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--potentials", default="hub_models/dsprites-vae-potentials",
                        help="folder or Hub repo id (default: the embedded default, SHIPPED_POTENTIALS)")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--requests", type=int, default=5, help="requests per user and endpoint")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per endpoint phase, at most")
    parser.add_argument("--endpoints", default=",".join(ENDPOINTS), help="comma-separated, of " + ", ".join(ENDPOINTS))
    parser.add_argument("--pool", type=int, default=0, help="0: every request distinct; N: N shared (seed, k) pairs")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the phases; >1 also prints the median table")
    parser.add_argument("--threads", type=int, default=1, help="the server's torch threads (app.py's default: 1)")
    parser.add_argument("--quick", action="store_true", help="smoke size: 2 users x 1 request, 60 s per phase")
    parser.add_argument("--profile", action="store_true",
                        help="time each stage of one /traverse and /overview instead (--requests: how many)")
    parser.add_argument("--render-processes", type=int, default=None,
                        help="the server's render processes (default: app.RENDER_PROCESSES, one per core; 0: none)")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="the server's queue concurrency (default: app.RENDER_CONCURRENCY)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the server subprocess
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.potentials, args.port, args.threads, args.render_processes, args.concurrency)
    if args.profile:
        return profile(args.potentials, args.requests, args.threads)
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
    for name in ("render_processes", "concurrency"):
        if getattr(args, name) is not None and getattr(args, name) < (0 if name == "render_processes" else 1):
            parser.error(f"--{name.replace('_', '-')} is too small: {getattr(args, name)}")
    proc, settings = start_server(args.potentials, args.threads, render_processes=args.render_processes,
                                  concurrency=args.concurrency)
    settings["potentials"] = args.potentials
    try:
        import gradio
        import torch
        print(f"machine: {platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, python "
              f"{platform.python_version()}, torch {torch.__version__}, gradio {gradio.__version__}; "
              f"load average before {before}")
        print(f"server: {args.potentials} (K = {settings['num_potentials']}), torch threads "
              f"{settings['torch_threads']}, queue concurrency {settings['concurrency']}, render processes "
              f"{settings['render_processes']}; controls: "
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
