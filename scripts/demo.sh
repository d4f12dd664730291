#!/usr/bin/env bash
# The README's demo command: install Driftline and run the fast loop end to end locally
# (embedded Tansu broker + redis-server, simulated model server, alerts in the terminal).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v redis-server >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
python3 -m pip install -q -e '.[test]'
exec driftline demo "$@"
