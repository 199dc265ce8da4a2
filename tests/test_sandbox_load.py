"""Sandbox limits measure the program, not the host: correct programs score 1 on a busy machine.

Two CPU burners (``python -c "while True: pass"``) run beside the verifier for each test and
are killed in a ``finally``. The real HumanEval / MBPP files come from ``$REASONER_DATA_DIR``
(default: ``../shared/data`` next to the repository); without them those tests skip.
"""
import json
import subprocess
import sys
import time

import pytest

from reasoner.types import Problem
from reasoner.verifiers import sandbox
from reasoner.verifiers.code import batch, check
from reasoner.verifiers.sandbox import cgroups

from _paths import SHARED_DATA as DATA


@pytest.fixture
def burners():
    """Two processes that burn a core each for the duration of the test."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        time.sleep(0.2)
        yield procs
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def _rows(name: str, file: str) -> list[dict]:
    path = DATA / name / file
    if not path.exists():
        pytest.skip(f"{path} missing (set REASONER_DATA_DIR; see shared/data/SOURCES.md)")
    return [json.loads(line) for line in path.open()]


def _humaneval(rows):
    probs = [Problem(r["task_id"], r["prompt"], verifier="code", tests={
        "format": "humaneval", "prompt": r["prompt"], "test": r["test"], "entry_point": r["entry_point"]})
        for r in rows]
    return [(r["task_id"], v) for r, v in zip(rows, batch([r["canonical_solution"] for r in rows], probs))]


def _mbpp(rows):
    probs = [Problem(str(r["task_id"]), r["text"], verifier="code", tests={
        "format": "mbpp", "test_list": r["test_list"], "setup": r["test_setup_code"]}) for r in rows]
    return [(r["task_id"], v) for r, v in zip(rows, batch([r["code"] for r in rows], probs))]


def _failures(scored):
    return [(tid, v.status, v.detail) for tid, v in scored if v.score != 1.0]


def test_reference_subset_scores_one_under_load(burners):
    he = _rows("humaneval", "HumanEval.jsonl")[::8][:20]
    mb = [r for r in _rows("mbpp", "mbpp.jsonl") if r["task_id"] % 47 == 0 or r["task_id"] == 123][:20]
    assert _failures(_humaneval(he)) == [] and _failures(_mbpp(mb)) == []


@pytest.mark.slow
def test_all_reference_solutions_score_one_under_load(burners):
    he, mb = _rows("humaneval", "HumanEval.jsonl"), _rows("mbpp", "mbpp.jsonl")
    assert (len(he), len(mb)) == (164, 974)
    assert _failures(_humaneval(he)) == []
    assert _failures(_mbpp(mb)) == []


BUSY = ("import time\ndef f(n):\n    t = time.process_time()\n    while time.process_time() - t < {cpu}: pass\n"
        "    return n + 1\n")
CALLS = {"format": "calls", "entry_point": "f", "cases": [{"args": [1], "kwargs": {}, "expected": 2}]}


def test_busy_program_within_its_cpu_budget_passes_under_load(burners):
    """1.1 s of CPU against a 1.5 s budget: beside two burners that is about 1.7 s of wall time,
    which a wall-clock deadline of 1.5 s (the old rule) turned into ``timeout``."""
    if not cgroups.measures_cpu():
        pytest.skip("no cgroup CPU accounting here: RLIMIT_CPU (whole seconds) is the limit")
    v = check(BUSY.format(cpu=1.1), CALLS, timeout=1.5)
    assert v.status == "correct", v.detail


def test_cpu_limit_fires_for_cpu_bound_work_and_says_so(burners):
    t0 = time.monotonic()
    v = check("def f(n):\n    while True: pass", CALLS, timeout=1.0)
    assert v.status == "timeout" and "CPU time limit of 1s" in v.detail, v.detail
    assert time.monotonic() - t0 < sandbox.wall_for(1.0)


def test_wall_limit_fires_for_sleepers_and_says_so():
    v = check("import time\ndef f(n):\n    time.sleep(60)", CALLS, timeout=5.0, wall_timeout=1.5)
    assert v.status == "timeout" and "wall-clock safety limit of 1.5s" in v.detail, v.detail


def test_stdio_case_limits_name_the_limit():
    tests = {"format": "stdio", "cases": [{"input": "", "output": "1"}]}
    v = check("while True: pass", tests, timeout=1.0)
    assert v.status == "timeout" and "CPU time limit of 1s" in v.detail, v.detail
    v = check("import time\ntime.sleep(60)", tests, timeout=1.0, wall_timeout=2.0)
    assert v.status == "timeout" and "wall-clock" in v.detail, v.detail


def test_threads_and_children_share_one_cpu_budget():
    if not cgroups.measures_cpu():
        pytest.skip("no cgroup CPU accounting here")
    src = ("import os, threading\nfor _ in range(3): threading.Thread(target=lambda: [0 for _ in iter(int, 1)],"
           " daemon=True).start()\nif os.fork() == 0:\n    while True: pass\nwhile True: pass")
    r = sandbox.run_python(src, limits=sandbox.Limits(cpu_s=1.0, wall_s=30))
    assert r.timed_out and r.limit == "cpu" and r.cpu_s is not None and r.cpu_s >= 1.0


def test_without_a_cpu_meter_rlimit_cpu_is_the_limit(monkeypatch):
    monkeypatch.setattr(cgroups.RunCgroup, "create", classmethod(lambda cls, *a: None))
    r = sandbox.run_python("while True: pass", limits=sandbox.Limits(cpu_s=1.0, wall_s=30))
    assert r.timed_out and r.limit == "cpu", r
