"""The process sandbox itself (real bubblewrap, real cgroups when writable)."""
import os
import time
from pathlib import Path

import pytest

from reasoner.verifiers import sandbox
from reasoner.verifiers.sandbox import cgroups

ROOT = Path(__file__).resolve().parents[1]  # the project checkout


def test_runs_program_and_feeds_stdin():
    r = sandbox.run_python("import sys; print(sys.stdin.read()[::-1])", b"abc")
    assert (r.returncode, r.stdout, r.timed_out, r.truncated) == (0, b"cba\n", False, False)


def test_deadline_kills_and_reports_timeout():
    t = time.monotonic()
    r = sandbox.run_python("while True: pass", limits=sandbox.Limits(wall_s=0.5))
    assert r.timed_out and r.returncode is None and time.monotonic() - t < 3


def test_stdout_is_capped():
    r = sandbox.run_python("import os\nwhile True: os.write(1, b'x' * 65536)", limits=sandbox.Limits(stdout_bytes=1000))
    assert r.truncated and len(r.stdout) == 1000


def test_environment_is_clean():
    os.environ["SBX_LEAK"] = "1"
    try:
        r = sandbox.run_python("import os; print(sorted(os.environ))")
    finally:
        del os.environ["SBX_LEAK"]
    assert b"SBX_LEAK" not in r.stdout and r.returncode == 0


def test_strong_isolation_hides_project_and_network(tmp_path):
    if sandbox.isolation_report()["level"] != "strong":
        pytest.skip("bubblewrap unavailable: " + sandbox.isolation_report().get("why_weak", ""))
    canary = tmp_path / "canary.txt"  # a host file outside the checkout
    canary.write_text("host secret")
    hidden = [canary, ROOT / "pyproject.toml", Path(__file__).resolve()]  # and the checkout, wherever it lives
    hidden += [p for p in [Path.home() / ".ssh"] if p.exists()]  # the host user's keys, where there are any
    assert all(p.exists() for p in hidden)
    src = (f"import os, socket; print(*[os.path.exists(p) for p in {[str(p) for p in hidden]!r}],"
           " os.getuid(), len(socket.if_nameindex()))")
    assert sandbox.run_python(src).stdout.split() == [b"False"] * len(hidden) + [b"65534", b"1"]


def test_cgroup_limits_processes_and_is_removed():
    if cgroups.detect() is None:
        pytest.skip("no writable cgroup on this machine")
    src = "import os\nn = 0\ntry:\n    while n < 500:\n        if os.fork() == 0:\n            import time; time.sleep(5); os._exit(0)\n        n += 1\nexcept OSError:\n    pass\nprint(n)"
    r = sandbox.run_python(src, limits=sandbox.Limits(nproc=20))
    assert int(r.stdout) < 20
    base = cgroups._setup()[1][0]
    assert [d for d in os.listdir(base) if d.startswith(f"r{os.getpid()}-")] == []


def test_weak_level_still_limits_time_and_env():
    r = sandbox.run_python("import os; print(len(os.environ))", level="weak")
    assert r.returncode == 0 and int(r.stdout) <= 3
    assert sandbox.run_python("while True: pass", limits=sandbox.Limits(wall_s=0.3), level="weak").timed_out


def test_isolation_report_names_level():
    rep = sandbox.isolation_report()
    assert rep["level"] in ("strong", "weak") and "cgroup" in rep
