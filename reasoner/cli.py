"""``reasoner train | eval | verify | list | data | config``"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import threading

from reasoner import writes

COMMANDS = {"train": "train a policy (defaults: the embedded tiny model on built-in arithmetic)",
            "eval": "evaluate a model on benchmark suites", "verify": "check answers with a verifier",
            "list": "print every registry (verifiers, estimators, presets, datasets)",
            "data": "dataset tools (overlap / contamination check)",
            "config": "print the resolved config: every key, its value and what it does (reasoner config show)"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reasoner", description="RL from verifiable rewards for reasoning models",
                                     epilog="Errors print one line; --debug (anywhere) or REASONER_DEBUG=1 shows "
                                            "the traceback.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_ in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        module = importlib.import_module(f"reasoner.commands.{name}")
        module.add_arguments(p)
        p.set_defaults(_main=module.main)
    return parser


def _one_line(e: BaseException) -> str:
    """An exception as one line: its message (for OSError: the file and the reason)."""
    if isinstance(e, OSError) and e.strerror:
        text = f"{e.filename}: {e.strerror}" if e.filename else e.strerror
    else:
        text = str(e.args[0]) if len(e.args) == 1 else str(e)
    return " ".join(text.split()) or type(e).__name__


def _debug(argv: list[str]) -> tuple[bool, list[str]]:
    """``--debug`` anywhere on the line (or REASONER_DEBUG=1): full tracebacks instead of one line."""
    flag = "--debug" in argv or os.environ.get("REASONER_DEBUG", "") not in ("", "0")
    return flag, [a for a in argv if a != "--debug"]


def _parse(argv: list[str]) -> argparse.Namespace:
    """Parse; the ``key.sub=value`` overrides of train, eval and config may also come after their options
    (``reasoner train a.b=1 --resume auto run.out_dir=X``), which argparse alone refuses."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    debug, argv = _debug(sys.argv[1:] if argv is None else list(argv))
    args = _parse(argv or ["train"])
    if not getattr(args, "_main", None):
        args = _parse(["train", *argv])
    try:
        with contextlib.nullcontext() if debug else quiet_full_disk_threads():
            rc = args._main(args)
        sys.stdout.flush()  # inside the try: a closed pipe is reported here, not at interpreter exit
        return rc
    except BrokenPipeError:  # `reasoner list | head`: the reader left; say nothing more
        _quiet_stdout()
        return 0
    except KeyboardInterrupt as e:
        if debug:
            raise
        print(f"reasoner: {e.args[0] if e.args else 'interrupted'}", file=sys.stderr)
        return 130
    except (ValueError, KeyError, OSError, ImportError) as e:  # ConfigError and DataError are ValueErrors
        if debug:
            raise
        print(f"reasoner: error: {_one_line(e)}", file=sys.stderr)
        return 2


@contextlib.contextmanager
def quiet_full_disk_threads():
    """A writer thread that dies of a full disk (TensorBoard's event writer) prints no traceback: the
    main thread gets the same error at its next write and reports it in one line (``reasoner.writes``)."""
    prev = threading.excepthook

    def hook(args) -> None:
        if not (isinstance(args.exc_value, OSError) and args.exc_value.errno in writes.FULL_ERRNOS):
            prev(args)
    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = prev


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
