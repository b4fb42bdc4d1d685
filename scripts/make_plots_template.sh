#!/usr/bin/env bash
# Build .dvc/plots/offline.html: DVC's plot page with vega, vega-lite and vega-embed
# inlined, so `dvc plots show` works without internet (DVC's own page loads them from a CDN).
# Needs npm once (the registry); the generated template is committed.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent vega@5 vega-lite@5 vega-embed@6 >/dev/null 2>&1)
out=.dvc/plots/offline.html
mkdir -p "$(dirname "$out")"
{
  echo '<!DOCTYPE html>'
  echo '<html><head><meta charset="utf-8"><title>DVC plots (offline)</title>{refresh_tag}'
  echo '<style>body{font-family:sans-serif;margin:1em} .vega-embed{margin:1em}</style>'
  for pkg in vega vega-lite vega-embed; do
    tgz=$(ls "$tmp"/$pkg-[0-9]*.tgz)
    echo "<!-- $(basename "$tgz" .tgz) (BSD-3-Clause) -->"
    echo '<script type="text/javascript">'
    tar -xzOf "$tgz" "package/build/$pkg.min.js"
    echo '</script>'
  done
  echo '</head><body>{plot_divs}</body></html>'
} > "$out"
echo "wrote $out ($(wc -c < "$out") bytes)"
