"""How often `prepare` ends cleanly after a parse error in a streamed table (it once hung at exit in about one
run in twenty, a CSV reader's thread still alive): the demo's CHARTEVENTS with 'abc' in ~1,000 valuenum cells,
`prepare` run N times (two at once) under a hard timeout. The test suite runs it three times; this, as often
as asked.

    python benchmarks/prepare_exit.py --times 20 --out /tmp/bench-prepare-exit
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.mimic_tables import prepare_repeatedly, with_unparseable_values  # noqa: E402 (the repository's root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--times", type=int, default=20)
    parser.add_argument("--demo", type=Path, default=ROOT.parent / "shared" / "data" / "mimic3-demo")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    where = args.out or Path(tempfile.mkdtemp(prefix="bench-prepare-exit-"))
    tables = with_unparseable_values(args.demo, where / "demo")
    started = time.time()
    outcomes = prepare_repeatedly(tables, where, args.times)
    codes = [code for code, _ in outcomes]
    hung, clean = codes.count(124), codes.count(1)
    machine = f"{platform.processor() or platform.machine()}, Python {platform.python_version()}"
    print("| runs | exit 1 (one line) | hung (killed after 60 s) | other | wall s | machine |")
    print("|---|---|---|---|---|---|")
    wall = time.time() - started
    print(f"| {args.times} | {clean} | {hung} | {len(codes) - clean - hung} | {wall:.0f} | {machine} |")
    sys.exit(0 if codes == [1] * args.times else 1)


if __name__ == "__main__":
    main()
