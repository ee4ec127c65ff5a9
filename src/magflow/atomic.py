"""Write outputs under a temporary name and rename them into place only when complete.

The temporary name is fixed per output (``.name.tmp.h5`` beside ``name.h5``), so whatever a killed
writer left behind (SIGKILL, a Slurm time or memory limit) is removed by the next attempt at the same
output. That is safe because an output has one writer at a time: Snakemake runs one job per output and
locks its working directory, and distributed training writes checkpoints and weights from rank 0 only.
Two processes writing the same output at once would already race for the final file; do not.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from magflow.writable import output_error


def temp_path(final: str | os.PathLike[str]) -> Path:
    """The hidden temporary name of ``final``; it keeps the suffix, so PIL and tifffile still see the format."""
    final = Path(final)
    return final.with_name(f".{final.stem}.tmp{final.suffix}")


def remove_leftovers(final: Path) -> None:
    """Remove the temporary file of an earlier, killed attempt at ``final``.

    This includes the per-process names older versions used (``.name.tmp-PID.h5``).
    """
    temp_path(final).unlink(missing_ok=True)
    pattern = re.compile(rf"\.{re.escape(final.stem)}\.tmp-\d+{re.escape(final.suffix)}")
    with os.scandir(final.parent) as entries:
        for entry in entries:
            if pattern.fullmatch(entry.name):
                Path(entry.path).unlink(missing_ok=True)


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
        remove_leftovers(final)
        yield tmp
        os.replace(tmp, final)
    except BaseException as error:
        problem = output_error(error, final, tmp)
        if problem is None:
            raise
        raise problem from error
    finally:
        tmp.unlink(missing_ok=True)
