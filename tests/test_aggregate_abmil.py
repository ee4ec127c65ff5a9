"""Slide-level evaluation: AB-MIL attention (gated, Eq. 8), min-loss group propagation, training, AUROC table."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from magflow.aggregate.abmil import run_abmil
from magflow.aggregate.abmil_model import ABMIL, GatedAttention, build_slide_model
from magflow.aggregate.abmil_table import auroc_rows, write_auroc_table
from magflow.aggregate.bags import RegionBag, SlideSet
from magflow.aggregate.mixer import MixerConfig, MixingEncoder
from magflow.aggregate.slide_eval import (MILConfig, evaluate_seeds, group_min_loss, mil_param_groups, mil_splits,
                                          predict_proba, slide_auroc, train_mil)
from magflow.errors import ConfigError

D = 8  # tile embedding dim of the synthetic slides


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_bag(rng: np.random.Generator, regions: int = 3, tokens: int = 6, shift: int = 0) -> RegionBag:
    """Regions of random tokens over 3 scales; ``shift`` tokens get +3 on their first two features."""
    x = rng.normal(size=(regions, tokens, D)).astype(np.float32)
    valid = rng.random((regions, tokens)) > 0.2
    valid[:, :3] = True
    flat = np.flatnonzero(valid.ravel())
    x.reshape(-1, D)[rng.choice(flat, size=shift, replace=False), :2] += 3.0
    scale = rng.integers(0, 3, size=(regions, tokens))
    scale[:, :3] = [0, 1, 2]  # every region has a valid tile of every scale
    position = rng.integers(0, 4, size=(regions, tokens, 2))
    return RegionBag(torch.from_numpy(x), torch.from_numpy(scale), torch.from_numpy(position), torch.from_numpy(valid))


def planted_slides(n: int, seed: int, prefix: str) -> SlideSet:
    """Negative slides are noise; positive slides also contain 3 tokens from a shifted distribution."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    bags = [random_bag(rng, shift=3 * int(y)) for y in labels]
    return SlideSet.build([f"{prefix}{i}" for i in range(n)], bags, labels.tolist())


def tiny_encoder() -> MixingEncoder:
    return MixingEncoder(MixerConfig(in_dim=D, width=16, depth=2, heads=2, n_cls=2, max_grid=8))


def test_gated_attention_sums_to_one_per_bag_and_is_zero_on_padding():
    torch.manual_seed(0)
    attention = GatedAttention(in_dim=12, attn_dim=5)
    h = torch.randn(7, 11, 12)
    valid = torch.rand(7, 11) > 0.5
    valid[torch.arange(7), torch.randint(0, 11, (7,))] = True
    a = attention(h, valid)
    assert torch.allclose(a.sum(dim=1), torch.ones(7), atol=1e-6)
    assert torch.all(a[~valid] == 0) and torch.all(a[valid] > 0)
    # Ilse et al.: softmax over wᵀ(tanh(V h) ⊙ sigm(U h)), here for bag 0 by hand
    v, u, w = attention.tanh_branch[0], attention.sigmoid_branch[0], attention.score
    hb = h[0][valid[0]]
    expected = torch.softmax((torch.tanh(v(hb)) * torch.sigmoid(u(hb))) @ w.weight.T.squeeze(-1) + w.bias, 0)
    assert torch.allclose(a[0][valid[0]], expected, atol=1e-6)
    with pytest.raises(ValueError, match="at least one valid instance"):
        attention(h[:1], torch.zeros(1, 11, dtype=torch.bool))


def test_abmil_output_ignores_padding_content():
    torch.manual_seed(0)
    model = ABMIL(in_dim=6, n_classes=3, hidden_dim=10, attn_dim=4).eval()
    x = torch.randn(2, 9, 6)
    valid = torch.ones(2, 9, dtype=torch.bool)
    valid[1, 5:] = False
    noisy = x.clone()
    noisy[1, 5:] = float("nan")
    out, padded = model(x[1:, :5]), model(noisy, valid)
    assert torch.allclose(out.logits[0], padded.logits[1], atol=1e-6)
    assert padded.logits.shape == (2, 3) and torch.isfinite(padded.logits).all()


def test_min_loss_propagation_picks_the_lowest_loss_slide():
    # group 0: three slides, only slide 1 predicts the group's label 1; group 1: a single slide
    logits = torch.tensor([[2.0, -2.0], [-3.0, 3.0], [1.0, 0.0], [0.5, -0.5]], requires_grad=True)
    labels = torch.tensor([1, 1, 1, 0])
    slide_losses = F.cross_entropy(logits, labels, reduction="none")
    group_losses = group_min_loss(slide_losses, torch.tensor([0, 0, 0, 1]))
    assert torch.allclose(group_losses, slide_losses[[1, 3]])
    group_losses.sum().backward()
    grad = logits.grad.abs().sum(dim=1)
    assert grad[0] == 0 and grad[2] == 0 and grad[1] > 0 and grad[3] > 0


