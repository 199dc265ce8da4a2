"""Getting the program out of a model's response."""
from __future__ import annotations

import ast
import re
import threading
import warnings

_FENCE = re.compile(r"```[ \t]*(python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.S | re.I)


def fenced_blocks(response: str) -> list[str]:
    """Fenced code blocks tagged python/py or untagged, in order (an unclosed last one too)."""
    return [m.group(2) for m in _FENCE.finditer(response)]


def last_block_or_all(response: str) -> str:
    """MBPP / stdio / calls: the last fenced Python block, else the whole response."""
    blocks = fenced_blocks(response)
    return blocks[-1] if blocks else response


# CPython before 3.13 keeps one recursion counter per interpreter for ``ast.parse``: two threads
# parsing at once (the verifier's sandbox threads) can fail with "SystemError: AST constructor
# recursion depth mismatch" (python/cpython#106905). ``warnings.catch_warnings`` is process-wide too.
_AST_LOCK = threading.Lock()


def parse(source: str) -> ast.Module:
    """``ast.parse``, one thread at a time."""
    with _AST_LOCK:
        return ast.parse(source)


def parse_quiet(source: str) -> ast.Module:
    """``parse`` without the program's own SyntaxWarnings/DeprecationWarnings."""
    with _AST_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ast.parse(source)


def defines(source: str, name: str) -> bool:
    """True when ``source`` parses and defines ``name`` at top level."""
    try:
        tree = parse_quiet(source)
    except SyntaxError:
        return False
    return name in top_level_names(tree)


def top_level_names(tree: ast.Module) -> set[str]:
    out: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, ast.Assign):
            out |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return out


def humaneval_program(response: str, prompt: str, entry_point: str) -> str:
    """The prompt + completion, or the prompt + a fenced block that defines ``entry_point``.

    The prompt stays in front so its imports and helper functions exist; the block's own
    definition of ``entry_point`` replaces the prompt's docstring-only stub.
    """
    for block in reversed(fenced_blocks(response)):
        if defines(block, entry_point):
            return prompt + "\n\n" + block
    return prompt + response
