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


def _graph() -> dict[str, set[str]]:
    """Module -> the defectgen modules it imports anywhere (function-level and ``TYPE_CHECKING`` imports too).

    ``from a.b import c`` is an edge to ``a.b.c`` when that is a module, else to ``a.b`` (a package counts
    as a module: importing it runs its ``__init__``)."""
    mods = {_module(p): p for p in PKG.rglob("*.py")}
    graph = {}
    for name, path in mods.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            assert not (isinstance(node, ast.ImportFrom) and node.level), f"{path}: a relative import; spell it out"
            if isinstance(node, ast.ImportFrom) and node.module:
                deps |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module
                         for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan): each holds an import cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = [stack.pop()]
            while component[-1] != v:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_check_sees_function_level_imports() -> None:
    graph = _graph()
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert "defectgen.errors" in graph["defectgen.config"]
    assert "defectgen.device" in graph["defectgen.data.loading"]  # imported inside load_pairs only


def test_no_import_cycle_between_modules() -> None:
    assert _cycles(_graph()) == []


def test_errors_is_a_leaf() -> None:
    assert _graph()["defectgen.errors"] == set()


# The evaluation half of issue 21 moves these to logging too; drop them from here once it has landed.
def test_the_library_logs_and_only_the_command_line_prints() -> None:
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).as_posix()
        if rel.startswith("cli/"):
            continue
        calls = [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call)]
        assert not any(isinstance(c.func, ast.Name) and c.func.id == "print" for c in calls), path


def test_campaigns_benchmarks_and_tools_use_only_the_public_api() -> None:
    """Outside the library no script imports a private defectgen name, puts a script folder on ``sys.path`` or
    imports a script of another folder (a helper module beside a script, such as tools/lent_gpu.py, is fine)."""
    scripts = [p for top in ("experiments", "benchmarks", "tools") for p in (PKG.parent / top).rglob("*.py")]
    assert scripts
    homes = {p.stem: p.parent for p in scripts}
    for path in scripts:
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "defectgen":
                names = [*node.module.split("."), *(a.name for a in node.names)]
                assert not [n for n in names if n.startswith("_")], f"{path}: {ast.unparse(node)}"
            tops = ([a.name.split(".")[0] for a in node.names] if isinstance(node, ast.Import) else
                    [node.module.split(".")[0]] if isinstance(node, ast.ImportFrom) and node.module else [])
            for top in tops:
                assert homes.get(top, path.parent) == path.parent, f"{path}: imports the script {homes[top] / top}.py"
        for line in text.splitlines():
            if "sys.path" in line:
                assert not any(f'"{d}"' in line for d in ("scripts", "experiments", "benchmarks", "tools")), \
                    f"{path}: {line.strip()}"


def test_every_defectgen_import_resolves() -> None:
    """Each ``from defectgen.X import Y`` in the library and in the scripts names a module that exists and a
    name it defines (function-level imports included: a moved module is caught before a campaign's last stage)."""
    import importlib

    files = [*PKG.rglob("*.py"), *(p for top in ("experiments", "benchmarks", "tools") for p in (PKG.parent / top).rglob("*.py"))]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.split(".")[0] == "defectgen":
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert alias.name == "*" or hasattr(module, alias.name) or \
                        importlib.util.find_spec(f"{node.module}.{alias.name}"), f"{path}: {ast.unparse(node)}"
