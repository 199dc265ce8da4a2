"""A persistent pool of killable worker processes for symbolic comparisons.

Each worker owns a pipe. A caller (any thread) takes an idle worker, sends one job, and polls
the pipe until its deadline; past it the worker is SIGKILLed and a replacement is started in the
background. No ``signal.alarm``: this works from any thread and inside any process. Workers are
plain subprocesses that import sympy once and then serve many jobs; a kill is rare (adversarial
input); the kill and the replacement run off the caller's path while a spare warm worker
takes the job stream, so no caller waits for a restart. The pool is created lazily on first use
and torn down at exit.
"""
from __future__ import annotations

import atexit
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NamedTuple

STARTUP_TIMEOUT = 120.0  # seconds a fresh worker may take to import sympy (not part of a deadline)


class Result(NamedTuple):
    status: str  # ok | timeout | error
    value: Any  # the job's return value (ok) or a short message
    seconds: float


def _serve(conn) -> None:
    """Worker main loop: warm up, then answer ``(fn_name, args)`` jobs forever."""
    from reasoner.verifiers.math import symbolic

    symbolic.warmup()
    try:
        conn.send("ready")
    except OSError:  # the parent left while this worker was warming up
        return
    while True:
        try:
            name, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            out = ("ok", getattr(symbolic, name)(*args))
        except BaseException as e:  # noqa: BLE001 - any failure becomes an "error" verdict
            out = ("error", f"{type(e).__name__}: {e}"[:200])
        try:
            conn.send(out)
        except (OSError, ValueError):
            return


def _orphan_watch(parent: int) -> None:
    """Exit when the parent is gone, even if the main thread is stuck inside sympy."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)


def serve_fd(fd: int, parent: int) -> None:
    """Entry point of a worker subprocess: ``fd`` is its end of a socketpair. Ctrl-C is the trainer's to
    handle (it checkpoints and exits); the worker ignores it and ends with its parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_orphan_watch, args=(parent,), daemon=True).start()
    _serve(Connection(fd))


_ROOT = str(Path(__file__).resolve().parents[2])  # the directory holding the verifiers package


