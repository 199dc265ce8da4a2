"""The package layout: one import namespace, every package installed, no module-level import cycle."""
import ast
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"reasoner": "reasoner", "verifiers": "reasoner.verifiers", "benchmarks": "reasoner.benchmarks"}


def _modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the three folders, under its installed name."""
    out = {}
    for folder, prefix in FOLDERS.items():
        for f in sorted((ROOT / folder).rglob("*.py")):
            parts = list(f.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([prefix, *parts])] = f
    return out


def test_one_namespace_nothing_imports_the_bare_folders():
    code = ("import sys, reasoner.trainer, reasoner.cli, reasoner.verifiers.code, reasoner.verifiers.math; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('verifiers', 'benchmarks')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True)
    assert out.stdout.strip() == "[]"


def test_every_package_folder_is_installed():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = {name for name, f in _modules().items() if f.name == "__init__.py"}
    assert set(cfg["packages"]) == packages
    assert cfg["package-dir"] == {"reasoner.verifiers": "verifiers", "reasoner.benchmarks": "benchmarks"}


def _imports(name: str, f: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports at module level (not inside functions)."""
    out, package = set(), name if f.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.parse(f.read_text()).body:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            out |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
    return {m for m in out if m in known and m != "reasoner"}  # the root package's __init__ imports nothing


def test_no_module_level_import_cycle():
    mods = _modules()
    graph = {name: _imports(name, f, set(mods)) for name, f in mods.items()}
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            assert state.get(n) != 1, "import cycle: " + " -> ".join(path[path.index(n):] + [n])
            if n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
