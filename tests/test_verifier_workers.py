"""Plain verifiers run in killable workers: a hung input costs one ``timeout``, the rest of the
group is judged, nothing outlives the run; exception text in ``detail``; ``check_names`` and
``load_plugins``."""
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from reasoner import verifiers
from reasoner.types import Problem
from reasoner.verifiers import Verdict, workers

ROOT = Path(__file__).resolve().parent.parent


@verifiers.register("w_hangs_on_1")
def _hangs_on_1(completion, problem):
    if completion.startswith("1"):
        while True:
            time.sleep(0.05)
    ok = completion == problem.answer
    return Verdict(float(ok), "correct" if ok else "wrong", completion, "")


@verifiers.register("w_raises")
def _raises(completion, problem):
    raise ValueError(f"cannot read\n{completion!r}")


def _probs(name, n, answer="2"):
    return [Problem(str(i), "x", answer, verifier=name, source="unit.jsonl") for i in range(n)]


def test_one_hung_input_costs_one_timeout_and_the_rest_is_judged():
    comps = ["2", "1a", "3", "2", "1b", "x", "2", "1c"]
    kills = workers.get_pool().kills
    t0 = time.monotonic()
    out = verifiers.score_all(comps, _probs("w_hangs_on_1", len(comps)), timeout=1.0)
    wall = time.monotonic() - t0
    assert [v.status for v in out] == ["correct", "timeout", "wrong", "correct", "timeout", "wrong", "correct", "timeout"]
    assert all("did not answer within 1s" in v.detail for v in out if v.status == "timeout")
    assert workers.get_pool().kills - kills == 3
    assert wall < 1.0 * -(-3 // workers.get_pool().size) + 4.0, wall  # the hung ones overlap, the rest are quick
    assert not [t for t in threading.enumerate() if t.name.startswith("verifier-wait")]


def test_exception_text_is_kept_on_one_line():
    v = verifiers.score_all(["a b"], _probs("w_raises", 1))[0]
    assert v.status == "error" and v.detail == "ValueError: cannot read 'a b'", v.detail
    assert verifiers.error_verdict(KeyError("k")).detail == "KeyError: 'k'"


def test_verifier_registered_after_the_workers_started_is_found():
    verifiers.score_all(["2"], _probs("w_hangs_on_1", 1))
    name = f"w_late_{uuid.uuid4().hex[:6]}"
    verifiers.register(name)(lambda c, p: Verdict(1.0, "correct", c, "late"))
    assert verifiers.score_all(["z"], _probs(name, 1))[0].detail == "late"


def test_in_process_verifier_runs_in_a_thread():
    pid = os.getpid()

    def here(c, p):
        return Verdict(float(os.getpid() == pid), "correct", c, "")
    here.in_process = True
    verifiers.register(f"w_inline_{uuid.uuid4().hex[:6]}")(here)
    name = [n for n in verifiers.names() if n.startswith("w_inline_")][-1]
    assert verifiers.score_all(["a"], _probs(name, 1))[0].score == 1.0


EXIT_SCRIPT = """
import sys, time
sys.path.insert(0, {root!r})
from reasoner import verifiers
from reasoner.types import Problem
@verifiers.register("hang_forever")
def hang(c, p):
    time.sleep(10_000)
@verifiers.register("hang_inline")
def hang_inline(c, p):
    time.sleep(10_000)
hang_inline.in_process = True
out = verifiers.score_all(["1", "2"], [Problem("a", "x", verifier="hang_forever"),
                                       Problem("b", "x", verifier="hang_inline")], timeout=0.5)
print([v.status for v in out], "{token}")
"""


def _procs_with(token):
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if token.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            pass
    return found


def test_nothing_hangs_on_exit_and_no_worker_outlives_the_process():
    token = uuid.uuid4().hex
    script = EXIT_SCRIPT.format(root=str(ROOT), token=token)
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"['timeout', 'timeout'] {token}" in r.stdout
    assert time.monotonic() - t0 < 30
    time.sleep(1.5)  # orphan watch interval
    assert _procs_with(token) == []


def test_check_names_names_the_row_the_verifier_and_the_choices():
    rows = _probs("math", 2) + [Problem("p7", "x", verifier="no_such_thing", source="train.jsonl")]
    verifiers.check_names(rows[:2])
    with pytest.raises(ValueError) as e:
        verifiers.check_names(rows)
    msg = str(e.value)
    assert "row 2 (id 'p7', from train.jsonl)" in msg and "'no_such_thing'" in msg
    assert "registered verifiers: " in msg and "code" in msg and "math" in msg and "load_plugins" in msg
    with pytest.raises(ValueError, match=r"row 0: unknown verifier 'nope'"):
        verifiers.check_names([{"verifier": "nope"}])


PLUGIN = """
from reasoner import verifiers
@verifiers.register("{name}")
def shouts(completion, problem):
    ok = completion.isupper()
    return verifiers.Verdict(float(ok), "correct" if ok else "wrong", completion, "")
"""


def test_load_plugins_from_files_and_modules(tmp_path, monkeypatch):
    a, b = f"p_file_{uuid.uuid4().hex[:6]}", f"p_mod_{uuid.uuid4().hex[:6]}"
    (tmp_path / "my_verifiers.py").write_text(textwrap.dedent(PLUGIN.format(name=a)))
    (tmp_path / f"{b}_pkg.py").write_text(textwrap.dedent(PLUGIN.format(name=b)))
    monkeypatch.syspath_prepend(str(tmp_path))
    added = verifiers.load_plugins(f"{tmp_path / 'my_verifiers.py'}, {b}_pkg")
    assert added == sorted([a, b])
    assert verifiers.load_plugins([str(tmp_path / "my_verifiers.py")]) == []  # imported once
    out = verifiers.score_all(["HI", "hi"], _probs(a, 2))
    assert [v.status for v in out] == ["correct", "wrong"]


def test_load_plugins_errors_name_the_plugin(tmp_path):
    with pytest.raises(ValueError, match=r"verifier plugin '.*nope\.py': no such file"):
        verifiers.load_plugins(str(tmp_path / "nope.py"))
    with pytest.raises(ValueError, match=r"verifier plugin 'no_such_mod_xyz': ModuleNotFoundError"):
        verifiers.load_plugins("no_such_mod_xyz")
    bad = tmp_path / "bad.py"
    bad.write_text("raise RuntimeError('broken\\nplugin')")
    with pytest.raises(ValueError, match=r"failed to import: RuntimeError: broken plugin"):
        verifiers.load_plugins(str(bad))
