"""Permission and disk errors name the output and its folder, and say why: on the CLI, in logs, before a run."""

import errno
import logging
import os
import subprocess
import sys
from collections import namedtuple
from contextlib import contextmanager
from pathlib import Path

import pytest

from magflow import cli, writable
from magflow.atomic import atomic_path
from magflow.errors import MagflowError, OutputError
from magflow.logs import log_to_file
from magflow.writable import check_writable, folder_problem, make_output_dir
from test_workflow import PHANTOM_ROWS, REPO, make_project, run

ROOT = os.geteuid() == 0
Usage = namedtuple("Usage", "total used free")


@contextmanager
def unwritable(folder):
    """``folder`` made unwritable for this user: chmod, or for root (who ignores modes) the immutable flag."""
    if not ROOT:
        folder.chmod(0o500)
        try:
            yield
        finally:
            folder.chmod(0o700)
        return
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
        pytest.skip("root ignores folder permissions, and this file system has no immutable flag (chattr +i)")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def no_space(monkeypatch):
    monkeypatch.setattr(writable.shutil, "disk_usage", lambda path: Usage(10**9, 10**9, 0))


def fail_mkdir(monkeypatch, code):
    def mkdir(self, *args, **kwargs):
        raise OSError(code, os.strerror(code), str(self))
    monkeypatch.setattr(Path, "mkdir", mkdir)


def test_a_read_only_folder_names_the_output_and_the_folder(tmp_path):
    out = tmp_path / "masks" / "s.h5"
    with pytest.raises(OutputError) as caught, atomic_path(out) as tmp:
        raise OSError(errno.EROFS, "Read-only file system", str(tmp))  # as open() reports it
    message = str(caught.value)
    assert f"cannot write {out}:" in message and f"the folder {out.parent} is on a read-only file system" in message
    assert ".tmp" not in message, "the hidden temporary name is not what the user asked for"
    assert isinstance(caught.value, MagflowError) and not list(out.parent.iterdir())


def test_a_folder_that_cannot_be_made_names_the_folder_above_it(tmp_path, monkeypatch):
    out = tmp_path / "results" / "tiles" / "s.h5"
    fail_mkdir(monkeypatch, errno.EACCES)
    with pytest.raises(OutputError) as caught, atomic_path(out):
        pass
    message = str(caught.value)
    assert f"cannot write {out}: the folder {out.parent.parent} is not writable (Permission denied)" in message
    assert "chmod u+w" in message


def test_an_unwritable_folder_really_refuses(tmp_path):
    folder = tmp_path / "masks"
    folder.mkdir()
    with unwritable(folder):
        with pytest.raises(OutputError, match=rf"cannot write {folder / 's.h5'}: the folder {folder} is not writable"):
            with atomic_path(folder / "s.h5") as tmp:
                tmp.write_text("x")
        assert "not writable" in folder_problem(folder)


def test_a_full_disk_says_disk_full_and_names_the_output(tmp_path):
    out = tmp_path / "tiles" / "s.h5"
    with pytest.raises(OutputError) as caught, atomic_path(out) as tmp:
        tmp.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")  # h5py gives no file name
    assert f"cannot write {out}: disk full (no space left for {out.parent}" in str(caught.value)
    assert not list(out.parent.iterdir()), "the partial temporary file is removed"


def test_a_full_disk_is_recognised_when_the_library_drops_the_errno(tmp_path, monkeypatch):
    """torch.save reports a full disk as a RuntimeError without errno."""
    out = tmp_path / "checkpoint.pt"
    no_space(monkeypatch)
    with pytest.raises(OutputError, match=r"checkpoint.pt: disk full .*0 B free.*unexpected pos"):
        with atomic_path(out):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")


def test_a_quota_says_quota(tmp_path):
    with pytest.raises(OutputError, match="disk quota exceeded"), atomic_path(tmp_path / "x.json"):
        raise OSError(errno.EDQUOT, "Disk quota exceeded")


def test_an_input_that_cannot_be_read_is_not_called_an_output_error(tmp_path):
    slide = tmp_path / "slide.svs"
    with pytest.raises(PermissionError), atomic_path(tmp_path / "out.h5"):
        raise PermissionError(errno.EACCES, "Permission denied", str(slide))
    with pytest.raises(ValueError), atomic_path(tmp_path / "out.h5"):  # other errors pass untouched
        raise ValueError("bad slide")


