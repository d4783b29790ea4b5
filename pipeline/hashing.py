"""sha256 of files, read in blocks of 1 MiB: the one way the pipeline fingerprints its inputs (the raw tables,
MEDS data files, an external model) and its artifacts (stage markers, model.json's weights).

A file is read again only when it may have changed: a marker keeps each file's sha256 with its
:func:`stat_key`, and a file whose key is as recorded is taken to hold what was hashed (as make and
rsync trust modification times, but with the inode and the change time, which no writer can set back)."""

from __future__ import annotations

import hashlib
import json
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


def stat_key(path: Path) -> str:
    """Inode, modification and change times: what any write, rename or copy of a file changes. The change
    time (ctime) is set by the kernel, so no writer of the file can put an old one back; a file whose key
    is as recorded is the file that was hashed, and need not be read again."""
    st = path.stat()
    return f"{st.st_ino}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def file_record(path: Path) -> dict[str, str | int]:
    """What a stage's marker keeps of a file it wrote: its size, :func:`content_sha256` and :func:`stat_key`."""
    key = stat_key(path)
    return {"size": path.stat().st_size, "sha256": content_sha256(path), "stat": key}


def content_sha256(path: Path) -> str:
    """The sha256 of what `path` holds: its bytes, but for a Zarr store's ``zarr.json`` its JSON with sorted
    keys (some zarr versions write the consolidated metadata in the order its writes completed: the same
    store made twice must have the same fingerprint). A zarr.json that is no JSON is hashed as bytes."""
    if path.name == "zarr.json":
        try:
            return hashlib.sha256(json.dumps(json.loads(path.read_bytes()), sort_keys=True).encode()).hexdigest()
        except ValueError:
            pass
    return file_sha256(path)


def listing(path: Path) -> dict[str, dict]:
    """:func:`file_record` of every file under the folder `path` by relative path (of `path` itself, "."
    when it is a file). Names starting with a dot are left out: no stage writes one (its temporaries
    aside), and a stray ``.DS_Store`` or NFS ``.nfsXXXX`` is not part of an output."""
    return {rel: file_record(f) for rel, f in files_of(path).items()}


def files_of(path: Path) -> dict[str, Path]:
    """{relative path: file} under `path` ("." for a file itself), hidden names left out."""
    if path.is_file():
        return {".": path}
    return {f.relative_to(path).as_posix(): f for f in sorted(path.rglob("*"))
            if f.is_file() and not any(part.startswith(".") for part in f.relative_to(path).parts)}


def current_sha256(path: Path, record: dict | None) -> str:
    """The sha256 of `path`, taken from `record` (:func:`file_record`) when the file is still the one
    hashed then (same size and :func:`stat_key`), else read."""
    if isinstance(record, dict) and record.get("stat") == stat_key(path) and record.get("size") == path.stat().st_size:
        return str(record["sha256"])
    return content_sha256(path)


def unchanged(path: Path, record: dict | str, chunk: bool) -> bool:
    """Whether `path` is still the file `record` describes: by size and key alone when the key is as
    recorded, by its sha256 otherwise (a chunk rewritten or swapped with another of the same size is
    found). `record` as a string is a marker of the version before (size, or size:sha256 but for chunks)."""
    if isinstance(record, str):
        size = path.stat().st_size
        return record == (str(size) if chunk or size > 16 << 20 else f"{size}:{file_sha256(path)}")
    return path.stat().st_size == record.get("size") and current_sha256(path, record) == record.get("sha256")


def is_chunk(relative: str) -> bool:
    """Whether the file at `relative` path in a store is a Zarr v3 chunk (under the array's ``c/``)."""
    return "c" in relative.split("/")[:-1]
