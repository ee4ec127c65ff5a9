"""The planted cross-scale label, checked on the ground truth (the layout and the nuclei), not on a model.

Cell scale: the cell map (glass / stroma / small cells / large cells where nuclei are centred) and the
nuclei themselves; tissue scale: the architecture map (glass / stroma / sheet / glands / bands / nests).
Either alone is the same for both label values; their co-occurrence tells the label on every slide.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from magflow.errors import ConfigError
from magflow.phantom.slide import CLASS_NAMES, PhantomSpec, phantom_layout, render_phantom
from magflow.phantom.cells import LARGE, SMALL, make_textures, place_nuclei
from magflow.phantom.cross import architecture_map, cell_map, scale_statistics
from magflow.phantom.design import PhantomParams
from magflow.phantom.phantom import make_phantom, phantom_cross_scale

SEEDS = range(40)
SIZE_UM = 1344.0  # the demo's extra slides
CELL_TOLERANCE = 0.002  # of the tissue area: compartment edges are smoothed after the balance is struck


def _layout(seed: int, value: int):
    return phantom_layout(PhantomSpec(width_um=SIZE_UM, height_um=SIZE_UM, seed=seed, label=value, cross_scale=value))


@pytest.fixture(scope="module")
def slides():
    """40 seeds, each planted with both values: {(seed, value): (layout, statistics)}."""
    out = {}
    for seed in SEEDS:
        for value in (0, 1):
            layout = _layout(seed, value)
            out[seed, value] = layout, scale_statistics(layout.labels, layout.sd_epithelium, layout.sd_tissue)
    return out


def _auroc(scores: np.ndarray, truth: np.ndarray) -> float:
    """Mann-Whitney AUROC with ties counted as one half."""
    pos, neg = scores[truth == 1], scores[truth == 0]
    return float(((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg)))


def test_architecture_alone_is_identical_for_both_values(slides):
    """Tissue scale: the same seed gives the very same architecture map (and tissue) whichever the value."""
    for seed in SEEDS:
        (zero, _), (one, _) = slides[seed, 0], slides[seed, 1]
        assert np.array_equal(architecture_map(zero.labels), architecture_map(one.labels)), seed
        assert np.array_equal(zero.sd_epithelium, one.sd_epithelium) and np.array_equal(zero.sd_tissue, one.sd_tissue)


def test_cell_types_alone_cover_the_same_areas_for_both_values(slides):
    """Cell scale: per seed, small and large cells cover the same fraction of the tissue (to 0.2 %) under
    either value, although value 0 and 1 put different cells in different places."""
    moved = 0
    for seed in SEEDS:
        (zero, stats0), (one, stats1) = slides[seed, 0], slides[seed, 1]
        for kind in ("stroma", "small", "large"):
            assert stats0["cells"][kind] == pytest.approx(stats1["cells"][kind], abs=CELL_TOLERANCE), (seed, kind)
        zero_cells, one_cells = (cell_map(x.labels, x.sd_epithelium, x.sd_tissue) for x in (zero, one))
        moved += int((zero_cells != one_cells).sum() > 0.05 * (zero.labels > 0).sum())
    assert moved == len(SEEDS)  # the maps do differ: large cells sit elsewhere


def test_a_classifier_on_one_scale_is_at_chance_and_on_both_is_perfect(slides):
    """80 slides (40 seeds x both values): the AUROC of every single-scale area fraction, in either direction,
    is within 0.5 +- 0.05; the joint fraction of large cells in nests separates the values perfectly."""
    truth = np.array([value for _seed in SEEDS for value in (0, 1)])
    for scale, names in (("cells", ("stroma", "small", "large")),
                         ("architecture", ("stroma", "sheet", "glands", "bands", "nests"))):
        for name in names:
            scores = np.array([slides[seed, value][1][scale][name] for seed in SEEDS for value in (0, 1)])
            assert abs(_auroc(scores, truth) - 0.5) <= 0.05, (scale, name)
    joint = np.array([slides[seed, value][1]["joint"]["large_in_nests"] for seed in SEEDS for value in (0, 1)])
    assert _auroc(joint, truth) == 1.0
    assert joint[truth == 0].max() == 0.0 and joint[truth == 1].min() > 0.05  # at least 5 % of the tissue
    small_in_nests = np.array([slides[seed, value][1]["joint"]["small_in_nests"] for seed in SEEDS for value in (0, 1)])
    assert np.array_equal(small_in_nests > 0, truth == 0)


def test_unpaired_slides_one_scale_at_chance():
    """40 slides with 40 different seeds (values alternating, as a cohort): for every single-scale fraction
    the gap between the two values' means is under 0.8 of its standard deviation over the cohort (2.5
    standard errors of a gap between 20 and 20 draws of one distribution: 0.32 std), while the joint
    fraction of large cells in nests still separates them perfectly."""
    stats = [scale_statistics(x.labels, x.sd_epithelium, x.sd_tissue)
             for x in (_layout(100 + i, i % 2) for i in range(40))]
    truth = np.arange(40) % 2
    for scale in ("cells", "architecture"):
        for name in stats[0][scale]:
            values = np.array([s[scale][name] for s in stats])
            if values.std() == 0:
                continue
            assert abs(values[truth == 1].mean() - values[truth == 0].mean()) < 0.8 * values.std(), (scale, name)
    joint = np.array([s["joint"]["large_in_nests"] for s in stats])
    assert _auroc(joint, truth) == 1.0


@pytest.mark.parametrize("seed", [0, 7])
def test_the_nuclei_drawn_show_the_same_cell_mix_for_both_values(seed):
    """What the renderer draws at cell scale: the nuclear area of small and large nuclei differs by under
    4 % between the two values of one seed (the compartments are balanced, not the class areas)."""
    params = PhantomParams()
    area = {}
    for value in (0, 1):
        layout = _layout(seed, value)
        nuclei = place_nuclei(seed, layout, make_textures(seed, layout), SIZE_UM, SIZE_UM, params)
        size = np.pi * nuclei.semi_major_um * nuclei.semi_minor_um
        area[value] = np.array([size[nuclei.kind == kind].sum() for kind in (SMALL, LARGE)])
    for kind in (0, 1):
        assert area[0][kind] == pytest.approx(area[1][kind], rel=0.04), kind


def test_without_cross_scale_the_layout_is_unchanged_and_the_rare_class_follows_the_value():
    plain = phantom_layout(PhantomSpec(width_um=SIZE_UM, height_um=SIZE_UM, seed=3, label=1))
    planted = _layout(3, 1)
    rare = CLASS_NAMES.index("rare")
    assert (planted.labels == rare).any() and not (_layout(3, 0).labels == rare).any()
    stroma_glands_bands = np.isin(plain.labels, [CLASS_NAMES.index(n) for n in ("stroma", "glandular", "banded")])
    assert np.array_equal(planted.labels[stroma_glands_bands], plain.labels[stroma_glands_bands])
    assert np.array_equal(planted.labels > 0, plain.labels > 0)


def test_spec_and_sheet_values_are_checked():
    with pytest.raises(ConfigError, match="cross_scale must be 0, 1 or None"):
        PhantomSpec(cross_scale=2)
    with pytest.raises(ConfigError, match="label must equal it"):
        PhantomSpec(label=0, cross_scale=1)
    with pytest.raises(ConfigError, match="needs tissue=True"):
        PhantomSpec(tissue=False, cross_scale=0)
    assert phantom_cross_scale("s", None, "1") is None and phantom_cross_scale("s", "", None) is None
    assert phantom_cross_scale("s", "1", None) == 1 and phantom_cross_scale("s", "0", "0") == 0
    with pytest.raises(ConfigError, match=r"Slide 'x'.*`cross_scale`.*must be 0, 1 or empty.*'yes'"):
        phantom_cross_scale("x", "yes", None)
    with pytest.raises(ConfigError, match=r"Slide 'x'.*`label` 0 contradicts `cross_scale` 1"):
        phantom_cross_scale("x", "1", "0")


def test_too_little_sheet_and_nest_tissue_is_refused_naming_the_slide(tmp_path):
    settings = {"seed": 0, "mpp": 4.0, "per_slide": {"tiny": {"width_um": 300, "height_um": 300, "seed": 0}}}
    with pytest.raises(ConfigError, match=r"Slide 'tiny'.*per_slide"):
        make_phantom("tiny", None, settings, tmp_path / "t.tiff", tmp_path / "t.png", tmp_path / "t.json", "1")
    assert not list(tmp_path.iterdir())


def test_the_sidecar_records_the_planted_value_and_its_truth(tmp_path):
    settings = {"seed": 0, "mpp": 2.0, "per_slide": {"xs": {"width_um": SIZE_UM, "height_um": SIZE_UM, "seed": 5}}}
    meta = make_phantom("xs", "", settings, tmp_path / "x.tiff", tmp_path / "x.png", tmp_path / "x.json", "1")
    assert meta["cross_scale"] == 1 and meta["slide_label"] == 1 and meta["generator_version"] == "2"
    truth = meta["cross_scale_truth"]
    assert truth["planted"] == {"nests": "rare", "sheet": "small_dense"}
    expected = _layout(5, 1)
    assert truth["fractions_of_tissue"] == scale_statistics(expected.labels, expected.sd_epithelium, expected.sd_tissue)
    assert np.array_equal(render_phantom(PhantomSpec(width_um=SIZE_UM, height_um=SIZE_UM, mpp=2.0, seed=5, label=1,
                                                     cross_scale=1))[1], expected.labels)
    plain = make_phantom("p", "1", {"seed": 0, "mpp": 4.0, "width_um": 512, "height_um": 512},
                         tmp_path / "p.tiff", tmp_path / "p.png", tmp_path / "p.json")
    assert plain["cross_scale"] is None and "cross_scale_truth" not in plain


@pytest.mark.slow
def test_the_workflow_plants_the_sheet_column(tmp_path):
    """The `phantom` rule reads `cross_scale` from the slide sheet: the value planted is the column's value,
    an empty cell plants nothing, and a bad cell stops that job naming the slide and the column."""
    import json

    import yaml
    from test_workflow import REPO, make_project, run

    rows = ["xs_one\tresults/phantom/xs_one.tiff\t\ttrain\tp1\t\t1",
            "xs_none\tresults/phantom/xs_none.tiff\t\ttest\tp2\t0\t",
            "xs_bad\tresults/phantom/xs_bad.tiff\t\ttest\tp3\t\tmaybe"]
    root = make_project(tmp_path / "wf", [])
    sheet = root / "config" / "slides.tsv"
    sheet.write_text("slide_id\tpath\tmpp\tsplit\tgroup\tlabel\tcross_scale\n" + "".join(r + "\n" for r in rows))
    config_path = root / "config" / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["phantom"]["per_slide"] = {"xs_one": {"mpp": 2.0, "width_um": SIZE_UM, "height_um": SIZE_UM, "seed": 5},
                                      "xs_none": {"mpp": 2.0}, "xs_bad": {"mpp": 2.0}}
    config_path.write_text(yaml.safe_dump(config))
    targets = [f"results/phantom/{s}.json" for s in ("xs_one", "xs_none", "xs_bad")]
    done = run(["-s", str(REPO / "Snakefile"), "--cores", "1", "--keep-going", *targets], root)
    assert done.returncode != 0  # xs_bad
    one = json.loads((root / "results" / "phantom" / "xs_one.json").read_text())
    none = json.loads((root / "results" / "phantom" / "xs_none.json").read_text())
    assert (one["cross_scale"], one["slide_label"]) == (1, 1) and "cross_scale_truth" in one
    assert none["cross_scale"] is None and "cross_scale_truth" not in none
    assert not (root / "results" / "phantom" / "xs_bad.json").exists()
    log = (root / "logs" / "phantom" / "xs_bad.log").read_text() + done.stderr
    assert "Slide 'xs_bad'" in log and "`cross_scale`" in log and "'maybe'" in log


def test_the_command_line_plants_the_label_as_the_sheet_column_does(tmp_path, capsys):
    from magflow.cli import main

    args = ["phantom", str(tmp_path), "--slide-id", "xs", "--seed", "5", "--mpp", "2.0",
            "--width-um", str(SIZE_UM), "--height-um", str(SIZE_UM)]
    assert main([*args, "--cross-scale", "1"]) == 0
    expected = _layout(5, 1)
    with Image.open(tmp_path / "xs.labels.png") as image:
        assert np.array_equal(np.asarray(image), expected.labels)
    assert json.loads((tmp_path / "xs.json").read_text())["cross_scale"] == 1
    capsys.readouterr()
    assert main([*args, "--slide-id", "bad", "--cross-scale", "1", "--label", "0"]) == 2
    assert "contradicts" in capsys.readouterr().err and not (tmp_path / "bad.tiff").exists()
