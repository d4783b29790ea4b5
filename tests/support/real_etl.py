"""The real MIMIC-IV MEDS ETL (`mimic-iv-meds` from PyPI, on MEDS-Extract), run as a MIMIC-IV user runs it:

    meds-extract-run spec=MIMIC-IV input_dir=TABLES output_dir=OUT do_download=false

from a venv of its own (tests/support/tool_venv.py), on MIMIC-IV-shaped tables (tests/support/mimic_iv_tables.py).
No network at run time. As a script, for a user or CI (the demo's MIMIC-IV tables, then the ETL):

    python -m tests.support.real_etl OUT_DIR [--lab-delay-minutes N] [--mimic3-dir DIR]

writes OUT_DIR/tables (MIMIC-IV's layout) and OUT_DIR/meds (the MEDS root: data/, metadata/).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.tool_venv import tool_venv

ETL = ("mimic-iv-meds", ["mimic-iv-meds==0.2.0"])  # the venv's name and pin (MEDS-Extract 0.7.x, meds 0.4)
LOG_TAIL = 40  # lines of the ETL's log a failure shows


class EtlFailed(RuntimeError):
    pass


def etl_command(bin_dir: Path, tables_dir: Path, output_dir: Path) -> list[str]:
    return [str(bin_dir / "meds-extract-run"), "spec=MIMIC-IV", f"input_dir={tables_dir}",
            f"output_dir={output_dir}", "do_download=false"]


def run_mimic_iv_etl(tables_dir: Path, output_dir: Path) -> Path:
    """Run the ETL on `tables_dir` into `output_dir` (made; must not exist) and return the MEDS root (the
    ETL writes data/ and metadata/ into output_dir itself, beside its stages' scratch folders). Raises
    EtlFailed with the tail of its log on failure."""
    tables_dir, output_dir = Path(tables_dir).resolve(), Path(output_dir).resolve()
    if output_dir.exists():
        raise FileExistsError(f"{output_dir}: exists; the ETL would resume from what is there")
    bin_dir = tool_venv(*ETL)
    # the pipeline runner starts each stage as the console script MEDS_transform-stage: found on PATH
    env = {**os.environ, "PATH": os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")])}
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    log = output_dir.with_name(output_dir.name + ".log")
    with open(log, "w") as out:
        done = subprocess.run(etl_command(bin_dir, tables_dir, output_dir), stdout=out, stderr=subprocess.STDOUT,
                              env=env, cwd=output_dir.parent)
    if done.returncode != 0 or not (output_dir / "metadata" / "codes.parquet").is_file():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-LOG_TAIL:])
        raise EtlFailed(f"meds-extract-run spec=MIMIC-IV on {tables_dir} failed (exit {done.returncode}; "
                        f"log {log}):\n{tail}")
    return output_dir


def main(argv: list[str] | None = None) -> int:
    from tests.support.mimic_iv_tables import write_mimic_iv  # pandas: only the script writes tables

    parser = argparse.ArgumentParser(prog="python -m tests.support.real_etl", description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--lab-delay-minutes", type=int, default=0, help="storetime = charttime + N minutes")
    parser.add_argument("--mimic3-dir", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "data"
                        / "mimic3-demo", help="the MIMIC-III tables (default: the demo beside the project)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    tables = write_mimic_iv(args.mimic3_dir, args.out_dir / "tables", args.lab_delay_minutes)
    print(f"MIMIC-IV tables: {tables} ({time.perf_counter() - start:.1f} s)")
    start = time.perf_counter()
    try:
        root = run_mimic_iv_etl(tables, args.out_dir / "meds")
    except (EtlFailed, pytest.skip.Exception, pytest.fail.Exception) as e:  # failed, or could not install
        print(e, file=sys.stderr)
        return 1
    print(f"MEDS root: {root} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
