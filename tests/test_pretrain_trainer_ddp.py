"""Two gloo processes under torchrun: one model on both ranks, different draws per rank, lr for the global batch."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy.stats import kstest

from magflow.sampling import SamplerConfig, build_sampler, write_sampler
from magflow.sampling.distributions import MppDistribution
from pretrain_fixtures import TINY, write_store

ITERATIONS = 8

# Each rank trains and saves its models and what it drew.
SCRIPT = """
import json, os, sys
import torch
torch.set_num_threads(1)
from magflow.pretrain.trainer import TrainConfig, train
from magflow.sampling import read_sampler

config, stores, sampler, out = json.loads(sys.argv[1]), json.loads(sys.argv[2]), read_sampler(sys.argv[3]), sys.argv[4]
steps = []


def record(step):
    steps.append({"target_mpp": step.batch["target_mpp"], "lr": step.schedule["lr"], "total": step.losses["total"],
                  "tile": torch.stack([step.batch["scale"], step.batch["tile"].double()], 1)})


result = train(TrainConfig.from_dict(config), stores, sampler, out, progress=False, device="cpu", on_step=record)
torch.save({"teacher": result.teacher.state_dict(), "student": result.student.state_dict(), "steps": steps},
           os.path.join(out, f"rank{os.environ['RANK']}.pt"))
"""


def distribution_cdf(distribution: MppDistribution, x: np.ndarray) -> np.ndarray:
    """P(mpp <= x): each cell's mass spread uniformly over [cell_lo, cell_hi] (atoms are steps)."""
    lo, hi, mass = distribution.cell_lo, distribution.cell_hi, distribution.mass
    x = np.asarray(x, dtype=np.float64)[..., None]
    width = np.where(hi > lo, hi - lo, 1.0)
    inside = np.where(hi > lo, np.clip((x - lo) / width, 0.0, 1.0), (x >= lo).astype(np.float64))
    return (inside * mass).sum(-1)


def global_batch_size(ranks) -> int:
    return sum(len(rank["steps"][0]["target_mpp"]) for rank in ranks)


def test_two_gloo_processes_train_one_model_from_different_draws(tmp_path):
    stores = [str(write_store(tmp_path / f"{name}.h5", name, tiles=3, seed=seed))
              for name, seed in (("a", 1), ("b", 2))]
    sampler = build_sampler(SamplerConfig("cu"))
    write_sampler(sampler, tmp_path / "cu.json")
    (tmp_path / "rank.py").write_text(SCRIPT)
    config = {**TINY, "iterations": ITERATIONS, "drop_path": 0.1}
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(tmp_path / "rank.py"), json.dumps(config), json.dumps(stores), str(tmp_path / "cu.json"),
                           str(out)], capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for name in ("teacher", "student"):
        a, b = ranks[0][name], ranks[1][name]
        assert all(torch.equal(a[key], b[key]) for key in a), name
    for step0, step1 in zip(ranks[0]["steps"], ranks[1]["steps"], strict=True):
        assert not torch.equal(step0["target_mpp"], step1["target_mpp"])
        assert step0["total"] == step1["total"] and step0["lr"] == step1["lr"]  # averaged over ranks; one schedule
    # together the ranks draw from the strategy's distribution (CU: uniform on [0.25, 2.0])
    drawn = np.concatenate([step["target_mpp"].numpy() for rank in ranks for step in rank["steps"]])
    assert len(drawn) == ITERATIONS * global_batch_size(ranks) and len(np.unique(drawn)) == len(drawn)
    assert kstest(drawn, lambda x: distribution_cdf(sampler.distribution, x)).pvalue > 1e-3
    tiles = [{tuple(t) for step in rank["steps"] for t in step["tile"].tolist()} for rank in ranks]
    assert tiles[0] != tiles[1]
    global_batch = 2 * TINY["batch_size"]
    assert ranks[0]["steps"][0]["lr"] == pytest.approx(TINY["base_lr"] * global_batch / 1024)  # no warmup: peak lr
    card = json.loads((out / "model_card.json").read_text())
    assert card["training"]["world_size"] == 2 and card["training"]["global_batch"] == global_batch
