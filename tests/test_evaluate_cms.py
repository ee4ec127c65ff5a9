"""protocol: cms against an independent scikit-learn computation on the same synthetic embeddings."""

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import logsumexp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
from sklearn.neighbors import KNeighborsClassifier

from magflow.evaluate.cms import CMS_TEST_MPPS, cms_protocol, make_logistic

STANDARD = [0.25, 0.5, 1.0, 2.0]
pytestmark = pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")


def synthetic(n_slides=20, per_slide=6, dim=8, seed=0):
    """Images of 3 classes embedded at the 7 mpps: a class direction, an mpp shift and noise; folds by slide."""
    rng = np.random.default_rng(seed)
    slides = np.repeat(np.arange(n_slides), per_slide)
    labels = slides % 3
    centres = rng.normal(size=(3, dim))
    base = centres[labels] + rng.normal(scale=1.3, size=(len(labels), dim))
    features = {m: base + 0.4 * np.log2(m / 0.25) * np.eye(dim)[0] + rng.normal(scale=0.5, size=base.shape) + 2.0
                for m in CMS_TEST_MPPS}
    folds = {}
    for f in range(5):
        part = np.full(len(slides), "train", dtype=object)
        part[slides % 5 == f] = "test"
        part[slides % 5 == (f + 1) % 5] = "dev"
        folds[f"fold_{f}"] = part
    return features, labels, slides, folds


def independent(features, labels, folds):
    """The authors' protocol written out plainly: pooled standard mpps, choose on pooled dev, score every mpp."""
    out = {"knn": {}, "linear": {}}
    for name, part in folds.items():
        train = part == "train"
        dev = part == "dev"
        test = part == "test"
        x_train = np.vstack([features[m][train] for m in STANDARD])
        y_train = np.concatenate([labels[train] for _ in STANDARD])
        x_dev = np.vstack([features[m][dev] for m in STANDARD])
        y_dev = np.concatenate([labels[dev] for _ in STANDARD])
        candidates = {
            "knn": [(k, KNeighborsClassifier(n_neighbors=k, metric="cosine").fit(x_train, y_train))
                    for k in [1, 3, 5, 10, 20, 40, 80]],
            "linear": [(c, LogisticRegression(C=c, max_iter=1000, solver="lbfgs", class_weight="balanced",
                                              random_state=42).fit(x_train, y_train))
                       for c in np.logspace(-4, 4, 9)],
        }
        for probe, fitted in candidates.items():
            best_value, best_model, best_score = None, None, -1.0
            for value, model in fitted:
                score = balanced_accuracy_score(y_dev, model.predict(x_dev))
                if score > best_score:
                    best_value, best_model, best_score = value, model, score
            per_mpp = {}
            for m in CMS_TEST_MPPS:
                predicted = best_model.predict(features[m][test])
                truth = labels[test]
                per_mpp[m] = {"balanced_accuracy": balanced_accuracy_score(truth, predicted),
                              "accuracy": accuracy_score(truth, predicted),
                              "macro_f1": f1_score(truth, predicted, average="macro"),
                              "weighted_f1": f1_score(truth, predicted, average="weighted")}
            out[probe][name] = (best_value, per_mpp)
    return out


@pytest.fixture(scope="module")
def case():
    features, labels, slides, folds = synthetic()
    return features, labels, slides, folds, cms_protocol(features, labels, folds, groups=slides), independent(
        features, labels, folds)


def test_chosen_k_and_c_and_every_mpp_score_match_the_independent_computation(case):
    features, labels, slides, folds, result, expected = case
    assert result.train_mpps == tuple(STANDARD) and result.test_mpps == CMS_TEST_MPPS
    for probe in ("knn", "linear"):
        for name in folds:
            value, per_mpp = expected[probe][name]
            fold = result.probes[probe][name]
            assert fold.chosen == pytest.approx(value, rel=1e-12)
            assert set(fold.test) == set(CMS_TEST_MPPS)
            for m in CMS_TEST_MPPS:
                for metric, score in per_mpp[m].items():
                    assert fold.test[m][metric] == pytest.approx(score, abs=1e-12), (probe, name, m, metric)
        summary = result.summary(probe)
        for m in CMS_TEST_MPPS:
            values = [expected[probe][name][1][m]["balanced_accuracy"] for name in folds]
            assert summary[m]["balanced_accuracy"]["mean"] == pytest.approx(np.mean(values), abs=1e-12)
            assert summary[m]["balanced_accuracy"]["std"] == pytest.approx(np.std(values), abs=1e-12)  # ddof 0
            assert summary[m]["balanced_accuracy"]["n"] == 5
    # the chosen k vary across folds on this data, so the choice is really made on dev
    assert len(set(result.chosen("knn").values())) > 1


