"""The workflow parses its Snakefile again in every cluster job: what it imports must stay light."""

import subprocess
import sys

HEAVY = ("torch", "timm", "sklearn", "matplotlib", "tensorboard")
# every magflow module workflow/rules/common.smk imports
WORKFLOW_IMPORTS = ["magflow.aggregate.methods", "magflow.aggregate.settings", "magflow.benchmark.config",
                    "magflow.config", "magflow.embed.control", "magflow.embed.external", "magflow.embed.labels",
                    "magflow.errors", "magflow.evaluate.mad_eval", "magflow.evaluate.registry",
                    "magflow.evaluate.settings", "magflow.preemption", "magflow.pretrain.mad_config",
                    "magflow.pretrain.runs", "magflow.pretrain.train_config", "magflow.report.names",
                    "magflow.sampling.sweep", "magflow.sheet", "magflow.sheet_lines", "magflow.phantom.phantom",
                    "magflow.plan", "magflow.plan.slides", "magflow.writable"]


def imported_after(modules: list[str]) -> set[str]:
    code = f"import sys\nfor m in {modules!r}: __import__(m)\nprint(' '.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


def test_workflow_parse_imports_no_heavy_library():
    loaded = imported_after(WORKFLOW_IMPORTS)
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_lazy_packages_still_export_their_names():
    from magflow import embed, evaluate, pretrain

    assert callable(evaluate.rankme) and callable(evaluate.label_metrics)  # rankme: a name shared with its module
    import magflow.evaluate.rankme  # noqa: F401  (binding the submodule must not hide the function)

    assert callable(evaluate.rankme)
    for package in (embed, evaluate, pretrain):
        for name in package.__all__:
            assert getattr(package, name) is not None, f"{package.__name__}.{name}"


def test_rules_cli_and_report_read_the_one_metric_registry():
    import re
    from pathlib import Path

    from magflow.cli import build_parser
    from magflow.evaluate import registry
    from magflow.report import evaluation_figures

    names = registry.METRIC_NAMES
    assert len(set(names)) == len(names) and set(registry.CONTROL_METRICS) <= set(names)
    assert sorted(registry.PLAIN_METRICS + registry.MASK_METRICS) == sorted(names)  # every family has one rule
    for name in names:
        assert callable(registry.metric_function(name)), name
    (steps,) = [a for a in build_parser()._actions if a.dest == "step"]
    (metrics,) = [a for a in steps.choices["evaluate"]._actions if a.dest == "metrics"]
    assert tuple(metrics.choices) == names
    assert evaluation_figures.METRIC_NAMES is names
    root = Path(__file__).resolve().parents[1]
    rules = "".join(p.read_text() for p in [root / "Snakefile", *sorted((root / "workflow" / "rules").glob("*.smk"))])
    assert not re.findall(r"""["'](?:%s)["']""" % "|".join(names), rules)  # no rule spells a family's name


def test_the_list_holds_every_module_the_workflow_imports():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    texts = [p.read_text() for p in [root / "Snakefile", *sorted((root / "workflow" / "rules").glob("*.smk"))]]
    imported = {m for text in texts for m in re.findall(r"^\s*from (magflow[\w.]*) import", text, re.M)}
    assert imported <= set(WORKFLOW_IMPORTS), sorted(imported - set(WORKFLOW_IMPORTS))