def test_group_labels_must_agree():
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match="patient-7"):
        SlideSet.build(["a", "b"], [random_bag(rng), random_bag(rng)], [0, 1], ["patient-7", "patient-7"])


def test_planted_signal_reaches_auroc_above_0_9():
    torch.manual_seed(0)
    train, val, test = planted_slides(64, 0, "tr"), planted_slides(16, 1, "va"), planted_slides(40, 2, "te")
    config = MILConfig(lr=3e-3, epochs=8, freeze_epochs=0, groups_per_batch=4, hidden_dim=32, attn_dim=16,
                       dropout=0.1)
    model = build_slide_model("tiles", 2, token_dim=D, scales=(0, 1, 2), hidden_dim=32, attn_dim=16, dropout=0.1)
    fit = train_mil(model, train, val, config, seed=0)
    auroc = slide_auroc(test.labels, predict_proba(fit.model, test))
    assert auroc.value > 0.9, auroc
    assert 1 <= fit.best_epoch <= 8 and len(fit.history) == 8


def test_layer_wise_lr_decay():
    model = build_slide_model("patch", 2, encoder=tiny_encoder())
    config = MILConfig(lr=1e-5, layer_decay=0.75, weight_decay=0.05)
    lr_of, wd_of = {}, {}
    for group in mil_param_groups(model, config):
        for name in group["param_names"]:
            lr_of[name], wd_of[name] = group["lr"], group["weight_decay"]
    assert set(lr_of) == {n for n, _ in model.named_parameters()}
    for name, expected in [("encoder.patch_embed.weight", 0.75 ** 3), ("encoder.pos.pos_col", 0.75 ** 3),
                           ("encoder.blocks.0.attn.qkv.weight", 0.75 ** 2),
                           ("encoder.blocks.1.mlp.fc2.weight", 0.75), ("encoder.norm.weight", 1.0),
                           ("head.classifier.weight", 1.0), ("head.attention.w.weight", 1.0)]:
        assert math.isclose(lr_of[name], 1e-5 * expected), name
    assert wd_of["encoder.blocks.0.attn.qkv.weight"] == 0.05 and wd_of["head.classifier.weight"] == 0.05
    assert wd_of["encoder.norm.weight"] == 0 and wd_of["encoder.cls_token"] == 0 and wd_of["encoder.pos.pos_row"] == 0


@pytest.mark.parametrize("mode", ["patch", "cls"])
def test_encoder_frozen_in_the_first_epoch_then_fine_tuned(mode):
    slides = planted_slides(6, 3, "s")
    config = MILConfig(lr=1e-3, epochs=1, freeze_epochs=1, select="last")

    def trained(epochs: int) -> tuple[dict, dict]:
        torch.manual_seed(0)
        model = build_slide_model(mode, 2, encoder=tiny_encoder(), hidden_dim=8, attn_dim=4)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        train_mil(model, slides, None, MILConfig(**{**config.__dict__, "epochs": epochs}), seed=0)
        return before, model.state_dict()

    before, after = trained(1)
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("encoder."))
    assert not torch.equal(before["head.classifier.weight"], after["head.classifier.weight"])
    before, after = trained(2)
    assert not torch.equal(before["encoder.blocks.0.attn.qkv.weight"], after["encoder.blocks.0.attn.qkv.weight"])


def test_cls_mode_bags_are_regions_of_concatenated_class_tokens():
    model = build_slide_model("cls", 3, encoder=tiny_encoder(), hidden_dim=8, attn_dim=4)
    bag = random_bag(np.random.default_rng(0), regions=4)
    assert model.instances(bag).shape == (4, 2 * 16)
    assert model.head.project[0].in_features == 32
    out = model([bag, random_bag(np.random.default_rng(1), regions=2)])
    assert out.logits.shape == (2, 3) and out.attention.shape == (2, 4)
    assert torch.allclose(out.attention.sum(1), torch.ones(2)) and torch.all(out.attention[1, 2:] == 0)


def test_tiles_mode_pools_only_the_chosen_scale():
    model = build_slide_model("tiles", 2, token_dim=D, scales=[1])
    bag = random_bag(np.random.default_rng(0))
    assert len(model.instances(bag)) == int((bag.valid & (bag.scale_id == 1)).sum())
    with pytest.raises(ConfigError, match="token_dim"):
        build_slide_model("tiles", 2, scales=[1])


def test_auroc_undefined_for_one_class_is_nan_with_reason():
    auroc = slide_auroc([1, 1, 1], [[0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])
    assert math.isnan(auroc.value) and "undefined" in auroc.reason and "[1]" in auroc.reason
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 3, 30), rng.dirichlet(np.ones(3), 30)
    assert math.isclose(slide_auroc(y, p).value, roc_auc_score(y, p, multi_class="ovr", average="macro"))
    partial = slide_auroc(y[y != 2], p[y != 2])
    assert "[2] absent" in partial.reason and 0 <= partial.value <= 1


