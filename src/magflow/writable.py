"""Say which output or folder cannot be written, and why: not writable, read-only, or disk full.

:func:`output_error` turns the operating system's error from writing one output into an
:class:`~magflow.errors.OutputError` that names the output, its folder and the fix.
:func:`check_writable` probes the output folders, and those inside them, before any job runs.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from magflow.errors import OutputError

NOT_WRITABLE = {errno.EACCES, errno.EPERM}
READ_ONLY = {errno.EROFS}
DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
DISK_ERRNOS = NOT_WRITABLE | READ_ONLY | DISK_FULL


def free_space(folder: Path) -> int | None:
    """Bytes an ordinary user may still write on ``folder``'s file system, or None if unknown."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:g} {unit}"
        n = round(n / 1024, 1)
    return f"{n:g} TiB"


def reason(code: int, folder: Path, strerror: str | None = None) -> str:
    """Why ``folder`` cannot take a file, and what to do, for one errno of :data:`DISK_ERRNOS`."""
    if code in NOT_WRITABLE:
        return (f"the folder {folder} is not writable ({strerror or os.strerror(code)}); give your user write "
                f"permission there (chmod u+w {folder}) or write the outputs to a folder you own")
    if code in READ_ONLY:
        return (f"the folder {folder} is on a read-only file system; write the outputs to a writable folder "
                "or remount it read-write")
    free = free_space(folder)
    left = "" if free is None else f", {_size(free)} free"
    what = "disk quota exceeded" if code == errno.EDQUOT else "disk full"
    return (f"{what} (no space left for {folder}{left}); free space there or write the outputs to a larger "
            "disk, then run again")


def _errors(error: BaseException) -> Iterable[BaseException]:
    """``error`` and the errors it was raised from or while handling."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _same(a: str | os.PathLike[str], b: Path) -> bool:
    return os.path.abspath(a) == os.path.abspath(b)


def output_error(error: BaseException, final: Path, tmp: Path) -> OutputError | None:
    """The error to show when writing ``final`` (through ``tmp``) failed with ``error``; None if unrelated.

    An OSError names its own file when it can: a permission error about another file (an input read
    while this output was written) is not this output's fault, and is left as it is. Libraries that
    drop the errno (torch.save) are recognised as disk full when the folder has no space left.
    """
    folder = final.parent
    for cause in _errors(error):
        if not isinstance(cause, OSError) or cause.errno not in DISK_ERRNOS:
            continue
        name = cause.filename
        if name is None or _same(name, tmp) or _same(name, final):
            blocked = folder
        elif Path(os.path.abspath(final)).is_relative_to(os.path.abspath(name)):  # making a parent folder
            blocked = Path(name).parent
        else:
            return None
        return OutputError(f"cannot write {final}: {reason(cause.errno, blocked, cause.strerror)}")
    if isinstance(error, Exception) and free_space(folder) == 0:
        return OutputError(f"cannot write {final}: {reason(errno.ENOSPC, folder)} ({error})")
    return None


def folder_problem(folder: str | os.PathLike[str]) -> str | None:
    """Why no output can be written under ``folder``, or None when it can.

    A folder that does not exist yet is judged by the nearest folder above it that does, which is where
    it would be made. The probe is an anonymous temporary file, so a kill leaves nothing behind.
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder; move it away so that {folder} can hold the outputs"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        if error.errno in DISK_ERRNOS:
            return reason(error.errno, existing, error.strerror)
        return f"no file can be made in {existing} ({error.strerror or error})"
    if free_space(existing) == 0:
        return reason(errno.ENOSPC, existing)
    return None


def folder_problems(roots: Iterable[str | os.PathLike[str]], shown: int = 5) -> list[str]:
    """Why outputs cannot be written under ``roots``: each root and every folder already inside it.

    Snakemake makes a job's output folder before the job starts, and stops the whole run when it
    cannot, so a folder that would refuse its outputs is found here first. At most ``shown`` are listed.
    """
    problems = []
    for root in map(Path, roots):
        folders = [root, *(Path(path) / name for path, names, _ in os.walk(root) for name in names)]
        problems += [problem for folder in folders if (problem := folder_problem(folder))]
    if len(problems) > shown:
        problems[shown:] = [f"{len(problems) - shown} more folders like these"]
    return problems


def check_writable(roots: Iterable[str | os.PathLike[str]]) -> None:
    """Raise :class:`OutputError` naming the folders under ``roots`` that cannot take outputs, and why."""
    problems = folder_problems(roots)
    if problems:
        raise OutputError("cannot write the outputs: " + "; and ".join(problems) + ". No job was started.")


def make_output_dir(folder: str | os.PathLike[str]) -> Path:
    """``mkdir -p folder``; a folder that cannot be made raises :class:`OutputError` naming it and the fix."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        if error.errno not in DISK_ERRNOS:
            raise
        blocked = Path(error.filename).parent if error.filename else folder
        raise OutputError(f"cannot make the output folder {folder}: "
                          f"{reason(error.errno, blocked, error.strerror)}") from error
    problem = folder_problem(folder)  # it exists (made now or before), but may still refuse files
    if problem:
        raise OutputError(f"cannot write into the output folder {folder}: {problem}")
    return folder
