"""Write a safetensors file whose bytes depend only on its tensors and metadata.

safetensors keeps the header's ``__metadata__`` in a hash map whose order changes from process to
process, so two runs that trained the same weights would write different files. The header is
rewritten here with the metadata keys sorted; the tensor entries and data keep safetensors' own order,
which is already fixed (by dtype, then name).
"""

from __future__ import annotations

import json
import os

import torch
from safetensors.torch import save_file

from magflow.atomic import atomic_path

ALIGN = 8  # safetensors pads the header with spaces to a multiple of 8 bytes


def sorted_header(path: str | os.PathLike[str]) -> None:
    """Rewrite the header of the safetensors file ``path`` with its metadata keys in sorted order."""
    with open(path, "r+b") as handle:
        size = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(size))
        metadata = header.pop("__metadata__", None)
        ordered = ({"__metadata__": dict(sorted(metadata.items()))} if metadata else {}) | header
        text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) <= size:  # the usual case: the same keys give the same length
            handle.seek(8)
            handle.write(text.ljust(size))
            return
        data = handle.read()  # a longer header moves the data: rewrite the whole file
        padded = text.ljust(-(-len(text) // ALIGN) * ALIGN)
        handle.seek(0)
        handle.write(len(padded).to_bytes(8, "little") + padded + data)
        handle.truncate()


def save_weights(tensors: dict[str, torch.Tensor], path: str | os.PathLike[str], metadata: dict[str, str]) -> None:
    """``safetensors.torch.save_file`` written atomically, with the same bytes for the same tensors and metadata."""
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)
        sorted_header(tmp)