def test_config_refuses_unknown_keys():
    assert MILConfig.from_dict({"epochs": 3, "seeds": [1, 2]}).seeds == (1, 2)
    with pytest.raises(ConfigError, match="unknown aggregate.abmil key"):
        MILConfig.from_dict({"learning_rate": 1e-4})


def test_seeds_table_and_records(tmp_path):
    slides = planted_slides(20, 4, "s")
    config = MILConfig(lr=1e-3, epochs=2, seeds=(0, 1), hidden_dim=8, attn_dim=4)
    build = lambda: build_slide_model("tiles", 2, token_dim=D, scales=[0], hidden_dim=8, attn_dim=4)  # noqa: E731
    result = evaluate_seeds(slides, mil_splits(slides, config), build, config)
    assert result["auroc"]["n"] == 2 and len(result["per_seed"]) == 2
    # a sheet split whose test slides are all negative: NaN with a reason, not a crash
    sheet = {s: "test" if i in (0, 2) else "train" for i, s in enumerate(slides.ids)}
    record = run_abmil("ABMIL 10×", "tumour", slides, build, config, tmp_path / "one_class.json", n_classes=2,
                       sheet_splits=sheet)
    assert record["auroc"]["mean"] is None and "undefined" in record["per_seed"][0]["reason"]
    assert json.loads((tmp_path / "one_class.json").read_text())["per_seed"][0]["auroc"] is None
    skipped = run_abmil("MEM r=0.5", "grade", slides.subset(slides.ids[:3]), build, config, tmp_path / "few.json",
                        n_classes=2)
    assert skipped["status"] == "skipped" and "abmil splits" in skipped["reason"]
    ok = {"method": "ABMIL all×", "task": "tumour", "status": "ok", "reason": "",
          "auroc": {"mean": 0.9123, "std": 0.0131, "n": 2}, "per_seed": [{"seed": 0}, {"seed": 1}]}
    records = [ok, record, skipped]
    assert auroc_rows(records) == [
        {"method": "ABMIL all×", "tumour": "0.912 ± 0.013", "grade": "", "Average": "0.912 (1/2 tasks)"},
        {"method": "ABMIL 10×", "tumour": "n/a", "grade": "", "Average": "n/a"},
        {"method": "MEM r=0.5", "tumour": "", "grade": "n/a", "Average": "n/a"}]
    write_auroc_table(records, tmp_path / "auroc.tsv", tmp_path / "auroc.html")
    assert (tmp_path / "auroc.tsv").read_text().splitlines()[1] == "ABMIL all×\t0.912 ± 0.013\t\t0.912 (1/2 tasks)"
    html = (tmp_path / "auroc.html").read_text()
    assert "0.912 ± 0.013" in html and "abmil splits" in html


def test_region_files_to_record_with_the_mixing_encoder(tmp_path):
    from magflow.aggregate.bags import load_slides
    from magflow.aggregate.regions import write_regions
    from magflow.aggregate.synthetic import synthetic_scales, write_synthetic_regions

    paths = []
    for i in range(12):
        paths.append(tmp_path / f"s{i}.h5")
        write_synthetic_regions(paths[-1], f"s{i}", seed=i, cols=6, rows=6, dim=D)
    no_tissue = [dataclasses.replace(s, grid=s.grid[:0], coords=s.coords[:0], features=s.features[:0])
                 for s in synthetic_scales(np.random.default_rng(0), 6, 6, D)]
    write_regions(tmp_path / "empty.h5", "empty", no_tissue, 3, 0.25, {"model": "synthetic"})
    labels = {f"s{i}": i % 2 for i in range(12)} | {"empty": 0}
    slides, left_out = load_slides([*paths, tmp_path / "empty.h5"], labels, {"s0": "p0", "s2": "p0"})
    assert len(slides) == 12 and list(left_out) == ["empty"] and slides.groups[0] == slides.groups[2] == "p0"
    assert slides.bags[0].tokens.shape[1:] == (189, D) and slides.bags[0].position.shape[1:] == (189, 2)
    config = MILConfig(epochs=2, seeds=(0,), hidden_dim=8, attn_dim=4)

    def random_mixer():  # a fresh encoder per seed: training fine-tunes it in place
        encoder = MixingEncoder(MixerConfig(in_dim=D, width=16, depth=1, heads=2, n_cls=2, max_grid=12))
        return build_slide_model("cls", 2, encoder=encoder, hidden_dim=8, attn_dim=4)

    record = run_abmil("random mixer", "synthetic", slides, random_mixer, config, tmp_path / "rec.json", n_classes=2,
                       left_out=left_out)
    assert record["status"] == "ok" and record["left_out"] == {"empty": left_out["empty"]}
    assert record["per_seed"][0]["history"][0]["encoder_frozen"] and not record["per_seed"][0]["history"][1][
        "encoder_frozen"]
    with pytest.raises(ConfigError, match="no label"):
        load_slides(paths[:1], {})
