#!/usr/bin/env bash
# The floors job: every lower bound in pyproject.toml is a version the project is tested with.
#
# In a fresh venv ($FLOORS_VENV, default /tmp/floors-venv) it installs torch 2.13.0 (the only torch
# this machine installs without a multi-GB download, so also torch's floor), the build backend at
# its floor, and the package (`pip install .`, no extras but dev) with every `>=` bound pinned
# exactly (.ci/floor_pins.py derives the pins from pyproject.toml, so they never drift). Then:
#   1. psycopg2 must be absent: it comes only with the [postgres] extra;
#   2. the tests marked `thirdparty` that need no service run on the floors (but the heavy chains), and
#      ruff checks the code;
#   3. psycopg2-binary at its floor is added ([postgres]) and, when a PostgreSQL test server is up
#      (PIPELINE_TEST_PG_URL, as in .ci/run), the PostgreSQL tests that need no Slurm run too.
# Usage: bash .ci/floors.sh [extra pytest args]     (make floors)
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS

PYTHON=${PYTHON:-python3}
VENV=${FLOORS_VENV:-/tmp/floors-venv}
PY=$VENV/bin/python

rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
work=$(mktemp -d /tmp/floors.XXXXXX)
trap 'rm -rf "$work"' EXIT

# pins from pyproject.toml (tomllib + packaging)
"$PY" -m pip install -qq "packaging>=22"
"$PY" .ci/floor_pins.py dev > "$work/floors.txt"
"$PY" .ci/floor_pins.py --build-system > "$work/build.txt"
echo "floors:"; sed 's/^/  /' "$work/floors.txt" "$work/build.txt"

# torch first: it must come from the CPU wheel on disk, not from a PyPI CUDA build
"$PY" -m pip install -qq "$(grep '^torch==' "$work/floors.txt")"
# the build backend at its floor, then the package built by it from a clean copy of the sources
"$PY" -m pip install -qq -r "$work/build.txt"
mkdir "$work/src"
cp -r pyproject.toml README.md pipeline "$work/src/"
"$PY" -m pip install -qq --no-build-isolation -r "$work/floors.txt" "$work/src"
"$PY" -m pip check

echo "installed:"
"$PY" - <<'EOF'
from importlib import metadata
names = sorted({d.metadata["Name"] for d in metadata.distributions()}, key=str.lower)
print("  " + ", ".join(f"{n}=={metadata.version(n)}" for n in names))
EOF

# 1. no psycopg2 without the [postgres] extra
if "$PY" -c "import psycopg2" 2>/dev/null; then
    echo "FAIL: psycopg2 is importable after 'pip install .' without the [postgres] extra" >&2
    exit 1
fi
echo "ok: psycopg2 not installed without the [postgres] extra"

# 2. the tests that need no service, on the floors (PIPELINE_FLOORS: the tests of the lock skip, and
#    tests/test_floors.py checks that these are the floors)
export PIPELINE_FLOORS=1
# Only the tests marked `thirdparty`: the lowest versions can differ from the lock's only where the package
# calls a library, and every part that calls one has such a test (tests/test_floors.py). The heavy
# end-to-end chains run in the main job only: each makes the library calls of faster tests again.
"$PY" -m pytest -q -p no:cacheprovider --durations=15 \
    -m "thirdparty and not slurm and not postgres and not image and not heavy" "$@"
"$VENV/bin/ruff" check pipeline tests .ci  # the dev extra's linter at its floor

# 3. the [postgres] extra at its floor
"$PY" -m pip install -qq "$(grep -i '^psycopg2' <("$PY" .ci/floor_pins.py postgres))"
"$PY" -c "import psycopg2; print('ok: psycopg2', psycopg2.__version__, 'with the [postgres] extra')"
if [ -n "${PIPELINE_TEST_PG_URL:-}" ]; then
    set +e
    "$PY" -m pytest -q -p no:cacheprovider -m "postgres and not slurm" "$@"
    status=$?
    set -e
    [ "$status" -eq 0 ] || [ "$status" -eq 5 ] || exit "$status"  # 5: no such test (any more)
else
    echo "PIPELINE_TEST_PG_URL is not set: the PostgreSQL tests on the floors are skipped"
fi
echo "floors job passed in $((SECONDS - start)) s"
