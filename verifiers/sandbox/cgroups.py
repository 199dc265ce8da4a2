"""A per-run cgroup (v2 unified, or the v1 ``pids`` + ``memory`` hierarchies) when writable.

``detect()`` names what works here (``"v2"``, ``"v1"`` or ``None``); ``RunCgroup.create``
makes one run's group with ``pids.max`` and a memory limit, or returns ``None`` where the
machine does not let us (no delegation, read-only cgroupfs): the sandbox then relies on its
PID namespace, rlimits and deadline alone.

``RunCgroup.cpu_seconds()`` is the CPU time used by every process and thread of the run
together (v2 ``cpu.stat`` ``usage_usec``, which every v2 group has; v1 ``cpuacct.usage``
when the ``cpuacct`` hierarchy is writable too), or ``None`` where it cannot be measured.
"""
from __future__ import annotations

import functools
import os
import signal
import time
from dataclasses import dataclass

ROOT = "/sys/fs/cgroup"
GROUP = "reasoner-sandbox"


def _own_paths() -> dict[str, str]:
    """controller (or "" for v2) -> this process's cgroup path."""
    out: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            for c in ctrls.split(",") if ctrls else [""]:
                out[c] = path
    return out


def _try_write(path: str, value: str) -> bool:
    try:
        with open(path, "w") as f:
            f.write(value)
        return True
    except OSError:
        return False


def _base_dirs_v1() -> list[str] | None:
    """pids and memory (required), then cpuacct (optional: CPU accounting)."""
    own = _own_paths()
    dirs = []
    for ctrl in ("pids", "memory", "cpuacct"):
        mount = os.path.join(ROOT, ctrl)
        if ctrl not in own or not os.path.isdir(mount):
            if ctrl == "cpuacct":
                break
            return None
        dirs.append(os.path.join(mount, own[ctrl].lstrip("/"), GROUP))
    return dirs


def _base_dirs_v2() -> list[str] | None:
    if not os.path.exists(os.path.join(ROOT, "cgroup.controllers")):
        return None
    base = os.path.join(ROOT, _own_paths().get("", "/").lstrip("/"), GROUP)
    os.makedirs(base, exist_ok=True)
    if not _try_write(os.path.join(base, "cgroup.subtree_control"), "+pids +memory"):
        return None
    return [base]


@functools.lru_cache(maxsize=1)
def _setup() -> tuple[str | None, tuple[str, ...]]:
    for kind, fn in (("v2", _base_dirs_v2), ("v1", _base_dirs_v1)):
        try:
            dirs = fn()
            if dirs is None:
                continue
            for i, d in enumerate(list(dirs)):
                try:
                    os.makedirs(d, exist_ok=True)
                except OSError:
                    if kind == "v2" or i < 2:
                        raise
                    dirs = dirs[:i]  # no writable cpuacct: limits still work, CPU is not measured
                    break
            probe = RunCgroup._make(kind, tuple(dirs), f"probe{os.getpid()}", 64, 8)
            if probe is not None:
                probe.remove()
                return kind, tuple(dirs)
        except OSError:
            continue
    return None, ()


def detect() -> str | None:
    return _setup()[0]


@dataclass
class RunCgroup:
    kind: str
    dirs: tuple[str, ...]

    @property
    def procs_files(self) -> list[str]:
        return [os.path.join(d, "cgroup.procs") for d in self.dirs]

    @classmethod
    def create(cls, name: str, memory_mb: int, nproc: int) -> "RunCgroup | None":
        kind, bases = _setup()
        return cls._make(kind, bases, name, memory_mb, nproc) if kind else None

    @classmethod
    def _make(cls, kind: str, bases: tuple[str, ...], name: str, memory_mb: int, nproc: int) -> "RunCgroup | None":
        dirs: tuple[str, ...] = ()
        for i, b in enumerate(bases):
            try:
                os.mkdir(os.path.join(b, name))
                dirs += (os.path.join(b, name),)
            except OSError:
                if kind == "v2" or i < 2:  # pids/memory are required; cpuacct is optional
                    cls(kind, dirs).remove()
                    return None
        cg = cls(kind, dirs)
        mem = str(memory_mb << 20)
        if kind == "v2":
            ok = _try_write(os.path.join(dirs[0], "pids.max"), str(nproc)) and \
                _try_write(os.path.join(dirs[0], "memory.max"), mem)
            _try_write(os.path.join(dirs[0], "memory.swap.max"), "0")
        else:
            ok = _try_write(os.path.join(dirs[0], "pids.max"), str(nproc)) and \
                _try_write(os.path.join(dirs[1], "memory.limit_in_bytes"), mem)
        if not ok:
            cg.remove()
            return None
        return cg

    def pids(self) -> list[int]:
        out: list[int] = []
        for f in self.procs_files:
            try:
                with open(f) as fh:
                    out += [int(x) for x in fh.read().split()]
            except OSError:
                pass
        return out

    def cpu_seconds(self) -> float | None:
        """CPU seconds used so far by the whole group (user + system), None if not measurable."""
        try:
            if self.kind == "v2":
                with open(os.path.join(self.dirs[0], "cpu.stat")) as f:
                    for line in f:
                        if line.startswith("usage_usec "):
                            return int(line.split()[1]) / 1e6
                return None
            if len(self.dirs) < 3:
                return None
            with open(os.path.join(self.dirs[2], "cpuacct.usage")) as f:
                return int(f.read()) / 1e9
        except (OSError, ValueError):
            return None

    def kill_all(self) -> None:
        """SIGKILL every process in the group until it is empty (bounded)."""
        if self.kind == "v2" and _try_write(os.path.join(self.dirs[0], "cgroup.kill"), "1"):
            return
        for _ in range(100):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.002)

    def remove(self) -> None:
        for d in self.dirs:
            for _ in range(200):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:  # still busy: processes exiting
                    self.kill_all()
                    time.sleep(0.005)


def measures_cpu() -> bool:
    """Whether a run's cgroup here reports CPU time (so the parent can enforce the CPU budget)."""
    kind, bases = _setup()
    return kind == "v2" or len(bases) >= 3
