"""Killable worker processes for plain verifiers (user-registered, without ``batch``).

A plain verifier is arbitrary Python: it may hang on some inputs (a regex that backtracks, a
network call, a loop). Python cannot kill a thread, so each call runs in a worker process
instead: the caller sends ``(name, completion, problem)`` down a pipe and waits up to its
deadline; past it the worker is SIGKILLed (a later call forks a fresh one) and only that
item gets ``timeout``. The rest of the group is scored by the other workers.

Workers are forked from the caller's process (the ``fork`` start method), so they see every
verifier registered so far, wherever it was defined (a test function, a plugin file, a
closure); a worker forked before a later ``register`` is replaced before its next job. They
are started on first use, reused across calls, killed at interpreter exit, and leave on their
own (within a second) if the parent dies. Where ``fork`` is unavailable, ``available()`` is
False and callers run plain verifiers in threads as before.
"""
from __future__ import annotations

import atexit
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from typing import Any, NamedTuple

MAX_WORKERS = 16


class Reply(NamedTuple):
    status: str  # ok | error | timeout
    value: Any  # what the verifier returned (ok) or a one-line message


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` on one line (what a verdict's ``detail`` keeps of an exception)."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split()) if str(exc) else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def available() -> bool:
    return "fork" in mp.get_all_start_methods()


def _orphan_watch(parent: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(0)


def _detach_inherited_pools() -> None:
    """Forget process pools copied from the parent (using them would talk to its workers)."""
    pool = sys.modules.get("reasoner.verifiers.math.pool")
    if pool is not None and hasattr(pool, "_POOL"):
        pool._POOL = None


def _serve(conn: Any, parent: int) -> None:
    """Worker main loop: ``(name, completion, problem)`` in, ``(status, value)`` out."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    threading.Thread(target=_orphan_watch, args=(parent,), daemon=True).start()
    _detach_inherited_pools()
    from reasoner import verifiers
    while True:
        try:
            name, completion, problem = conn.recv()
        except (EOFError, OSError):
            os._exit(0)
        try:
            out = ("ok", verifiers.REGISTRY.get(name)(completion, problem))
        except BaseException as e:  # noqa: BLE001 - any failure becomes an "error" verdict
            out = ("error", one_line(e))
        try:
            conn.send(out)
        except Exception as e:  # noqa: BLE001 - e.g. a result that cannot be pickled
            conn.send(("error", f"the verifier's result could not be sent back: {one_line(e)}"))


def _registry_version() -> tuple:
    from reasoner import verifiers
    return tuple((n, id(verifiers.REGISTRY._items[n])) for n in verifiers.REGISTRY.names())


_FORK_LOCK = threading.Lock()  # one fork at a time: a worker must not inherit another's pipe ends


class _Worker:
    def __init__(self) -> None:
        ctx = mp.get_context("fork")
        self.version = _registry_version()
        with _FORK_LOCK:
            self.conn, child = ctx.Pipe(duplex=True)
            self.proc = ctx.Process(target=_serve, args=(child, os.getpid()), daemon=True, name="verifier-worker")
            self.proc.start()
            child.close()

    def kill(self) -> None:
        try:
            os.kill(self.proc.pid, signal.SIGKILL)
        except (OSError, TypeError):
            pass
        self.proc.join(5.0)
        self.conn.close()


class Pool:
    """At most ``size`` workers; ``run`` waits for a free one, then enforces the deadline."""

    def __init__(self, size: int | None = None):
        self.size = size or max(4, min(MAX_WORKERS, 2 * (os.cpu_count() or 1)))
        self._idle: list[_Worker] = []
        self._busy = 0
        self._cv = threading.Condition()
        self.kills = 0

    def _acquire(self) -> _Worker:
        with self._cv:
            while not self._idle and self._busy >= self.size:
                self._cv.wait(0.5)
            self._busy += 1
            w = self._idle.pop() if self._idle else None
        if w is not None and w.version == _registry_version() and w.proc.is_alive():
            return w
        if w is not None:
            w.kill()
        try:
            return _Worker()
        except BaseException:
            self._done(None)
            raise

    def _done(self, w: _Worker | None) -> None:
        with self._cv:
            self._busy -= 1
            if w is not None:
                self._idle.append(w)
            self._cv.notify()

    def run(self, name: str, completion: str, problem: Any, timeout: float) -> Reply:
        """Call verifier ``name`` on one item in a worker; kill it after ``timeout`` seconds."""
        w = self._acquire()
        try:
            w.conn.send((name, completion, problem))
        except Exception as e:  # noqa: BLE001 - an unpicklable problem, or a dead worker
            self._done(w if w.proc.is_alive() else None)
            return Reply("error", f"could not send the problem to a verifier worker: {one_line(e)}")
        try:
            if w.conn.poll(timeout):
                status, value = w.conn.recv()
                self._done(w)
                return Reply(status, value)
        except (EOFError, OSError) as e:
            w.kill()
            self._done(None)
            return Reply("error", f"the verifier worker died: {one_line(e)}")
        w.kill()
        self.kills += 1
        self._done(None)
        return Reply("timeout", None)

    def close(self) -> None:
        with self._cv:
            idle, self._idle = self._idle, []
        for w in idle:
            w.kill()


_POOL: Pool | None = None
_LOCK = threading.Lock()


def get_pool() -> Pool:
    global _POOL
    with _LOCK:
        if _POOL is None:
            _POOL = Pool()
            atexit.register(shutdown)
        return _POOL


def shutdown() -> None:
    """Kill every idle worker now (busy ones are killed by their caller's deadline)."""
    global _POOL
    with _LOCK:
        pool, _POOL = _POOL, None
    if pool is not None:
        pool.close()
