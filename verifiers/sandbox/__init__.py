"""Run an untrusted Python program in a throw-away, isolated process tree.

``run_python(source, stdin, limits)`` starts ``python -I -S -c source`` (stdlib only, no
site-packages, no environment) and returns a ``RunResult``. What isolates it, strongest first:

* **bubblewrap** (``level == "strong"``): new user, PID, network, IPC, UTS, mount and cgroup
  namespaces; uid 65534 with every capability dropped and ``no_new_privs``; a read-only root
  made of ``/usr`` and the Python install only (never ``/``, never the project or ``$HOME``);
  a private size-capped ``/tmp``; loopback-only network; ``--clearenv``; ``--new-session``
  (no TTY injection); ``--die-with-parent``. Killing the outer bwrap kills the sandbox's PID 1,
  which makes the kernel kill every process of the namespace: daemons, double forks and
  ``setsid`` children included.
* **cgroup** (v1 or v2, when writable): a per-run cgroup with ``pids.max`` and a memory limit,
  joined before bwrap starts; every process still in it is SIGKILLed when the run ends.
  (When bwrap runs as root the sandbox's uid maps to root outside, so ``RLIMIT_NPROC`` is not
  enforced by the kernel: the pids cgroup is what stops fork bombs there.)
* **rlimits**, set by the trusted harness before any untrusted line runs (hard limits, so the
  program cannot raise them): CPU seconds, address space, file size, open files, no core.
* **The parent** enforces the time limits (then kills the whole process group and cgroup) and
  caps the bytes read from stdout and stderr.

Time limits measure the program, not the host. ``Limits.cpu_s`` is the deadline for work: the
CPU time of every process and thread of the run together, read from the run's cgroup (polled
by the parent), so a correct program gets the same budget on an idle or a loaded machine.
``Limits.wall_s`` is only a safety net for programs that sleep or block (``wall_for`` gives
a generous default). Where no cgroup measures CPU, ``RLIMIT_CPU`` (per process) is the CPU
limit and a run killed by it is reported as such. ``RunResult.limit`` says which one fired:
``"cpu"``, ``"wall"`` or ``None``.

Without bwrap (``level == "weak"``) only the process group, clean environment, rlimits,
cgroup, deadline and output caps remain: the program can read the machine's files and use the
network. ``isolation_report()`` says which level this machine gets.
"""
from __future__ import annotations

import functools
import itertools
import math
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import NamedTuple

from reasoner.verifiers.sandbox import cgroups


WALL_FACTOR = 3.0  # the wall-clock safety net: max(WALL_FACTOR * cpu_s, cpu_s + WALL_EXTRA_S)
WALL_EXTRA_S = 20.0


def wall_for(cpu_s: float) -> float:
    """The default wall-clock safety net for a CPU budget (generous: only sleepers hit it)."""
    return max(WALL_FACTOR * cpu_s, cpu_s + WALL_EXTRA_S)


@dataclass(frozen=True)
class Limits:
    wall_s: float = 40.0  # safety net for sleeping or blocked programs, enforced by the parent
    cpu_s: float = 10.0  # CPU seconds of the whole run (cgroup, polled by the parent; else RLIMIT_CPU)
    memory_mb: int = 1024  # RLIMIT_AS and the cgroup memory limit
    nproc: int = 64  # pids.max of the run's cgroup (processes + threads)
    fsize_mb: int = 16  # RLIMIT_FSIZE, and the size of the private /tmp
    nofile: int = 64  # RLIMIT_NOFILE
    stdout_bytes: int = 4 << 20  # bytes kept from stdout; more is a truncated, killed run
    stderr_bytes: int = 64 << 10


class RunResult(NamedTuple):
    returncode: int | None  # None when killed by a time limit or the output cap
    stdout: bytes
    stderr: bytes
    timed_out: bool
    truncated: bool  # stdout went over limits.stdout_bytes
    wall_s: float
    limit: str | None = None  # the time limit that fired: "cpu", "wall", or None
    cpu_s: float | None = None  # CPU seconds the run used (None where not measured)

    def why_timed_out(self, limits: "Limits") -> str:
        """One line: which limit stopped the run."""
        if self.limit == "cpu":
            return f"CPU time limit of {limits.cpu_s:g}s reached"
        used = "" if self.cpu_s is None else f" with {self.cpu_s:.2f}s of CPU used"
        return f"wall-clock safety limit of {limits.wall_s:g}s reached{used} (sleeping or blocked)"


def rlimit_cpu(limits: Limits) -> int:
    """RLIMIT_CPU seconds for the harness: a backstop 1s past the budget where the cgroup
    measures CPU, else the budget itself (then it is the CPU limit)."""
    return math.ceil(limits.cpu_s) + (1 if cgroups.measures_cpu() else 0)


