"""Embedding throughput against its bound, a bare timm forward on batches of the same size, in one run.

    python benchmarks/embed.py [--case store|png|both] [--model vit_small_patch16_224] [--anchors 8]
                               [--source-px 512] [--batch-size 64] [--workers 2]
                               [--png-slides 6] [--png-regions 8] [--png-workers 2]

A synthetic eval store (C = 224 px cells at 0.25/0.5/1.0/2.0 mpp, S px sources cut from one smooth
texture by exact area reduction) holds anchors² tiles at 0.25 mpp. ``embed_tileset`` embeds them at
the 7 profile mpps with ``resample="nearest_scale"`` (each view from the nearest stored scale; this
measures the nearest-scale path on a multi-scale store, not the default ``finest`` path on a
finest-scale-only eval set) with a randomly initialised ViT exported as a run's teacher: HDF5 reads, windows,
resizes, normalisation and the forward pass (bf16 autocast on CUDA, float32 on CPU), loader start
included (on CUDA after one warm-up run). The bound is
the same ViT's ``forward_features`` on a ready B×3×224×224 batch already on the device, under the
same precision. Both are in images (views) per second; their ratio is the share of the bound reached.

The ``png`` case times the benchmark step's path (``magflow.benchmark.benchmark.embed_images``) on a
TCGA-MS folder written by ``magflow.benchmark.benchmark_fixture.write_tcga_ms`` (slides × regions images of
224 px at each of the 7 mpps): a DataLoader whose worker processes decode the PNGs into uint8
tensors, then normalisation and the same ViT's forward, loader start included (on CUDA after one
warm-up run), against the same bound.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from magflow.benchmark.config import BenchmarkSpec
from magflow.benchmark.benchmark_fixture import write_tcga_ms
from magflow.benchmark.images import input_size, native_size
from magflow.benchmark.benchmark import embed_images
from magflow.embed import PROFILE_MPPS, embed_tileset, load_encoder
from magflow.embed.embed import pick_device
from magflow.preprocess.store import ScaleContent, StoreWriter
from magflow.pretrain.backbone import build_backbone
from magflow.pretrain.export import architecture, export_teacher

SCALES = (0.25, 0.5, 1.0, 2.0)
CELL = 224


def write_store(path: Path, anchors: int, source_px: int, seed: int = 0) -> Path:
    """anchors×anchors cells at 0.25 mpp, and every cell of the coarser scales above them."""
    side_um = anchors * CELL * SCALES[0]
    pad = round((source_px - CELL) / 2 * SCALES[-1] / SCALES[0])  # the coarsest margin, in 0.25 mpp px
    size = round(side_um / SCALES[0]) + 2 * pad
    rng = np.random.default_rng(seed)
    coarse = rng.integers(30, 230, (size // 32 + 2, size // 32 + 2, 3), dtype=np.uint8)
    base = Image.fromarray(coarse).resize((size + 64, size + 64), Image.Resampling.BICUBIC).crop((0, 0, size, size))
    margin = (source_px - CELL) // 2
    contents, images = [], []
    for mpp in SCALES:
        factor = round(mpp / SCALES[0])
        image = np.asarray(base.reduce(factor) if factor > 1 else base)
        cells = max(1, round(side_um / (CELL * mpp)))
        grid = np.array([(c, r) for r in range(cells) for c in range(cells)], np.int64)
        contents.append(ScaleContent({"target_mpp": mpp, "mpp": mpp, "cell_px": CELL, "source_px": source_px,
                                      "grid_cols": cells, "grid_rows": cells}, grid, grid * CELL * factor,
                                     np.ones(len(grid))))
        origin = pad // factor - margin
        images.append([image[origin + r * CELL:origin + r * CELL + source_px,
                             origin + c * CELL:origin + c * CELL + source_px] for c, r in grid])
    root = {"slide_id": "bench", "tileset": "eval", "params": {"scales": list(SCALES)}}
    with StoreWriter(path, root, contents, source_px) as writer:
        for scale, patches in enumerate(images):
            for row, patch in enumerate(patches):
                writer.write(scale, row, np.ascontiguousarray(patch))
    return path


def bare_forward(vit: torch.nn.Module, batch_size: int, images: int, device: torch.device, repeats: int = 2) -> float:
    """Images per second of ``forward_features`` on a ready batch (the same batch, ceil(images / B) times; best
    of ``repeats``)."""
    x = torch.randn(batch_size, 3, CELL, CELL, device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast(
        "cpu", enabled=False)
    steps = -(-images // batch_size)
    best = float("inf")
    with torch.inference_mode(), autocast:
        vit.forward_features(x)  # warm-up
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(steps):
                out = vit.forward_features(x)
            out.float().sum().item()
            best = min(best, time.perf_counter() - start)
    return steps * batch_size / best


def store_case(root: Path, args: argparse.Namespace, device: torch.device, workers: int) -> tuple[int, float, float]:
    """(views, embed seconds, total seconds) of ``embed_tileset`` on a synthetic multi-scale store."""
    store = write_store(root / "bench.h5", args.anchors, args.source_px)
    if device.type == "cuda":  # a first run warms up CUDA, the kernels and the page cache
        embed_tileset([store], root / "warm.h5", root / "model", resample="nearest_scale",
                      batch_size=args.batch_size, workers=workers, progress=False)
    start = time.perf_counter()
    summary = embed_tileset([store], root / "out.h5", root / "model", resample="nearest_scale",
                            batch_size=args.batch_size, workers=workers, progress=False)
    return summary["views"], summary["seconds"], time.perf_counter() - start


def png_case(root: Path, args: argparse.Namespace, device: torch.device, workers: int) -> tuple[int, float, float]:
    """(images, embed seconds, fixture seconds) of the benchmark step's PNG loader on a TCGA-MS folder."""
    start = time.perf_counter()
    write_tcga_ms(root / "tcga_ms", n_slides=args.png_slides, regions_per_slide=args.png_regions, tile_px=CELL)
    written = time.perf_counter() - start
    spec = BenchmarkSpec.from_config("bench", {"layout": "tcga-ms", "root": str(root / "tcga_ms")})
    paths = spec.read()["path"].tolist()
    encoder = load_encoder(root / "model").to(device)
    size = input_size(encoder.timm_model, native_size(spec.name, spec.layout, paths[0]))
    kwargs = {"name": spec.name, "layout": spec.layout, "batch_size": args.batch_size, "workers": workers,
              "device": device, "progress": False}
    if device.type == "cuda":
        embed_images(encoder, paths, size, **kwargs)
    _, seconds = embed_images(encoder, paths, size, **kwargs)
    return len(paths), seconds, written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=("store", "png", "both"), default="both",
                        help="store: embed_tileset on a tile store; png: the benchmark step on a PNG folder")
    parser.add_argument("--model", default=None, help="timm ViT name (default: vit_small on CUDA, vit_tiny on CPU)")
    parser.add_argument("--anchors", type=int, default=8, help="anchor tiles per side (a multiple of 8)")
    parser.add_argument("--source-px", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None, help="loader workers (default: 6 on CUDA, 0 on CPU)")
    parser.add_argument("--png-slides", type=int, default=6, help="png case: slides of the TCGA-MS folder")
    parser.add_argument("--png-regions", type=int, default=8, help="png case: regions per slide (x 7 mpps images)")
    parser.add_argument("--png-workers", type=int, default=None,
                        help="png case: loader worker processes decoding the PNGs (default: 6 on CUDA, 2 on CPU)")
    args = parser.parse_args()
    device = pick_device()
    name = args.model or ("vit_small_patch16_224" if device.type == "cuda" else "vit_tiny_patch16_224")
    workers = args.workers if args.workers is not None else (6 if device.type == "cuda" else 0)
    png_workers = args.png_workers if args.png_workers is not None else (6 if device.type == "cuda" else 2)
    print(f"device: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'no GPU'}); "
          f"torch {torch.__version__}; CPU threads {torch.get_num_threads()}; model {name}")
    precision = "bf16-autocast" if device.type == "cuda" else "fp32"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        torch.manual_seed(0)
        backbone = build_backbone(name, img_size=CELL, patch_size=16)
        export_teacher(backbone, root / "model", {"architecture": architecture(backbone, name, {}, CELL)})
        store = png = None
        if args.case in ("store", "both"):
            store = store_case(root, args, device, workers)
        if args.case in ("png", "both"):
            png = png_case(root, args, device, png_workers)
        vit = load_encoder(root / "model").model.vit.to(device)
        bound = bare_forward(vit, args.batch_size, max(case[0] for case in (store, png) if case), device)
    if store is not None:
        views, seconds, total = store
        rate = views / seconds
        print(f"== store: {args.anchors ** 2} tiles x {len(PROFILE_MPPS)} mpps = {views} views of {CELL} px "
              f"(S = {args.source_px} px), batch {args.batch_size}, {workers} loader workers, {precision} ==")
        print(f"embed (read, window, resize, normalise, forward): {rate:8.1f} img/s  "
              f"({seconds:.2f} s; {total:.2f} s with loading, planning and writing)")
        print(f"bare timm forward_features on a ready batch:      {bound:8.1f} img/s")
        print(f"ratio embed / bare forward: {rate / bound:.2f}")
    if png is not None:
        images, seconds, written = png
        rate = images / seconds
        print(f"== png: TCGA-MS folder, {args.png_slides} slides x {args.png_regions} regions x {len(PROFILE_MPPS)} "
              f"mpps = {images} PNGs of {CELL} px (written in {written:.1f} s), batch {args.batch_size}, "
              f"{png_workers} loader workers, {precision} ==")
        print(f"benchmark embed (decode PNG, normalise, forward): {rate:8.1f} img/s  ({seconds:.2f} s, loader "
              "start included)")
        print(f"bare timm forward_features on a ready batch:      {bound:8.1f} img/s")
        print(f"ratio PNG embed / bare forward: {rate / bound:.2f}")


if __name__ == "__main__":
    main()
