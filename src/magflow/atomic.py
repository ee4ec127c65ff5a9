"""Write outputs under a temporary name and rename them into place only when complete.

The temporary name is fixed per output (``.name.tmp.h5`` beside ``name.h5``), so whatever a killed
writer left behind (SIGKILL, a Slurm time or memory limit) is removed by the next attempt at the same
output. That is safe because an output has one writer at a time: Snakemake runs one job per output and
locks its working directory, and distributed training writes checkpoints and weights from rank 0 only.
Two processes writing the same output at once would already race for the final file; do not.
Nothing lists the folder (it may hold one file per slide of a large cohort): the older per-process
names (``.name.tmp-PID.h5``) are left to ``find results -name '.*.tmp*' -delete``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from magflow.writable import output_error


def temp_path(final: str | os.PathLike[str]) -> Path:
    """The hidden temporary name of ``final``; it keeps the suffix, so PIL and tifffile still see the format."""
    final = Path(final)
    return final.with_name(f".{final.stem}.tmp{final.suffix}")


@contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` only if the block succeeds.

    On any exception the temporary file is removed and nothing is left at ``final``. A folder that is
    not writable, or a full disk, raises :class:`~magflow.errors.OutputError` naming ``final``, its
    folder and the fix, instead of the library's error about the temporary file.
    """
    final = Path(final)
    tmp = temp_path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp.unlink(missing_ok=True)  # what a killed attempt at this output left
        yield tmp
        os.replace(tmp, final)
    except BaseException as error:
        problem = output_error(error, final, tmp)
        if problem is None:
            raise
        raise problem from error
    finally:
        tmp.unlink(missing_ok=True)
