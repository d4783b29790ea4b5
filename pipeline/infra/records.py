"""The JSON records the pipeline reads back from a run directory — stage markers, the manifest, the
split — read as hostile input: a damaged one is taken as absent (a warning names it), a split with a
sample in two places is refused."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pipeline.errors import InputError

log = logging.getLogger(__name__)


def check_split(split: dict[str, Any], path: Path) -> None:
    """InputError naming `path` unless `split` holds a test list and fold lists of sample indices (whole
    numbers ≥ 0) with no sample twice."""
    test, folds = split.get("test"), split.get("fold")
    lists = [test, *folds] if isinstance(test, list) and isinstance(folds, list) and folds else None
    if lists is None or not all(isinstance(part, list) for part in lists) or not all(
            type(i) is int and i >= 0 for part in lists for i in part):
        raise InputError(f"{path}: not a split (a `test` list and `fold` lists of sample indices); make it again "
                         "with `python -m pipeline run --force`, or use a new run directory")
    seen: dict[int, str] = {}
    for where, part in [("the test set", test), *((f"fold {k}", f) for k, f in enumerate(folds))]:
        for index in part:
            if index in seen:
                raise InputError(f"{path}: sample {index} is in {seen[index]} and in {where} (a sample may be in "
                                 "one place only: a test result on training data is no test); make the split "
                                 "again with `python -m pipeline run --force`, or use a new run directory")
            seen[index] = where


def read_json_record(path: Path) -> dict[str, Any] | None:
    """A JSON object the pipeline wrote (a marker, the manifest), or None when it is absent or damaged
    (cut off, emptied, not an object): a warning names the file."""
    try:
        record = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("%s is damaged (%s); taken as absent", path, e)
        return None
    if not isinstance(record, dict):
        log.warning("%s is damaged (not a JSON object); taken as absent", path)
        return None
    return record
