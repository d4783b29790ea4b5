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


HASHED_UP_TO = 16 << 20  # bytes: larger files (a raw table of gigabytes) are known by their size


def file_state(path: Path, chunk: bool = False) -> str:
    """What a damaged output changes, read without hashing gigabytes: a Zarr chunk's (`chunk`) or a large
    file's size; the size and sha256 of anything else (zarr.json metadata, JSON and CSV tables, weights)."""
    size = path.stat().st_size
    return str(size) if chunk or size > HASHED_UP_TO else f"{size}:{file_sha256(path)}"


def listing(path: Path) -> dict[str, str]:
    """:func:`file_state` of every file under the folder `path` by relative path (of `path` itself, "."
    when it is a file); a file under a `c/` folder is a Zarr v3 chunk."""
    if path.is_file():
        return {".": file_state(path)}
    files = {f.relative_to(path).as_posix(): f for f in sorted(path.rglob("*")) if f.is_file()}
    return {rel: file_state(f, is_chunk(rel)) for rel, f in files.items()}


def is_chunk(relative: str) -> bool:
    """Whether the file at `relative` path in a store is a Zarr v3 chunk (under the array's ``c/``)."""
    return "c" in relative.split("/")[:-1]
