"""An artifact's fingerprint: what a stage's marker records of each input it read, to tell later whether
the input changed. A sha256 over the artifact's files (by relative path) and each file's sha256, where a
file still as its maker's marker recorded it (hashing.stat_key) is not read again: checking a complete
run is a file listing, not a hash of its stores."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pipeline import hashing

PREFIX = "v2:"  # markers of the version before hold a bare sha256 of every byte (legacy())


def fingerprint(path: Path, records: dict[str, Any]) -> str | None:
    """The fingerprint of the file or folder `path`, None if absent. With `records` (the maker's
    {relative path: file record}) those files only — a stray file is no part of the output — else every
    file whose path holds no hidden name."""
    if not path.exists():
        return None
    files = {rel: (path if rel == "." else path / rel) for rel in records} if records else hashing.files_of(path)
    digest = hashlib.sha256()
    for rel, f in sorted(files.items()):
        digest.update(rel.encode() + b"\0")
        digest.update((hashing.current_sha256(f, records.get(rel)) if f.is_file() else "missing").encode())
    return PREFIX + digest.hexdigest()


def legacy(path: Path) -> str | None:
    """The fingerprint markers of the version before recorded: every byte of every file hashed."""
    if not path.exists():
        return None
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for f in files:
        digest.update(str(f.relative_to(path)).encode() + b"\0")
        hashing.update(digest, f)
    return digest.hexdigest()
