"""The package's layers: the report is the top layer, the shared modules at the package root the bottom one.

Every import of ``src/magflow`` is read with ``ast`` (the lazy ones inside functions too): no step below the
report imports ``magflow.report`` (only the command line and the report itself do), and no module at the
package root imports a subpackage.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "magflow"
TOP = "magflow.report"
MAY_IMPORT_TOP = ("magflow.cli", TOP)


def module_name(path: Path, root: Path = SRC) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, root: Path = SRC) -> set[str]:
    """Every magflow module ``path`` imports: ``from magflow import report`` counts as ``magflow.report``."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m == "magflow" or m.startswith("magflow.")}


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


MODULES = {module_name(p): imported(p) for p in sorted(SRC.rglob("*.py"))}


def test_the_walk_sees_every_layer():
    assert {"magflow.cli", "magflow.pages", "magflow.report.report_index", "magflow.preprocess.tile_manifest",
            "magflow.aggregate.abmil_table"} <= set(MODULES)
    assert "magflow.report.report_index" in MODULES["magflow.report.build"]  # the walk reads imports


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not any(within(m, top) for top in MAY_IMPORT_TOP)))
def test_no_lower_layer_imports_the_report(module):
    upward = sorted(m for m in MODULES[module] if within(m, TOP))
    assert not upward, f"{module} imports {upward}: the report is the top layer"


ROOT_MODULES = sorted(module_name(p) for p in SRC.glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("module", ROOT_MODULES)
def test_the_root_modules_import_no_subpackage(module):
    subpackages = {p.name for p in SRC.iterdir() if (p / "__init__.py").is_file()}
    above = sorted(m for m in MODULES[module] if m.count(".") >= 1 and m.split(".")[1] in subpackages)
    assert not above, f"{module} imports {above}: a module at the package root is the base layer"


def test_the_checks_catch_an_upward_import(tmp_path):
    lower = tmp_path / "magflow" / "preprocess"
    lower.mkdir(parents=True)
    (lower / "step.py").write_text("def f():\n    from ..report.tables import model_table\n"
                                   "from magflow import report\n")
    assert imported(lower / "step.py", tmp_path / "magflow") >= {"magflow.report.tables", "magflow.report"}
