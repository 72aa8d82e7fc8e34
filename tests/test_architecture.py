"""The three parts import one way: trainer -> study -> analysis. The trainer imports neither
study nor analysis; the analysis reads what studies wrote, and of the study it imports only
study/layout.py (the names of a study's files, no Ray). Inside the study no module imports
itself back through others. Imports inside functions count as much as those at the top."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PARTS = ("trainer", "study", "analysis")


def imported_modules(package: str, root: Path = REPO) -> dict[str, set[str]]:
    """module -> the dotted names each Python module of `package` imports (at any depth):
    `from a.b import c` counts as a.b.c where c is a module of the project, else as a.b."""
    def name(path: Path) -> str:
        return ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")

    paths = sorted((root / package).rglob("*.py"))
    modules = {name(p) for part in {package, *PARTS} if (root / part).is_dir()
               for p in (root / part).rglob("*.py")}
    out = {}
    for path in paths:
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                subs = {f"{node.module}.{a.name}" for a in node.names} & modules
                names |= subs if len(subs) == len(node.names) else subs | {node.module}
        out[name(path)] = names
    return out


def imported_packages(package: str, root: Path = REPO) -> dict[str, set[str]]:
    """module -> the top-level packages it imports."""
    return {m: {n.split(".")[0] for n in names}
            for m, names in imported_modules(package, root).items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles among the graph's own modules (each once, from its smallest
    module). A package's own __init__ does not count: Python runs it before any of its
    modules, whatever they import."""
    def edge(m: str, n: str) -> bool:
        return n in graph and n != m and not m.startswith(n + ".")

    edges = {m: sorted(n for n in names if edge(m, n)) for m, names in graph.items()}
    found = []

    def walk(start: str, node: str, path: list[str]) -> None:
        for nxt in edges[node]:
            if nxt == start:
                found.append(path)
            elif nxt not in path and nxt > start:
                walk(start, nxt, path + [nxt])

    for m in sorted(edges):
        walk(m, m, [m])
    return sorted(found, key=len)


@pytest.mark.parametrize("package,forbidden", [("trainer", {"study", "analysis"}),
                                               ("analysis", {"study"})])
def test_imports_run_one_way(package, forbidden):
    files = imported_modules(package)
    assert len(files) > 5  # the walk found the package
    allowed = {"study.layout"} if package == "analysis" else set()
    wrong = {f: sorted(n for n in names if n.split(".")[0] in forbidden and n not in allowed)
             for f, names in files.items()}
    wrong = {f: names for f, names in wrong.items() if names}
    assert not wrong, f"{package} must not import {sorted(forbidden)}: {wrong}"


def test_the_study_layout_imports_nothing_of_the_project():
    # The analysis may read it: it must not bring Ray or the study's machinery along.
    names = imported_modules("study")["study.layout"]
    assert not {n.split(".")[0] for n in names} & {"study", "trainer", "analysis", "ray"}


def test_the_config_record_imports_nothing_of_the_trainer():
    # The bottom of the trainer: every registry may import it, it imports none of them.
    names = imported_modules("trainer")["trainer.config"]
    assert not [n for n in names if n.split(".")[0] == "trainer"]


@pytest.mark.parametrize("package", ["trainer", "study"])
def test_no_import_circle_inside(package):
    graph = imported_modules(package)
    assert cycles(graph) == []


def test_the_walk_sees_an_import_inside_a_function(tmp_path):
    # A backward import hidden in a function body is still found.
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("import os\n\ndef f():\n    from study import x\n")
    assert imported_packages("pkg", root=tmp_path) == {"pkg.a": {"study", "os"}}


def test_a_circle_through_a_function_level_import_is_found(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("from pkg import b\n")
    (tmp_path / "pkg" / "b.py").write_text("def f():\n    from pkg.c import g\n")
    (tmp_path / "pkg" / "c.py").write_text("import pkg.a\n")
    (tmp_path / "pkg" / "d.py").write_text("import pkg.a\n")  # imports in, no circle
    assert cycles(imported_modules("pkg", root=tmp_path)) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_reading_a_study_s_results_needs_no_torch():
    # analysis/results.py reads run files and study folders: trainer.config, rundir and
    # study.layout, not the training machinery (torch takes seconds to import).
    import subprocess
    import sys

    code = ("import sys, analysis.results; "
            "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_the_one_fact_written_in_both_the_trainer_and_the_study_agrees():
    # Ray's switch that keeps a local instance on loopback: the packing benchmark
    # (trainer/bench/packing.py) starts Ray too, and the trainer may not import the study.
    from study.driver import LOCAL_ONLY_ENV
    from trainer.bench.packing import LOCAL_ONLY_ENV as packing_env

    assert packing_env == LOCAL_ONLY_ENV == "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
