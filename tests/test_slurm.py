"""profiles/slurm on a real single-node Slurm cluster (tests/slurm/local_cluster.sh), against a local run.

The cluster needs root and apt-get. Without them these tests skip, unless MAGFLOW_REQUIRE_SLURM=1
(.ci/run sets it where both exist): then a cluster that cannot be set up is a failure. A cluster this
module started is stopped afterwards (MAGFLOW_KEEP_SLURM=1 keeps it, for faster reruns).
Every Snakemake call runs under `timeout -s KILL`: the Slurm plugin waits forever when it cannot learn
job states, and a hung test must not hang CI.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from safetensors import safe_open

from test_workflow import PHANTOM_ROWS, copy_project, make_project

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SCRIPTS = REPO / "tests" / "slurm"
PROFILE = REPO / "profiles" / "slurm"
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
# Everything up to the embeddings; evaluation would add ten short jobs and minutes of Slurm start-up.
UNTIL = ["--until", "embed", "slide_qc_table", "tile_manifest", "plot_samplers"]
TIMINGS: dict[str, float] = {}


@dataclass
class Run:
    name: str
    root: Path
    returncode: int
    seconds: float
    text: str


def run_snakemake(name: str, root: Path, args: list[str], limit_s: int) -> Run:
    """Snakemake in `root` under a hard time limit; a run killed by the limit fails the test."""
    started = time.monotonic()
    with open(root / "snakemake.out", "w") as out:
        returncode = subprocess.run(["timeout", "-s", "KILL", str(limit_s)] + SNAKEMAKE + args, cwd=root,
                                    stdout=out, stderr=subprocess.STDOUT).returncode
    TIMINGS[name] = seconds = time.monotonic() - started
    text = (root / "snakemake.out").read_text()
    if returncode in (124, 137, -9):
        cancel_jobs_of(root)
        pytest.fail(f"{name} was killed after {limit_s} s (a hang?):\n{text[-4000:]}")
    return Run(name, root, returncode, seconds, text)


def cancel_jobs_of(workdir: Path):
    """Cancel the Slurm jobs that a killed run left behind (those running in its directory)."""
    listing = subprocess.run(["squeue", "-h", "-o", "%i %Z"], capture_output=True, text=True).stdout
    ids = [line.split()[0] for line in listing.splitlines() if line.split()[1:] == [str(workdir)]]
    if ids:
        subprocess.run(["scancel", *ids])


# -- the cluster --------------------------------------------------------------------------------------

def cluster_unavailable(reason: str):
    if os.environ.get("MAGFLOW_REQUIRE_SLURM") == "1":
        pytest.fail(f"MAGFLOW_REQUIRE_SLURM=1 but no Slurm cluster: {reason}")
    pytest.skip(f"no local Slurm cluster: {reason}")


@pytest.fixture(scope="module")
def cluster():
    """A running single-node cluster; yields (CPUs, memory in MB) of its node."""
    if os.geteuid() != 0:
        cluster_unavailable("tests/slurm/local_cluster.sh needs root")
    if not shutil.which("apt-get") and not shutil.which("sbatch"):
        cluster_unavailable("neither apt-get nor Slurm is installed")
    script = str(CLUSTER_SCRIPTS / "local_cluster.sh")
    was_up = subprocess.run([script, "--check"], capture_output=True).returncode == 0
    started = time.monotonic()
    try:
        setup = subprocess.run([script], capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        cluster_unavailable("tests/slurm/local_cluster.sh took more than 10 minutes")
    TIMINGS["cluster setup"] = time.monotonic() - started
    if setup.returncode != 0:
        cluster_unavailable(f"tests/slurm/local_cluster.sh exited {setup.returncode}:\n{setup.stderr[-3000:]}")
    node = subprocess.run(["sinfo", "-h", "-N", "-o", "%c %m"], capture_output=True, text=True, check=True)
    cpus, mem_mb = map(int, node.stdout.split()[:2])
    yield cpus, mem_mb
    if not was_up and os.environ.get("MAGFLOW_KEEP_SLURM") != "1":
        subprocess.run([str(CLUSTER_SCRIPTS / "stop_cluster.sh")], capture_output=True, timeout=120)


def ci_profile(root: Path, cpus: int, mem_mb: int) -> Path:
    """The CI override, a second --profile over profiles/slurm: the node's size, early polls, logs kept."""
    override = {
        "cores": cpus,
        "resources": {"mem_mb": min(mem_mb, 8000)},
        "group-components": {"per_slide": 2, "sampler_sweep": 1},  # both slides in one Slurm job
        "slurm-init-seconds-before-status-checks": 2,              # short jobs: poll early
        "slurm-keep-successful-logs": True,                        # the test reads the Slurm logs
        "latency-wait": 5,                                         # one machine: outputs appear at once
    }
    (root / "config.yaml").write_text(yaml.safe_dump(override))
    return root


