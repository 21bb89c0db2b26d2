"""Package structure: no import cycles, every CLI module importable on its own, heavy imports kept lazy."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "zerank_integrations"

# modules that must import alone, fast, without torch, chromadb or tiktoken
LIGHT_MODULES = [
    *(f"zerank_integrations.cli.{p.stem}" for p in sorted((PACKAGE / "cli").glob("*.py")) if p.stem != "__main__"),
    "zerank_integrations.cli",
    "zerank_integrations.rerank",
    "zerank_integrations.adapter_settings",
    "zerank_integrations.evaluation",
    "zerank_integrations.retrieval",
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(path: Path, modules: set[str]) -> set[str]:
    """zerank_integrations modules imported when ``path`` is imported (not inside functions or TYPE_CHECKING).

    ``from package import submodule`` depends on the submodule (the package is its parent, always initialised
    first); ``from module import name`` on the module.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in [node] if not isinstance(node, (ast.If, ast.Try)) else list(ast.walk(node)):
            if isinstance(sub, ast.Import):
                found |= {a.name for a in sub.names if a.name.startswith("zerank_integrations")}
            elif isinstance(sub, ast.ImportFrom):
                base = sub.module or ""
                if sub.level:
                    base = ".".join(
                        package.split(".")[: len(package.split(".")) - sub.level + 1] + ([base] if base else [])
                    )
                if base.startswith("zerank_integrations"):
                    submodules = {f"{base}.{a.name}" for a in sub.names} & modules
                    found |= submodules if len(submodules) == len(sub.names) else submodules | {base}
    return found


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A cycle of ``graph`` (depth-first search), or ``None``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        stack.append(name)
        for dep in graph[name]:
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[name] = 2
        return None

    for name in graph:
        if name not in state and (cycle := visit(name)):
            return cycle
    return None


def test_no_import_cycles() -> None:
    assert _find_cycle({"a": ["b"], "b": ["c"], "c": ["a"], "d": []}) == ["a", "b", "c", "a"]  # the finder works
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {
        name: sorted(m for m in _top_level_imports(path, set(modules)) if m in modules and m != name)
        for name, path in modules.items()
    }
    assert "zerank_integrations.cli.support" in graph["zerank_integrations.cli.search"]  # the parser sees imports
    assert _find_cycle(graph) is None, " -> ".join(_find_cycle(graph) or [])


def test_every_module_imports_alone_in_a_fresh_interpreter() -> None:
    code = (
        "import importlib, sys\n"
        "importlib.import_module(sys.argv[1])\n"
        "heavy = [m for m in ('torch', 'chromadb', 'tiktoken', 'transformers', 'langchain_core', 'llama_index') "
        "if m in sys.modules]\n"
        "assert not heavy, f'{sys.argv[1]} imported {heavy}'\n"
    )
    running = [
        (name, subprocess.Popen([sys.executable, "-c", code, name], stderr=subprocess.PIPE, text=True))
        for name in LIGHT_MODULES
    ]
    failures = []
    for name, process in running:
        _, err = process.communicate(timeout=120)
        if process.returncode:
            failures.append(f"{name}: {err.strip().splitlines()[-1] if err.strip() else process.returncode}")
    assert not failures, failures
    assert len(LIGHT_MODULES) >= 15


def test_one_module_per_subcommand() -> None:
    from zerank_integrations.cli.main import SUBCOMMANDS, build_parser

    commands = {m.__name__.rpartition(".")[2].replace("_", "-") for m in SUBCOMMANDS}
    assert commands == {"ingest", "search", "eval", "demo", "serve", "make-test-model"}
    parser = build_parser()
    choices = next(a for a in parser._actions if a.dest == "command").choices
    assert set(choices) == commands
