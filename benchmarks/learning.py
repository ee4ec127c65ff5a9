"""Does pretraining learn? Small DINOv2 runs on phantom slides, measured against their own initialisation.

    python benchmarks/learning.py                       # 2 CPU cores (2 runs at once), about 23 minutes
    python benchmarks/learning.py --preset vits --device cuda --iterations 2000

In one temporary folder it renders phantom slides (train slides and held-out eval slides with other
seeds), masks them and extracts a train tile set and an eval tile set with the pipeline's own
functions, then for each strategy (du, cu) and seed:

- trains a small ViT with DINOv2 (``views: dinov2``) and records the DINO loss;
- embeds the held-out eval tiles at the 7 profile mpps with the trained teacher and with the same
  architecture at initialisation (the run's control, rebuilt from its model card);
- prints, per run, the DINO loss at start, middle and end as a fraction of ln K, the entropy of the
  teacher's targets (as a fraction of ln K) and the mean pairwise cosine of the teacher head's
  bottleneck on held-out views, and per mpp the kNN balanced accuracy (leave one slide out, k = 20,
  cosine) and RankMe, each beside its control.

The bar: the DINO loss ends below 0.8·ln K in every run, and
the kNN balanced accuracy averaged over the 7 mpps and the seeds is at least the control's + 0.10
for each strategy, with no mpp below the control. The script exits 1 when the bar is missed.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score

from magflow.embed.control import InitControl
from magflow.embed.output import read_embeddings
from magflow.embed.embed import embed_tileset
from magflow.evaluate.probes import knn_predict
from magflow.evaluate.rankme import rankme
from magflow.preprocess.extract_tiles import TileSetParams, extract_tiles
from magflow.preprocess.tissue import TissueParams
from magflow.preprocess.tissue_mask import make_tissue_mask
from magflow.pretrain.strategy import SamplingStrategy
from magflow.pretrain.trainer import TrainConfig, train
from magflow.sampling import SamplerConfig, build_sampler
from magflow.training import CHECKPOINT, load_checkpoint
from magflow.phantom.phantom import make_phantom

PROFILE_MPPS = (0.25, 0.375, 0.5, 0.75, 1.0, 1.5, 2.0)
SCALES = [0.25, 0.5, 1.0, 2.0]

# "small": a 4-block, 128-wide ViT/16 on 64 px globals / 32 px locals, for 2 CPU cores.
# "vits": the paper's ViT-S/14 at 224 / 98 px (a GPU run).
PRESETS: dict[str, dict[str, Any]] = {
    "small": {
        "train": {"arch": "vit_small_patch16_224", "arch_kwargs": {"embed_dim": 128, "depth": 4, "num_heads": 4},
                  "patch_size": 16, "global_size": 64, "local_size": 32, "n_local_crops": 4, "source_size": 72,
                  "prototypes": 1024, "head_hidden_dim": 512, "head_bottleneck_dim": 128, "batch_size": 8,
                  "drop_path": 0.0, "lr_scaling": "sqrt", "base_lr": 0.004,
                  # DINOv2's 0.04 -> 0.07 teacher collapses to uniform targets at this size (config/README.md)
                  "teacher_temp": 0.02, "warmup_teacher_temp": 0.02},
        "iterations": 6000, "slides": 4, "eval_slides": 4, "width_um": 1536.0,
    },
    "vits": {
        "train": {"arch": "vit_small_patch14_dinov2", "patch_size": 14, "global_size": 224, "local_size": 98,
                  "n_local_crops": 8, "source_size": 256, "prototypes": 65536, "batch_size": 64},
        "iterations": 2000, "slides": 8, "eval_slides": 4, "width_um": 3072.0,
    },
}


def build_data(root: Path, preset: dict[str, Any], global_size: int, source_size: int) -> tuple[list[Path], list[Path],
                                                                                              dict[str, str]]:
    """Phantom slides → masks → train stores (all scales) and eval stores (finest scale, wide patches)."""
    train_cell = source_size                        # a source_size px patch at t from the next finer scale
    eval_source = int(global_size * max(PROFILE_MPPS) / min(SCALES))  # every profile mpp from 0.25 mpp
    settings = {"seed": 0, "width_um": preset["width_um"], "height_um": preset["width_um"], "mpp": 0.25}
    train_stores, eval_stores, labels = [], [], {}
    n_train, n_eval = preset["slides"], preset["eval_slides"]
    for i in range(n_train + n_eval):
        slide_id = f"{'train' if i < n_train else 'eval'}_{i}"
        slide, mask = root / f"{slide_id}.tiff", root / f"{slide_id}.mask.h5"
        make_phantom(slide_id, str(i % 2), settings, slide, root / f"{slide_id}.labels.png", root / f"{slide_id}.json")
        make_tissue_mask(slide, slide_id, mask, root / f"{slide_id}.qc.png", TissueParams())
        if i < n_train:
            params = TileSetParams("train", SCALES, cell_px=train_cell, source_px=2 * train_cell, min_tissue=0.5)
            train_stores.append(root / "train" / f"{slide_id}.h5")
            out = train_stores[-1]
        else:
            params = TileSetParams("eval", [0.25], cell_px=global_size, source_px=eval_source, min_tissue=0.5,
                                   max_tiles_per_scale=400, seed=1)
            eval_stores.append(root / "eval" / f"{slide_id}.h5")
            labels[slide_id] = str(root / f"{slide_id}.labels.png")
            out = eval_stores[-1]
        out.parent.mkdir(exist_ok=True)
        extract_tiles(slide, slide_id, mask, out, params, progress=False)
    return train_stores, eval_stores, labels


def head_diagnostics(run_dir: Path, config: TrainConfig, teacher: torch.nn.Module, stores: list[Path],
                     strategy: str) -> dict[str, float]:
    """Teacher-target entropy (fraction of ln K, with the run's last centre) and the bottleneck's mean
    pairwise cosine, on 128 global views of train tiles drawn with a seed the run never used."""
    views = SamplingStrategy(config, stores, build_sampler(SamplerConfig(strategy=strategy)))
    batch = views.batches(128, 10_000 + config.seed, 0, 1)[0]
    prepared = views.prepare(batch, 0, 0, torch.device("cpu"))
    center = load_checkpoint(run_dir / CHECKPOINT)["centers"]["dino.center"]
    with torch.no_grad():
        cls = teacher.backbone(prepared.global_crops[:128]).cls
        bottleneck = torch.nn.functional.normalize(teacher.dino_head.mlp(cls), dim=-1)
        logits = teacher.dino_head(cls)
        targets = torch.softmax((logits - center) / config.teacher_temp, dim=-1)
    entropy = float(-(targets * targets.clamp_min(1e-30).log()).sum(-1).mean())
    cosines = bottleneck @ bottleneck.T
    off = ~torch.eye(len(cosines), dtype=torch.bool)
    return {"target_entropy": entropy / math.log(config.prototypes), "head_cosine": float(cosines[off].mean())}


def profile(path: Path) -> dict[float, dict[str, float]]:
    """Per mpp: kNN balanced accuracy, leaving one eval slide out at a time, and RankMe."""
    emb = read_embeddings(path)
    out = {}
    for mpp in emb.mpps:
        keep = emb.valid[mpp] & (emb.label >= 0)
        x, y, slides = emb.features[mpp][keep], emb.label[keep], emb.slide[keep]
        predicted = np.empty_like(y)
        for slide in np.unique(slides):
            held = slides == slide
            predicted[held] = knn_predict(x[~held], y[~held], x[held])
        out[mpp] = {"knn": float(balanced_accuracy_score(y, predicted)),
                    "rankme": float(rankme(emb.features[mpp][emb.valid[mpp]]).score)}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--iterations", type=int, help="training iterations per run (default: the preset's)")
    parser.add_argument("--strategies", nargs="+", default=["du", "cu"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--train", type=json.loads, default={}, help="JSON overrides of the TrainConfig")
    parser.add_argument("--jobs", type=int, default=2, help="runs trained at once, one process and one thread each "
                        "(default 2, for 2 cores; 1: in this process with torch's threads)")
    parser.add_argument("--out", type=Path, help="keep the work folder here (default: a temporary one)")
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    iterations = args.iterations or preset["iterations"]
    settings = {**preset["train"], "views": "dinov2", "iterations": iterations, "num_workers": 0,
                "log_every": 50, "checkpoint_every": 10 ** 9, **args.train}
    settings.setdefault("warmup_iters", iterations // 10)
    settings.setdefault("freeze_last_layer_iters", iterations // 10)
    settings.setdefault("teacher_temp_warmup_iters", iterations // 3)
    base = TrainConfig.from_dict(settings)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        train_stores, eval_stores, labels = build_data(root / "data", preset, base.global_size, base.source_size)
        print(f"data: {len(train_stores)} train and {len(eval_stores)} held-out eval slides "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
        work = [(strategy, seed) for strategy in args.strategies for seed in args.seeds]
        jobs = max(1, min(args.jobs, len(work)))
        if jobs == 1:
            rows = [run_one(strategy, seed, settings, root, train_stores, eval_stores, labels, args.device)
                    for strategy, seed in work]
            for row in rows:
                report_run(row)
        else:  # one process per run, one thread each: 2 cores train 2 runs at once
            with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                     initializer=torch.set_num_threads, initargs=(1,)) as pool:
                futures = [pool.submit(run_one, strategy, seed, settings, root, train_stores, eval_stores, labels,
                                       args.device) for strategy, seed in work]
                rows = []
                for future in futures:
                    rows.append(future.result())
                    report_run(rows[-1])
        passed = report_bar(rows, args.strategies)
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0 if passed else 1


def run_one(strategy: str, seed: int, settings: dict[str, Any], root: Path, train_stores: list[Path],
            eval_stores: list[Path], labels: dict[str, str], device: str) -> dict[str, Any]:
    """Train one run, embed the eval slides with it and with its init control; its row of the table."""
    config = TrainConfig.from_dict({**settings, "seed": seed})
    run_dir = root / f"{strategy}_seed{seed}"
    dino: list[float] = []
    t0 = time.perf_counter()
    result = train(config, train_stores, build_sampler(SamplerConfig(strategy=strategy)), run_dir,
                   progress=False, device=device, on_step=lambda s: dino.append(s.losses["dino"]))
    seconds = time.perf_counter() - t0
    diag = head_diagnostics(run_dir, config, result.teacher.cpu(), train_stores, strategy)
    trained, control = root / f"{run_dir.name}.h5", root / f"{run_dir.name}~init.h5"
    common = {"labels": labels, "batch_size": 64, "device": device, "progress": False}
    embed_tileset(eval_stores, trained, run_dir, **common)
    embed_tileset(eval_stores, control, InitControl(str(run_dir)), **common)
    lnk = math.log(config.prototypes)
    loss = [np.mean(dino[:10]) / lnk, np.mean(dino[len(dino) // 2 - 5:len(dino) // 2 + 5]) / lnk,
            np.mean(dino[-10:]) / lnk]
    return {"strategy": strategy, "seed": seed, "seconds": seconds, "loss": loss, **diag,
            "trained": profile(trained), "control": profile(control)}


def report_run(row: dict[str, Any]) -> None:
    start, middle, end = row["loss"]
    print(f"\n{row['strategy']} seed {row['seed']} ({row['seconds']:.0f} s): DINO loss / ln K  start {start:.3f}  "
          f"middle {middle:.3f}  end {end:.3f}; teacher targets entropy / ln K {row['target_entropy']:.3f}; "
          f"head bottleneck mean cosine {row['head_cosine']:.3f}")
    print(f"  {'mpp':>6} {'kNN bal.acc':>12} {'(init)':>8} {'RankMe':>8} {'(init)':>8}")
    for mpp, value in row["trained"].items():
        init = row["control"][mpp]
        print(f"  {mpp:>6g} {value['knn']:>12.3f} {init['knn']:>8.3f} {value['rankme']:>8.1f} {init['rankme']:>8.1f}")


def report_bar(rows: list[dict[str, Any]], strategies: list[str]) -> bool:
    print("\nsummary: kNN balanced accuracy, mean over the 7 mpps and the seeds (init = the same networks at "
          "initialisation)")
    ok = all(row["loss"][2] < 0.8 for row in rows)
    print(f"  DINO loss ends below 0.8 ln K in every run: {'yes' if ok else 'NO'} "
          f"(ends: {', '.join(format(row['loss'][2], '.3f') for row in rows)})")
    for strategy in strategies:
        mine = [row for row in rows if row["strategy"] == strategy]
        mpps = list(mine[0]["trained"])
        trained = {m: np.mean([r["trained"][m]["knn"] for r in mine]) for m in mpps}
        init = {m: np.mean([r["control"][m]["knn"] for r in mine]) for m in mpps}
        gain = np.mean(list(trained.values())) - np.mean(list(init.values()))
        worst = min(trained[m] - init[m] for m in mpps)
        good = gain >= 0.10 and worst >= 0
        ok &= good
        print(f"  {strategy}: trained {np.mean(list(trained.values())):.3f}, init {np.mean(list(init.values())):.3f}, "
              f"gain {gain:+.3f} (bar +0.10); smallest per-mpp gain {worst:+.3f} (bar >= 0): "
              f"{'pass' if good else 'FAIL'}")
    print(f"bar {'met' if ok else 'NOT met'}")
    return ok


if __name__ == "__main__":
    raise SystemExit(main())
