"""Mixer pretraining throughput against a bare forward+backward of the same transformer, in one run.

    python benchmarks/regions.py [--objective mem] [--width 1536 --depth 12 --heads 12] [--dim 1536]
                                 [--batch 256] [--device cuda] [--workers 4]

Prints
  - training samples/s (whole iterations: cutting regions from memory-mapped region files, dihedral
    augmentation, masking, encoder on the visible tokens, decoder, loss, AdamW step), from timestamps
    after each step;
  - the baseline: the mixing encoder's bare forward+backward on full regions (all 189 tokens valid,
    no decoder, no optimizer step) at the same batch, measured before and after training and averaged;
  - the ratio train / baseline. MEM encodes only the visible (1 − r) of the tokens, so it can exceed 1.
The region files are synthetic (written in a temporary folder): only the shapes matter here.
Defaults are the paper's model on CUDA and a small one on CPU.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from magflow.aggregate.mixer import MixerConfig, MixingEncoder
from magflow.aggregate.pretrain_mixer import MixerTrainConfig, train_mixer
from magflow.aggregate.regions import region_layout
from magflow.aggregate.synthetic import write_synthetic_regions


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def training_rate(config: MixerTrainConfig, files: list[Path], out: Path, warmup: int, device: str) -> float:
    stamps: list[float] = []

    def on_step(iteration: int, losses: dict[str, float]) -> None:
        sync(device)
        stamps.append(time.perf_counter())

    train_mixer(config, files, out, progress=False, device=device, on_step=on_step)
    measured = stamps[warmup:]
    return config.batch_size * (len(measured) - 1) / (measured[-1] - measured[0])


def baseline_rate(mixer: MixerConfig, batch: int, steps: int, warmup: int, device: str) -> float:
    """Forward+backward of the bare encoder on full regions of the same shape."""
    encoder = MixingEncoder(mixer).to(device).train()
    layout = region_layout(3, (1, 2, 4))
    tokens = torch.randn(batch, len(layout), mixer.in_dim, device=device)
    scale_id = torch.from_numpy(layout.scale_id).to(device).expand(batch, -1)
    position = torch.from_numpy(layout.position).to(device).expand(batch, -1, -1)
    valid = torch.ones(batch, len(layout), dtype=torch.bool, device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else \
        torch.autocast("cpu", enabled=False)
    times = []
    for _ in range(warmup + steps):
        with autocast:
            out = encoder(tokens, scale_id, position, valid)
            loss = out.patches.float().mean() + out.cls.float().mean()
        encoder.zero_grad(set_to_none=True)
        loss.backward()
        sync(device)
        times.append(time.perf_counter())
    measured = times[warmup:]
    return batch * (len(measured) - 1) / (measured[-1] - measured[0])


def main() -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objective", default="mem", choices=("mem", "cmem"))
    parser.add_argument("--width", type=int, default=1536 if cuda else 192)
    parser.add_argument("--depth", type=int, default=12 if cuda else 4)
    parser.add_argument("--heads", type=int, default=12 if cuda else 3)
    parser.add_argument("--dim", type=int, default=1536 if cuda else 384, help="tile embedding dim")
    parser.add_argument("--batch", type=int, default=256 if cuda else 32)
    parser.add_argument("--mask-ratio", type=float, default=0.5)
    parser.add_argument("--slides", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20, help="timed iterations after the warm-up")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4 if cuda else 0)
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    args = parser.parse_args()
    config = MixerTrainConfig(objective=args.objective, width=args.width, depth=args.depth, heads=args.heads,
                              mask_ratio=args.mask_ratio, batch_size=args.batch, iterations=args.warmup + args.steps,
                              warmup_iters=1, checkpoint_every=10**9, log_every=10**9, num_workers=args.workers)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"device {args.device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{args.objective}, width {args.width}, depth {args.depth}, heads {args.heads}, tile dim {args.dim}, "
          f"batch {args.batch}, 189 tokens (t=3, 3 scales), mask ratio {args.mask_ratio}, {args.workers} workers")
    mixer = config.mixer(args.dim, 3)
    before = baseline_rate(mixer, args.batch, args.steps, args.warmup, args.device)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = [root / f"r{i}.h5" for i in range(args.slides)]
        for i, path in enumerate(files):
            write_synthetic_regions(path, f"s{i}", seed=i, cols=24, rows=24, dim=args.dim)
        train = training_rate(config, files, root / "run", args.warmup, args.device)
    after = baseline_rate(mixer, args.batch, args.steps, args.warmup, args.device)
    baseline = (before + after) / 2  # measured on both sides of the training run, against drifting load
    print(f"mixer pretraining ({args.objective}): {train:8.1f} samples/s")
    print(f"baseline (bare encoder fwd+bwd, all 189 tokens): {baseline:8.1f} samples/s "
          f"(before {before:.1f}, after {after:.1f})")
    print(f"train/baseline = {train / baseline:.3f}")


if __name__ == "__main__":
    main()