_SBX_PY = "/sbx/python"  # where the Python install is mounted inside the sandbox
_counter = itertools.count()


def _python_home() -> str:
    return os.path.realpath(sys.base_prefix)


def _python_exe() -> str:
    """The base interpreter (not a venv shim): its install is all the sandbox sees."""
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    exe = os.path.join(_python_home(), "bin", ver)
    return exe if os.path.exists(exe) else os.path.realpath(sys.executable)


def _root_links() -> list[str]:
    """``/bin``, ``/lib``... as symlinks into ``/usr`` (merged-usr) or read-only binds."""
    args: list[str] = []
    for d in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(d):
            args += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            args += ["--ro-bind", d, d]
    return args


def bwrap_argv(limits: Limits) -> list[str]:
    """The bubblewrap command line (without the program); see the module docstring."""
    home = _python_home()
    exe = _python_exe()
    inner_exe = exe.replace(home, _SBX_PY, 1) if exe.startswith(home) else exe
    return [
        shutil.which("bwrap") or "bwrap",
        "--unshare-all", "--unshare-user", "--disable-userns",
        "--die-with-parent", "--new-session",
        "--uid", "65534", "--gid", "65534", "--cap-drop", "ALL",
        "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp",
        "--setenv", "LANG", "C.UTF-8",
        "--ro-bind", "/usr", "/usr", *_root_links(),
        "--ro-bind", home, _SBX_PY,
        "--proc", "/proc", "--dev", "/dev",
        "--size", str(limits.fsize_mb << 20), "--tmpfs", "/tmp",
        "--chdir", "/tmp", "--hostname", "sandbox",
        "--remount-ro", "/",
        "--", inner_exe,
    ]


def _argv(level: str, limits: Limits, source: str) -> list[str]:
    py = ["-I", "-S", "-c", source]
    if level == "strong":
        return bwrap_argv(limits) + py
    return [_python_exe()] + py


_POLL_S = 0.05  # how often the parent reads the run's CPU time
_CPU_KILL_CODES = (-signal.SIGKILL, -signal.SIGXCPU, 128 + signal.SIGKILL, 128 + signal.SIGXCPU)


class _Watch:
    """The two time limits of one run: CPU seconds (read from its cgroup) and wall seconds."""

    def __init__(self, limits: Limits, cg: cgroups.RunCgroup | None, t0: float):
        self.limits, self.cg, self.t0 = limits, cg, t0
        self.meter = cg is not None and cg.cpu_seconds() is not None
        self.fired: str | None = None
        self._next_read = t0

    def cpu(self) -> float | None:
        return self.cg.cpu_seconds() if self.meter else None

    def check(self) -> float:
        """Seconds until the next check is due; sets ``fired`` once a limit is passed."""
        now = time.monotonic()
        wall_left = self.t0 + self.limits.wall_s - now
        if wall_left <= 0:
            self.fired = "wall"
            return 0.0
        if not self.meter:
            return min(wall_left, 1.0)
        if now >= self._next_read:
            self._next_read = now + _POLL_S
            used = self.cpu()
            if used is not None and used >= self.limits.cpu_s:
                self.fired = "cpu"
                return 0.0
        return max(min(wall_left, self._next_read - now), 0.001)


def _drain(fd: int, buf: bytearray, cap: int, until_empty: bool) -> tuple[bool, bool]:
    """Read ``fd`` into ``buf`` (keeping ``cap`` bytes): one chunk, or all that is there when
    ``until_empty``. Returns (done with this pipe, went over the cap)."""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return until_empty, False
        if not chunk:
            return True, False
        room = cap - len(buf)
        buf += chunk[: max(room, 0)]
        if len(chunk) > room:
            return False, True
        if not until_empty:
            return False, False


def _read_capped(proc: subprocess.Popen, limits: Limits, watch: _Watch) -> tuple[bytes, bytes, bool]:
    """Read stdout/stderr until EOF (or the process has exited and the pipes are empty, even
    if a copy of a write end lingers elsewhere), a time limit (``watch.fired``), or the cap."""
    bufs = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    caps = {proc.stdout: limits.stdout_bytes, proc.stderr: limits.stderr_bytes}
    sel = selectors.DefaultSelector()
    for f in bufs:
        os.set_blocking(f.fileno(), False)
        sel.register(f, selectors.EVENT_READ)
    truncated = False
    while sel.get_map() and not truncated:
        wait = watch.check()
        if watch.fired:
            break
        ready = [key.fileobj for key, _ in sel.select(timeout=wait)]
        exited = not ready and proc.poll() is not None
        for f in [key.fileobj for key in sel.get_map().values()] if exited else ready:
            done, over = _drain(f.fileno(), bufs[f], caps[f], exited)
            truncated = truncated or (over and f is proc.stdout)
            if done:
                sel.unregister(f)
    sel.close()
    return bytes(bufs[proc.stdout]), bytes(bufs[proc.stderr]), truncated


