"""Hostile and benign programs against the REAL sandbox (no mocks).

Hostile programs must never score, benign ones must. The ``calls`` programs are asked for
``f(n) == n*7919 + 13`` with a random ``n``; none of the hostile ones computes it, so only a
forged verdict could pass. After the suite: no stray process, no host file changed.
"""
import json
import os
import random
import socket
import threading
from pathlib import Path

import pytest

from reasoner.verifiers.code import check, isolation_report

DATA = json.loads((Path(__file__).parent / "sandbox_programs" / "calls_programs.json").read_text())
ROOT = Path(__file__).resolve().parent.parent  # the project checkout (what @PROJECT@ names)
# the sandbox's own code; other parts of the checkout may be edited while the suite runs
OWN = [ROOT / "verifiers" / "sandbox", ROOT / "verifiers" / "code"]
MARK = "777.5"  # argv of the `sleep` children the daemon programs leave behind
N = random.randrange(10**6, 10**7)
SECRET = str(random.randrange(10**8, 10**9))


def _strays() -> list[str]:
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "sleep " + MARK in cmd:
            out.append(f"{pid}: {cmd}")
    return out


def _snapshot(root: Path) -> dict:
    return {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """A host dir with a secret and a file to keep; a loopback server that counts connects."""
    d = tmp_path_factory.mktemp("host")
    (d / "secret.txt").write_text(str(N * 7919 + 13))
    (d / "keep.txt").write_text("keep")
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    hits = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                hits.append(srv.accept())
            except OSError:
                pass
    threading.Thread(target=serve, daemon=True).start()
    os.environ["SBX_SECRET"] = str(N * 7919 + 13)
    before = _snapshot(d)
    project = [_snapshot(p) for p in OWN]
    yield {"dir": d, "port": srv.getsockname()[1], "hits": hits}
    stop.set()
    srv.close()
    del os.environ["SBX_SECRET"]
    assert not hits, "a sandboxed program reached the host's loopback server"
    assert _snapshot(d) == before, "a file outside the sandbox changed"
    assert [_snapshot(p) for p in OWN] == project
    assert not (ROOT / "pwned").exists()
    assert not _strays(), f"processes outlived their sandbox: {_strays()}"


def _tests():
    return {"format": "calls", "entry_point": "f", "cases": [{"args": [N], "kwargs": {}, "expected": N * 7919 + 13}]}


def _fill(src: str, host) -> str:
    return src.replace("@HOST@", str(host["dir"])).replace("@PORT@", str(host["port"])).replace("@PROJECT@", str(ROOT))


def test_machine_is_strongly_isolated():
    rep = isolation_report()
    assert rep["level"] == "strong", rep


@pytest.mark.parametrize("name", sorted(DATA["hostile"]))
def test_hostile_program_never_scores(name, host):
    v = check(_fill(DATA["hostile"][name], host), _tests(), timeout=2.0)
    assert v.score == 0.0 and v.status in ("wrong", "timeout", "error"), (name, v)


@pytest.mark.parametrize("name", sorted(DATA["benign"]))
def test_benign_program_passes(name, host):
    v = check(DATA["benign"][name], _tests(), timeout=10.0)
    assert v.status == "correct" and v.score == 1.0, (name, v.detail)


HE_TESTS = {"format": "humaneval", "prompt": "def g(x):\n", "entry_point": "g",
            "test": f"def check(candidate):\n    assert candidate(3) == {SECRET}\n    assert abs(candidate(4) - {SECRET}) < 1\n"}
HE_HACKS = {
    "always_eq": "    class A:\n        def __eq__(s, o): return True\n        def __sub__(s, o): return 0\n    return A()\n",
    "frame_consts": "    import sys\n    fr = sys._getframe(1)\n    best = 0\n    while fr:\n"
                    "        best = max([best] + [c for c in fr.f_code.co_consts if type(c) is int])\n        fr = fr.f_back\n    return best\n",
    "patch_assert": "    import builtins\n    builtins.AssertionError = type('X', (BaseException,), {})\n    builtins.abs = lambda v: 0\n    return 0\n",
    "exit_early": "    import os\n    os._exit(0)\n",
    "kill_harness": "    import os, signal\n    os.kill(os.getpid(), signal.SIGKILL)\n",
    "raise_exit": "    raise SystemExit(0)\n",
}


@pytest.mark.parametrize("name", sorted(HE_HACKS))
def test_humaneval_hacks_never_score(name, host):
    v = check(HE_HACKS[name], HE_TESTS, timeout=2.0)
    assert v.score == 0.0, (name, v)
    assert check(f"    return {SECRET}\n", HE_TESTS).status == "correct"


def test_mbpp_eq_override_never_scores(host):
    prog = "class A:\n    def __eq__(s, o): return True\ndef h(x): return A()"
    v = check(prog, {"format": "mbpp", "test_list": [f"assert h(1) == {SECRET}"], "setup": ""})
    assert v.score == 0.0 and v.status == "wrong", v


def test_stdio_benign_reads_stdin_and_prints_a_lot(host):
    prog = "import sys\nn = sum(map(int, sys.stdin.read().split()))\nfor i in range(100000): print(i)\nprint(n)"
    out = "\n".join(map(str, range(100000))) + f"\n{N + 5}\n"
    v = check(prog, {"format": "stdio", "cases": [{"input": f"{N} 5\n", "output": out}], "float_tol": None})
    assert v.status == "correct", v.detail


@pytest.mark.parametrize("prog", ["import os\nos._exit(0)", "print('{\"case\": 0, \"stdout\": \"%s\", \"exit\": 0}')" % SECRET,
                                  "import sys\nsys.stdout.write(open('@HOST@/secret.txt').read())"])
def test_stdio_hacks_never_score(prog, host):
    v = check(_fill(prog, host), {"format": "stdio", "cases": [{"input": "", "output": SECRET}], "float_tol": None})
    assert v.score == 0.0, v
