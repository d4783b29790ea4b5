"""sha256 of files, read in blocks of 1 MiB: the one way the pipeline fingerprints its inputs (the raw tables,
MEDS data files, an external model) and its artifacts (stage markers, model.json's weights)."""

from __future__ import annotations

import hashlib
from pathlib import Path

BLOCK = 1 << 20


def update(digest, path: Path) -> None:
    """Feed the bytes of `path` to `digest`, block by block (memory: one block)."""
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(BLOCK), b""):
            digest.update(block)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    update(digest, path)
    return digest.hexdigest()