def tiny_project(root: Path, rows: list[str]) -> Path:
    """The workflow test's tiny project (2-row sampler sweep, a 4-iteration pretraining run) with one
    small nested tile set that both pretraining and embedding read."""
    embed = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["embed"]
    return make_project(root, rows, embed=dict(embed, tileset="train", resample="nearest_scale"), tilesets={
        "train": {"scales": [0.25, 0.5, 1.0, 2.0], "source_px": 512, "max_tiles_per_scale": 6, "nested": True}})


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory):
    """The same tiny project run locally and through Slurm, and a Slurm run whose one slide is corrupt.
    The failing run makes one attempt: the profile's retry would only double its time."""
    mk = tmp_path_factory.mktemp
    on_slurm = ["--profile", str(PROFILE), "--profile", str(ci_profile(mk("ci_profile"), *cluster))]
    failing = mk("failing")
    (failing / "bad.svs").write_bytes(b"II*\x00" + os.urandom(5000))
    tiny_project(failing, [f"bad_slide\t{failing / 'bad.svs'}\t\ttest\tp3\t0"])
    done = [
        run_snakemake("local run", tiny_project(mk("local"), PHANTOM_ROWS), ["--cores", "2"] + UNTIL, limit_s=300),
        run_snakemake("slurm run", tiny_project(mk("slurm"), PHANTOM_ROWS), on_slurm + UNTIL, limit_s=480),
        run_snakemake("failing slurm run", failing,
                      on_slurm + ["--retries", "0", "results/tiles/train/bad_slide.h5"], limit_s=300),
    ]
    return {run.name: run for run in done}


# -- comparing results ----------------------------------------------------------------------------------

COMPARED = ["masks/*.h5", "tiles/*/*.h5", "tiles/*/manifest.tsv", "qc/slides.tsv", "samplers/**/*.json",
            "models/*/model_card.json", "models/*/teacher_backbone.safetensors", "embeddings/*/*.h5"]
# host, date, versions and git state; wall-clock timings. The cards' sha256 of each .safetensors file is
# compared: identical runs write byte-identical weight files (magflow.weights_file)
UNREPRODUCIBLE = {"provenance", "commit", "seconds", "views_per_s"}


def compared_files(results: Path) -> list[Path]:
    return sorted(p.relative_to(results) for pattern in COMPARED for p in results.glob(pattern))


def scrub(value):
    """The value without its unreproducible keys, JSON text included."""
    if isinstance(value, (str, bytes)) and value[:1] in ("{", "[", b"{", b"["):
        value = json.loads(value)
    if isinstance(value, dict):
        return {key: scrub(item) for key, item in value.items() if key not in UNREPRODUCIBLE}
    if isinstance(value, list):
        return [scrub(item) for item in value]
    return value


def h5_contents(path: Path) -> dict:
    """Every dataset and attribute of an HDF5 file."""
    items = {}
    with h5py.File(path, "r") as store:
        def visit(name, obj):
            items.update({f"{name}@{key}": scrub(value) for key, value in obj.attrs.items()
                          if key not in UNREPRODUCIBLE})
            if isinstance(obj, h5py.Dataset):
                items[name] = obj[()]
        visit("/", store)
        store.visititems(visit)
    return items


def safetensors_contents(path: Path) -> dict:
    with safe_open(path, "np") as weights:
        return {key: weights.get_tensor(key) for key in weights.keys()} | {"@metadata": weights.metadata()}


def contents(path: Path) -> dict:
    if path.suffix == ".h5":
        return h5_contents(path)
    if path.suffix == ".safetensors":
        return safetensors_contents(path)
    if path.suffix == ".json":
        return scrub(json.loads(path.read_text()))
    return {"text": path.read_text()}


def same(x, y) -> bool:
    if not isinstance(x, np.ndarray | np.generic):
        return x == y
    x, y = np.asarray(x), np.asarray(y)
    return x.dtype.kind == y.dtype.kind and np.array_equal(x, y, equal_nan=x.dtype.kind in "fc")


def differences(a: Path, b: Path) -> list[str]:
    x, y = contents(a), contents(b)
    return [key for key in sorted(x.keys() | y.keys()) if key not in x or key not in y or not same(x[key], y[key])]


# -- the tests ------------------------------------------------------------------------------------------