class _Worker:
    """One plain subprocess (no multiprocessing start method, so the caller's ``__main__`` is
    never re-imported) talking pickles over a socketpair."""

    def __init__(self):
        self.conn, child = mp.Pipe(duplex=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = _ROOT + os.pathsep + env.get("PYTHONPATH", "")
        code = f"from reasoner.verifiers.math.pool import serve_fd; serve_fd({child.fileno()}, {os.getpid()})"
        self.proc = subprocess.Popen([sys.executable, "-c", code], pass_fds=(child.fileno(),), env=env,
                                     stdin=subprocess.DEVNULL, close_fds=True)
        child.close()

    def wait_ready(self, timeout: float) -> bool:
        try:
            return self.conn.poll(timeout) and self.conn.recv() == "ready"
        except (EOFError, OSError):
            return False

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(5.0)
        except (OSError, subprocess.TimeoutExpired):
            pass
        try:
            self.conn.close()
        except OSError:
            pass


class WorkerPool:
    """``size`` workers plus ``spare`` warm ones; ``run`` takes an idle worker and enforces the
    deadline. A worker killed at its deadline is replaced in the background and the spare takes its
    place at once, so a restart is never charged to any caller: every call returns within its
    limit (plus scheduling noise). Until every slot has started once, waiting for a starting worker
    is not charged to the job: on a busy machine importing sympy takes seconds, and a verdict must
    not depend on that. Later, waiting counts: behind other callers' jobs, or for a replacement when
    kills come faster than the spare covers (``warm()`` starts everything up front)."""

    def __init__(self, size: int | None = None, spare: int = 1):
        self.size = size or default_size()
        self.spare = spare
        self._idle: list[_Worker] = []
        self._alive = 0  # started or starting
        self._cv = threading.Condition()
        self._closed = False
        self._ready_once = False  # some worker has been ready
        self._busy = 0  # workers handed to a caller, not yet back
        self._filled = False  # every slot has been started once (later starts are replacements)
        self._failed_starts = 0
        self.kills = 0

    @property
    def capacity(self) -> int:
        return self.size + self.spare

    def _start_one(self) -> _Worker | None:
        w = _Worker()
        if w.wait_ready(STARTUP_TIMEOUT):
            return w
        w.kill()
        return None

    def _spawn_locked(self) -> None:
        """Start one worker in the background (caller holds the lock)."""
        self._alive += 1
        threading.Thread(target=self._add_started, daemon=True, name="math-worker-start").start()

    def _acquire(self, deadline: float) -> tuple[_Worker | None, bool]:
        """An idle worker, or None when none is free by ``deadline``. Missing workers are started
        in the background; the returned flag says the caller waited for the pool's first start."""
        first = False
        with self._cv:
            while True:
                if self._closed:
                    raise RuntimeError("worker pool is closed")
                if self._idle:
                    self._busy += 1
                    return self._idle.pop(), first
                if self._alive < self.capacity:
                    self._spawn_locked()
                starting = self._alive - self._busy  # none idle: the rest are importing sympy
                if not self._ready_once or (starting > 0 and not self._filled):  # first starts: uncharged
                    if self._failed_starts and self._alive == 0:
                        raise RuntimeError("math worker failed to start")
                    first = True
                    self._cv.wait(0.5)
                    continue
                left = deadline - time.perf_counter()
                if left <= 0:
                    return None, False
                self._cv.wait(min(left, 0.5))

    def _release(self, w: _Worker, busy: bool = True) -> None:
        with self._cv:
            self._busy -= busy
            if self._closed:
                self._alive -= 1
                threading.Thread(target=w.kill, daemon=True).start()
            else:
                self._idle.append(w)
                self._ready_once = True
                self._filled |= self._alive >= self.capacity and len(self._idle) + self._busy >= self._alive
            self._cv.notify_all()

    def _forget(self, failed: bool = False) -> None:
        with self._cv:
            self._alive -= 1
            self._failed_starts += failed
            self._cv.notify_all()

    def _discard(self, w: _Worker) -> None:
        """Kill ``w`` and start its replacement, both off the caller's path."""
        with self._cv:
            self._busy -= 1

        def work():
            w.kill()
            self._forget()
            with self._cv:
                if not self._closed and self._alive < self.capacity:
                    self._spawn_locked()
        threading.Thread(target=work, daemon=True, name="math-worker-respawn").start()

    def run(self, fn_name: str, args: tuple, timeout: float) -> Result:
        """Run ``symbolic.<fn_name>(*args)`` in a worker; kill it if ``timeout`` seconds pass."""
        t0 = time.perf_counter()
        deadline = t0 + timeout
        w, first = self._acquire(deadline)
        if w is None:
            return Result("timeout", f"no worker free within {timeout:g}s", time.perf_counter() - t0)
        if first:  # the pool's one-off first start is not charged to the job
            t0 = time.perf_counter()
            deadline = t0 + timeout
        try:
            w.conn.send((fn_name, args))
            if w.conn.poll(max(0.0, deadline - time.perf_counter())):
                status, value = w.conn.recv()
                self._release(w)
                return Result(status, value, time.perf_counter() - t0)
        except (EOFError, OSError, BrokenPipeError) as e:
            self._discard(w)
            return Result("error", f"worker died: {type(e).__name__}", time.perf_counter() - t0)
        self.kills += 1
        self._discard(w)
        return Result("timeout", f"no result within {timeout:g}s", time.perf_counter() - t0)

    def warm(self) -> None:
        """Start every worker (and the spare) now, in parallel, instead of on first need."""
        with self._cv:
            for _ in range(self.capacity - self._alive):
                self._spawn_locked()
        self.wait_ready()

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> bool:
        """Block until all workers and the spare are started and idle (e.g. after kills)."""
        end = time.perf_counter() + timeout
        with self._cv:
            for _ in range(self.capacity - self._alive):
                self._spawn_locked()
            while len(self._idle) < self.capacity and time.perf_counter() < end:
                if self._alive < self.capacity:
                    self._spawn_locked()
                self._cv.wait(0.2)
            return len(self._idle) >= self.capacity

    def _add_started(self) -> None:
        w = self._start_one()
        if w is None:
            self._forget(failed=True)
        else:
            self._release(w, busy=False)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            idle, self._idle = self._idle, []
            self._alive -= len(idle)
            self._cv.notify_all()
        for w in idle:
            w.kill()


def default_size() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 1
    return max(1, min(n, 32))


_POOL: WorkerPool | None = None
_POOL_LOCK = threading.Lock()


def get_pool() -> WorkerPool:
    """The process-wide pool, created on first use (never at import)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL._closed:
            _POOL = WorkerPool()
            atexit.register(_POOL.close)
        return _POOL


def shutdown() -> None:
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None:
            _POOL.close()
            _POOL = None
