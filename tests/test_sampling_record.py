"""JSON records, the sweep TSV and the comparison figure."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from magflow.errors import ConfigError
from magflow.sampling import SamplerConfig, read_sampler
from magflow.sampling.optimize_sampler import optimize_sampler
from magflow.sampling.plot_samplers import plot_sampler_comparison
from magflow.sampling.sweep import check_sweep, sampler_config
from magflow.sheet_lines import data_lines

SETTINGS = {"range": [0.25, 2.0], "grid_step": 0.01, "du_mpps": [0.25, 0.5, 1.0, 2.0]}


@pytest.mark.parametrize(
    "cfg",
    [
        SamplerConfig("cu_minmax", "area", grid_step=0.01),
        SamplerConfig("cu_maxavg", "abs", lam=0.5, grid_step=0.01),
        SamplerConfig("du", "abs", du_mpps=(0.5, 1.0), grid_step=0.01),
        SamplerConfig("single", "area", mpp=1.0, grid_step=0.01),
    ],
)
def test_json_round_trip(tmp_path, cfg):
    out = tmp_path / "samplers" / "s.json"
    written = optimize_sampler(cfg, out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["s.json"]  # no temporary left behind
    record = json.loads(out.read_text())
    for key in ("strategy", "kernel", "lam", "range", "grid", "p", "I", "min_I", "mean_I", "solver"):
        assert key in record
    assert record["range"] == [0.25, 2.0]
    assert record["min_I"] == pytest.approx(min(record["I"]))
    back = read_sampler(out)
    assert back.config == cfg
    for name in ("support", "mass", "cell_lo", "cell_hi"):
        np.testing.assert_array_equal(getattr(back.distribution, name), getattr(written.distribution, name))
    np.testing.assert_array_equal(back.quality, written.quality)
    np.testing.assert_array_equal(back.grid, written.grid)


def test_minmax_record_carries_solver_info_and_atoms(tmp_path):
    optimize_sampler(SamplerConfig("cu_minmax", "abs", grid_step=0.01), tmp_path / "m.json")
    record = json.loads((tmp_path / "m.json").read_text())
    assert record["solver"]["status"] == 0
    assert record["solver"]["value"] == pytest.approx(0.6278, abs=5e-5)
    assert record["atoms"][0] and record["atoms"][-1] and not any(record["atoms"][1:-1])
    assert record["lam"] is None


def test_sweep_rows_become_configs():
    row = {"kernel": "abs", "strategy": "cu_maxavg", "lam": 0.1, "mpp": float("nan")}
    cfg = sampler_config(row, SETTINGS)
    assert cfg == SamplerConfig("cu_maxavg", "abs", lam=0.1, grid_step=0.01)
    paramspace_row = {"kernel": "area", "strategy": "single", "lam": "NA", "mpp": "0.5"}
    assert sampler_config(paramspace_row, SETTINGS).mpp == 0.5


def test_check_sweep_names_the_file_and_row():
    rows = [
        {"kernel": "abs", "strategy": "cu", "lam": None, "mpp": None},
        {"kernel": "abs", "strategy": "cu_maxavg", "lam": -2, "mpp": None},
    ]
    with pytest.raises(ConfigError, match=r"samplers.tsv, line 3: .*lam must be > 0"):
        check_sweep(rows, SETTINGS, source="samplers.tsv")
    with pytest.raises(ConfigError, match=r"line 3 repeats line 2"):
        check_sweep([rows[0], rows[0]], SETTINGS, source="samplers.tsv")
    with pytest.raises(ConfigError, match=r"lacks the column\(s\) \['lam', 'mpp'\]"):
        check_sweep([{"kernel": "abs", "strategy": "cu"}], SETTINGS, source="samplers.tsv")
    with pytest.raises(ConfigError, match=r"lam must be a number or NA, got 'big'"):
        check_sweep([{"kernel": "abs", "strategy": "cu_maxavg", "lam": "big", "mpp": None}], SETTINGS, "x")
    with pytest.raises(ConfigError, match="has no rows"):
        check_sweep([], SETTINGS, source="samplers.tsv")


def test_check_sweep_reports_the_line_of_the_file(tmp_path):
    """Errors name the file's line (the header is line 1), counting the comments and blank lines pandas skips."""
    sweep = tmp_path / "samplers.tsv"
    sweep.write_text("# samplers\nkernel\tstrategy\tlam\tmpp\nabs\tcu\tNA\tNA\n\n# bad one below\n"
                     "abs\tcu_maxavg\t-2\tNA\nabs\tcu\tNA\tNA\n")
    rows = pd.read_csv(sweep, sep="\t", comment="#").to_dict("records")
    assert data_lines(sweep) == [3, 6, 7] and len(rows) == 3
    with pytest.raises(ConfigError, match=r"samplers.tsv, line 6: .*lam must be > 0"):
        check_sweep(rows, SETTINGS, source=str(sweep), lines=data_lines(sweep))
    with pytest.raises(ConfigError, match=r"line 7 repeats line 3"):
        check_sweep([rows[0], rows[2]], SETTINGS, source=str(sweep), lines=[3, 7])


def test_comparison_figure(tmp_path):
    paths = []
    for i, cfg in enumerate(
        [
            SamplerConfig("single", "abs", mpp=0.5, grid_step=0.01),
            SamplerConfig("du", "abs", grid_step=0.01),
            SamplerConfig("cu_minmax", "abs", grid_step=0.01),
        ]
    ):
        paths.append(tmp_path / f"{i}.json")
        optimize_sampler(cfg, paths[-1])
    out = tmp_path / "fig" / "comparison.png"
    plot_sampler_comparison(paths, out)
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > 800
    other = tmp_path / "area.json"
    optimize_sampler(SamplerConfig("cu", "area", grid_step=0.01), other)
    with pytest.raises(ConfigError, match="one kernel"):
        plot_sampler_comparison([paths[0], other], tmp_path / "bad.png")