def test_the_writable_check_passes_a_writable_folder_and_one_still_to_be_made(tmp_path):
    assert folder_problem(tmp_path) is None
    assert folder_problem(tmp_path / "results" / "deep") is None
    assert not (tmp_path / "results").exists(), "the check makes nothing"
    check_writable([tmp_path / "results", tmp_path / "logs"])
    assert sorted(os.listdir(tmp_path)) == [], "the probe leaves nothing behind"


def test_the_writable_check_names_each_folder_and_why(tmp_path, monkeypatch):
    (tmp_path / "results").write_text("not a folder")
    with pytest.raises(OutputError) as caught:
        check_writable([tmp_path / "results", tmp_path / "logs"])
    message = str(caught.value)
    assert f"{tmp_path / 'results'} is a file, not a folder" in message and "logs" not in message
    assert "No job was started" in message

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(writable.tempfile, "TemporaryFile", read_only)
    assert f"the folder {tmp_path} is on a read-only file system" in folder_problem(tmp_path / "logs")


def test_the_writable_check_looks_inside_the_output_folders(tmp_path):
    """Snakemake makes a job's output folder itself, and a refusal there would stop the whole run."""
    masks = tmp_path / "results" / "masks"
    masks.mkdir(parents=True)
    (tmp_path / "results" / "tiles").mkdir()
    with unwritable(masks):
        with pytest.raises(OutputError) as caught:
            check_writable([tmp_path / "results"])
    message = str(caught.value)
    assert f"the folder {masks} is not writable" in message and "tiles" not in message


def test_the_writable_check_sees_a_full_disk(tmp_path, monkeypatch):
    no_space(monkeypatch)
    with pytest.raises(OutputError, match=rf"disk full \(no space left for {tmp_path}, 0 B free\)"):
        check_writable([tmp_path / "results"])


def test_a_training_folder_that_refuses_files_is_named_before_training(tmp_path):
    run_dir = tmp_path / "models" / "du_s0"
    run_dir.mkdir(parents=True)
    with unwritable(run_dir):
        with pytest.raises(OutputError, match=rf"output folder {run_dir}: the folder {run_dir} is not writable"):
            make_output_dir(run_dir)
    assert make_output_dir(tmp_path / "new" / "run").is_dir()


def test_the_mixer_cli_names_an_unmakeable_run_folder(tmp_path, capsys):
    models = tmp_path / "models"
    models.mkdir()
    with unwritable(models):
        code = cli.main(["pretrain-mixer", str(tmp_path / "absent.h5"), "--out-dir", str(models / "cmem")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(f"magflow pretrain-mixer: error: cannot make the output folder {models / 'cmem'}: the folder "
                          f"{models} is not writable"), err
    assert "Traceback" not in err


def test_the_cli_prints_an_error_line_naming_the_output(tmp_path, monkeypatch, capsys):
    out = tmp_path / "ro" / "du.json"
    fail_mkdir(monkeypatch, errno.EROFS)
    code = cli.main(["optimize-sampler", "--strategy", "du", "--grid-step", "0.05", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"magflow optimize-sampler: error: cannot write {out}: the folder {tmp_path} is on a read-only")
    assert "Traceback" not in err


def test_the_rule_log_says_which_output_failed_and_why(tmp_path, monkeypatch):
    log = tmp_path / "step.log"
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    log_to_file(log)
    try:
        with atomic_path(tmp_path / "out" / "x.h5"):
            raise OSError(errno.ENOSPC, "No space left on device")
    except OutputError:
        sys.excepthook(*sys.exc_info())  # what an uncaught error in a workflow script does
    finally:
        for handler in logging.getLogger().handlers[:]:
            handler.close()
            logging.getLogger().removeHandler(handler)
    text = log.read_text()
    assert f"FAILED: cannot write {tmp_path / 'out' / 'x.h5'}: disk full" in text


def test_a_run_stops_before_any_job_when_results_cannot_be_written(tmp_path):
    root = make_project(tmp_path / "wf", PHANTOM_ROWS[:1])
    (root / "results").mkdir()
    with unwritable(root / "results"):
        plan = run(["-s", str(REPO / "Snakefile"), "-n", "--cores", "1"], root)
        real = run(["-s", str(REPO / "Snakefile"), "--cores", "1"], root)
    assert plan.returncode == 0, plan.stderr[-3000:]  # a dry run writes nothing: it only warns
    assert "magflow: warning: cannot write the outputs: the folder results is not writable" in plan.stderr
    assert real.returncode != 0
    assert "cannot write the outputs: the folder results is not writable" in real.stderr, real.stderr[-3000:]
    assert "No job was started" in real.stderr
    assert not any((root / "results").iterdir()) and not (root / "logs").exists()
