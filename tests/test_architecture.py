"""The three parts import one way: trainer -> study -> analysis. The trainer imports neither
study nor analysis, and the analysis reads what studies wrote without importing study."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def imported_packages(package: str, root: Path = REPO) -> dict[str, set[str]]:
    """file -> the top-level names each Python file of `package` imports (at any depth)."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
        out[str(path.relative_to(root))] = names
    return out


@pytest.mark.parametrize("package,forbidden", [("trainer", {"study", "analysis"}),
                                               ("analysis", {"study"})])
def test_imports_run_one_way(package, forbidden):
    files = imported_packages(package)
    assert len(files) > 5  # the walk found the package
    wrong = {f: sorted(names & forbidden) for f, names in files.items() if names & forbidden}
    assert not wrong, f"{package} must not import {sorted(forbidden)}: {wrong}"


def test_the_walk_sees_an_import_inside_a_function(tmp_path):
    # A backward import hidden in a function body is still found.
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("import os\n\ndef f():\n    from study import x\n")
    assert imported_packages("pkg", root=tmp_path) == {"pkg/a.py": {"study", "os"}}
