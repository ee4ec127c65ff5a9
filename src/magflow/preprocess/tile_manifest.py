"""The tile manifest: one row per slide × scale of a tile set, as TSV and as a readable HTML page.

Columns: ``available`` is how many cells of the scale's grid the tile set could keep (tissue ≥
``min_tissue``; for a coarser scale of a ``nested`` set, the ancestors of every finest cell with enough
tissue); ``kept`` is how many tiles the store holds (fewer than ``available`` under
``max_tiles_per_scale``); ``selection`` says how they were chosen.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import h5py

from magflow.pages import table, write_page
from magflow.tsv import write_tsv


def selection(attrs: Mapping[str, Any], finest_mpp: float) -> str:
    """How one scale's tiles were chosen, from its group attributes."""
    target = float(attrs["target_mpp"])
    if bool(attrs.get("nested", False)) and target != finest_mpp:
        return f"nested: the {target:g} mpp cells holding the kept {finest_mpp:g} mpp tiles"
    rule = f"tissue ≥ {float(attrs['min_tissue']):g}"
    if int(attrs["kept"]) < int(attrs["available"]):
        return f"{rule}, {int(attrs['kept'])} drawn at random (max_tiles_per_scale)"
    return rule


def manifest_rows(store_paths: Sequence[str | os.PathLike[str]], splits: Mapping[str, str]) -> list[dict[str, Any]]:
    rows = []
    for path in store_paths:
        with h5py.File(path, "r") as h5:
            slide_id = str(h5.attrs["slide_id"])
            common = {"slide_id": slide_id, "split": splits.get(slide_id, ""), "mpp_source": h5.attrs["mpp_source"],
                      "slide_mpp": round(float(h5.attrs["mpp"]), 5)}
            for skipped in json.loads(h5.attrs["skipped_scales"]):
                rows.append({**common, "target_mpp": skipped["target_mpp"], "achieved_mpp": "", "available": 0,
                             "kept": 0, "selection": "", "note": "skipped: finer than the slide (no upsampling)"})
            finest = min((float(g.attrs["target_mpp"]) for g in h5.values()), default=0.0)
            for group in h5.values():
                rows.append({**common, "target_mpp": float(group.attrs["target_mpp"]),
                             "achieved_mpp": round(float(group.attrs["mpp"]), 5),
                             "available": int(group.attrs["available"]), "kept": int(group.attrs["kept"]),
                             "selection": selection(group.attrs, finest), "note": str(h5.attrs["empty_reason"])})
    return sorted(rows, key=lambda r: (r["slide_id"], r["target_mpp"]))


def write_manifest(store_paths: Sequence[str | os.PathLike[str]], splits: Mapping[str, str], tileset: str,
                   tsv_path: str | os.PathLike[str], html_path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    rows = manifest_rows(store_paths, splits)
    fields = ["slide_id", "split", "target_mpp", "achieved_mpp", "available", "kept", "selection", "mpp_source",
              "slide_mpp", "note"]
    write_tsv(tsv_path, rows, fields)
    kept = sum(r["kept"] for r in rows)
    intro = (f"<p>Tile set <b>{tileset}</b>: {len(store_paths)} slides, {kept} tiles kept. Scales a slide cannot "
             "serve without upsampling are listed as skipped; highlighted rows carry a note.</p>")
    write_page(html_path, f"magflow - tile set {tileset}", intro,
               table([{k: r[k] for k in fields} for r in rows], "Tiles per slide and scale", warn_key="note"))
    return rows
