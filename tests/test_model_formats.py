"""External models in the formats people have them, and a run's export in timm's own folder format.

Every format is built here from a tiny random ViT saved in tmp_path and must give the same features as
timm itself called on the same files; nothing touches the network.
"""

import json
import os
import shutil
import socket

import pytest
import safetensors.torch
import timm
import torch
from timm.layers import SwiGLUPacked
from timm.models import save_for_hf

from embed_fixtures import TINY_VIT
from magflow.embed.encoder import load_encoder, load_run_encoder
from magflow.embed.external import ExternalModel, external_models
from magflow.errors import ConfigError
from magflow.pretrain.backbone import build_backbone
from magflow.pretrain.export import TIMM_DIR, architecture, export_teacher

TINY = {**TINY_VIT, "img_size": 32, "patch_size": 8}
SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"


def tiny_vit(seed=0, **kwargs):
    torch.manual_seed(seed)
    return timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, **{**TINY, **kwargs}).eval()


def normalised(views, mean, std):
    return (views - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def direct(model_name, views, mean, std, **kwargs):
    """What a user gets from timm itself: ``model(x)`` and every token, on the normalised views."""
    model = timm.create_model(model_name, pretrained=True, num_classes=0, **kwargs).eval()
    with torch.no_grad():
        x = normalised(views, mean, std)
        return model(x), model.forward_features(x), model


def features(spec, views, mean_patch=False):
    encoder = load_encoder(spec, mean_patch=mean_patch)
    with torch.no_grad():
        return encoder(views), encoder


@pytest.fixture
def views():
    torch.manual_seed(1)
    return torch.rand(3, 3, 32, 32)


@pytest.fixture
def local_dir(tmp_path):
    """timm's own local-dir folder (written by timm.models.save_for_hf): a ViT with 2 register tokens."""
    folder = tmp_path / "local"
    save_for_hf(tiny_vit(reg_tokens=2), str(folder))
    return folder


@pytest.fixture
def offline(monkeypatch):
    """Any attempt at the network fails the test."""
    import huggingface_hub
    import huggingface_hub.file_download

    def refuse(*args, **kwargs):
        raise AssertionError("a network access was attempted")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    monkeypatch.setattr(huggingface_hub.file_download, "hf_hub_download", refuse)
    monkeypatch.setattr(timm.models._hub, "hf_hub_download", refuse, raising=False)


def fake_hf_cache(cache, repo_id, folder):
    """The Hugging Face cache layout: blobs, a snapshot of symlinks to them, and refs/main."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / SNAPSHOT
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for i, path in enumerate(sorted(folder.iterdir())):
        blob = repo / "blobs" / f"blob{i}"
        shutil.copy(path, blob)
        (snapshot / path.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(SNAPSHOT)
    return snapshot


def test_a_local_dir_gives_timms_own_features_with_its_normalisation(local_dir, views, offline):
    spec = ExternalModel.from_config("mine", {"timm_name": f"local-dir:{local_dir}", "feature": "pooled"})
    pooled, tokens, _ = direct(f"local-dir:{local_dir}", views, [0.5] * 3, [0.5] * 3)
    out, encoder = features(spec, views)
    assert torch.equal(out, pooled)  # the papers' feature: model(x) with num_classes=0
    assert encoder.card["input"]["mean"] == [0.5] * 3  # the folder's pretrained_cfg, not ImageNet
    assert encoder.card["input"]["normalisation_from"] == {"mean": "config.json pretrained_cfg",
                                                           "std": "config.json pretrained_cfg"}
    assert encoder.card["source"]["format"] == "local-dir" and encoder.card["feature"] == "pooled"
    assert encoder.card["source"]["weights"]["file"] == "pytorch_model.bin"  # save_for_hf's default
    # CLS and CLS + mean patch token (the 2 register tokens left out)
    cls, _ = features(ExternalModel.from_config("mine", {"timm_name": f"local-dir:{local_dir}"}), views)
    both, encoder = features(ExternalModel.from_config("mine", {"timm_name": f"local-dir:{local_dir}",
                                                               "feature": "cls+mean_patch"}), views)
    assert torch.equal(cls, tokens[:, 0]) and encoder.feature_dim == 64
    assert torch.allclose(both, torch.cat([tokens[:, 0], tokens[:, 3:].mean(dim=1)], dim=1), atol=1e-6)


def test_normalisation_from_the_config_entry_wins(local_dir, views):
    spec = ExternalModel.from_config("mine", {"timm_name": f"local-dir:{local_dir}", "feature": "pooled",
                                              "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]})
    pooled, _, _ = direct(f"local-dir:{local_dir}", views, spec.mean, spec.std)
    out, encoder = features(spec, views)
    assert torch.equal(out, pooled)
    assert encoder.card["input"]["normalisation_from"]["std"] == "embed.external.mine.std"


def test_hf_hub_is_read_from_the_local_cache_only(local_dir, views, tmp_path, monkeypatch, offline):
    cache = tmp_path / "hf"
    snapshot = fake_hf_cache(cache, "some-org/tiny", local_dir)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    spec = ExternalModel.from_config("tiny", {"timm_name": "hf-hub:some-org/tiny", "feature": "pooled"})
    assert spec.resolve().files == [str(snapshot / "config.json"), str(snapshot / "pytorch_model.bin")]
    pooled, _, _ = direct(f"local-dir:{local_dir}", views, [0.5] * 3, [0.5] * 3)
    out, encoder = features(spec, views)
    assert torch.equal(out, pooled)
    source = encoder.card["source"]
    assert (source["format"], source["location"], source["revision"]) == ("hf-hub", "some-org/tiny", SNAPSHOT)
    assert source["hf_cache"] == str(cache) and source["hf_cache_from"] == "HF_HUB_CACHE"
    # the cache folder may also be named in the config, and a revision pinned
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "elsewhere"))
    spec = ExternalModel.from_config("tiny", {"timm_name": f"hf-hub:some-org/tiny@{SNAPSHOT}",
                                              "hf_cache": str(cache)})
    assert spec.resolve().revision == SNAPSHOT


def test_an_hf_hub_model_missing_from_the_cache_names_the_cache_and_model(tmp_path, monkeypatch, offline):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    with pytest.raises(ConfigError) as error:
        external_models({"uni2": {"timm_name": "hf-hub:MahmoodLab/UNI2-h"}})
    message = str(error.value)
    assert message.startswith("embed.external.uni2.timm_name: MahmoodLab/UNI2-h")
    assert str(tmp_path / "home" / "hub") in message and "from HF_HOME" in message
    assert "never downloads" in message and "models--MahmoodLab--UNI2-h" in message
    with pytest.raises(ConfigError, match=r"embed.external.uni2.timm_name: .* cache .*given.* \(from "
                                          r"embed.external.uni2.hf_cache\)"):
        external_models({"uni2": {"timm_name": "hf-hub:MahmoodLab/UNI2-h", "hf_cache": str(tmp_path / "given")}})


def test_an_authors_release_folder_loads_into_create_model(tmp_path, views):
    """config.json (architecture, img_size) + {name}.safetensors: the authors' ViT-S/14 at a small size."""
    torch.manual_seed(2)
    vit = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, img_size=56, depth=2)
    folder = tmp_path / "release"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architecture": "vit_small_patch14_dinov2", "img_size": 56}))
    safetensors.torch.save_file(vit.state_dict(), str(folder / "cu_minmax.safetensors"))
    spec = ExternalModel.from_config("cms", {"release": str(folder), "timm_kwargs": {"depth": 2},
                                             "feature": "pooled"})
    views = torch.rand(2, 3, 56, 56)
    reference = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, img_size=56, depth=2)
    reference.load_state_dict(safetensors.torch.load_file(str(folder / "cu_minmax.safetensors")))
    with torch.no_grad():
        expected = reference.eval()(normalised(views, timm.data.IMAGENET_DEFAULT_MEAN, timm.data.IMAGENET_DEFAULT_STD))
    out, encoder = features(spec, views)
    assert torch.equal(out, expected)
    assert encoder.card["source"]["format"] == "release" and encoder.card["architecture"]["img_size"] == [56, 56]
    # a second model in the folder: release_model picks one
    safetensors.torch.save_file(vit.state_dict(), str(folder / "du.safetensors"))
    with pytest.raises(ConfigError, match=r"embed.external.cms.release: .* holds 2 .safetensors files .*"
                                          r"name one with embed.external.cms.release_model"):
        ExternalModel.from_config("cms", {"release": str(folder)})
    assert ExternalModel.from_config("cms", {"release": str(folder), "release_model": "du"}).resolve().weights.name \
        == "du.safetensors"


