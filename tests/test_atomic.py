"""Atomic outputs: a killed writer leaves at most one fixed temporary file, and the next attempt removes it."""

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from magflow.atomic import atomic_path, temp_path
from magflow.preprocess.store import ScaleContent, StoreWriter, TileStore
from test_workflow import SNAKEMAKE, copy_project

# Writes 64 MB into an HDF5 file through atomic_path, says when it is half-way, then waits to be killed.
SLOW_WRITER = """
import sys, time
import h5py, numpy as np
from magflow.atomic import atomic_path
with atomic_path(sys.argv[1]) as tmp, h5py.File(tmp, "w") as h5:
    data = h5.create_dataset("x", shape=(64, 1 << 20), dtype=np.uint8)
    for i in range(32):
        data[i] = i
    h5.flush()
    print("half", flush=True)
    time.sleep(60)
"""


def hidden(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def write_store(path, value):
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5["x"] = np.full((4, 4), value, np.uint8)


def test_temp_name_is_fixed_per_output(tmp_path):
    assert temp_path(tmp_path / "slide.h5") == tmp_path / ".slide.tmp.h5"
    assert temp_path(tmp_path / "fig.qc.png").name == ".fig.qc.tmp.png"


def test_a_killed_writer_leaves_its_temp_file_and_a_retry_removes_it(tmp_path):
    out = tmp_path / "tiles" / "slide.h5"
    writer = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "half"
        writer.send_signal(signal.SIGKILL)  # no handler, no finally: like a Slurm OOM kill
        writer.wait(timeout=30)
    finally:
        writer.kill()
        writer.stdout.close()
    assert not out.exists(), "a killed writer must never leave the final output"
    assert hidden(out.parent) == [".slide.tmp.h5"] and temp_path(out).stat().st_size > 1 << 20
    write_store(out, 7)  # the retried job
    assert hidden(out.parent) == [], "the retry must remove the killed writer's temp file"
    with h5py.File(out, "r") as h5:
        assert (h5["x"][...] == 7).all()


def test_the_output_appears_only_when_the_block_ends(tmp_path):
    """Snakemake marks an output incomplete while its job runs; the file itself only appears by the final rename."""
    out = tmp_path / "record.json"
    with atomic_path(out) as tmp:
        tmp.write_text("{}")
        assert not out.exists()
    assert out.read_text() == "{}" and hidden(tmp_path) == []


def test_a_failed_block_leaves_nothing(tmp_path):
    out = tmp_path / "record.json"
    out.write_text("old")  # an earlier output stays until a complete one replaces it
    with pytest.raises(ValueError), atomic_path(out) as tmp:
        tmp.write_text("partial")
        raise ValueError("bad slide")
    assert out.read_text() == "old" and hidden(tmp_path) == []


def test_a_tile_store_retry_replaces_a_killed_one(tmp_path):
    out = tmp_path / "s.h5"
    temp_path(out).write_bytes(b"half an HDF5 file")  # what a killed extraction leaves
    grid = np.array([[0, 0], [1, 0]])
    content = ScaleContent({"target_mpp": 0.5, "grid_rows": 1, "grid_cols": 2, "mpp": 0.5, "cell_px": 4},
                           grid, grid * 4, np.ones(2))
    with StoreWriter(out, {"slide_id": "s"}, [content], source_px=4) as writer:
        for row in range(2):
            writer.write(0, row, np.full((4, 4, 3), row, np.uint8))
    assert hidden(tmp_path) == []
    with TileStore(out) as store:
        assert store.images(0.5)[1].max() == 1


def test_a_store_that_fails_while_open_leaves_nothing(tmp_path):
    out = tmp_path / "s.h5"
    content = ScaleContent({"target_mpp": 0.5}, np.zeros((1, 2)), np.zeros((1, 2)), np.ones(1))
    with pytest.raises(RuntimeError, match="decode failed"), \
            StoreWriter(out, {"slide_id": "s"}, [content], source_px=4):
        raise RuntimeError("decode failed")
    assert list(tmp_path.iterdir()) == []



# -- Snakemake, killed mid-job --------------------------------------------------------------------------

PHANTOM = ("results/phantom/phantom_a.tiff", "results/phantom/phantom_a.labels.png", "results/phantom/phantom_a.json")


def snakemake(root, *args):
    result = subprocess.run(SNAKEMAKE + list(args), cwd=root, capture_output=True, text=True, timeout=300)
    return result.returncode, result.stdout + result.stderr


def group_alive(pgid: int) -> list[int]:
    """The processes of group ``pgid`` that are still running (zombies waiting for a parent do not count)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


def marked_incomplete(root) -> set[str]:
    """The outputs Snakemake has marked incomplete: .snakemake/incomplete holds one file per output, named by
    the output's path in URL-safe base64."""
    folder = root / ".snakemake" / "incomplete"
    return {base64.urlsafe_b64decode(p.name).decode() for p in folder.iterdir()} if folder.is_dir() else set()


@pytest.mark.slow
def test_snakemake_killed_mid_write_plans_the_job_again_and_the_rerun_leaves_no_temp_file(tmp_path):
    """SIGKILL to Snakemake and its job together (one process group, as when Slurm kills a job step or the
    node runs out of memory) while the `phantom` job writes its slide:

    (a) no output of the job exists, only the slide's hidden temp file, and Snakemake's own incomplete markers
        for the job's three outputs stay in .snakemake/incomplete;
    (b) a dry run plans the job again. Its reason is "Missing output files", not "incomplete": Snakemake calls
        an output incomplete only when the file exists, and an atomic output exists only once whole, so the
        marker matters only if a kill lands in the instant between the rename and Snakemake's bookkeeping
        (about 0.1 s here; the Slurm profile sets rerun-incomplete for that case);
    (c) the killed run's lock stays, so a plain rerun is refused with a message that names --unlock; after
        `snakemake --unlock`, `--rerun-incomplete` finishes the job, clears the markers and leaves no hidden
        temp file beside the outputs.
    """
    root = copy_project(tmp_path / "project")
    target, folder = PHANTOM[0], root / "results" / "phantom"
    temp = temp_path(root / target)
    with (tmp_path / "killed.log").open("w") as log:
        killed = subprocess.Popen(SNAKEMAKE + ["--cores", "1", target], cwd=root, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while not temp.exists() and killed.poll() is None and time.monotonic() < deadline:
                time.sleep(0.002)
            assert temp.exists(), f"the slide's temp file never appeared:\n{(tmp_path / 'killed.log').read_text()}"
        finally:
            os.killpg(killed.pid, signal.SIGKILL)
            killed.wait(timeout=30)
    deadline = time.monotonic() + 30
    while group_alive(killed.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not group_alive(killed.pid), "a process of the killed run survived"

    # (a) nothing but the temp file; Snakemake's markers survive the kill
    assert not any((root / out).exists() for out in PHANTOM)
    assert hidden(folder) == [temp.name]
    assert marked_incomplete(root) == set(PHANTOM)

    # (b) the dry run plans the killed job again
    code, out = snakemake(root, "-n", target)
    assert code == 0, out[-3000:]
    assert re.search(r"^phantom\s+1$", out, re.M) and f"Missing output files: {target}" in out, out[-3000:]

    # (c) the stale lock is named, --unlock clears it, and the rerun completes and cleans up
    code, out = snakemake(root, "--cores", "1", target)
    assert code != 0 and "--unlock" in out and not (root / target).exists(), out[-3000:]
    code, out = snakemake(root, "--unlock")
    assert code == 0, out[-3000:]
    code, out = snakemake(root, "--cores", "1", "--rerun-incomplete", target)
    assert code == 0, out[-3000:]
    assert (root / target).stat().st_size > 1 << 20 and (root / PHANTOM[1]).exists()
    assert json.loads((root / PHANTOM[2]).read_text())
    assert hidden(folder) == [], "the rerun must remove the killed job's temp file"
    assert marked_incomplete(root) == set()
