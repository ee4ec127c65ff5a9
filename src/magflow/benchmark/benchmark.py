"""The ``benchmark`` step: one model on one multi-magnification benchmark, measured as the papers' authors do.

1. Every image of the benchmark's table (:meth:`BenchmarkSpec.read`) is embedded at every mpp: a
   DataLoader decodes the PNGs in its worker processes (:mod:`magflow.benchmark.images`), the images go
   to the model at the benchmark's native size when it takes it, else resized to its size (recorded),
   and the encoder applies the model's own normalisation and feature (bf16 autocast on CUDA, float32 on
   CPU). The embeddings file is written atomically (:mod:`magflow.benchmark.output`).
2. On those embeddings: the ``cms`` protocol (:mod:`magflow.evaluate.cms`: kNN and logistic regression
   fit on the pooled standard mpps over the table's 5 folds, scored at every mpp), RankMe by both
   definitions on the same rows at every mpp (:mod:`magflow.evaluate.rankme`), and the Magnification
   Robustness Index (croma, :mod:`magflow.evaluate.robustness`) with the mpp as the confounder, the
   image label as the class and the table's group (slide or patient) as croma's group.
3. The record (:mod:`magflow.benchmark.record`) is written atomically.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from torch.utils.data import DataLoader
from tqdm import tqdm

from magflow import provenance
from magflow.embed.control import InitControl
from magflow.embed.encoder import Encoder, load_encoder
from magflow.embed.external import ExternalModel
from magflow.embed.embed import pick_device
from magflow.errors import ConfigError
from magflow.evaluate.cms import CMS_CONSTANTS, PROTOCOL, cms_protocol
from magflow.evaluate.rankme import (COVARIANCE, PAPER, RANKME_MAX_N, RANKME_SEED, definition_constants,
                                     rankme_by_mpp)
from magflow.evaluate.record import write_record
from magflow.evaluate.robustness import robustness_index

from .config import BenchmarkSpec
from .images import (RESIZE_FILTER, BenchmarkImages, InputSize, input_size, native_size,
                     unwrap_worker_error)
from .layouts import FOLD_COLUMNS
from .output import BenchmarkEmbeddings, write_benchmark_embeddings
from .paths import STANDARD_MPPS
from .record import STEP, mpp_key, probe_results, rankme_results, read_record

__all__ = ["embed_images", "read_record", "run_benchmark"]

log = logging.getLogger(__name__)
FLUSH_EVERY = 16  # batches kept on the device before their features are copied back


def embed_images(encoder: Encoder, paths: list[str], size: InputSize, *, name: str, layout: str,
                 batch_size: int = 64, workers: int = 0, device: torch.device | None = None,
                 progress: bool = True) -> tuple[np.ndarray, float]:
    """Features (len(paths)×D float32, in the order of ``paths``) of every image, and the seconds it took
    (loader start included). ``encoder`` must already be on ``device``."""
    device = device or torch.device("cpu")
    dataset = BenchmarkImages(paths, size, name, layout)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast(
        "cpu", enabled=False)
    features = np.zeros((len(paths), encoder.feature_dim), np.float32)
    bar = tqdm(total=len(paths), desc=f"benchmark {name} [{encoder.name}]", unit="img", disable=not progress,
               mininterval=1.0)
    pending: list[tuple[np.ndarray, torch.Tensor]] = []

    def flush() -> None:  # one device sync per FLUSH_EVERY batches, so reading the next batch overlaps compute
        for index, out in pending:
            features[index] = out.float().cpu().numpy()
            bar.update(len(index))
        pending.clear()

    start = time.perf_counter()
    try:
        with torch.inference_mode(), autocast:
            for pixels, index in loader:
                views = pixels.to(device, non_blocking=True).float().div_(255)
                pending.append((index.numpy(), encoder(views)))
                if len(pending) == FLUSH_EVERY:
                    flush()
            flush()
    except ConfigError as error:  # an image of the wrong size, found by a worker
        raise unwrap_worker_error(error) from None
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    return features, seconds


def _check_mpps(spec: BenchmarkSpec) -> None:
    missing = [m for m in STANDARD_MPPS if m not in spec.mpps]
    if missing:
        raise ConfigError(f"benchmarks.{spec.name}.mpps: the cms protocol fits its probes on the standard mpps "
                          f"{list(STANDARD_MPPS)}; {[float(m) for m in missing]} missing from {list(spec.mpps)}. "
                          "Add them (and their folders) or leave mpps out")


def run_benchmark(spec: BenchmarkSpec, model: str | os.PathLike[str] | ExternalModel | InitControl,
                  embeddings_out: str | os.PathLike[str], record_out: str | os.PathLike[str], *, name: str,
                  batch_size: int = 64, workers: int = 0, mean_patch: bool = False,
                  device: str | torch.device | None = None, progress: bool = True,
                  config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Embed the benchmark ``spec`` with ``model`` (a run's model directory, an :class:`ExternalModel` or a
    run's :class:`InitControl`) named ``name``, write ``embeddings_out`` (HDF5) and ``record_out`` (JSON);
    return the record. ``mean_patch`` is ``embed.mean_patch``: a run's (or control's) features are then
    [CLS, mean patch token], as in its evaluation embeddings."""
    if batch_size < 1 or workers < 0:
        raise ConfigError(f"benchmark {spec.name}: batch_size must be ≥ 1 and workers ≥ 0, got {batch_size} and "
                          f"{workers}")
    _check_mpps(spec)
    table = spec.read()
    mpps = sorted(float(m) for m in table["mpp"].unique())
    first = table[table["mpp"] == mpps[0]]
    ids = first["image_id"].to_numpy(dtype=object)
    n = len(ids)
    for mpp in mpps:  # the table is sorted by mpp, then image_id, and every region is at every mpp
        if not np.array_equal(table.loc[table["mpp"] == mpp, "image_id"].to_numpy(dtype=object), ids):
            raise ConfigError(f"benchmark '{spec.name}': the images at mpp {mpp:g} are not those at {mpps[0]:g}")

    torch_device = pick_device(device)
    encoder = load_encoder(model, mean_patch=mean_patch, name=name).to(torch_device)
    encoder.name = name
    size = input_size(encoder.timm_model, native_size(spec.name, spec.layout, first["path"].iloc[0]))
    if size.resized:
        log.warning("benchmark %s: the model %s takes %d px, the images are %d px: resized (%s)", spec.name, name,
                    size.input_px, size.native_px, RESIZE_FILTER)
    paths = table["path"].astype(str).tolist()
    flat, seconds = embed_images(encoder, paths, size, name=spec.name, layout=spec.layout, batch_size=batch_size,
                                 workers=workers, device=torch_device, progress=progress)
    features = {m: flat[(table["mpp"] == m).to_numpy()] for m in mpps}
    precision = "bf16-autocast" if torch_device.type == "cuda" else "fp32"
    images_per_s = len(paths) / seconds if seconds > 0 else 0.0
    normalisation = {"mean": encoder.mean.flatten().tolist(), "std": encoder.std.flatten().tolist()}
    prov = provenance.collect(config=config, precision=precision, benchmark=spec.name, layout=spec.layout,
                              root=str(spec.root))
    emb = BenchmarkEmbeddings(
        image_id=ids, label=first["label"].to_numpy(dtype=object), label_id=first["label_id"].to_numpy(np.int64),
        group=first["group"].to_numpy(dtype=object), slide=first["slide"].to_numpy(dtype=object),
        folds={c: first[c].to_numpy(dtype=object) for c in FOLD_COLUMNS}, features=features,
        paths={m: table.loc[table["mpp"] == m, "path"].to_numpy(dtype=object) for m in mpps},
        attrs={"benchmark": spec.name, "layout": spec.layout, "root": str(spec.root), "folds": table.attrs["folds"],
               "mpps": mpps, "standard_mpps": list(STANDARD_MPPS), "model": name, "model_card": encoder.card,
               "features": encoder.features, "embed_dim": encoder.embed_dim, "feature_dim": encoder.feature_dim,
               **normalisation, "native_px": size.native_px, "input_px": size.input_px, "resized": size.resized,
               "input_size": size.reason, "resize": RESIZE_FILTER if size.resized else "",
               "precision": precision, "device": str(torch_device), "images_per_s": images_per_s,
               "provenance": prov})
    write_benchmark_embeddings(embeddings_out, emb)
    log.info("benchmark %s: %d images × %d mpps embedded at %d px in %.1f s (%.1f img/s); wrote %s", spec.name, n,
             len(mpps), size.input_px, seconds, images_per_s, embeddings_out)

    labels, groups = emb.label_id, emb.group.astype(str)
    with warnings.catch_warnings():  # whether each chosen logistic regression converged is recorded instead
        warnings.simplefilter("ignore", ConvergenceWarning)
        # a small dev or test fold often misses a predicted class: expected, and balanced accuracy says so
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        try:
            cms = cms_protocol(features, labels, {str(i): emb.folds[c] for i, c in enumerate(FOLD_COLUMNS)},
                               groups=groups, train_mpps=STANDARD_MPPS, test_mpps=mpps)
        except ValueError as error:  # a fold without dev or test images, or with one class in train
            raise ConfigError(f"benchmark '{spec.name}' ({spec.layout}): the cms protocol cannot run on its folds "
                              f"({table.attrs['folds']}): {error}. Every fold needs train images of two classes, "
                              f"dev and test images; fix the folds (embeddings kept at {embeddings_out})") from None
    unconverged = [fold for fold, r in cms.probes["linear"].items() if not r.converged]
    if unconverged:
        log.warning("benchmark %s: the chosen logistic regression of fold(s) %s stopped at max_iter without "
                    "converging (recorded as converged: false)", spec.name, ", ".join(unconverged))
    paper = rankme_by_mpp(features, definition=PAPER)
    covariance = rankme_by_mpp(features, definition=COVARIANCE)
    rankme = rankme_results(paper, covariance, {PAPER: definition_constants(PAPER),
                                                COVARIANCE: definition_constants(COVARIANCE),
                                                "max_n": RANKME_MAX_N, "seed": RANKME_SEED,
                                                "rows": "the same images at every mpp and by both definitions"})
    try:
        ri = robustness_index(features, labels, groups)
        robustness = {"index": ri.value, "status": "ok", "reason": "", **ri.as_result()}
    except (ValueError, RuntimeError) as error:  # croma raises RuntimeError when no k can be chosen
        log.warning("benchmark %s: no robustness index: %s", spec.name, error)
        robustness = {"index": None, "status": "skipped", "reason": str(error)}

    label_counts = first.groupby("label")["image_id"].count()
    record = {
        "step": STEP, "benchmark": spec.name, "layout": spec.layout, "model": name, "protocol": PROTOCOL,
        "mpps": mpps, "standard_mpps": list(STANDARD_MPPS), "probes": probe_results(cms), "rankme": rankme,
        "robustness": robustness, "input_px": size.input_px, "native_px": size.native_px, "resized": size.resized,
        "input_size": size.reason, "resize": RESIZE_FILTER if size.resized else None,
        "model_card": encoder.card, "feature": encoder.features, "normalisation": normalisation,
        "folds": {"source": table.attrs["folds"],
                  "per_fold": [{"fold": int(f), **info} for f, info in sorted(cms.folds.items())]},
        "counts": {"images": n, "per_mpp": {mpp_key(m): int(len(features[m])) for m in mpps},
                   "labels": {str(k): int(v) for k, v in label_counts.items()}, "groups": int(len(set(groups)))},
        "cms": CMS_CONSTANTS, "embeddings": str(embeddings_out), "precision": precision, "device": str(torch_device),
        "images_per_s": images_per_s, "embed_seconds": seconds, "provenance": prov,
    }
    write_record(record_out, record)
    return read_record(record_out)