def test_timm_kwargs_by_name(tmp_path, views):
    """A Virchow2-style ViT (SwiGLUPacked MLP, SiLU): config.json cannot hold classes, the config names them."""
    vit = tiny_vit(mlp_layer=SwiGLUPacked, act_layer=torch.nn.SiLU, mlp_ratio=2.0)
    folder = tmp_path / "swiglu"
    folder.mkdir()
    config = {"architecture": "vit_small_patch16_224", "num_classes": 0, "model_args": {**TINY, "mlp_ratio": 2.0},
              "pretrained_cfg": {"input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.5] * 3, "num_classes": 0}}
    (folder / "config.json").write_text(json.dumps(config))
    safetensors.torch.save_file(vit.state_dict(), str(folder / "model.safetensors"))
    kwargs = {"mlp_layer": "SwiGLUPacked", "act_layer": "SiLU"}
    spec = ExternalModel.from_config("v2", {"timm_name": f"local-dir:{folder}", "timm_kwargs": kwargs,
                                            "feature": "pooled"})
    pooled, _, _ = direct(f"local-dir:{folder}", views, [0.5] * 3, [0.5] * 3, mlp_layer=SwiGLUPacked,
                          act_layer=torch.nn.SiLU)
    out, encoder = features(spec, views)
    assert torch.equal(out, pooled) and encoder.card["architecture"]["timm_kwargs"] == kwargs
    dotted = {"mlp_layer": "timm.layers.SwiGLUPacked", "act_layer": "torch.nn.SiLU"}
    assert torch.equal(features(ExternalModel.from_config("v2", {"timm_name": f"local-dir:{folder}", "feature":
                                                               "pooled", "timm_kwargs": dotted}), views)[0], pooled)
    with pytest.raises(ConfigError, match=r"embed.external.v2.timm_kwargs.act_layer: 'os.system' is not"):
        load_encoder(ExternalModel.from_config("v2", {"timm_name": f"local-dir:{folder}",
                                                      "timm_kwargs": {**kwargs, "act_layer": "os.system"}}))
    with pytest.raises(ConfigError, match="(?s)timm cannot build it .*check timm_kwargs"):
        load_encoder(ExternalModel.from_config("v2", {"timm_name": f"local-dir:{folder}"}))
    with pytest.raises(ConfigError, match=r"embed.external.v2.timm_kwargs.mlp_layer: 'SwiGLUPackd' is not a class "
                                          r"or function in timm.layers"):
        load_encoder(ExternalModel.from_config("v2", {"timm_name": f"local-dir:{folder}",
                                                      "timm_kwargs": {"mlp_layer": "SwiGLUPackd"}}))


def test_a_run_export_round_trips_through_timm_local_dir(tmp_path, views):
    torch.manual_seed(3)
    backbone = build_backbone("vit_small_patch16_224", img_size=32, patch_size=8, reg_tokens=2, **TINY_VIT)
    card = {"architecture": architecture(backbone, "vit_small_patch16_224", TINY_VIT, 32), "strategy": "cu_minmax",
            "sampler": {"strategy": "cu_minmax", "kernel": "abs", "lam": None, "range": [0.25, 2.0]},
            "data": {"stores": ["a.h5", "b.h5"], "tiles": 100, "scales": [0.25, 0.5]}, "iterations": 10, "seed": 7,
            "commit": {"commit": "abc123", "dirty": False}}
    run = tmp_path / "run"
    export_teacher(backbone, run, card)
    folder = run / TIMM_DIR
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "vit_small_patch16_224" and config["num_features"] == 32
    assert config["model_args"]["reg_tokens"] == 2 and config["model_args"]["patch_size"] == 8
    assert config["pretrained_cfg"]["mean"] == [0.485, 0.456, 0.406] and config["pretrained_cfg"]["input_size"] == [
        3, 32, 32]
    readme = (folder / "README.md").read_text()
    assert readme.startswith("---\nlibrary_name: timm\n")
    for expected in ("cu_minmax", "kernel abs", "2 tile store(s)", "| Iterations | 10 |", "| Seed | 7 |", "abc123"):
        assert expected in readme

    own = load_run_encoder(run)
    with torch.no_grad():
        reference = own(views)
        both = load_run_encoder(run, mean_patch=True)(views)
    pooled, _, model = direct(f"local-dir:{folder}", views, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    assert model.num_prefix_tokens == 3 and torch.equal(pooled, reference)  # bit-equal to magflow's loader
    spec = ExternalModel.from_config("run", {"timm_name": f"local-dir:{folder}"})
    assert torch.equal(features(spec, views)[0], reference)
    assert torch.equal(features(spec, views, mean_patch=True)[0], both)
    # the same weights give the same bytes
    first = (folder / "model.safetensors").read_bytes()
    export_teacher(backbone, tmp_path / "again", card)
    assert (tmp_path / "again" / TIMM_DIR / "model.safetensors").read_bytes() == first


def test_missing_files_name_the_key_and_the_path(tmp_path, local_dir):
    missing = tmp_path / "nowhere"
    cases = [
        ({"timm_name": "vit_small_patch16_224", "weights": str(missing / "w.bin")}, "weights"),
        ({"timm_name": f"local-dir:{missing}"}, "timm_name"),
        ({"release": str(missing)}, "release"),
    ]
    for settings, key in cases:
        with pytest.raises(ConfigError, match=rf"^embed.external.m.{key}: .*{missing}"):
            external_models({"m": settings})
    (local_dir / "pytorch_model.bin").unlink()
    with pytest.raises(ConfigError, match=rf"embed.external.m.timm_name: {local_dir} holds no weights file"):
        external_models({"m": {"timm_name": f"local-dir:{local_dir}"}})
    (local_dir / "config.json").unlink()
    with pytest.raises(ConfigError, match=rf"embed.external.m.timm_name: {local_dir / 'config.json'} does not exist"):
        external_models({"m": {"timm_name": f"local-dir:{local_dir}"}})
    release = tmp_path / "release"
    release.mkdir()
    (release / "config.json").write_text(json.dumps({"architecture": "vit_small_patch14_dinov2", "img_size": 224}))
    with pytest.raises(ConfigError, match=rf"embed.external.m.release_model: {release / 'vits.safetensors'} does "
                                          "not exist"):
        external_models({"m": {"release": str(release), "release_model": "vits"}})
    (release / "config.json").write_text(json.dumps({"architecture": "vit_small_patch14_dinov2"}))
    with pytest.raises(ConfigError, match=r"embed.external.m.release: .*config.json lacks img_size"):
        external_models({"m": {"release": str(release)}})
    with pytest.raises(ConfigError, match=r"embed.external.m.feature: 'mean' is not one of pooled, cls"):
        external_models({"m": {"release": str(release), "feature": "mean"}})
    with pytest.raises(ConfigError, match=r"embed.external.m.weights: a local-dir model's weights come from"):
        external_models({"m": {"timm_name": f"local-dir:{release}", "weights": "w.bin"}})


def test_a_finished_run_gets_its_timm_folder_afterwards(tmp_path, capsys):
    from magflow.cli import main

    torch.manual_seed(4)
    backbone = build_backbone("vit_small_patch16_224", img_size=32, patch_size=8, **TINY_VIT)
    card = {"architecture": architecture(backbone, "vit_small_patch16_224", TINY_VIT, 32), "strategy": "cu"}
    run = tmp_path / "run"
    export_teacher(backbone, run, card)
    written = {name: (run / TIMM_DIR / name).read_bytes() for name in ("config.json", "model.safetensors")}
    shutil.rmtree(run / TIMM_DIR)
    assert main(["export-timm", str(run)]) == 0 and "local-dir:" in capsys.readouterr().out
    assert {name: (run / TIMM_DIR / name).read_bytes() for name in written} == written
    assert main(["export-timm", str(tmp_path / "nothing")]) == 2
    assert "needs teacher_backbone.safetensors" in capsys.readouterr().err


def test_the_command_line_names_external_models_in_every_format(local_dir):
    from magflow.cli import build_parser
    from magflow.cli.embedding import _encoder_source

    args = build_parser().parse_args(["embed", "s.h5", "--out", "e.h5", "--timm-name", f"local-dir:{local_dir}",
                                      "--feature", "pooled", "--mean", "0.5", "0.5", "0.5", "--name", "mine"])
    spec = _encoder_source(args)
    assert (spec.name, spec.format, spec.feature, spec.mean, spec.img_size) == ("mine", "local-dir", "pooled",
                                                                                 [0.5] * 3, None)


def test_an_external_model_embeds_a_tile_set_and_its_source_is_recorded(local_dir, tmp_path):
    from embed_fixtures import smooth_field, write_analytic_store
    from magflow.embed import embed_tileset
    from magflow.embed.output import read_embeddings

    store = write_analytic_store(tmp_path / "a.h5", smooth_field, slide_id="a", size_um=64)
    spec = ExternalModel.from_config("mine", {"timm_name": f"local-dir:{local_dir}", "feature": "pooled"})
    out = tmp_path / "mine.h5"
    embed_tileset([store], out, spec, mpps=[0.5, 1.0], progress=False, device="cpu")
    emb = read_embeddings(out)
    assert emb.attrs["features"] == "pooled" and emb.attrs["feature_dim"] == 32
    card = emb.attrs["model_card"]
    assert card["source"]["format"] == "local-dir" and card["input"]["mean"] == [0.5] * 3
