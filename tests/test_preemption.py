"""Pre-emption: SIGTERM or SIGUSR1 makes pretraining, mixer pretraining and AB-MIL checkpoint at the next
iteration boundary and exit 128 + the signal; resuming gives what an uninterrupted run gives, bit for bit.

Pretraining is stopped for real: a `magflow.pretrain.worker` process gets SIGTERM once its log shows a few
iterations, and one of two torchrun workers gets SIGUSR1. The mixer and AB-MIL loops run in this process and signal it themselves at a chosen
iteration, under guard handlers, so a loop that failed to catch the signal fails its test instead of
ending pytest.
"""

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from magflow import preemption
from magflow.aggregate import slide_eval
from magflow.aggregate.pretrain_mixer import HISTORY, MixerTrainConfig, train_mixer
from magflow.aggregate.slide_eval import MILConfig, mil_splits
from magflow.aggregate.abmil_model import build_slide_model
from magflow.aggregate.abmil import checkpoint_path, run_abmil
from magflow.aggregate.synthetic import write_synthetic_regions
from magflow.pretrain.trainer import TrainConfig, train
from magflow.sampling import SamplerConfig, build_sampler, write_sampler
from magflow.training import CHECKPOINT, load_checkpoint
from pretrain_fixtures import TINY, write_store
from test_aggregate_abmil import planted_slides, tiny_encoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def guard():
    """Handlers that only record: a signal that no loop caught lands here instead of ending pytest."""
    leaked = []
    previous = {s: signal.signal(s, lambda signum, frame: leaked.append(signum)) for s in preemption.SIGNALS}
    yield leaked
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def test_stop_signals_records_the_first_signal_and_restores_the_handlers(guard):
    before = signal.getsignal(signal.SIGTERM)
    with preemption.stop_signals() as stop:
        assert not stop and stop.signum is None
        signal.raise_signal(signal.SIGUSR1)
        signal.raise_signal(signal.SIGTERM)
        assert stop and stop.signum == signal.SIGUSR1 and guard == []
    assert signal.getsignal(signal.SIGTERM) is before
    signal.raise_signal(signal.SIGTERM)
    assert guard == [signal.SIGTERM]
    exit_ = preemption.preempted("training", signal.SIGTERM, "after iteration 3 of 9", "out/checkpoint.pt")
    assert isinstance(exit_, SystemExit) and exit_.code == 143
    assert str(exit_).startswith("training stopped by SIGTERM after iteration 3 of 9; checkpoint written to "
                                 "out/checkpoint.pt. Rerun the same command")
    assert preemption.Preempted("", signal.SIGUSR1).code == 138


# -- pretraining: a real process, a real SIGTERM ------------------------------------------------------

ITERATIONS = 16


