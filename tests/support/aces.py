"""ACES (PyPI `es-aces`) run as a user runs it: `aces-cli` from a venv of its own (tool_venv.py) with the
shipped task config, on a MEDS root, writing one MEDS label file (subject_id, prediction_time, boolean_value).

The command (es-aces 0.7.3; hydra overrides):
    aces-cli data=single_file data.standard=meds data.path=MEDS_ROOT/data config_path=TASK.yaml
             cohort_dir=OUT cohort_name=NAME output_filepath=FILE log_dir=DIR
`data.path` may be a folder: ACES reads every Parquet file under it at once (and warns that `data=sharded`
would scale better); one file out is what prepare.labels reads.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.support.tool_venv import tool_venv

ROOT = Path(__file__).resolve().parents[2]
TASK = ROOT / "configs" / "tasks" / "in_hospital_mortality_first_48h.yaml"
ACES_REQUIREMENTS = ["es-aces==0.7.3"]
TIMEOUT_S = 600
LOG_TAIL_LINES = 20


def _value(path: Path) -> str:
    """A path as a quoted hydra override value: `=`, `,` or spaces in a path would otherwise be grammar."""
    return "'" + str(path).replace("\\", "\\\\").replace("'", "\\'") + "'"


def aces_labels(meds_root: Path, out_dir: Path, task: Path = TASK) -> Path:
    """The label Parquet that ACES writes for `task` on the MEDS dataset at `meds_root`: out_dir/<task>.parquet.

    ACES writes to a hidden partial name that is renamed when it exits 0; its hydra logs go to
    out_dir/aces-logs. A failure raises RuntimeError with ACES's exit status and the tail of its output."""
    meds_root, out_dir, task = Path(meds_root).resolve(), Path(out_dir).resolve(), Path(task).resolve()
    if not (meds_root / "data").is_dir():
        raise FileNotFoundError(f"{meds_root}: no data/ folder (not a MEDS root)")
    aces_cli = tool_venv("aces", ACES_REQUIREMENTS) / "aces-cli"
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / f"{task.stem}.parquet"
    partial = out_dir / f".{task.stem}.partial.parquet"
    partial.unlink(missing_ok=True)
    command = [str(aces_cli), "data=single_file", "data.standard=meds", f"data.path={_value(meds_root / 'data')}",
               f"config_path={_value(task)}", f"cohort_dir={_value(out_dir)}", f"cohort_name={task.stem}",
               f"output_filepath={_value(partial)}", f"log_dir={_value(out_dir / 'aces-logs')}"]
    # the project's PYTHONPATH (tests/conftest.py sets the repo root) is no business of the tool's venv
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    try:
        run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=TIMEOUT_S)
        code, output = run.returncode, run.stdout + run.stderr
    except subprocess.TimeoutExpired as e:
        code, output = f"none: killed after {TIMEOUT_S} s", _text(e.stdout) + _text(e.stderr)
    if code != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        tail = "\n".join(output.strip().splitlines()[-LOG_TAIL_LINES:])
        raise RuntimeError(f"aces-cli ({task.name} on {meds_root}) failed, exit {code}:\n{tail}")
    partial.replace(final)
    return final


def _text(stream: bytes | str | None) -> str:
    return stream.decode(errors="replace") if isinstance(stream, bytes) else stream or ""
