#!/usr/bin/env bash
# The project's test command: lint, type-check, then every test (unit + integration
# against a real Tansu broker and redis-server started by the fixtures).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== ruff";   python3 -m ruff check src tests bench
echo "== mypy";   python3 -m mypy
echo "== pytest"; python3 -m pytest -q -p no:cacheprovider --durations=10 "$@"
