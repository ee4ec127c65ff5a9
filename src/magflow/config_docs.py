"""config/README.md, generated from the config schema (``workflow/schemas/config.schema.yaml``): the
reference of every key with its type, allowed values, default and meaning, one section per top-level block.

    python -m magflow.config_docs > config/README.md

Edit the schema's ``description`` (and a block's ``x-notes``), or the prose here, never the README itself:
tests/test_config_defaults.py checks that the committed file is this module's output.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

from magflow.defaults import DEFAULT_TEXT, NOTES, OVERRIDES, keys, schema

COMMAND = "python -m magflow.config_docs > config/README.md"

HEADER = """# Configuring magflow

A run is described by two files:

- `config/config.yaml`: the settings below. It is validated against
  `workflow/schemas/config.schema.yaml` before any job runs; an unknown key or a wrong type stops the
  run with a message naming the key. Keys you leave out take the default shown here.
- `config/slides.tsv`: the slide sheet (tab-separated), one row per slide.

Override single values without editing files: `snakemake --config tissue='{"mpp": 4.0}'`, or keep
a sweep in its own file and pass `--configfile config/my_sweep.yaml` (it is merged over the default).

## The slide sheet (`config/slides.tsv`)

| column | required | meaning |
| --- | --- | --- |
| `slide_id` | yes | unique id, letters/digits/`.`/`_`/`-`; used in every output file name |
| `path` | yes | the slide file (any OpenSlide format: .svs, .tif, .ndpi, .mrxs, .scn, ...), or a plain image (PNG, JPEG, strip TIFF) with its `mpp` given here; relative to where snakemake runs |
| `mpp` | no | level-0 microns per pixel. When given it always wins over the file's metadata. Give it for slides whose metadata has no resolution: magflow never guesses and stops that slide with an error telling you to add it here |
| `split` | yes | `train`, `val` or `test` |
| `group` | no | e.g. the patient; evaluations keep a group's slides in one split |
| `label` | no | slide-level label. For phantom slides: `1` when the rare class is present, else `0` |
| `cross_scale` | no | phantom slides only: `0` or `1` plants the cross-scale label (empty: none). `1`: large cells in nests and small cells in sheets; `0`: small cells in nests and large cells in sheets. Cell type alone (high magnification) and architecture alone (low magnification) are the same for both values; only their combination tells it (see `phantom.per_slide` below). The value planted is this column's value; `label` must then be empty or equal (large cells in nests are the rare class). Name it in `aggregate.tasks` to evaluate it as an AB-MIL task |
| `annotation` | no | a tile-label CSV or label mask, used by the evaluation stage |
| `brightfield_check` | no | `on` (or empty, the default) or `off`. Tissue detection is made for brightfield H&E: a slide whose median brightness is below `tissue.min_brightness` (a dark background: fluorescence, dark-field) or whose tissue mask covers more than `tissue.max_fraction` of it is refused. Its mask and QC picture are still written, so it is listed as `refused` in `results/qc/slides.html` with the values measured, but its tiles are not extracted (that job fails naming the slide; with `--keep-going` the other slides go on). `off` accepts such a slide deliberately: its mask is used as computed and the QC table keeps a warning |

Where each slide's mpp came from is recorded as `mpp_source` in every output and in
`results/qc/slides.tsv`: `sheet`, `openslide.mpp` (the `openslide.mpp-x/y` properties),
`vendor:<key>` (e.g. `vendor:aperio.MPP`), or `tiff.resolution` (TIFF X/YResolution with an inch or
centimeter unit; a unit of "none" or an implausible value such as 72 dpi is ignored).

Plain images (PNG, JPEG, or a TIFF stored in strips rather than tiles, such as the region crops of
BRACS) are read as one-level slides, but only with their `mpp` in the sheet: magflow does not trust
their resolution tags, and a row without `mpp` is refused naming the column. They are decoded whole
into memory, so one above `read.max_plain_image_megapixels` is refused; convert it to a tiled pyramidal
TIFF instead (`vips tiffsave in.png out.tif --tile --pyramid --compression jpeg --xres X --yres X`
with X = 1000 / mpp pixels per mm). The QC table records `reader: plain-image` and `mpp_source: sheet`
for them. A damaged or truncated file of any kind is refused with a message that says so and names
the slide.

Rows whose `path` is `results/phantom/{slide_id}.tiff` are synthetic phantom slides that the
workflow generates itself (this is how the demo runs with no data).
"""

FOOTER = """## Benchmark folders

A `benchmarks:` entry is read into one table, one row per image and mpp, with the columns `path`,
`mpp`, `image_id` (the same physical region shares it at every mpp), `label`, `label_id`, `group`
(the unit kept on one side of every split: the slide for TCGA-MS, the patient for BRACS-MS), `slide`,
and `fold_0` … `fold_4` (`train`, `dev`, `test`, or empty where a fold leaves the image out). Every
region must exist at every mpp. PNG files whose names start with `._` are ignored.

- **`tcga-ms`** (the released TCGA-MS): `ROOT/mpp_{m}/{slide_uuid}_{x}_{y}.png` for each mpp, and
  `labels.csv` with `slide_uuid`, `label_id` and `fold_0` … `fold_4`. A `label` column, if present,
  names the classes (otherwise the label is the `label_id`). Every image's slide needs a row.
