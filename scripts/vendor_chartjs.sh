#!/usr/bin/env bash
# Vendor Chart.js (MIT) into the package data, from the npm registry. Run by a person
# when upgrading; CI and the report use the committed copy and need no network.
#   bash scripts/vendor_chartjs.sh 4.6.1
set -euo pipefail
VERSION="${1:-4.6.1}"
cd "$(dirname "$0")/.."
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "chart.js@${VERSION}" >/dev/null && tar xzf chart.js-*.tgz)
dest=src/driftline/views/report/assets
# The source-map comment is dropped: a report has no map next to it and fetches nothing.
grep -v '^//# sourceMappingURL=' "$tmp/package/dist/chart.umd.min.js" >"$dest/chart.umd.min.js"
cp "$tmp/package/LICENSE.md" "$dest/chart.js.LICENSE.md"
# Inlined in a <script> element: it must not contain a closing tag or an HTML comment opener.
if grep -qiE '</script|<!--' "$dest/chart.umd.min.js"; then
  echo "refusing: the bundle contains '</script' or '<!--'" >&2
  exit 1
fi
sha256sum "$dest/chart.umd.min.js"
echo "vendored Chart.js ${VERSION}: update CHARTJS_VERSION in src/driftline/views/report/render.py and docs/report.md"
