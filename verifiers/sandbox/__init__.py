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
* **The parent** enforces the wall-clock deadline (then kills the whole process group and
  cgroup) and caps the bytes read from stdout and stderr.

Without bwrap (``level == "weak"``) only the process group, clean environment, rlimits,
cgroup, deadline and output caps remain: the program can read the machine's files and use the
network. ``isolation_report()`` says which level this machine gets.
"""
from __future__ import annotations

import functools
import itertools
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import NamedTuple

from verifiers.sandbox import cgroups


@dataclass(frozen=True)
class Limits:
    wall_s: float = 10.0  # enforced by the parent
    cpu_s: int = 10  # RLIMIT_CPU (all threads together)
    memory_mb: int = 1024  # RLIMIT_AS and the cgroup memory limit
    nproc: int = 64  # pids.max of the run's cgroup (processes + threads)
    fsize_mb: int = 16  # RLIMIT_FSIZE, and the size of the private /tmp
    nofile: int = 64  # RLIMIT_NOFILE
    stdout_bytes: int = 4 << 20  # bytes kept from stdout; more is a truncated, killed run
    stderr_bytes: int = 64 << 10


class RunResult(NamedTuple):
    returncode: int | None  # None when killed by the deadline or the output cap
    stdout: bytes
    stderr: bytes
    timed_out: bool
    truncated: bool  # stdout went over limits.stdout_bytes
    wall_s: float


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


def _read_capped(proc: subprocess.Popen, limits: Limits, deadline: float) -> tuple[bytes, bytes, bool, bool]:
    """Read stdout/stderr until EOF, the deadline, or the stdout cap (then kill)."""
    bufs = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    caps = {proc.stdout: limits.stdout_bytes, proc.stderr: limits.stderr_bytes}
    sel = selectors.DefaultSelector()
    for f in bufs:
        os.set_blocking(f.fileno(), False)
        sel.register(f, selectors.EVENT_READ)
    timed_out = truncated = False
    while sel.get_map():
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        for key, _ in sel.select(timeout=min(left, 1.0)):
            f = key.fileobj
            try:
                chunk = os.read(f.fileno(), 65536)
            except BlockingIOError:
                continue
            if not chunk:
                sel.unregister(f)
                continue
            buf = bufs[f]
            room = caps[f] - len(buf)
            buf += chunk[: max(room, 0)]
            if len(chunk) > room and f is proc.stdout:
                truncated = True
        if truncated:
            break
    sel.close()
    return bytes(bufs[proc.stdout]), bytes(bufs[proc.stderr]), timed_out, truncated


def _kill_tree(proc: subprocess.Popen, cg: cgroups.RunCgroup | None) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # bwrap and everything still in its group
    except (ProcessLookupError, PermissionError):
        pass
    if cg is not None:
        cg.kill_all()


def run_python(source: str, stdin: bytes = b"", limits: Limits = Limits(), level: str | None = None) -> RunResult:
    """Run ``python -I -S -c source`` isolated at ``level`` (default: the best available)."""
    level = level or isolation_report()["level"]
    cg = cgroups.RunCgroup.create(f"r{os.getpid()}-{next(_counter)}", limits.memory_mb, limits.nproc)
    argv = _argv(level, limits, source)
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    if cg is not None:  # join the run's cgroup(s) before bwrap forks anything
        env["SBX_CG"] = " ".join(cg.procs_files)
        argv = ["/bin/sh", "-c", 'for f in $SBX_CG; do echo $$ > "$f" || exit 97; done; unset SBX_CG; exec "$@"',
                "sh", *argv]
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, cwd="/",
                            start_new_session=True, close_fds=True)
    try:
        _feed(proc, stdin)
        out, err, timed_out, truncated = _read_capped(proc, limits, t0 + limits.wall_s)
        if timed_out or truncated:
            _kill_tree(proc, cg)
        try:
            rc = proc.wait(timeout=max(0.5, t0 + limits.wall_s + 1 - time.monotonic()))
        except subprocess.TimeoutExpired:
            _kill_tree(proc, cg)
            rc = proc.wait()
            timed_out = True
    finally:
        _kill_tree(proc, cg)  # nothing outlives the run, even on success
        for f in (proc.stdin, proc.stdout, proc.stderr):
            f.close()
        if cg is not None:
            cg.remove()
    rc_out = None if (timed_out or truncated) else rc
    return RunResult(rc_out, out, err, timed_out, truncated, time.monotonic() - t0)


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