- **`bracs-ms`** (BRACS-MS as its authors' script builds it from the BRACS regions):
  `ROOT/BRACS_{m}mpp/BRACS_{wsi}_{subtype}_{n}.png`, where `subtype` (N, PB, UDH, FEA, ADH, DCIS, IC;
  `label_id` 0 … 6) is the label, plus the patient sheet. The folds are made as the authors make them:
  patients in the order they first appear in the sorted file names, each labelled by its first
  slide's first region; fold f tests split f of a 5-fold stratified shuffle (seed `seed`) over the
  patients, and takes as dev the held-out part of the first split of another 5-fold stratified shuffle
  (same seed) over the other patients. It needs at least 5 patients of some subtype in each.
  Each mpp is made from the 0.25 mpp region: a centre crop of 224·m/0.25 px, then a downsample in
  steps of at most 2× (sizes halve, the last step takes the rest), each a Gaussian blur of σ =
  step factor / 2.5 per channel and a bicubic resize (`magflow.benchmark.resample`).
- **`generic`** (your own benchmark): `ROOT/mpp_{m}/IMAGE` for each mpp, and a CSV (default
  `ROOT/labels.csv`) with `image` (the file name inside each mpp folder, the same in every folder),
  `label` and `group`, and optionally `label_id` (default: the position of the label in the sorted
  label names), `slide` (default: the group) and all of `fold_0` … `fold_4`. Without fold columns,
  magflow makes stratified group folds as for `bracs-ms`.
"""


def _code(value: Any) -> str:
    """A value as YAML flow text in backticks."""
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f"`{value}`"
    if isinstance(value, (list, dict)):
        if isinstance(value, dict) and value:
            return "`{" + ", ".join(f"{k}: {_code(v).strip('`')}" for k, v in value.items()) + "}`"
        return "`[" + ", ".join(_code(v).strip("`") for v in value) + "]`" if isinstance(value, list) else "`{}`"
    return f"`{json.dumps(value)}`"


_BOUNDS = (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<"))


def _kind(node: Mapping[str, Any]) -> str:
    """Type and allowed values of a key, e.g. ``number > 0, ≤ 0.1`` or ``one of `area`, `lanczos```."""
    types = node.get("type", [])
    types = [types] if isinstance(types, str) else list(types)
    if "enum" in node:
        choices = ", ".join(_code(v) for v in node["enum"])
        return f"one of {choices}"
    names = {"number": "number", "integer": "integer", "string": "string", "boolean": "boolean",
             "object": "mapping", "array": "list", "null": "null"}
    text = " or ".join(names.get(t, t) for t in types if t != "null") or "any"
    bounds = ", ".join(f"{sign} {_code(node[key]).strip('`')}" for key, sign in _BOUNDS if key in node)
    if bounds:
        text += f" {bounds}"
    if "array" in types:
        items = node.get("items", {})
        size = ""
        if node.get("minItems") == node.get("maxItems") and "minItems" in node:
            size = f"{node['minItems']} "
        elif "minItems" in node:
            size = f"≥ {node['minItems']} "
        item = _kind(items) if items else "values"
        for name in ("number", "integer", "string", "boolean"):
            if item.startswith(name):
                item = name + "s" + item[len(name):]
        text = f"list of {size}{item}"
        if node.get("uniqueItems"):
            text += ", distinct"
    if "object" in types and node.get("additionalProperties") not in (None, False) and not node.get("properties"):
        text = "mapping of named entries" if isinstance(node.get("additionalProperties"), Mapping) else text
    if "pattern" in node:
        text += f" matching `{node['pattern']}`"
    if "null" in types:
        text += " or `null`"
    return text


def _default(node: Mapping[str, Any], required: bool) -> str:
    if "default" in node:
        return _code(node["default"])
    if required:
        return "(required)"
    return node.get(DEFAULT_TEXT, "")


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _sections() -> list[str]:
    root = schema()
    rows: dict[str, list[tuple[str, dict[str, Any], bool]]] = {}
    for key, node, required in keys():
        rows.setdefault(key.split(".")[0], []).append((key, node, required))
    out = []
    for block, entries in rows.items():
        top = entries[0][1]
        lines = [f"### `{block}`", "", _cell(top.get("description", "")), ""]
        lines += ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        for key, node, required in entries if len(entries) == 1 else entries[1:]:  # a block's own text is above
            meaning = node.get("description", "")
            if OVERRIDES in node:
                meaning += f" (its keys are those of `{node[OVERRIDES]}`, each replacing that one's value)"
            lines.append(f"| `{key}` | {_cell(_kind(node))} | {_cell(_default(node, required))} | {_cell(meaning)} |")
        notes = [node[NOTES] for _, node, _ in entries if NOTES in node]
        for note in notes:
            lines += ["", " ".join(note.split())]
        out.append("\n".join(lines) + "\n")
    assert root.get("properties")
    return out


def render() -> str:
    """The text of config/README.md."""
    body = "\n".join(_sections())
    intro = ("## Keys of `config/config.yaml`\n\n"
             "One section per top-level block; `<name>` stands for the name of an entry you choose (a tile set, a "
             "benchmark, an external model, a rule). A key you leave out takes the default shown: it is filled in "
             "before any job runs, also inside a block you give in part. The defaults and allowed values come from "
             "`workflow/schemas/config.schema.yaml`; this file is generated from it "
             f"(`{COMMAND}`), so edit the schema, not this file.\n")
    return f"{HEADER}\n{intro}\n{body}\n{FOOTER}"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