def _wait_exit(proc: subprocess.Popen, watch: _Watch) -> int | None:
    """Wait for the process to exit while the time limits hold; None if one fired first."""
    while not watch.fired:
        try:
            return proc.wait(timeout=max(watch.check(), 0.001))
        except subprocess.TimeoutExpired:
            continue
    return None


def _kill_tree(proc: subprocess.Popen, cg: cgroups.RunCgroup | None) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # bwrap and everything still in its group
    except (ProcessLookupError, PermissionError):
        pass
    if cg is not None:
        cg.kill_all()


def _start(level: str, limits: Limits, source: str, cg: cgroups.RunCgroup | None) -> subprocess.Popen:
    """``sh`` joins the run's cgroup (before bwrap forks anything), sets RLIMIT_CPU (hard, so
    every process of the run inherits it), then execs the sandbox."""
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "SBX_CG": " ".join(cg.procs_files) if cg else "",
           "SBX_CPU": str(rlimit_cpu(limits) if cg is not None else math.ceil(limits.cpu_s))}
    script = 'for f in $SBX_CG; do echo $$ > "$f" || exit 97; done; ulimit -t "$SBX_CPU"; unset SBX_CG SBX_CPU; exec "$@"'
    argv = ["/bin/sh", "-c", script, "sh", *_argv(level, limits, source)]
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, cwd="/", start_new_session=True, close_fds=True)


def run_python(source: str, stdin: bytes = b"", limits: Limits = Limits(), level: str | None = None) -> RunResult:
    """Run ``python -I -S -c source`` isolated at ``level`` (default: the best available)."""
    level = level or isolation_report()["level"]
    cg = cgroups.RunCgroup.create(f"r{os.getpid()}-{next(_counter)}", limits.memory_mb, limits.nproc)
    t0 = time.monotonic()
    proc = _start(level, limits, source, cg)
    watch = _Watch(limits, cg, t0)
    rc, cpu = None, None
    try:
        _feed(proc, stdin)
        out, err, truncated = _read_capped(proc, limits, watch)
        if not (watch.fired or truncated):
            rc = _wait_exit(proc, watch)
    finally:
        _kill_tree(proc, cg)  # nothing outlives the run, even on success
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for f in (proc.stdin, proc.stdout, proc.stderr):
            f.close()
        if cg is not None:
            cpu = watch.cpu()
            cg.remove()
    limit = watch.fired
    if limit is None and not truncated and not watch.meter and rc in _CPU_KILL_CODES:
        limit = "cpu"  # no CPU meter here: a run killed by SIGKILL/SIGXCPU hit RLIMIT_CPU
    timed_out = limit is not None
    rc_out = None if (timed_out or truncated) else rc
    return RunResult(rc_out, out, err, timed_out, truncated, time.monotonic() - t0, limit, cpu)


def _feed(proc: subprocess.Popen, data: bytes) -> None:
    """Write stdin (the harness reads it all before running anything untrusted)."""
    try:
        proc.stdin.write(data)
        proc.stdin.close()
    except BrokenPipeError:
        pass


def _probe(level: str) -> tuple[bool, str]:
    src = ("import os,socket;n=len(socket.if_nameindex());"
           "print(os.getuid(), os.getpid(), n, len(os.environ), os.path.exists('/work'), "
           "open('/proc/self/status').read().split('CapEff:')[1].split()[0])")
    try:
        r = run_python(src, limits=Limits(wall_s=20), level=level)
    except OSError as e:
        return False, f"{type(e).__name__}: {e}"
    if r.returncode != 0:
        return False, r.stderr.decode(errors="replace")[-300:]
    return True, r.stdout.decode().strip()


@functools.lru_cache(maxsize=1)
def isolation_report() -> dict:
    """What this machine supports, measured by actually starting a sandbox (cached)."""
    report: dict = {"level": "weak", "bwrap": shutil.which("bwrap"), "cgroup": cgroups.detect(),
                    "rlimits": ["cpu", "as", "fsize", "nofile", "core"], "python": _python_exe()}
    if report["bwrap"]:
        ok, out = _probe("strong")
        report["bwrap_probe"] = out
        if ok:
            uid, pid, n_if, n_env, sees_work, cap = out.split()
            report["namespaces"] = {"user": uid == "65534", "pid": pid in ("1", "2"), "net": n_if == "1",
                                    "mount": sees_work == "False", "clean_env": int(n_env) <= 4,
                                    "no_caps": int(cap, 16) == 0}
            if all(report["namespaces"].values()):
                report["level"] = "strong"
    if report["level"] == "weak":
        report["why_weak"] = ("bubblewrap not installed (apt-get install bubblewrap)" if not report["bwrap"]
                              else f"bubblewrap could not isolate: {report.get('bwrap_probe', '')}")
    return report
