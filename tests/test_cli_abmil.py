"""`magflow abmil` runs what the workflow's abmil rule runs: several sheet columns as tasks (one record
each) and the one-magnification random-mixer rows."""

import json

import pytest

from magflow.aggregate.synthetic import write_synthetic_regions
from magflow.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_regions")
    paths, rows = [], ["slide_id\tpath\tsplit\tgroup\tlabel\tgrade"]
    for i in range(6):
        path = folder / f"s{i}.h5"
        write_synthetic_regions(path, f"s{i}", seed=i, cols=6, rows=6, dim=8, t=3)
        paths.append(str(path))
        split = "train" if i < 4 else "test"
        rows.append(f"s{i}\t{folder / f's{i}.svs'}\t{split}\tp{i}\t{i % 2}\t{'high' if i in (0, 3, 4) else 'low'}")
    sheet = folder / "slides.tsv"
    sheet.write_text("\n".join(rows) + "\n")
    return paths, sheet


def test_several_tasks_write_one_record_each_and_a_one_scale_random_mixer_sees_one_scale(cohort, tmp_path, capsys):
    paths, sheet = cohort
    mil = json.dumps({"lr": 1e-2, "epochs": 1, "freeze_epochs": 0, "seeds": [0], "select": "last"})
    mixer = json.dumps({"width": 8, "depth": 1, "heads": 2})
    out = str(tmp_path / "random.1" / "{task}.json")
    assert main(["abmil", *paths, "--sheet", str(sheet), "--tasks", "label", "grade", "--out", out,
                 "--method", "random.1.000.cls", "--random-mixer", "--scales", "1.0", "--settings", mil,
                 "--mixer-settings", mixer, "--sheet-splits"]) == 0
    printed = capsys.readouterr().out
    for task in ("label", "grade"):
        record = json.loads((tmp_path / "random.1" / f"{task}.json").read_text())
        assert record["task"] == task and record["method"] == "random.1.000.cls"
        assert f"[{task}]" in printed
        assert record["mixer"]["scales"] == [1.0]


def test_several_tasks_need_a_task_pattern_and_a_mixer_takes_no_scales(cohort, tmp_path, capsys):
    paths, sheet = cohort
    assert main(["abmil", *paths, "--sheet", str(sheet), "--tasks", "label", "grade", "--out",
                 str(tmp_path / "r.json"), "--scales", "1.0"]) == 2
    assert "must hold {task}" in capsys.readouterr().err
    assert main(["abmil", *paths, "--sheet", str(sheet), "--tasks", "label", "--out", str(tmp_path / "r.json"), "--mixer-dir",
                 str(tmp_path), "--scales", "1.0"]) == 2
    assert "not --mixer-dir" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.json"))


def test_a_mixer_method_without_its_directory_is_refused_before_any_work(cohort, tmp_path):
    from magflow.aggregate.abmil import run_abmil_tasks
    from magflow.aggregate.methods import SlideMethod
    from magflow.errors import ConfigError

    paths, _ = cohort
    method = SlideMethod("mem.cls", "MEM (cls)", "mixer", "cls", mixer="mem")
    with pytest.raises(ConfigError, match="needs the mixer's directory"):
        run_abmil_tasks(method, paths, {"label": {}}, {"label": tmp_path / "r.json"}, mil={})
    assert not (tmp_path / "r.json").exists()
