"""Atomic outputs: a killed writer leaves at most one fixed temporary file, and the next attempt removes it."""

import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest

from magflow.atomic import atomic_path, temp_path
from magflow.preprocess.store import ScaleContent, StoreWriter, TileStore

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

