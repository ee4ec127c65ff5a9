"""evaluate.probe: the probes metric fits the selected linear probe per seeded split and names it."""

import numpy as np
import pytest

from eval_fixtures import make_embeddings, sheet
from magflow.errors import ConfigError
from magflow.evaluate.data import EvalData, mpp_key
from magflow.evaluate.probes import linear_probe_scores
from magflow.evaluate.evaluate import evaluate_metric
from magflow.evaluate.settings import EvalContext, EvalSettings
from magflow.evaluate.split_plan import plan_splits

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_paper_linear_probe_is_what_the_probes_record_scores_and_names(tmp_path):
    path = make_embeddings(tmp_path / "emb.h5")
    splits, groups = sheet()
    settings = {"seeds": [0, 1], "probe": "paper-linear", "splits": "seeded"}
    record = evaluate_metric("probes", path, tmp_path / "probes.json", settings=settings, sheet_splits=splits,
                             groups=groups)
    assert record["status"] == "ok", record["reason"]
    assert record["result"]["probe"] == record["constants"]["linear"]["probe"] == "paper-linear"
    assert (record["constants"]["linear"]["optimizer"], record["constants"]["linear"]["lr"],
            record["constants"]["linear"]["batch_size"]) == ("Adam", 1e-4, 64)
    # the same splits, each probe fitted independently with the split's seed
    data = EvalData.read(path)
    plan = plan_splits(data, EvalContext(EvalSettings.from_config(settings), splits, groups))
    mpp = float(record["result"]["mpps"][0])
    rows = data.labelled(mpp)
    x, y, slides = data.features(mpp, rows), data.labels[rows], data.slides[rows]
    expected = [linear_probe_scores(x, y, split.rows(slides), classes=np.unique(y), probe="paper-linear",
                                    seed=split.seed).balanced_accuracy for split in plan.splits]
    got = [s["balanced_accuracy"] for s in record["result"]["scores"][mpp_key(mpp)]["per_seed"]["linear"]]
    assert got == pytest.approx(expected, abs=1e-9)
    default = evaluate_metric("probes", path, tmp_path / "default.json", settings={"seeds": [0]},
                              sheet_splits=splits, groups=groups)
    assert default["result"]["probe"] == default["constants"]["linear"]["probe"] == "logistic"
    with pytest.raises(ConfigError, match="evaluate.probe"):
        EvalSettings.from_config({"probe": "svm"})
