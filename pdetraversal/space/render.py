"""The Space's matplotlib figures (landscape, trajectories, path shapes; `pdetraversal.plots.render`) drawn in a pool
of spawned processes (no paper equation).

Drawing is Python-bound, so in the server's own process it held the GIL and ran one figure at a time however many
cores there were; a pool of processes, one per core, draws the figures of concurrent requests at once while each
request's own thread decodes its frames. Each process keeps its figures and draws them again (`plots.render`).
bench/load.py measures the Space under concurrent users (bench/results/load.md).
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from PIL import Image

from pdetraversal import plots

log = logging.getLogger("pdetraversal.app")

# matplotlib's font cache is shared and not thread-safe: two figures drawn at once in one process failed with
# "FT_Load_Glyph ... invalid outline" (and could take the process down) under bench/load.py. Figures drawn in this
# process (no render processes) are drawn one at a time.
_MATPLOTLIB = threading.Lock()


class Renderer:
    """Draws figures (`plots.render`) in `processes` spawned processes, so the figures of concurrent requests use
    every core and leave this process's GIL to gradio and torch.

    The pool starts on first use (`start` starts it early); each process draws a landscape and a trajectory figure
    as it starts (`plots.render_process_start`), so no request pays for importing matplotlib or loading fonts. With
    0 processes, or once the pool could not start or a process died, figures are drawn in this process, one at a
    time (_MATPLOTLIB), and the reason is logged as one warning."""

    def __init__(self, processes: int):
        self.processes, self._pool, self._lock = processes, None, threading.Lock()
        self.in_process = processes < 1  # True: no pool (none asked for, or it failed)

    def start(self) -> None:
        with self._lock:
            if self._pool is not None or self.in_process:
                return
            try:
                self._pool = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=plots.render_process_start)
                for _ in range(self.processes):  # the pool starts a process per piece of work, up to `processes`
                    self._pool.submit(int)
            except (OSError, RuntimeError, ValueError) as e:  # e.g. no semaphores in a sandbox
                self._give_up(f"the render processes did not start ({type(e).__name__}: {e})")

    def wait_started(self, timeout: float = 120.0) -> bool:
        """Start the pool and wait until every process has started (and drawn its warm-up figures); False when
        that took longer than `timeout` or figures are drawn here. bench/load.py waits so before it measures."""
        self.start()
        pool, seen, deadline = self._pool, set(), time.monotonic() + timeout
        while pool is not None and len(seen) < self.processes and time.monotonic() < deadline:
            try:  # a process answers as soon as it is free: ask again until each has answered
                seen.update(f.result(max(0.0, deadline - time.monotonic()))
                            for f in [pool.submit(os.getpid) for _ in range(self.processes)])
            except Exception:  # a timeout or a broken pool: not started
                return False
        return pool is not None and len(seen) >= self.processes

    def submit(self, kind: str, *args, **kwargs):
        """Start drawing plots.render(kind, *args, **kwargs); -> a function that waits for it as an RGB PIL image
        (drawn here instead if its process died)."""
        self.start()
        pool = self._pool
        if pool is not None:
            try:
                drawn = pool.submit(plots.render, kind, *args, **kwargs)
            except (BrokenProcessPool, RuntimeError) as e:  # RuntimeError: the pool was shut down meanwhile
                self._failed(pool, e)
            else:
                def result() -> Image.Image:
                    try:
                        return Image.fromarray(drawn.result())
                    except BrokenProcessPool as e:
                        self._failed(pool, e)
                    return self._here(kind, *args, **kwargs)
                return result
        image = self._here(kind, *args, **kwargs)
        return lambda: image

    @staticmethod
    def _here(kind: str, *args, **kwargs) -> Image.Image:
        with _MATPLOTLIB:
            return Image.fromarray(plots.render(kind, *args, **kwargs))

    def _failed(self, pool: ProcessPoolExecutor, error: Exception) -> None:
        with self._lock:
            if self._pool is pool:  # the first request to see it says why; the others just draw here
                self._give_up(f"a render process failed ({type(error).__name__}: {error})")

    def _give_up(self, why: str) -> None:  # with self._lock held
        log.warning("%s: figures are drawn in the server process from now on", why)
        pool, self._pool, self.in_process = self._pool, None, True
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def shutdown(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
