"""Every sheet names a bad row by its line in the file, as an editor shows it: the header is line 1, and the
``#`` comment and blank lines that the readers skip are counted. Each sheet kind gets a file where comment
and blank lines come before the bad row, so a row count (2, 3, ...) and the file's line differ."""

import re
import subprocess
import sys

import pandas as pd
import pytest

from magflow.aggregate.methods import check_mixer_runs
from magflow.aggregate.settings import check_mixer_sweep
from magflow.embed.labels import read_tile_label_csv
from magflow.errors import ConfigError
from magflow.pretrain.runs import check_runs
from magflow.pretrain.train_config import TrainConfig, check_run_columns
from magflow.sheet import read_sheet
from magflow.sheet_lines import NumberedRows, data_lines, row_lines
from test_config_ranges import _config
from test_workflow import copy_project


def _write(path, text):
    path.write_text(text)
    return path


def _pandas_rows(path):
    """The rows as the workflow reads a sweep or runs sheet (magflow.plan.runs)."""
    return pd.read_csv(path, sep="\t", comment="#").to_dict("records")


def test_data_lines_number_the_rows_pandas_reads(tmp_path):
    sheet = _write(tmp_path / "s.tsv", "# note\n\nkernel\tseed\n#\nabs\t0\n  \n\t\nabs\t1\r\n# end\n")
    rows = _pandas_rows(sheet)
    assert data_lines(sheet) == [5, 7, 8] and len(rows) == 3  # the tab-only line 7 is a row of empty cells
    assert row_lines([5, 7, 8], 3) == [5, 7, 8]
    assert list(row_lines([5, 7], 3)) == list(row_lines(None, 3)) == [2, 3, 4]  # rows built in code


def test_numbered_rows_give_each_csv_row_its_first_line(tmp_path):
    sheet = _write(tmp_path / "s.csv", '# a comment\nid,note\n\na,"two\nlines"\n# c\nb,x\n')
    with sheet.open(newline="") as handle:
        reader = NumberedRows(handle, delimiter=",")
        assert reader.fieldnames == ["id", "note"]
        assert [(line, row["id"]) for line, row in reader] == [(4, "a"), (7, "b")]
    with _write(tmp_path / "empty.tsv", "# only a comment\n").open() as handle:
        reader = NumberedRows(handle)
        assert reader.fieldnames == [] and list(reader) == []


def test_slide_sheet_names_the_line_after_comments(tmp_path):
    sheet = _write(tmp_path / "slides.tsv", "# our slides\nslide_id\tpath\tsplit\na\ta.svs\ttrain\n\n"
                                            "# the next one is wrong\nb\tb.svs\ttraining\n")
    with pytest.raises(ConfigError, match=r"slides\.tsv', line 6: split 'training' must be one of"):
        read_sheet(sheet)


def test_tile_label_csv_names_the_line_after_comments(tmp_path):
    table = _write(tmp_path / "labels.csv", "# from the pathologist\nslide_id,col,row,label\na,0,0,tumour\n"
                                            "# reviewed\na,1,0,\n")
    with pytest.raises(ConfigError, match=r"labels\.csv, line 5: empty label"):
        read_tile_label_csv(table)
    table.write_text("slide_id,col,row,label\n# comment\n\na,0,0,tumour\na,one,0,stroma\n")
    with pytest.raises(ConfigError, match=r"labels\.csv, line 5: \('col', 'row'\) must be whole numbers"):
        read_tile_label_csv(table)
    rows = read_tile_label_csv(_write(tmp_path / "ok.csv", "x,y,label\n# c\n1,2,a\n"), slide_id="s")
    assert [row["line"] for row in rows] == [3]  # kept for the later "labelled both" error


def test_runs_sheet_names_the_line_after_comments(tmp_path):
    sheet = _write(tmp_path / "runs.tsv", "kernel\tstrategy\tlam\tmpp\tseed\n# sampling runs\nabs\tdu\tNA\tNA\t0\n"
                                          "\n# distillation\nNA\tmad\tNA\t0.5\t0\n")
    rows = _pandas_rows(sheet)
    with pytest.raises(ConfigError, match=r"runs\.tsv, line 6: a mad run uses no sampler; set \['mpp'\] to NA"):
        check_runs(rows, str(sheet), lines=data_lines(sheet))
    sheet.write_text("kernel\tstrategy\tlam\tmpp\tseed\n# seed 0\nabs\tdu\tNA\tNA\t0\n# seed -1\nabs\tdu\tNA\tNA\t-1\n")
    rows = _pandas_rows(sheet)
    check_runs(rows, str(sheet), lines=data_lines(sheet))
    runs = {f"run{seed}": row for seed, row in enumerate(rows)}
    with pytest.raises(ConfigError, match=r"runs\.tsv, line 5 \(run run1\), column seed"):
        check_run_columns(TrainConfig(), runs, str(sheet), lines=data_lines(sheet))


def test_mixer_sweep_names_the_line_after_comments(tmp_path):
    sheet = _write(tmp_path / "mixers.tsv", "objective\tmask_ratio\tcontext\nmem\t0.5\t3\n# CMEM below\n\n"
                                            "cmem\t1.5\t3\n")
    runs = {f"m{i}": row for i, row in enumerate(_pandas_rows(sheet))}
    with pytest.raises(ConfigError, match=r"mixers\.tsv, line 5: need 0 < mask_ratio < 1"):
        check_mixer_runs(runs, str(sheet), lines=data_lines(sheet))
    sheet.write_text("objective\tmask_ratio\tcontext\n# a MEM run\nmem\t0.5\t3\n# a CMEM run, context too small\n"
                     "cmem\t0.5\t1\n")
    lines = data_lines(sheet)
    typed = check_mixer_runs({f"m{i}": row for i, row in enumerate(_pandas_rows(sheet))}, str(sheet), lines=lines)
    with pytest.raises(ConfigError, match=r"mixers\.tsv, line 5 \(mixer run m1\), column context"):
        check_mixer_sweep(_config()["aggregate"]["pretrain"], typed, str(sheet), 3, [2.0, 1.0, 0.5], lines=lines)


def test_the_workflow_names_a_runs_sheet_row_by_its_line(tmp_path):
    """The workflow passes the file's lines to the checks: a comment above the bad row shifts the number."""
    root = copy_project(tmp_path)
    (root / "config" / "my_runs.tsv").write_text("kernel\tstrategy\tlam\tmpp\tseed\n# two sampling runs\n"
                                                 "abs\tdu\tNA\tNA\t0\n\nabs\tcu\tNA\tNA\tfirst\n")
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--config",
                             "pretrain={'runs': 'config/my_runs.tsv'}"],
                            cwd=root, capture_output=True, text=True, timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert re.search(r"pretrain\.runs: config/my_runs\.tsv, line 5: seed must be an integer, got 'first'", out), \
        out[-3000:]