@pytest.mark.slurm
def test_every_job_went_through_sbatch(runs):
    run = runs["slurm run"]
    assert run.returncode == 0, run.text[-4000:]
    submitted = set(re.findall(r"has been submitted with SLURM jobid (\d+)", run.text))
    slurm_logs = run.root / ".snakemake" / "slurm_logs"
    logs = {p.stem: p.relative_to(slurm_logs).parts[0] for p in slurm_logs.rglob("*.log")}
    assert submitted and submitted == set(logs), (submitted, logs)
    # One Slurm job ran both slides' phantom -> tissue_mask -> extract_tiles, one the sampler sweep and its
    # figure; every other job had its own (two embed jobs: the run and its init control).
    assert sorted(logs.values()) == sorted(
        ["group_per_slide_extract_tiles_phantom_tissue_mask", "group_sampler_sweep_optimize_sampler_plot_samplers",
         "rule_slide_qc_table", "rule_tile_manifest", "rule_pretrain", "rule_embed", "rule_embed"]), logs
    assert "localrule" not in run.text, "a job ran outside Slurm"
    states = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobIdRaw,State", "-j", ",".join(submitted)],
                            capture_output=True, text=True, check=True).stdout.split()
    assert sorted(states) == sorted(f"{job}|COMPLETED" for job in submitted), states


@pytest.mark.slurm
def test_slurm_results_equal_local_results(runs):
    local, on_slurm = runs["local run"], runs["slurm run"]
    assert local.returncode == 0, local.text[-4000:]
    assert on_slurm.returncode == 0, on_slurm.text[-4000:]
    files = compared_files(local.root / "results")
    assert len(files) == 12 and files == compared_files(on_slurm.root / "results"), files  # embeddings: run + control
    changed = {str(f): d for f in files
               if (d := differences(local.root / "results" / f, on_slurm.root / "results" / f))}
    assert not changed, changed


@pytest.mark.slurm
def test_failing_job_fails_the_run_in_bounded_time_and_names_its_log(runs):
    run = runs["failing slurm run"]
    assert run.returncode != 0, run.text[-3000:]
    assert run.seconds < 240, TIMINGS  # typically 40-90 s: one job, then the plugin's next status poll
    assert "logs/tissue_mask/bad_slide.log" in run.text, run.text[-3000:]
    slurm_logs = re.findall(r"log: (\S+/slurm_logs/\S+\.log) \(check log file", run.text)
    assert len(slurm_logs) == 1 and Path(slurm_logs[0]).is_file(), run.text[-3000:]
    assert "bad_slide" in Path(slurm_logs[0]).read_text()
    log = (run.root / "logs" / "tissue_mask" / "bad_slide.log").read_text()
    assert "bad_slide" in log and "corrupt" in log, log
    print("\nSlurm test timings (s):", {step: round(seconds, 1) for step, seconds in TIMINGS.items()})


# -- the profile without a cluster ----------------------------------------------------------------------

@pytest.mark.slow
def test_dry_run_lists_jobs_with_their_resources(tmp_path):
    project = copy_project(tmp_path)  # the default config, planned afresh whatever results/ the checkout holds
    result = subprocess.run([sys.executable, "-m", "snakemake", "--profile", str(project / "profiles" / "slurm"),
                             "-n"], cwd=project, capture_output=True, text=True, timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    defaults = yaml.safe_load((PROFILE / "config.yaml").read_text())["default-resources"]
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["resources"]
    jobs = re.findall(r"rule (\w+):\n(?:.*\n)*?\s+resources: (.*)", out)
    listed = {name: resources for name, resources in jobs if name != "all"}
    assert {"phantom", "tissue_mask", "extract_tiles", "tile_manifest", "optimize_sampler", "pretrain",
            "embed", "evaluate", "report_index"} <= set(listed), listed
    for name, resources in listed.items():
        wanted = {**defaults, **config.get("evaluate" if name.startswith("evaluate_") else name, {})}
        for key, value in wanted.items():
            shown = value[1:-1] if str(value)[:1] == str(value)[-1:] == "'" else value  # a quoted string, evaluated
            assert f"{key}={shown}" in resources, (name, key, resources)
    assert "gpu=0" in listed["pretrain"] and "gpu=0" in listed["embed"]
    assert "Group job per_slide" in out and "Group job sampler_sweep" in out
    # pre-emption: every job, grouped or not, asks Slurm for SIGUSR1 to its job steps 300 s before its limit
    assert defaults["slurm_extra"] == "'--signal=USR1@300'"
    assert all("slurm_extra=--signal=USR1@300" in resources for resources in listed.values()), listed


@pytest.mark.slow
def test_resource_config_mistakes_stop_before_any_job(tmp_path):
    root = make_project(tmp_path, PHANTOM_ROWS)

    def dry_run(resources: dict):
        (root / "overlay.yaml").write_text(yaml.safe_dump({"resources": resources}))
        result = subprocess.run(SNAKEMAKE + ["-n", "--configfile", "overlay.yaml"], cwd=root,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode != 0
        return result.stdout + result.stderr

    assert "unknown config key 'resources.extract_tiles.mem'" in dry_run({"extract_tiles": {"mem": 100}})
    assert "'extract_tile' is not one of" in dry_run({"extract_tile": {"mem_mb": 100}})
    assert "'resources.pretrain.gpu': 2 contradicts 0" in dry_run({"pretrain": {"gpu": 2}})
    assert not (root / "results").exists()
