"""Multi-scale tile extraction vs. the bare OpenSlide read loop, on the same slide, in one run.

    python benchmarks/extract.py SLIDE [--workers 1 2] [--repeats 3]

(a) a bare ``OpenSlide.read_region`` loop over the level-0 tissue area in 224 px tiles: the tiles
    covering the kept cells of the train tile set's finest servable scale;
(a+) the same loop over the level-0 area extraction must decode: the union of every stored tile's
    source window (tissue plus the centred context windows of every scale), for reference;
(b) full multi-scale extraction of the ``train`` tile set (0.25/0.5/1.0/2.0 mpp, C=224, S=448),
    including the HDF5 write.
Throughput is in tiles-equivalent per second (the tissue area in 224×224 level-0 tiles, divided by
the wall time), so b/a is the fraction of bare decode speed that full extraction reaches.

With N workers, (a) splits its tiles over N processes, each opening the slide (so its start-up
counts), and (b) runs extraction with ``workers=N``: threads over blocks, or, when the slide has
fewer blocks than workers (CMU-1-Small-Region is one block), threads sharing each block.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import openslide

from magflow.preprocess.extract_tiles import TileSetParams, _plan_jobs, _plan_scales_and_cells, extract_tiles
from magflow.preprocess.mask_store import read_mask
from magflow.preprocess.store import TileStore
from magflow.preprocess.tissue import TissueParams
from magflow.preprocess.tissue_mask import make_tissue_mask
from magflow.slides.reader import Slide

TRAIN = TileSetParams("train", [0.25, 0.5, 1.0, 2.0], cell_px=224, source_px=448, min_tissue=0.5)
TILE = 224


def tissue_tiles(slide: Slide, mask_path: Path) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Level-0 224 px tiles over (1) the finest scale's kept cells and (2) the area extraction decodes."""
    mask, _ = read_mask(mask_path)
    scales, _ = _plan_scales_and_cells(slide, mask, TRAIN)
    finest = scales[0]
    step = finest.grid_def.cell_level0
    tissue = {(int(round(c * step + dx)), int(round(r * step + dy)))
              for c, r in finest.grid for dx in np.arange(0, step - 1e-6, TILE) for dy in np.arange(0, step - 1e-6, TILE)}
    decoded: set[tuple[int, int]] = set()
    to_level0 = finest.plan.achieved_mpp / slide.mpp
    factors = [s.plan.factor for s in scales]
    for job in _plan_jobs(scales, TRAIN):
        for index, _, sx, sy in job.tiles:  # each tile's source window, in level-0 px
            x0, y0 = sx * to_level0, sy * to_level0
            span = factors[index] * TRAIN.source_px * to_level0
            for x in range(max(0, int(x0 // TILE)), int(np.ceil((x0 + span) / TILE))):
                for y in range(max(0, int(y0 // TILE)), int(np.ceil((y0 + span) / TILE))):
                    if x * TILE < slide.dimensions[0] and y * TILE < slide.dimensions[1]:
                        decoded.add((x * TILE, y * TILE))
    return sorted(tissue), sorted(decoded)


def _bare(args: tuple[str, list[tuple[int, int]]]) -> int:
    path, tiles = args
    slide = openslide.OpenSlide(path)
    for x, y in tiles:
        slide.read_region((x, y), 0, (TILE, TILE))
    slide.close()
    return len(tiles)


def bare_loop(path: str, tiles: list[tuple[int, int]], workers: int) -> float:
    start = time.perf_counter()
    if workers == 1:
        _bare((path, tiles))
    else:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_bare, [(path, tiles[i::workers]) for i in range(workers)]))
    return time.perf_counter() - start


def extraction(path: str, mask: Path, out: Path, workers: int, params: TileSetParams = TRAIN,
               keep: bool = False) -> float:
    """Seconds for one extraction. The store is deleted afterwards unless ``keep``, so dirty pages of
    earlier runs are dropped instead of written back to disk during later timings."""
    start = time.perf_counter()
    extract_tiles(path, "bench", mask, out, params, workers=workers, progress=False)
    seconds = time.perf_counter() - start
    if not keep:
        out.unlink()
    return seconds


def read_all(store: Path) -> float:
    """Seconds to read (and decode) every tile of a store once."""
    start = time.perf_counter()
    with TileStore(store) as tiles:
        for mpp in tiles.scales:
            images = tiles.images(mpp)
            for row in range(len(images)):
                images[row]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("slide")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3, help="best of N for every timing")
    parser.add_argument("--jpeg-quality", type=int, help="also extract with tiles stored as JPEG of this quality "
                        "and compare store size, extraction and read time with raw tiles")
    args = parser.parse_args()
    path = str(Path(args.slide).resolve())
    with tempfile.TemporaryDirectory() as tmp:
        mask = Path(tmp) / "mask.h5"
        make_tissue_mask(path, "bench", mask, Path(tmp) / "qc.png", TissueParams())
        with Slide(path) as slide:
            tissue, decoded = tissue_tiles(slide, mask)
            print(f"slide {Path(path).name}: {slide.dimensions[0]}x{slide.dimensions[1]} px, {slide.mpp:g} mpp; "
                  f"tissue area {len(tissue)} tiles-eq; extraction decodes {len(decoded)} tiles-eq "
                  "(tissue + context windows)")
        extraction(path, mask, Path(tmp) / "warm.h5", 1)  # warm the page cache and imports
        for workers in args.workers:
            runs = [(bare_loop(path, tissue, workers), bare_loop(path, decoded, workers),
                     extraction(path, mask, Path(tmp) / f"store{workers}_{r}.h5", workers, keep=r == 0))
                    for r in range(args.repeats)]  # interleaved, so load changes hit all three alike
            a, a_plus, b = (min(times) for times in zip(*runs))
            n = len(tissue)
            print(f"workers={workers}: (a) bare loop {n / a:7.1f} tiles-eq/s ({a * 1000:.0f} ms) | "
                  f"(a+) bare loop over decoded area {len(decoded) / a_plus:7.1f} tiles/s ({a_plus * 1000:.0f} ms) | "
                  f"(b) extraction {n / b:7.1f} tiles-eq/s ({b * 1000:.0f} ms)")
            print(f"workers={workers}: ratio b/a = {a / b:.2f}   (b vs a+, same decoded area: {a_plus / b:.2f})")
            if args.jpeg_quality:
                jpeg = replace(TRAIN, jpeg_quality=args.jpeg_quality)
                b_jpeg = min(extraction(path, mask, Path(tmp) / f"jpeg{workers}_{r}.h5", workers, jpeg, r == 0)
                             for r in range(args.repeats))
                print(f"workers={workers}: (b) with JPEG q{args.jpeg_quality} tiles {n / b_jpeg:7.1f} tiles-eq/s "
                      f"({b_jpeg * 1000:.0f} ms): ratio b/a = {a / b_jpeg:.2f}")
        if args.jpeg_quality:
            first = args.workers[0]
            raw_store, jpeg_store = Path(tmp) / f"store{first}_0.h5", Path(tmp) / f"jpeg{first}_0.h5"
            with TileStore(raw_store) as store:
                tiles = sum(len(store.images(m)) for m in store.scales)
            raw_read = min(read_all(raw_store) for _ in range(args.repeats))
            jpeg_read = min(read_all(jpeg_store) for _ in range(args.repeats))
            raw_size, jpeg_size = raw_store.stat().st_size, jpeg_store.stat().st_size
            print(f"store size: raw {raw_size / tiles / 1e3:.0f} kB/tile, JPEG q{args.jpeg_quality} "
                  f"{jpeg_size / tiles / 1e3:.0f} kB/tile ({raw_size / jpeg_size:.1f}x smaller); reading a tile: "
                  f"raw {raw_read / tiles * 1000:.2f} ms, JPEG {jpeg_read / tiles * 1000:.2f} ms (one core)")


if __name__ == "__main__":
    main()
