"""Writing the run's files (checkpoints, metrics, samples, summary, config, plot, trackers): a write
that fails (a full disk, a permission) is one ``OSError`` line naming the file and the fix, and the
last checkpoint stays valid; the small files a resume reads are replaced atomically, never left half
written."""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sqlite3
from pathlib import Path

FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
LOW_SPACE = 64 << 20  # bytes: a write error with less free than this is taken for a full disk
FIX = ("free some space, or move the run directory to a disk with room and set run.out_dir to it; then resume with "
       "--resume auto")


class WriteError(OSError):
    """A write of the run that failed, already one line (an enclosing ``guard`` leaves it alone)."""


def free_bytes(path: Path) -> int:
    """Free bytes on the file system of ``path`` (its nearest existing parent); -1 when unknown."""
    path = Path(path)
    for p in (path, *path.parents):
        try:
            return shutil.disk_usage(p).free
        except OSError:
            continue
    return -1


def _chain(e: BaseException | None):
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def is_full(e: BaseException, path: Path) -> bool:
    """A full disk: ENOSPC/EDQUOT anywhere in the exception's chain, SQLite's 'database or disk is full',
    or little space left where ``path`` lives (torch's zip writer reports a full disk as 'unexpected pos')."""
    for x in _chain(e):
        if getattr(x, "errno", None) in FULL_ERRNOS:
            return True
        if isinstance(x, sqlite3.Error) and getattr(x, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            return True
    return 0 <= free_bytes(path) < LOW_SPACE


def write_error(path: Path, e: BaseException, what: str = "", intact: str = "the last checkpoint is intact",
                fix: str = FIX) -> WriteError:
    """``could not write <what><path>: <why>; <intact>: <fix>``, one line."""
    if is_full(e, path):
        free = free_bytes(path)
        why = "no space left on the device" + (f" ({free / 2**20:.0f} MiB free)" if free >= 0 else "")
    elif isinstance(e, OSError) and e.strerror:
        why = e.strerror
    else:
        why = f"{type(e).__name__}: " + " ".join(str(e).split())[:200]
    return WriteError(f"could not write {what}{path}: {why}; {intact}: {fix}")


@contextlib.contextmanager
def guard(path: Path, what: str = "", errors: tuple[type[BaseException], ...] = (OSError,), **kw):
    """Turn an ``errors`` exception raised inside into ``write_error(path, ...)``."""
    try:
        yield
    except WriteError:
        raise
    except errors as e:
        raise write_error(Path(path), e, what, **kw) from e


def replace_with(path: Path, write, **kw) -> None:
    """``write(tmp)`` then rename ``tmp`` to ``path``: a reader sees the old file or the new one, never half
    of it (config.yaml, summary.json, trackers.json, a rewritten samples.jsonl)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with guard(path, **kw):
            write(tmp)
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def replace_text(path: Path, text: str, **kw) -> None:
    replace_with(path, lambda tmp: tmp.write_text(text), **kw)
