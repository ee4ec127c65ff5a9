"""One name per step: a rule's script, its module and its CLI verb all carry the rule's name.

Rule ``extract_tiles`` runs ``workflow/scripts/extract_tiles.py``, which calls the module
``src/magflow/<package>/extract_tiles.py`` (the only module of that name), which ``magflow extract-tiles``
runs too. A rule derived with ``use rule X as Y`` runs X's script.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from magflow.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "magflow"
RULE = re.compile(r"^rule (\w+):\n(.*?)(?=^\S|\Z)", re.M | re.S)
USE = re.compile(r"^use rule (\w+) as (\w+)", re.M)
SCRIPT = re.compile(r'^\s+script:\s*\n\s+"\.\./scripts/([\w.]+)"', re.M)


def rules() -> dict[str, str]:
    """Rule name -> its body, over every rule file."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        for name, body in RULE.findall(path.read_text()):
            assert name not in found, f"rule {name} is defined twice"
            found[name] = body
    return found


def derived_rules() -> dict[str, str]:
    return {new: base for path in (ROOT / "workflow" / "rules").glob("*.smk")
            for base, new in USE.findall(path.read_text())}


def cli_verbs() -> set[str]:
    parser = build_parser()
    (steps,) = [a for a in parser._actions if a.dest == "step"]
    return set(steps.choices)


def step_rules() -> list[str]:
    """Rules that run a script (the aggregate target `all` has none)."""
    return [name for name, body in rules().items() if SCRIPT.search(body)]


def test_the_workflow_has_rules():
    assert len(step_rules()) >= 20


@pytest.mark.parametrize("rule", step_rules())
def test_a_rule_runs_the_script_of_its_name(rule):
    (script,) = SCRIPT.findall(rules()[rule])
    assert script == f"{rule}.py", f"rule {rule} runs scripts/{script}"
    assert (ROOT / "workflow" / "scripts" / script).is_file()


@pytest.mark.parametrize("rule", step_rules())
def test_a_rule_has_one_module_of_its_name_which_its_script_calls(rule):
    modules = sorted(SRC.rglob(f"{rule}.py"))
    assert len(modules) == 1, f"rule {rule}: modules {modules}"
    dotted = ".".join(modules[0].relative_to(SRC.parent).with_suffix("").parts)
    script = (ROOT / "workflow" / "scripts" / f"{rule}.py").read_text()
    assert re.search(rf"^from {re.escape(dotted)} import", script, re.M), f"scripts/{rule}.py does not call {dotted}"


@pytest.mark.parametrize("rule", step_rules())
def test_a_rule_has_a_cli_verb_of_its_name(rule):
    assert rule.replace("_", "-") in cli_verbs()


def test_a_derived_rule_runs_its_base_rules_step():
    for new, base in derived_rules().items():
        assert base in rules() and new.startswith(f"{base}_"), f"use rule {base} as {new}"


def test_no_module_is_a_run_beside_its_runs():
    for runs in SRC.rglob("runs.py"):
        assert not (runs.parent / "run.py").exists(), f"{runs.parent} holds both run.py and runs.py"


def test_the_phantom_slides_are_their_own_package():
    assert (SRC / "phantom" / "__init__.py").is_file()
    assert not list((SRC / "slides").glob("phantom*.py"))


def test_the_architecture_page_names_every_rule_and_rule_file():
    page = (ROOT / "docs" / "architecture.md").read_text()
    for rule in rules():
        assert f"`{rule}`" in page, f"docs/architecture.md does not name rule {rule}"
    for path in (ROOT / "workflow" / "rules").glob("*.smk"):
        if path.name != "common.smk":
            assert f"`{path.name}`" in page, f"docs/architecture.md does not name {path.name}"
