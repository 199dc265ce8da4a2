"""The trusted harness that runs INSIDE the sandbox (its source is passed as ``python -c``).

It reads one JSON task from stdin, lowers its own hard rlimits, then runs the untrusted
program and writes JSON lines on its stdout (the program's own stdout goes to /dev/null or,
for stdin/stdout tasks, to a per-case file). It never sees expected values: it only reports
what the program returned or printed, as plain builtin values (``enc``), and the parent
decides. Self-contained on purpose: stdlib only, nothing from the project; the source sent to
the sandbox is ``values.py`` (``enc``/``dec``) followed by this file.
"""
import json
import os
import sys

try:  # the parent imports this module; inside the sandbox values.py's source comes first instead
    from reasoner.verifiers.code.values import Obj, Unsupported, dec, enc, key  # noqa: F401  (values.py's names)
except ImportError:
    pass


def _fmt(e):
    return f"{type(e).__name__}: {e}"[:300]


def _limits(lim):
    import resource as r
    mb = 1 << 20
    cpu = lim.get("rlimit_cpu_s") or int(-(-lim["cpu_s"] // 1))
    for res, val in ((r.RLIMIT_CPU, cpu), (r.RLIMIT_AS, lim["memory_mb"] * mb),
                     (r.RLIMIT_FSIZE, lim["fsize_mb"] * mb), (r.RLIMIT_NOFILE, lim["nofile"]), (r.RLIMIT_CORE, 0)):
        soft, hard = r.getrlimit(res)
        val = val if hard == r.RLIM_INFINITY else min(val, hard)
        r.setrlimit(res, (val, val))


class _Chan:
    def __init__(self):
        self.fd = os.dup(1)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.close(null)

    def emit(self, **obj):
        data = (json.dumps(obj) + "\n").encode()
        while data:
            data = data[os.write(self.fd, data):]


def _load(program, name):
    ns = {"__name__": name, "__builtins__": __builtins__}
    exec(compile(program, "<program>", "exec"), ns)
    return ns


def _calls(task, chan):
    fn = _load(task["program"], "solution").get(task["entry_point"])
    if not callable(fn):
        raise NameError(f"the program defines no function {task['entry_point']!r}")
    chan.emit(event="loaded")
    for i, case in enumerate(task["cases"]):
        try:
            chan.emit(case=i, value=enc(fn(*dec(case["args"]), **dec(case["kwargs"])), opaque=True))
        except BaseException as e:  # SystemExit and KeyboardInterrupt from the program too
            chan.emit(case=i, error=_fmt(e))


def _post(args, kwargs):
    """The arguments after a call, so the parent can apply what the program mutated."""
    return [enc(list(args), True, False), [[k, enc(v, True, False)] for k, v in kwargs.items()]]


def _recorder(name, fn, chan):
    """Wrap a program function: record each call's arguments, result (or error) and, when the
    call changed its arguments, their new state. The test gets a plain copy of the result
    (the object itself for instances of the program's classes, so it can use their methods)."""
    def wrapper(*args, **kwargs):
        k = key(args, kwargs)
        try:
            out = fn(*args, **kwargs)
            value = enc(out, opaque=True)
        except BaseException as e:
            chan.emit(rec=name, key=k, error=_fmt(e))
            raise RuntimeError(f"{name} raised {type(e).__name__}") from None
        rec = {"rec": name, "key": k, "value": value}
        if key(args, kwargs) != k:
            rec["post"] = _post(args, kwargs)
        chan.emit(**rec)
        if type(value) is dict and "$o" in value:
            return out
        try:
            return dec(value)
        except Exception:
            return out
    return wrapper


def _stater(ns, chan):
    """``__state__(names)``: record the current value of program globals a test asserts on."""
    def state(names):
        for n in names:
            try:
                chan.emit(state=n, value=enc(ns[n], opaque=True))
            except BaseException as e:
                chan.emit(state=n, error=_fmt(e))
    return state


def _record(task, chan):
    import random
    ns = _load(task["program"], "solution")
    wrapped = {n: _recorder(n, ns[n], chan) for n in task["targets"] if callable(ns.get(n))}
    ep = task.get("entry_point")
    if ep is not None and ep not in wrapped:
        raise NameError(f"the program defines no function {ep!r}")
    chan.emit(event="loaded")
    tns = {"__name__": "__test__", "__state__": _stater(ns, chan), **wrapped}
    random.seed(0)
    try:
        exec(compile(task["test"], "<test>", "exec"), tns)
        if ep is not None:
            tns["check"](wrapped[ep])
    except BaseException as e:
        chan.emit(event="test_error", error=_fmt(e))


def _run_case(program, stdin_path, out_path, cpu_s):
    """Child of the harness: stdin/stdout are files, the channel is closed."""
    import resource as r
    os.setpgid(0, 0)
    soft, hard = r.getrlimit(r.RLIMIT_CPU)
    cap = cpu_s if hard == r.RLIM_INFINITY else min(cpu_s, hard)
    r.setrlimit(r.RLIMIT_CPU, (cap, cap))  # backstop: the harness polls this case's CPU time
    fd_in = os.open(stdin_path, os.O_RDONLY)
    fd_out = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd_in, 0)
    os.dup2(fd_out, 1)
    sys.stdin = open(0, "r", closefd=False)
    sys.stdout = open(1, "w", closefd=False)
    code = 0
    try:
        exec(compile(program, "<program>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        code = 1
    try:
        sys.stdout.flush()
    except BaseException:
        code = code or 1
    os._exit(code)


def _cpu_of(pid):
    """CPU seconds (user + system) of a running process, from /proc; 0.0 if unreadable."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def _wait(pid, cpu_s, wall_s):
    """(exit code, None) or (None, "cpu" | "wall"): the case's CPU budget, then a wall safety net."""
    import signal
    import time
    end, fired = time.monotonic() + wall_s, None
    while True:
        done, status, ru = os.wait4(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            hit = code in (-signal.SIGKILL, -signal.SIGXCPU) and ru.ru_utime + ru.ru_stime >= cpu_s - 0.05
            return (None, "cpu") if hit else (code, None)
        if time.monotonic() > end:
            fired = "wall"
        elif _cpu_of(pid) >= cpu_s:
            fired = "cpu"
        if fired:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None, fired
        time.sleep(0.005)


def _stdio(task, chan):
    compile(task["program"], "<program>", "exec")  # a syntax error is a load error
    chan.emit(event="loaded")
    cap = task["case_output_bytes"]
    cpu_s = task["case_cpu_s"]
    for i, text in enumerate(task["cases"]):
        inp, out = f"/tmp/.in{i}", f"/tmp/.out{i}"
        with open(inp, "w") as f:
            f.write(text)
        pid = os.fork()
        if pid == 0:
            os.close(chan.fd)
            _run_case(task["program"], inp, out, int(-(-cpu_s // 1)) + 1)
        code, timed_out = _wait(pid, cpu_s, task["case_wall_s"])
        try:
            with open(out, "rb") as f:
                data = f.read(cap + 1)
        except OSError:
            data = b""
        chan.emit(case=i, stdout=data[:cap].decode("utf-8", "replace"), exit=code, timeout=timed_out or False,
                  truncated=len(data) > cap)


def main():
    task = json.loads(sys.stdin.buffer.read())
    _limits(task["limits"])
    chan = _Chan()
    try:
        {"calls": _calls, "record": _record, "stdio": _stdio}[task["mode"]](task, chan)
    except BaseException as e:
        chan.emit(event="load_error", error=_fmt(e))
    chan.emit(event="done")
    os._exit(0)


if __name__ == "__main__":
    main()
