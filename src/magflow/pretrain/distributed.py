"""One training process: its rank and device, from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Process:
    rank: int
    world_size: int
    device: torch.device
    started_group: bool  # this process created the process group, so it tears it down

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def start(device: str | torch.device | None = None) -> Process:
    """Join the process group when WORLD_SIZE > 1: NCCL on CUDA, gloo on CPU; one GPU per local rank."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:  # "cuda": this process's own GPU
        device = torch.device("cuda", local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    started = False
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                device_id=device if device.type == "cuda" else None)
        started = True
    rank = dist.get_rank() if dist.is_initialized() else 0
    return Process(rank, dist.get_world_size() if dist.is_initialized() else 1, device, started)


def stop(process: Process) -> None:
    if process.started_group and dist.is_initialized():
        dist.destroy_process_group()


def mean_over_processes(values: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        values = values.clone()
        dist.all_reduce(values)
        values /= dist.get_world_size()
    return values


def gather_from_processes(values: torch.Tensor) -> torch.Tensor:
    """Concatenate equal-length 1-d tensors of every process, rank order."""
    if not dist.is_initialized():
        return values
    out = values.new_empty(dist.get_world_size() * values.numel())
    dist.all_gather_into_tensor(out, values.contiguous())
    return out
