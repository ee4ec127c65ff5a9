"""The one HTML engine of every page magflow writes: a page, its tables, its embedded figures, its numbers.

Standard library only, besides ``magflow.atomic`` for writing a page into place (:func:`write_page`): every
step that writes a page uses it, and each page is self-contained (figures embedded as base64 PNGs), so it can
be mailed or archived alone.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from magflow.atomic import atomic_path

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 13px; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f5; }
tr.warn td { background: #fff3cd; }
caption { text-align: left; font-weight: 600; margin-bottom: 0.4em; }
.side { overflow-x: auto; }
.side > table > tbody > tr > td { min-width: 460px; max-width: 640px; }
.side img { width: 100%; }
pre { background: #f7f7f9; padding: 0.8em; overflow-x: auto; font-size: 12px; max-height: 30em; }
nav a { margin-right: 1em; }
"""


def escape(text: Any) -> str:
    """``text`` as HTML text (quotes escaped too)."""
    return html.escape(str(text))


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: a float to ``digits`` decimals, None as empty, anything else as its string."""
    return "" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def mean_std(cell: Mapping[str, Any] | None, digits: int = 3) -> str:
    """A ``{"mean", "std"}`` cell as "mean ± std"; empty when there is no mean."""
    if not cell or cell.get("mean") is None:
        return ""
    return f"{cell['mean']:.{digits}f} ± {cell['std'] or 0:.{digits}f}"


def table(rows: Sequence[Mapping[str, Any]], caption: str, warn_key: str | None = None) -> str:
    """An HTML table of ``rows``; rows with a non-empty ``warn_key`` are highlighted."""
    if not rows:
        return f"<p><b>{escape(caption)}</b>: nothing to show.</p>"
    keys = list(rows[0])
    head = "".join(f"<th>{escape(k)}</th>" for k in keys)
    body = []
    for row in rows:
        css = ' class="warn"' if warn_key and row.get(warn_key) else ""
        cells = "".join(f"<td>{escape(row.get(k, ''))}</td>" for k in keys)
        body.append(f"<tr{css}>{cells}</tr>")
    return f"<table><caption>{escape(caption)}</caption><tr>{head}</tr>{''.join(body)}</table>"


def grid(columns: Sequence[str], sections: Sequence[tuple[str, Sequence[str]]]) -> str:
    """Columns side by side: one header row, then per section its title across and one HTML cell per column."""
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join(f"<tr><th colspan='{len(columns)}'>{escape(title)}</th></tr>"
                   + "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>" for title, cells in sections)
    return f"<div class='side'><table><tr>{head}</tr>{body}</table></div>"


def figure(path: str | os.PathLike[str], alt: str) -> str:
    """The PNG at ``path``, embedded in the page."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"<img alt='{escape(alt)}' src='data:image/png;base64,{data}'>"


def notes(lines: Iterable[str]) -> str:
    """A bulleted list of plain-text notes; empty without notes."""
    items = "".join(f"<li>{escape(line)}</li>" for line in lines)
    return f"<ul>{items}</ul>" if items else ""


def preformatted(text: str) -> str:
    return f"<pre>{escape(text)}</pre>"


def page(title: str, *sections: str) -> str:
    """A whole HTML document: ``title`` as its title and heading, then ``sections`` (HTML) in order."""
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1>{''.join(sections)}</body></html>")


def write_page(path: str | os.PathLike[str], title: str, *sections: str) -> Path:
    """Write :func:`page` of ``title`` and ``sections`` to ``path`` atomically; return ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(page(title, *sections))
    return Path(path)
