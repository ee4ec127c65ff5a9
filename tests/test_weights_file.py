"""Exported weights: equal tensors and metadata give byte-identical .safetensors files, in any process."""

import hashlib
import json
import os
import subprocess
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from magflow import weights_file
from magflow.pretrain.export import CARD, WEIGHTS, export_teacher, load_teacher
from magflow.weights_file import save_weights

METADATA = {f"key{i}": f"value {i}" for i in range(8)} | {"format": "pt", "timm_name": "vit_small_patch14_dinov2"}
SAVE = """
import sys, torch
from magflow.weights_file import save_weights
keys = sorted({metadata!r}, reverse=sys.argv[2] == "reversed")
tensors = {{"b": torch.arange(6.0).reshape(2, 3), "a": torch.ones(3, dtype=torch.float16)}}
save_weights(tensors, sys.argv[1], {{key: {metadata!r}[key] for key in keys}})
"""


def tensors():
    return {"b.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3), "a.scale": torch.tensor(2.0),
            "c.half": torch.ones(3, dtype=torch.float16)}


def test_equal_weights_give_equal_bytes_whatever_the_metadata_order(tmp_path):
    paths = []
    for n, order in enumerate([sorted(METADATA), sorted(METADATA, reverse=True), list(METADATA)]):
        paths.append(tmp_path / f"{n}.safetensors")
        save_weights(tensors(), paths[-1], {key: METADATA[key] for key in order})
    assert paths[0].read_bytes() == paths[1].read_bytes() == paths[2].read_bytes()
    plain = [tmp_path / f"plain{n}.safetensors" for n in range(4)]
    for path in plain:
        save_file(tensors(), path, metadata=METADATA)
    assert len({path.read_bytes() for path in plain}) > 1, "safetensors alone orders its metadata at random"
    loaded = load_file(paths[0])
    assert all(torch.equal(loaded[name], tensor) for name, tensor in tensors().items())
    with safe_open(paths[0], "pt") as handle:
        assert handle.metadata() == METADATA
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_two_processes_with_different_hash_seeds_write_the_same_bytes(tmp_path):
    digests = set()
    for seed, order in (("1", "sorted"), ("2", "reversed")):
        path = tmp_path / f"{seed}.safetensors"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-c", SAVE.format(metadata=METADATA), str(path), order], env=env,
                       check=True)
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
    assert len(digests) == 1


def test_a_header_that_grows_moves_the_data_and_stays_readable(tmp_path, monkeypatch):
    dumps = json.dumps
    monkeypatch.setattr(weights_file.json, "dumps", lambda value, **kw: dumps(value, indent=2, ensure_ascii=False))
    path = tmp_path / "w.safetensors"
    save_weights(tensors(), path, METADATA)
    size = int.from_bytes(path.read_bytes()[:8], "little")
    assert size % 8 == 0 and b"\n  " in path.read_bytes()[8:8 + size]
    loaded = load_file(path)
    assert all(torch.equal(loaded[name], tensor) for name, tensor in tensors().items())
    with safe_open(path, "pt") as handle:
        assert handle.metadata() == METADATA
    header = json.loads(path.read_bytes()[8:8 + size])
    assert list(header["__metadata__"]) == sorted(METADATA)


def test_exported_teachers_of_equal_weights_are_byte_identical(tmp_path):
    from magflow.pretrain.backbone import build_backbone

    torch.manual_seed(0)
    backbone = build_backbone("vit_small_patch16_224", img_size=32, patch_size=16, reg_tokens=0, depth=1,
                              embed_dim=32, num_heads=2)
    card = {"architecture": {"timm_name": "vit_small_patch16_224", "timm_kwargs": {"depth": 1, "embed_dim": 32,
                                                                                    "num_heads": 2},
                             "img_size": 32, "patch_size": 16, "reg_tokens": 0}}
    for name in ("one", "two"):
        export_teacher(backbone, tmp_path / name, card)
    one, two = ((tmp_path / name / WEIGHTS).read_bytes() for name in ("one", "two"))
    assert one == two
    cards = [json.loads((tmp_path / name / CARD).read_text()) for name in ("one", "two")]
    assert cards[0]["weights"]["sha256"] == cards[1]["weights"]["sha256"] == hashlib.sha256(one).hexdigest()
    assert load_teacher(tmp_path / "one") is not None


def test_exported_mixers_of_equal_weights_are_byte_identical(tmp_path):
    from magflow.aggregate.mixer import MixerConfig, MixingEncoder
    from magflow.aggregate.pretrain_mixer import export_mixer

    torch.manual_seed(0)
    encoder = MixingEncoder(MixerConfig(in_dim=8, width=16, depth=1, heads=2, n_cls=2, max_grid=8))
    paths = [export_mixer(encoder, tmp_path / name, {"model": "test"})[0] for name in ("one", "two")]
    one, two = (path.read_bytes() for path in paths)
    assert one == two
    header = json.loads(one[8:8 + int.from_bytes(one[:8], "little")])
    assert list(header["__metadata__"]) == sorted(header["__metadata__"])