def test_record_result_states_folds_and_choices(case):
    features, labels, slides, folds, result, _ = case
    out = result.as_result()
    assert out["protocol"] == "cms" and out["train_mpps"] == STANDARD
    assert set(out["scores"]) == {f"{m:g}" for m in CMS_TEST_MPPS}
    assert set(out["scores"]["0.375"]) == {"knn", "linear"}
    assert set(out["scores"]["0.375"]["linear"]) == {"balanced_accuracy", "accuracy", "macro_f1", "weighted_f1"}
    assert out["chosen"]["knn"] == result.chosen("knn")
    fold = out["folds"]["fold_0"]
    assert fold["groups"]["test"] == sorted(str(s) for s in np.unique(slides[slides % 5 == 0]))
    assert (fold["train"], fold["dev"], fold["test"]) == (72, 24, 24)
    assert set(out["per_fold"]["linear"]["fold_0"]["dev_balanced_accuracy"]) == {f"{c:g}" for c in np.logspace(-4, 4, 9)}


def test_rows_absent_at_an_mpp_are_left_out_there():
    features, labels, slides, folds = synthetic(seed=1)
    present = {m: np.ones(len(labels), bool) for m in features}
    present[0.75][::2] = False
    present[0.5][1::3] = False  # a train mpp: its missing rows leave the pooled train and dev rows too
    result = cms_protocol(features, labels, folds, present=present, probes=["knn"])
    kept = {m: {n: p & present[m] for n, p in ((n, folds[n] == "test") for n in folds)} for m in features}
    for name in folds:
        train = folds[name] == "train"
        x_train = np.vstack([features[m][train & present[m]] for m in STANDARD])
        y_train = np.concatenate([labels[train & present[m]] for m in STANDARD])
        model = KNeighborsClassifier(n_neighbors=int(result.probes["knn"][name].chosen), metric="cosine").fit(
            x_train, y_train)
        rows = kept[0.75][name]
        expected = balanced_accuracy_score(labels[rows], model.predict(features[0.75][rows]))
        assert result.probes["knn"][name].test[0.75]["balanced_accuracy"] == pytest.approx(expected, abs=1e-12)


def test_missing_mpp_and_k_beyond_the_train_rows():
    features, labels, slides, folds = synthetic(n_slides=10, per_slide=2)
    with pytest.raises(ValueError, match="needs embeddings at"):
        cms_protocol({m: v for m, v in features.items() if m != 2.0}, labels, folds)
    result = cms_protocol(features, labels, folds, probes=["knn"])
    fold = result.probes["knn"]["fold_0"]
    assert 80.0 in fold.skipped and 80.0 not in fold.dev_balanced_accuracy  # 6 train slides × 2 images × 4 mpps


def test_two_class_fit_equals_the_authors_two_class_softmax():
    """sklearn ≥ 1.8 has no multi_class; the two-class softmax at C is a binomial fit at 2C."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(60, 3))
    y = (x[:, 0] + 0.7 * rng.normal(size=60) > 0.2).astype(int)
    c = 0.05
    weight = np.where(y == 1, len(y) / (2 * y.sum()), len(y) / (2 * (1 - y).sum()))  # class_weight="balanced"

    def softmax_objective(theta):
        w, b = theta[:6].reshape(2, 3), theta[6:]
        z = x @ w.T + b
        return -c * np.sum(weight * (z[np.arange(len(y)), y] - logsumexp(z, axis=1))) + 0.5 * np.sum(w ** 2)

    theta = minimize(softmax_objective, np.zeros(8), method="BFGS", options={"gtol": 1e-10}).x
    w = theta[:6].reshape(2, 3)
    model = make_logistic(c, 2).set_params(tol=1e-10).fit(x, y)
    assert model.coef_[0] == pytest.approx(w[1] - w[0], abs=1e-5)
    assert model.intercept_[0] == pytest.approx(theta[7] - theta[6], abs=1e-5)


def test_eval_path_records_protocol_chosen_k_and_c_and_rankme_definition(tmp_path):
    from eval_fixtures import MPPS, make_embeddings, sheet
    from magflow.evaluate.record import read_record
    from magflow.evaluate.evaluate import evaluate_metric

    path = make_embeddings(tmp_path / "emb.h5")
    splits, groups = sheet()
    settings = {"seeds": [0, 1], "protocol": "cms", "rankme": {"definition": "covariance"}}
    record = evaluate_metric("probes", path, tmp_path / "probes.json", settings=settings, sheet_splits=splits,
                             groups=groups)
    assert record == read_record(tmp_path / "probes.json")
    assert record["protocol"] == "cms" and record["status"] == "ok", record["reason"]
    result = record["result"]
    assert set(result["chosen"]["knn"]) == set(result["chosen"]["linear"]) == {"seed_0", "seed_1"}
    assert set(result["folds"]["seed_0"]["groups"]) == {"train", "dev", "test"}
    assert result["train_mpps"] == [m for m in MPPS if m in STANDARD]
    assert set(result["scores"]) == {f"{m:g}" for m in MPPS}
    rankme = evaluate_metric("rankme", path, tmp_path / "rankme.json", settings=settings)
    assert rankme["protocol"] == "magflow"  # evaluate.protocol switches the probes only
    assert rankme["result"]["definition"] == rankme["constants"]["definition"] == "covariance"
    assert rankme["constants"]["clamp"] == 1e-12
    default = evaluate_metric("rankme", path, tmp_path / "paper.json")
    assert (default["protocol"], default["result"]["definition"]) == ("magflow", "paper")
