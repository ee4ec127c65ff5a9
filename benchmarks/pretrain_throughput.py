"""DINOv2 pretraining throughput, in one run: training img/s per strategy against the bare model.

    python benchmarks/pretrain_throughput.py [--arch vit_small_patch16_224] [--batch 128] [--device cuda]

Prints
  - training img/s (whole iterations: data, views at the drawn mpps, augmentations, student and teacher
    passes, losses, optimizer and EMA) for strategies du and cu;
  - the bound: the same model's bare student forward+backward plus teacher forward on random crops of
    the same shapes, with the optimizer step;
  - cu / du (the overhead of continuous sampling; goal >= 0.97) and train / bound.
The tiles are synthetic (two stores written in a temporary folder): only the shapes matter here.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from magflow.pretrain.trainer import Step, TrainConfig, build_model, train
from magflow.preprocess.store import ScaleContent, StoreWriter
from magflow.sampling import SamplerConfig, build_sampler

SCALES = (0.25, 0.5, 1.0, 2.0)


def write_store(path: Path, tiles: int, source_px: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    contents = [ScaleContent({"target_mpp": m, "mpp": m, "cell_px": source_px // 2, "source_px": source_px,
                              "grid_cols": tiles, "grid_rows": 1},
                             np.array([[i, 0] for i in range(tiles)]), np.zeros((tiles, 2)), np.ones(tiles))
                for m in SCALES]
    with StoreWriter(path, {"slide_id": path.stem, "tileset": "train"}, contents, source_px) as writer:
        for scale in range(len(SCALES)):
            for row in range(tiles):
                writer.write(scale, row, rng.integers(0, 256, (source_px, source_px, 3), dtype=np.uint8))
    return path


def training_rate(config: TrainConfig, stores: list[Path], strategy: str, out: Path, warmup: int,
                  device: str) -> float:
    stamps: list[float] = []

    def on_step(step: Step) -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    train(config, stores, build_sampler(SamplerConfig(strategy=strategy)), out / strategy, progress=False,
          device=device, on_step=on_step)
    measured = stamps[warmup:]
    return config.batch_size * (len(measured) - 1) / (measured[-1] - measured[0])


def bound_rate(config: TrainConfig, steps: int, warmup: int, device: str) -> float:
    """Student forward+backward, teacher forward and an AdamW step on random crops of the training shapes."""
    student, teacher = build_model(config).to(device), build_model(config).to(device).eval()
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4)
    b = config.batch_size
    globals_ = torch.randn(2 * b, 3, config.global_size, config.global_size, device=device)
    locals_ = torch.randn(config.n_local_crops * b, 3, config.local_size, config.local_size, device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else \
        torch.autocast("cpu", enabled=False)
    times = []
    for step in range(warmup + steps):
        with autocast:
            with torch.no_grad():
                target = teacher.teacher(globals_).cls_logits
            out = student(globals_, locals_)
            loss = out.cls_logits.float().mean() + 0 * target.float().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter())
    measured = times[warmup:]
    return b * (len(measured) - 1) / (measured[-1] - measured[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="vit_small_patch16_224")
    parser.add_argument("--arch-kwargs", default="{}", help='JSON, e.g. \'{"depth": 2, "embed_dim": 64, "num_heads": 2}\'')
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--global-size", type=int, default=224)
    parser.add_argument("--local-size", type=int, default=96)
    parser.add_argument("--n-local", type=int, default=8)
    parser.add_argument("--prototypes", type=int, default=65536)
    parser.add_argument("--steps", type=int, default=20, help="timed iterations after the warm-up")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    config = TrainConfig(arch=args.arch, arch_kwargs=json.loads(args.arch_kwargs), batch_size=args.batch,
                         global_size=args.global_size, local_size=args.local_size, n_local_crops=args.n_local,
                         prototypes=args.prototypes, iterations=args.warmup + args.steps, warmup_iters=1,
                         teacher_temp_warmup_iters=1, freeze_last_layer_iters=1, checkpoint_every=10**9,
                         log_every=10**9, num_workers=4 if args.device.startswith("cuda") else 0, drop_path=0.0)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"device {args.device} ({name}), torch {torch.__version__}; {args.arch} {args.arch_kwargs}, batch "
          f"{args.batch}, 2x{args.global_size} + {args.n_local}x{args.local_size} crops, {args.prototypes} prototypes")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        stores = [write_store(root / f"s{i}.h5", tiles=16, source_px=448, seed=i) for i in range(2)]
        du = training_rate(config, stores, "du", root, args.warmup, args.device)
        cu = training_rate(config, stores, "cu", root, args.warmup, args.device)
    bound = bound_rate(config, args.steps, args.warmup, args.device)
    print(f"training du: {du:8.1f} img/s")
    print(f"training cu: {cu:8.1f} img/s")
    print(f"bound (bare fwd+bwd, teacher fwd, AdamW): {bound:8.1f} img/s")
    print(f"cu/du = {cu / du:.3f} (goal >= 0.97)   train(cu)/bound = {cu / bound:.3f}")


if __name__ == "__main__":
    main()