def wait_for_iteration(log, process, at_least: int, timeout_s: float = 120) -> int:
    """The last iteration the log shows, once it is at least ``at_least``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = [int(n) for n in re.findall(rf"iteration (\d+)/{ITERATIONS}", log.read_text())] if log.exists() else []
        if done and done[-1] >= at_least:
            return done[-1]
        assert process.poll() is None, f"the run ended before iteration {at_least}:\n{process.stderr.read()[-3000:]}"
        time.sleep(0.05)
    process.kill()
    pytest.fail(f"no iteration {at_least} within {timeout_s} s")


def test_sigterm_stops_pretraining_with_a_checkpoint_and_a_rerun_finishes_it_exactly(tmp_path):
    stores = [write_store(tmp_path / "a.h5", "a", tiles=2, seed=1),
              write_store(tmp_path / "b.h5", "b", tiles=1, seed=2)]
    sampler = build_sampler(SamplerConfig("cu"))
    write_sampler(sampler, tmp_path / "cu.json")
    train_settings = {**TINY, "iterations": ITERATIONS, "log_every": 1, "drop_path": 0.1}  # checkpoint_every 1000
    out = tmp_path / "out"
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({
        "stores": [str(s) for s in stores], "sampler": str(tmp_path / "cu.json"), "out_dir": str(out),
        "train": train_settings}))
    command = [sys.executable, "-m", "magflow.pretrain.worker", "--config", str(tmp_path / "run.yaml"),
               "--log-file", str(tmp_path / "run.log"), "--no-progress", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = wait_for_iteration(tmp_path / "run.log", process, at_least=2)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-3000:]
    stopped = re.search(rf"pretraining stopped by SIGTERM after iteration (\d+) of {ITERATIONS}; checkpoint "
                        rf"written to (\S+)\. Rerun the same command \(e\.g\. the same snakemake command\) to resume "
                        r"from it; exit status 143", stderr)
    assert stopped, stderr[-3000:]
    iteration = int(stopped[1])
    assert seen <= iteration < ITERATIONS and stopped[2] == str(out / CHECKPOINT)
    assert load_checkpoint(out / CHECKPOINT)["iteration"] == iteration
    assert "Traceback" not in stderr and stdout == "" and not (out / "teacher_backbone.safetensors").exists()
    assert stopped[0] in (tmp_path / "run.log").read_text()

    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {out / CHECKPOINT} at iteration {iteration}" in resumed.stderr
    weights = json.loads(resumed.stdout)["weights"]

    straight = train(TrainConfig.from_dict(train_settings), stores, sampler, tmp_path / "straight", progress=False,
                     device="cpu")
    a, b = load_file(weights), load_file(straight.weights)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    a, b = load_checkpoint(out / CHECKPOINT), load_checkpoint(tmp_path / "straight" / CHECKPOINT)
    for part in ("student", "teacher", "centers"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part


def torchrun_exit_codes(stderr: str) -> dict[int, int]:
    """Each failed worker's exit code by rank, from the failure report torchrun prints when it gives up, e.g.

    ``rank      : 1 (local_rank: 1)`` then ``exitcode  : 138 (pid: 8396)``. torchrun's own one-line summary
    (``failed (exitcode: 138) local_rank: 0 ...``) repeats the first failure and is not counted."""
    entries = re.findall(r"^\s*rank\s*:\s*(\d+) \(local_rank: \d+\)\s*\n\s*exitcode\s*:\s*(-?\d+)", stderr,
                         flags=re.MULTILINE)
    codes = {int(rank): int(code) for rank, code in entries}
    assert len(codes) == len(entries), f"a rank is reported twice: {entries}"
    return codes


def test_a_signal_to_one_torchrun_worker_stops_every_worker_at_the_same_iteration(tmp_path):
    """Two gloo processes; only rank 1 gets SIGUSR1. Both must stop after the same iteration (else one would
    wait forever in the next all-reduce) and rank 0 writes the checkpoint before either exits. Both ranks
    raise the same stop and exit 138; whichever leaves second may instead be ended by torchrun, which sends
    SIGTERM (-15) to the rest once one worker is gone. Which rank that is depends on scheduling, so the test
    asks for one 138 and allows -15 for the other, never any other code."""
    stores = [write_store(tmp_path / f"{name}.h5", name, tiles=3, seed=seed) for name, seed in (("a", 1), ("b", 2))]
    write_sampler(build_sampler(SamplerConfig("cu")), tmp_path / "cu.json")
    out = tmp_path / "out"
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({
        "stores": [str(s) for s in stores], "sampler": str(tmp_path / "cu.json"), "out_dir": str(out),
        "train": {**TINY, "iterations": ITERATIONS, "log_every": 1}}))
    torchrun = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
         "magflow.pretrain.worker", "--config", str(tmp_path / "run.yaml"), "--log-file", str(tmp_path / "run.log"),
         "--no-progress", "--device", "cpu"],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_iteration(tmp_path / "run.log", torchrun, at_least=2)
    workers = Path(f"/proc/{torchrun.pid}/task/{torchrun.pid}/children").read_text().split()
    rank1 = [pid for pid in workers if "RANK=1" in Path(f"/proc/{pid}/environ").read_text().split("\0")]
    assert len(workers) == 2 and len(rank1) == 1, workers
    os.kill(int(rank1[0]), signal.SIGUSR1)
    _, stderr = torchrun.communicate(timeout=120)
    assert torchrun.returncode != 0, stderr[-3000:]
    exits = torchrun_exit_codes(stderr)
    assert exits.keys() == {0, 1} and 138 in exits.values() and set(exits.values()) <= {138, -15}, \
        (exits, stderr[-3000:])
    stopped = re.findall(rf"pretraining stopped by SIGUSR1 after iteration (\d+) of {ITERATIONS}", stderr)
    assert len(stopped) == 2 and len(set(stopped)) == 1, stderr[-3000:]  # both ranks, one iteration
    assert load_checkpoint(out / CHECKPOINT)["iteration"] == int(stopped[0])


# -- mixer pretraining: SIGUSR1 at iteration k, in this process ------------------------------------------

MIXER = {"objective": "cmem", "width": 16, "depth": 1, "heads": 2, "decoder_depth": 1, "projector_hidden": 32,
         "projector_dim": 8, "context": 5, "batch_size": 4, "iterations": 8, "warmup_iters": 2, "base_lr": 1e-3,
         "checkpoint_every": 100}


def test_sigusr1_stops_mixer_pretraining_with_a_checkpoint_and_resume_is_exact(guard, tmp_path):
    files = [tmp_path / f"r{i}.h5" for i in range(2)]
    for i, path in enumerate(files):
        write_synthetic_regions(path, f"s{i}", seed=i, dim=8)
    config = MixerTrainConfig.from_dict(MIXER)

    def signal_at_iteration_3(iteration, losses):
        if iteration == 3:
            os.kill(os.getpid(), signal.SIGUSR1)

    with pytest.raises(preemption.Preempted) as stopped:
        train_mixer(config, files, tmp_path / "split", progress=False, device="cpu", on_step=signal_at_iteration_3)
    assert stopped.value.code == 138 and guard == []
    assert str(stopped.value).startswith(f"mixer pretraining (cmem) stopped by SIGUSR1 after iteration 4 of 8; "
                                         f"checkpoint written to {tmp_path / 'split' / CHECKPOINT}")
    assert load_checkpoint(tmp_path / "split" / CHECKPOINT)["iteration"] == 4
    assert len((tmp_path / "split" / HISTORY).read_text().splitlines()) == 1 + 4
    assert signal.getsignal(signal.SIGUSR1) is not signal.SIG_DFL  # the guard again, not the loop's handler

    resumed = train_mixer(config, files, tmp_path / "split", progress=False, device="cpu")
    whole = train_mixer(config, files, tmp_path / "whole", progress=False, device="cpu")
    assert resumed.iteration == 8 and resumed.weights is not None
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in whole.history] == [r["loss"] for r in resumed.history]


# -- AB-MIL: SIGTERM after batch k, in this process -------------------------------------------------------

def test_sigterm_stops_abmil_with_a_checkpoint_and_resume_gives_the_same_record(guard, tmp_path, monkeypatch):
    slides = planted_slides(16, 5, "s")
    # two seeds; dropout, an encoder frozen in epoch 1 and fine-tuned after, two groups a batch
    config = MILConfig(lr=1e-3, epochs=3, freeze_epochs=1, groups_per_batch=2, dropout=0.25, seeds=(0, 1),
                       hidden_dim=8, attn_dim=4)

    def build():
        return build_slide_model("cls", 2, encoder=tiny_encoder(), hidden_dim=8, attn_dim=4, dropout=0.25)

    def record(out):
        result = run_abmil("random mixer", "planted", slides, build, config, out, n_classes=2)
        return {k: v for k, v in result.items() if k != "provenance"}

    straight = record(tmp_path / "straight.json")
    splits = mil_splits(slides, config)
    seed0, seed1 = (math.ceil(len(split.train) / 2) for split in splits)  # batches per epoch (a slide a group)
    assert seed1 >= 3
    for epoch, batch in ((2, 2), (2, seed1)):  # seed 1, after its encoder is unfrozen: mid-epoch, and last batch
        trained = []
        batch_loss = slide_eval._batch_loss

        def signal_after_batch(model, *args, **kwargs):
            if model.training:
                trained.append(1)
                if len(trained) == 3 * seed0 + (epoch - 1) * seed1 + batch:  # seed 0 trains 3 epochs first
                    os.kill(os.getpid(), signal.SIGTERM)
            return batch_loss(model, *args, **kwargs)

        out = tmp_path / f"stopped_{batch}.json"
        monkeypatch.setattr(slide_eval, "_batch_loss", signal_after_batch)
        with pytest.raises(preemption.Preempted) as stopped:
            record(out)
        monkeypatch.setattr(slide_eval, "_batch_loss", batch_loss)
        assert stopped.value.code == 143 and guard == []
        assert str(stopped.value).startswith(
            f"AB-MIL training stopped by SIGTERM at seed 1, epoch {epoch} of 3, after batch {batch} of {seed1}; "
            f"checkpoint written to {checkpoint_path(out)}")
        saved = load_checkpoint(checkpoint_path(out))
        assert [s["seed"] for s in saved["per_seed"]] == [0] and saved["current"]["epoch"] == epoch
        assert not out.exists()

        assert record(out) == straight
        assert not checkpoint_path(out).exists()  # removed once the record is written
