"""Sampler benchmarks: the cu_minmax LP solve time, and crop-and-resize throughput.

Run: python benchmarks/sampler.py
Each figure is printed with its ratio against a baseline measured in the same run.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from magflow.sampling import (
    draw_mpps,
    kernel_matrix,
    min_max,
    mpp_grid,
    solve_minmax,
)
from magflow.sampling.transforms import crop_and_resize, crop_and_resize_batch


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Best wall time of ``repeats`` calls, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_lp() -> None:
    print("== cu_minmax linear program (scipy linprog, HiGHS dual simplex) ==")
    for n in (176, 351):
        grid = mpp_grid(0.25, 2.0, 1.75 / (n - 1))
        for kernel in ("abs", "area"):
            _, sol = min_max(grid, kernel)
            print(f"grid {n:5d}  kernel {kernel:4s}  t* = {sol.value:.4f}  solve {sol.seconds:.3f} s ({sol.formulation})")
    grid = np.linspace(0.25, 2.0, 1000)
    for kernel in ("abs", "area"):
        kmat = kernel_matrix(kernel, grid, grid)
        sol = solve_minmax(kmat)
        print(
            f"grid  1000  kernel {kernel:4s}  t* = {sol.value:.4f}  solve {sol.seconds:.3f} s "
            f"({sol.formulation} formulation, {sol.iterations} simplex iteration(s); goal < 1 s)"
        )
    base = solve_minmax(kmat, "direct")
    print(
        f"baseline: direct formulation, grid 1000, kernel area: {base.seconds:.3f} s "
        f"({base.iterations} simplex iterations), t* = {base.value:.4f} -> speed-up {base.seconds / sol.seconds:.1f}x"
    )


def bench_draws() -> None:
    print("== seeded draws ==")
    dist, _ = min_max(mpp_grid(0.25, 2.0, 0.005), "abs")
    secs = best_of(lambda: draw_mpps(dist, 1_000_000, seed=0), 3)
    print(f"draw_mpps: 1e6 draws from cu_minmax (351 points) in {secs * 1e3:.1f} ms")


def bench_crop_resize() -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "no GPU"
    # One thread, like PIL: a per-core comparison, and immune to a busy machine stalling torch's pool.
    torch.set_num_threads(1)
    print("== crop-and-resize to 224 px (source 448 px at 0.5 mpp, random position) ==")
    print(f"device: {device} ({name}); torch {torch.__version__}; torch CPU threads {torch.get_num_threads()}")
    source, out = 448, 224
    gen = np.random.default_rng(0)
    patches = gen.integers(0, 256, (512, source, source, 3), dtype=np.uint8)
    continuous = gen.uniform(0.5, 1.0, 512)  # about 200 distinct crop sizes
    discrete = gen.choice([0.5, 1.0], 512)  # du-like: 2 crop sizes

    def pil_loop(n: int) -> None:
        for patch, t in zip(patches[:n], continuous[:n]):
            crop_and_resize(patch, 0.5, float(t), out, position="random", rng=gen)

    def torch_batch(x: torch.Tensor, targets: np.ndarray) -> Callable[[], object]:
        tgt = torch.from_numpy(targets[: x.shape[0]])

        def run() -> None:
            crop_and_resize_batch(x, 0.5, tgt, out, position="random", out_dtype=torch.float32)
            if x.is_cuda:
                torch.cuda.synchronize()

        return run

    base = 128 / best_of(lambda: pil_loop(128), 2)
    print(f"baseline CPU, PIL one patch at a time:        {base:9.0f} patches/s")
    cpu = torch.from_numpy(patches[:128]).permute(0, 3, 1, 2).contiguous()
    rate = 128 / best_of(torch_batch(cpu, continuous), 2)
    print(f"torch batched on cpu, batch 128, continuous:  {rate:9.0f} patches/s  ({rate / base:.2f}x)")
    if device.type != "cuda":
        print("no CUDA device: GPU figures skipped")
        return
    gpu = torch.from_numpy(patches).permute(0, 3, 1, 2).contiguous().to(device)
    for batch, targets, label in ((128, continuous, "continuous"), (512, continuous, "continuous"), (512, discrete, "2 mpps    ")):
        run = torch_batch(gpu[:batch], targets)
        run()  # warm-up: kernels, allocator
        rate = batch / best_of(run, 10)
        print(f"torch batched on cuda, batch {batch:3d}, {label}: {rate:9.0f} patches/s  ({rate / base:.1f}x)")


if __name__ == "__main__":
    bench_lp()
    bench_draws()
    bench_crop_resize()
