"""What the verbs of the command line share: registering a verb, SLIDE_ID=PATH pairs, common flags, the `wrote` line."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

from magflow.errors import ConfigError

Handler = Callable[[argparse.Namespace], int]


def add_verb(steps: argparse._SubParsersAction, name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
    """Register the verb `name` (`help`: its line in `magflow --help`), run by `handler`; its parser, for its flags."""
    p = steps.add_parser(name, help=help)
    p.set_defaults(handler=handler)
    return p


def pairs(items: Sequence[str], flag: str) -> dict[str, str]:
    """`SLIDE_ID=PATH` items as a dict; `flag` names the option in the error."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"{flag} takes SLIDE_ID=PATH, got '{item}'")
        out[key] = value
    return out


def add_pairs(p: argparse.ArgumentParser, flag: str, help: str, metavar: str = "SLIDE_ID=PATH") -> None:
    """An optional list of `SLIDE_ID=PATH` (or `MODEL=PATH`) items, read by `pairs`."""
    p.add_argument(flag, nargs="*", default=[], metavar=metavar, help=help)


def listed(values: Sequence[float]) -> str:
    """A list default as a help text shows it: ``0.25 0.375 0.5``."""
    return " ".join(f"{v:g}" for v in values)


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", help="cuda, cuda:1 or cpu (default: cuda when available)")


def add_mean_patch(p: argparse.ArgumentParser) -> None:
    """--mean-patch: embed.mean_patch for a step that embeds tiles besides `embed`."""
    p.add_argument("--mean-patch", action="store_true", help="append the mean patch token to the CLS token "
                   "(embed.mean_patch), as the model's evaluation embeddings do")


def add_table_outputs(p: argparse.ArgumentParser, tsv_help: str | None = None, html_help: str | None = None) -> None:
    """A table step's two required outputs, --out-tsv then --out-html."""
    p.add_argument("--out-tsv", required=True, help=tsv_help)
    p.add_argument("--out-html", required=True, help=html_help)


def wrote(*paths: str | Path | None, before: str = "") -> int:
    """Print `[BEFORE; ]wrote A and B` (paths that are None left out); the handler's exit status, 0."""
    print((f"{before}; " if before else "") + "wrote " + " and ".join(str(p) for p in paths if p is not None))
    return 0
