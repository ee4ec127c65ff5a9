"""A minimal, dependency-free HTML page with readable tables, for run summaries."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: left; }
th { background: #f0f0f5; }
tr.warn td { background: #fff3cd; }
caption { text-align: left; font-weight: 600; margin-bottom: 0.5em; }
"""


def table(rows: Sequence[Mapping[str, Any]], caption: str, warn_key: str | None = None) -> str:
    """An HTML table of ``rows``; rows with a non-empty ``warn_key`` are highlighted."""
    if not rows:
        return f"<p><b>{html.escape(caption)}</b>: nothing to show.</p>"
    keys = list(rows[0])
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = []
    for row in rows:
        css = ' class="warn"' if warn_key and row.get(warn_key) else ""
        cells = "".join(f"<td>{html.escape(str(row.get(k, '')))}</td>" for k in keys)
        body.append(f"<tr{css}>{cells}</tr>")
    return f"<table><caption>{html.escape(caption)}</caption><tr>{head}</tr>{''.join(body)}</table>"


def page(title: str, *sections: str) -> str:
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{''.join(sections)}</body></html>")
