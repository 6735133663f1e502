"""Where things live: the evaluation reads sample folders without the generator, the library has no
argparse outside cli/, and no two modules import each other."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "defectgen"


def _module(path: Path) -> str:
    name = ".".join(path.relative_to(PKG.parent).with_suffix("").parts)
    return name.removesuffix(".__init__")


def _imports(path: Path, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


def test_evaluation_and_quality_do_not_import_the_generators_export() -> None:
    for path in [*PKG.glob("seg/*.py"), *PKG.glob("quality/*.py"), *PKG.glob("data/*.py")]:
        assert "defectgen.export" not in _imports(path, top_level_only=False), path


def test_argparse_lives_in_cli_only() -> None:
    for path in PKG.rglob("*.py"):
        if path.parent.name != "cli":
            assert "argparse" not in _imports(path, top_level_only=False), path


def test_no_import_cycle_between_modules() -> None:
    mods = {_module(p): p for p in PKG.rglob("*.py")}
    packages = {m for m, p in mods.items() if p.name == "__init__.py"}
    graph = {m: {d for d in _imports(p, top_level_only=True) if d in mods and d != m and d not in packages}
             for m, p in mods.items() if m not in packages}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(d == goal or (d not in seen and not seen.add(d) and reaches(d, goal, seen)) for d in graph.get(start, ()))

    cycles = sorted(m for m in graph if reaches(m, m, set()))
    assert not cycles, cycles
