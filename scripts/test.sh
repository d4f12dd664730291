#!/usr/bin/env bash
# The project's test command: check (and install, where it can) what the tests need, then
# lint, type-check, and run every test (unit + integration against a real Tansu broker
# and redis-server started by the fixtures). Works as the first command on a fresh clone.
# Arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "test.sh: Python 3.11 or newer is needed as '$PYTHON' (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi
echo "== dependencies"; "$PYTHON" scripts/test_deps.py
echo "== ruff";   "$PYTHON" -m ruff check src tests bench
echo "== mypy";   "$PYTHON" -m mypy
echo "== pytest"; "$PYTHON" -m pytest -q -rs -p no:cacheprovider --durations=30 "$@"
